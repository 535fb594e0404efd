"""How ``fleetmon query`` prints answers: a table for people, every point for programs.

- ``table``: one row per series, never one per sample. Over a range: first, last, min, max,
  avg, count and a trend (a sparkline of the largest value in each slice of the range, scaled
  to the row's own span); at one time: the value. Labels every row shares go into the heading;
  those that differ get a column each. Numbers for people: four significant digits, ``k/M/G``
  past 10,000, bytes in KiB/MiB/GiB, seconds as durations. The table holds one row per series
  (the samples are folded in as they come), and prints when the answer is complete.
- ``raw`` (series, then ``time  value`` lines), ``csv`` (``name,labels,time,value``) and
  ``json`` (one object per line: ``{"metric": …, "values": [[t, v], …]}``, ``"value"`` for an
  instant vector, ``{"scalar": [t, v]}``): every point with its exact value, written as it comes.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import TextIO

from alerts.promql import ast
from alerts.promql.labels import NAME, Labels, drop_name, get, go_quote, render
from fleetmon_common.timespec import format_duration

TREND_WIDTH = 24
_BARS = "▁▂▃▄▅▆▇█"
HEAD_WIDTH = 118
#: More differing labels than this share one ``series`` column (``{a="1", b="2"}``).
MAX_LABEL_COLUMNS = 4


# --- numbers ------------------------------------------------------------------------------------
def exact(v: float) -> str:
    """A value as programs read it: shortest round-trip form; NaN and infinities as Prometheus
    spells them."""
    if math.isfinite(v):
        return repr(v)
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")


def _si(v: float, units: Sequence[tuple[float, str]]) -> str:
    a = abs(v)
    for size, suffix in units:
        if a >= size * 0.9995:
            return f"{v / size:.3g}{suffix}"
    return f"{v:.3g}"


_BIG = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_SMALL = ((1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"))
_IEC = ((2.0**50, "PiB"), (2.0**40, "TiB"), (2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB"))


def human(v: float, unit: str = "") -> str:
    """A value for people (module docstring); ``unit``: ``bytes``, ``bytes/s`` or ``seconds``."""
    if not math.isfinite(v):
        return exact(v)
    if v == 0:
        return "0"
    a = abs(v)
    if unit in ("bytes", "bytes/s"):
        text = _si(v, _IEC) if a >= 1024 else f"{v:.4g}B"
        return text + ("/s" if unit == "bytes/s" else "")
    if unit == "seconds" and a >= 60:
        s = round(a)
        sign = "-" if v < 0 else ""
        if s < 3600:
            return f"{sign}{s // 60}m{s % 60:02d}s"
        if s < 86400:
            return f"{sign}{s // 3600}h{(s % 3600) // 60:02d}m"
        return f"{sign}{s // 86400}d{(s % 86400) // 3600:02d}h"
    if unit == "seconds" and a < 1:
        return _si(v, _SMALL) + "s"
    if a >= 9999.5:
        return _si(v, _BIG)
    if a < 1e-3:
        return _si(v, _SMALL)
    text = f"{v:.4g}"
    return text + ("s" if unit == "seconds" else "")


def unit_of_name(name: str) -> str:
    if name.endswith(("_bytes", "_bytes_total")):
        return "bytes"
    if name.endswith(("_bytes_per_second",)):
        return "bytes/s"
    if name.endswith("_seconds"):
        return "seconds"
    return ""


_SAME_UNIT_AGGS = frozenset({"sum", "min", "max", "avg", "topk", "bottomk", "quantile", "stddev"})
_SAME_UNIT_FUNCS = frozenset({"min_over_time", "max_over_time", "avg_over_time", "sum_over_time",
                              "last_over_time", "quantile_over_time", "stddev_over_time", "abs", "ceil",
                              "floor", "round", "clamp", "clamp_min", "clamp_max", "sort", "sort_desc",
                              "label_replace", "label_join", "increase", "delta", "idelta"})
_PER_SECOND = frozenset({"rate", "irate", "deriv"})


def unit_of_expr(expr: ast.Expr) -> str:
    """The unit of an expression's values where it plainly keeps its selector's (``max by (node)
    (gpu_memory_used_bytes)`` is bytes, ``rate(…_bytes_total[5m])`` bytes/s); else ""."""
    node = ast.unwrap(expr)
    if isinstance(node, ast.VectorSelector):
        return unit_of_name(node.name)
    if isinstance(node, ast.MatrixSelector | ast.Subquery):
        return unit_of_expr(node.vector if isinstance(node, ast.MatrixSelector) else node.expr)
    if isinstance(node, ast.Aggregate) and node.op in _SAME_UNIT_AGGS:
        return unit_of_expr(node.expr)
    if isinstance(node, ast.Call) and node.args:
        arg = node.args[1] if node.func in ("quantile_over_time",) else node.args[0]
        inner = unit_of_expr(arg)
        if node.func in _SAME_UNIT_FUNCS:
            return inner
        if node.func in _PER_SECOND and inner == "bytes":
            return "bytes/s"
        return ""
    if (isinstance(node, ast.Binary) and node.op in ("+", "-", "and", "or", "unless")) or \
            (isinstance(node, ast.Binary) and node.op in (">", "<", ">=", "<=", "==", "!=") and not node.return_bool):
        lhs = unit_of_expr(node.lhs)
        rhs = unit_of_expr(node.rhs) if node.op in ("+", "-") else lhs
        return lhs if lhs == rhs or isinstance(ast.unwrap(node.rhs), ast.NumberLiteral) else ""
    return ""


# --- times --------------------------------------------------------------------------------------
def stamp(t: float, *, date: bool = True, ms: bool = False) -> str:
    lt = time.localtime(t)
    text = time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", lt)
    return text + (f".{round(t * 1000) % 1000:03d}" if ms else "")


def span_text(start: float, end: float, now: float) -> str:
    """``11:00:00 → 12:00:00 UTC`` (dates shown unless both ends are today)."""
    today = time.localtime(now)[:3]
    both_today = time.localtime(start)[:3] == today and time.localtime(end)[:3] == today
    zone = time.strftime("%Z", time.localtime(end))
    if start == end:
        return f"at {stamp(end, date=not both_today)} {zone}"
    return f"{stamp(start, date=not both_today)} → {stamp(end, date=not both_today)} {zone}"


# --- the table ----------------------------------------------------------------------------------
class _Stats:
    __slots__ = ("count", "first", "first_t", "hi", "last", "last_t", "lo", "n_num", "total", "trend")

    def __init__(self, width: int) -> None:
        self.count = 0
        self.n_num = 0
        self.first = self.last = math.nan
        self.first_t = math.inf
        self.last_t = -math.inf
        self.lo = math.inf
        self.hi = -math.inf
        self.total = 0.0
        self.trend: list[float | None] = [None] * width

    def add(self, t: float, v: float, slot: int | None) -> None:
        self.count += 1
        if t < self.first_t:
            self.first_t, self.first = t, v
        if t >= self.last_t:
            self.last_t, self.last = t, v
        if math.isnan(v):
            return
        self.n_num += 1
        self.total += v
        self.lo = min(self.lo, v)
        self.hi = max(self.hi, v)
        if slot is not None:
            cur = self.trend[slot]
            if cur is None or v > cur:
                self.trend[slot] = v

    def sparkline(self) -> str:
        vals = [v for v in self.trend if v is not None]
        if not vals:
            return ""
        lo, hi = min(vals), max(vals)
        out = []
        for v in self.trend:
            if v is None:
                out.append(" ")
            elif hi == lo or not math.isfinite(hi - lo):
                out.append(_BARS[0])
            else:
                out.append(_BARS[min(len(_BARS) - 1, int((v - lo) / (hi - lo) * len(_BARS)))])
        return "".join(out).rstrip()


class Table:
    """Folds points into one row per series, printed by :meth:`finish`."""

    def __init__(self, out: TextIO, *, unit: str = "", now: float | None = None) -> None:
        self.out = out
        self.unit = unit
        self.now = time.time() if now is None else now
        self.stats: dict[Labels, _Stats] = {}
        self.values: list[tuple[Labels, float]] = []
        self.window: tuple[float, float] | None = None  # range: [start, end] in seconds
        self.step: float | None = None
        self.width = TREND_WIDTH
        self.at: float | None = None
        self.ordered = False

    # inputs
    def range(self, start: float, end: float, step: float | None) -> None:
        """Over a range (with ``step``: a range query's steps; a trend slot for each while fewer
        than its width, so no slot stays empty for want of a step)."""
        self.window = (start, end)
        self.step = step
        if step:
            self.width = max(1, min(TREND_WIDTH, round((end - start) / step) + 1))

    def _slot(self, t: float) -> int | None:
        if self.window is None:
            return None
        start, end = self.window
        if end <= start:
            return 0
        return max(0, min(self.width - 1, int((t - start) / (end - start) * self.width)))

    def series(self, labels: Labels, ts: Iterable[float], vals: Iterable[float]) -> None:
        st = self.stats.get(labels)
        if st is None:
            st = self.stats[labels] = _Stats(self.width)
        for t, v in zip(ts, vals, strict=True):
            st.add(t, v, self._slot(t))

    def step_values(self, t: float, vec: Iterable[tuple[Labels, float]]) -> None:
        slot = self._slot(t)
        for labels, v in vec:
            st = self.stats.get(labels)
            if st is None:
                st = self.stats[labels] = _Stats(self.width)
            st.add(t, v, slot)

    def vector(self, t: float, samples: Iterable[tuple[Labels, float]], ordered: bool) -> None:
        self.at = t
        self.ordered = ordered
        self.values.extend(samples)

    # output
    def _unit(self, labels: Labels) -> str:
        return unit_of_name(get(labels, NAME)) or (self.unit if not get(labels, NAME) else "")

    def finish(self) -> int:
        """Print the table; the number of rows."""
        keys = list(self.stats) if self.window is not None else [lb for lb, _ in self.values]
        if not keys:
            return 0
        common, varying, one_column = _split_labels(keys)

        def by_columns(labels: Labels) -> tuple[tuple[tuple[tuple[int, int | str], ...], ...], Labels]:
            d = dict(labels)
            return tuple(_natural(d.get(c, "")) for c in varying), labels

        if self.window is not None:
            keys.sort(key=by_columns)
        elif not self.ordered:
            self.values.sort(key=lambda s: by_columns(s[0]))
            keys = [lb for lb, _ in self.values]
        head = f"{len(keys)} series" if len(keys) > 1 else "1 series"
        if common:
            name = get(common, NAME)
            rest = drop_name(common)
            head += f" of {name}{render(rest) if rest else ''}" if name else f" with {render(rest)}"
        when = ""
        if self.window is not None:
            when = span_text(*self.window, self.now)
            if self.step is not None:
                when += f" every {format_duration(self.step)}"
        elif self.at is not None:
            when = span_text(self.at, self.at, self.now)
        if when:  # on the same line while it fits a terminal
            head += (", " if len(head) + len(when) < HEAD_WIDTH else ",\n") + when
        rows: list[list[str]] = []
        for i, labels in enumerate(keys):
            cells = _label_cells(labels, varying, one_column)
            unit = self._unit(labels)
            if self.window is not None:
                st = self.stats[labels]
                avg = st.total / st.n_num if st.n_num else math.nan
                lo = st.lo if st.n_num else math.nan
                hi = st.hi if st.n_num else math.nan
                cells += [human(x, unit) for x in (st.first, st.last, lo, hi, avg)] + [str(st.count), st.sparkline()]
            else:
                cells.append(human(self.values[i][1], unit))
            rows.append(cells)
        names = ["series"] if one_column else [("name" if c == NAME else c) for c in varying]
        numeric = ["first", "last", "min", "max", "avg", "count", "trend"] if self.window is not None else ["value"]
        _print_rows(self.out, head, names, numeric, rows)
        return len(rows)


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """``gpu 2`` before ``gpu 10``: digit runs compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text) if part)


_DIGITS = re.compile(r"(\d+)")


def _split_labels(keys: Sequence[Labels]) -> tuple[Labels, list[str], bool]:
    """The labels every row has with one value; those that differ (``__name__`` first, then
    ``node``, then by name); whether they share one ``series`` column (past the limit)."""
    rows = [dict(lb) for lb in keys]
    common = {k: v for k, v in rows[0].items() if all(r.get(k) == v for r in rows[1:])}
    varying = sorted({k for lb in keys for k, _ in lb} - set(common), key=lambda k: (k != NAME, k != "node", k))
    return tuple(sorted(common.items())), varying, len(varying) > MAX_LABEL_COLUMNS


def _label_cells(labels: Labels, varying: list[str], one_column: bool) -> list[str]:
    d = dict(labels)
    if one_column:
        rest = tuple((k, v) for k, v in labels if k in varying and k != NAME)
        return [d.get(NAME, "") + (render(rest) if rest else "")]
    return [d.get(c, "-") for c in varying]


def _print_rows(out: TextIO, head: str, names: list[str], numeric: list[str], rows: list[list[str]]) -> None:
    header = names + numeric
    n_label = len(names)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    out.write(head + "\n")
    last = len(header) - 1

    def line(cells: list[str]) -> str:
        parts = []
        for i, c in enumerate(cells):
            if i == last:
                parts.append(c)  # free text at the end (trend, or a lone value): not padded
            elif i < n_label or header[i] == "trend":
                parts.append(c.ljust(widths[i]))
            else:
                parts.append(c.rjust(widths[i]))
        return "  ".join(parts).rstrip()

    out.write(line(header) + "\n")
    for r in rows:
        out.write(line(r) + "\n")


# --- every point ----------------------------------------------------------------------------------
def _labels_text(labels: Labels) -> str:
    rest = drop_name(labels)
    return "{" + ",".join(f"{k}={go_quote(v)}" for k, v in rest) + "}"


def _metric(labels: Labels) -> dict[str, str]:
    return dict(labels)


def _json_value(v: float) -> float | str:
    return v if math.isfinite(v) else exact(v)


class Points:
    """``raw``, ``csv`` or ``json``: every point as it comes (module docstring)."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out = out
        self.fmt = fmt
        self.count = 0
        self._csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(["name", "labels", "time", "value"])

    def series(self, labels: Labels, ts: Sequence[float], vals: Sequence[float]) -> None:
        self.count += 1
        if self.fmt == "json":
            self.out.write(json.dumps({"metric": _metric(labels),
                                       "values": [[t, _json_value(v)] for t, v in zip(ts, vals, strict=True)]},
                                      allow_nan=False) + "\n")
        elif self._csv is not None:
            name, lab = get(labels, NAME), _labels_text(labels)
            self._csv.writerows([name, lab, f"{t:.3f}", exact(v)] for t, v in zip(ts, vals, strict=True))
        else:
            self.out.write(_series_text(labels) + "\n")
            self.out.writelines(f"  {stamp(t, ms=True)}  {exact(v)}\n" for t, v in zip(ts, vals, strict=True))

    def vector(self, t: float, samples: Iterable[tuple[Labels, float]]) -> None:
        for labels, v in samples:
            self.count += 1
            if self.fmt == "json":
                self.out.write(json.dumps({"metric": _metric(labels), "value": [t, _json_value(v)]},
                                          allow_nan=False) + "\n")
            elif self._csv is not None:
                self._csv.writerow([get(labels, NAME), _labels_text(labels), f"{t:.3f}", exact(v)])
            else:
                self.out.write(f"{_series_text(labels)}  {exact(v)}\n")

    def scalar(self, t: float, v: float | str, kind: str = "scalar") -> None:
        self.count += 1
        shown = v if isinstance(v, str) else exact(v)
        if self.fmt == "json":
            self.out.write(json.dumps({kind: [t, v if isinstance(v, str) else _json_value(v)]}) + "\n")
        elif self._csv is not None:
            self._csv.writerow(["", "", f"{t:.3f}", shown])
        else:
            self.out.write(f"{shown}\n")


def _series_text(labels: Labels) -> str:
    name = get(labels, NAME)
    rest = drop_name(labels)
    return name + render(rest) if rest or not name else name
