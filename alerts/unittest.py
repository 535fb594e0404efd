"""``fleetmon rules test``: promtool's rule unit-test format, checked the way promtool 2.42 does.

A test file names ``rule_files``, an ``evaluation_interval`` (default 1m) and ``tests``; each
test group loads ``input_series`` in expanding notation (``1+2x3`` = 1 3 5 7, ``_`` = no sample,
``stale`` = stale marker, ``_x3`` = three gaps), evaluates every group from t=0 to the largest
``eval_time`` in steps of the evaluation interval, compares *firing* alerts at each
``alert_rule_test`` ``eval_time`` (using the last evaluation at or before it), then evaluates each
``promql_expr_test`` at its ``eval_time``. Values compare exactly, as promtool's
``reflect.DeepEqual`` does. The rule groups run through the same ``GroupRunner`` as the
collector's engine.
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from alerts.errors import AlertsError, ParseError, UnitTestError
from alerts.group import GroupRunner
from alerts.model import AlertState
from alerts.promql.evaluator import Evaluator
from alerts.promql.gofloat import format_v
from alerts.promql.labels import NAME, Labels, from_pairs, go_quote, render
from alerts.promql.lexer import EOF, IDENT, OP, STRING, format_duration_ms, parse_duration_ms, tokenize
from alerts.promql.parser import parse
from alerts.rulefile import AlertingRule, RuleGroup, load_file
from alerts.schedule import Scheduler
from alerts.windows import Windows

_FILE_KEYS = ("rule_files", "evaluation_interval", "group_eval_order", "tests")
_GROUP_KEYS = ("interval", "input_series", "alert_rule_test", "promql_expr_test", "external_labels", "name")

_NUM = r"(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|[Ii]nf|NaN|nan)"
_ITEM = re.compile(rf"^(?P<a>[-+]?{_NUM})(?:(?P<b>[-+]{_NUM})?x(?P<n>[0-9]+))?$")
_GAP = re.compile(r"^_(?:x(?P<n>[0-9]+))?$")

#: Marker for a stale sample in an expanded series (None in the windows).
STALE = None


def parse_series_desc(text: str) -> Labels:
    """``name{a="b", ...}`` or ``{__name__="x", ...}`` → label set (promtool ``ParseMetric``)."""
    try:
        toks = tokenize(text)
    except ParseError as err:
        raise UnitTestError(f"bad series {text!r}: {err}") from err
    bad = UnitTestError(f"bad series {text!r}: expected name{{label=\"value\", ...}}")
    pairs: list[tuple[str, str]] = []
    i = 0

    def at(k: int) -> tuple[str, str]:
        t = toks[min(k, len(toks) - 1)]  # tokenize() always ends with EOF
        return t.kind, t.text

    if at(i)[0] == IDENT:
        pairs.append((NAME, toks[i].text))
        i += 1
    if at(i) == (OP, "{"):
        i += 1
        while at(i) != (OP, "}"):
            if at(i)[0] != IDENT or at(i + 1) != (OP, "=") or at(i + 2)[0] != STRING:
                raise bad
            val = toks[i + 2].value
            assert isinstance(val, str)
            pairs.append((toks[i].text, val))
            i += 3
            if at(i) == (OP, ","):
                i += 1
        i += 1
    elif not pairs:
        raise bad
    if at(i)[0] != EOF:
        raise bad
    return from_pairs(pairs)


def expand_values(text: str) -> list[float | bool | None]:
    """Expanding notation → one entry per interval: float, STALE (None), or False for a gap."""
    out: list[float | bool | None] = []
    for item in str(text).split():
        if item == "stale":
            out.append(STALE)
            continue
        gap = _GAP.match(item)
        if gap:
            out.extend([False] * _repeat(len(out), gap.group("n") or "1", text))
            continue
        m = _ITEM.match(item)
        if not m:
            raise UnitTestError(f"bad value {item!r} in series values {text!r}")
        a = float(m.group("a"))
        if m.group("n") is None:
            out.append(a)
            continue
        b = float(m.group("b")) if m.group("b") else 0.0
        # "a+bxN" is N+1 values; promtool adds b step by step, so do the same float sums.
        for _ in range(_repeat(len(out), m.group("n"), text) + 1):
            out.append(a)
            a += b
    return out


#: Samples one series may expand to (a year at one a minute is 525,600): "1x100000000" would
#: otherwise build gigabytes of floats before any test runs.
MAX_SERIES_VALUES = 1_000_000


def _repeat(have: int, digits: str, text: str) -> int:
    if len(digits) > 7 or have + int(digits) + 1 > MAX_SERIES_VALUES:
        raise UnitTestError(f"series values {text[:60]!r} expand to more than {MAX_SERIES_VALUES} samples")
    return int(digits)


def _duration(value: Any, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    if not isinstance(value, str):
        raise UnitTestError(f"{what}: expected a duration like 5m, got {value!r}")
    try:
        return parse_duration_ms(value)
    except ParseError as err:
        raise UnitTestError(f"{what}: {err}") from err


def _check_keys(d: Any, allowed: Sequence[str], what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise UnitTestError(f"{what} must be a mapping")
    for k in d:
        if k not in allowed:
            raise UnitTestError(f"unknown field {k!r} in {what} (allowed: {', '.join(allowed)})")
    return d


@dataclass
class _Expected:
    labels: Labels
    value: float


def _render_alerts(items: list[tuple[Labels, Labels]]) -> str:
    if not items:
        return "[]"
    pad = " " * 12  # promtool indents the listing under "exp:"/"got:"
    parts = [f"{pad}{i}:\n{pad}  Labels:{render(lb)}\n{pad}  Annotations:{render(an)}"
             for i, (lb, an) in enumerate(items)]
    return "[\n" + ",\n".join(parts) + f"\n{pad}]"


def _render_samples(items: list[tuple[Labels, float]]) -> str:
    if not items:
        return "nil"
    return ", ".join(f"{render(lb)} {format_v(v)}" for lb, v in items)


class _TestGroup:
    def __init__(self, spec: dict[str, Any], eval_interval_ms: int, groups: list[RuleGroup]) -> None:
        self.spec = spec
        self.eval_interval_ms = eval_interval_ms
        self.rule_groups = groups
        self.name = str(spec.get("name") or "")

    def run(self) -> list[str]:
        spec = self.spec
        # promtool 2.42 has no default: without "interval" every value lands at t=0, and only
        # the first of those duplicates is kept (the TSDB refuses the rest). Do the same.
        interval_ms = _duration(spec.get("interval", 0), "interval")
        ext = spec.get("external_labels") or {}
        windows = Windows(retention_ms=2**62, keep_all=True)
        for raw in spec.get("input_series") or []:
            item = _check_keys(raw, ("series", "values"), "input_series item")
            labels = parse_series_desc(str(item.get("series", "")))
            name = dict(labels).get(NAME, "")
            for i, v in enumerate(expand_values(str(item.get("values", "")))):
                if v is False:
                    continue
                windows.append(name, labels, i * interval_ms, v)
        # promtool's engine takes a subquery's default step from the evaluation interval.
        scheduler = Scheduler(windows)
        external = {str(k): str(v) for k, v in ext.items()}
        runners = [GroupRunner(g, windows, scheduler=scheduler, external_labels=external, log_errors=False,
                               default_step_ms=self.eval_interval_ms)
                   for g in self.rule_groups]

        alert_tests = spec.get("alert_rule_test") or []
        expr_tests = spec.get("promql_expr_test") or []
        by_time: dict[int, list[dict[str, Any]]] = {}
        for raw in alert_tests:
            at = _check_keys(raw, ("eval_time", "alertname", "exp_alerts"), "alert_rule_test item")
            t = _duration(at.get("eval_time", 0), "eval_time")
            if not at.get("alertname"):
                suffix = f" (in TestGroup {self.name})" if self.name else ""
                return [f"an item under alert_rule_test misses required attribute alertname at eval_time "
                        f"{format_duration_ms(t)}{suffix}"]
            by_time.setdefault(t, []).append(at)
        expr_times = [_duration(pt.get("eval_time", 0), "eval_time") for pt in expr_tests]
        maxt = max([0, *by_time, *expr_times])
        check_times = sorted(by_time)

        errs: list[str] = []
        curr = 0
        ts = 0
        while ts <= maxt:
            eval_errs: list[str] = []
            for r in runners:
                r.eval(ts)
                for st in r.states:
                    if st.last_error:
                        eval_errs.append(f"    rule: {st.rule.name}, time: {format_duration_ms(ts)}, "
                                         f"err: {st.last_error}")
            if eval_errs:
                return errs + eval_errs
            while curr < len(check_times) and ts <= check_times[curr] < ts + self.eval_interval_ms:
                t = check_times[curr]
                for at in by_time[t]:
                    errs.extend(self._check_alerts(at, t, runners))
                curr += 1
            ts += self.eval_interval_ms

        for pt, t in zip(expr_tests, expr_times, strict=True):
            errs.extend(self._check_expr(pt, t, windows))
        return errs

    def _check_alerts(self, at: dict[str, Any], t: int, runners: list[GroupRunner]) -> list[str]:
        name = str(at["alertname"])
        got: list[tuple[Labels, Labels]] = []
        for r in runners:
            for rule, a in r.alerts():
                if isinstance(rule, AlertingRule) and rule.name == name and a.state == AlertState.FIRING:
                    got.append((from_pairs(a.labels.items()), tuple(sorted(a.annotations.items()))))
        exp: list[tuple[Labels, Labels]] = []
        for raw in at.get("exp_alerts") or []:
            ea = _check_keys(raw, ("exp_labels", "exp_annotations"), "exp_alerts item")
            lb = {str(k): str(v) for k, v in (ea.get("exp_labels") or {}).items()}
            lb["alertname"] = name
            an = {str(k): str(v) for k, v in (ea.get("exp_annotations") or {}).items()}
            exp.append((tuple(sorted(lb.items())), tuple(sorted(an.items()))))
        got.sort()
        exp.sort()
        if got == exp:
            return []
        head = f"    name: {self.name},\n" if self.name else ""
        return [f"{head}    alertname: {name}, time: {format_duration_ms(t)}, \n"
                f"        exp:{_render_alerts(exp)}, \n        got:{_render_alerts(got)}"]

    def _check_expr(self, pt: dict[str, Any], t: int, windows: Windows) -> list[str]:
        pt = _check_keys(pt, ("expr", "eval_time", "exp_samples"), "promql_expr_test item")
        expr_text = str(pt.get("expr", ""))
        where = f"    expr: {go_quote(expr_text)}, time: {format_duration_ms(t)}"
        try:
            expr = parse(expr_text)
            got = Evaluator(windows, t, default_step_ms=self.eval_interval_ms).eval_vector(expr)
        except AlertsError as err:
            return [f"{where}, err: {err}"]
        exp: list[tuple[Labels, float]] = []
        for raw in pt.get("exp_samples") or []:
            es = _check_keys(raw, ("labels", "value"), "exp_samples item")
            try:
                lb = parse_series_desc(str(es.get("labels", "{}")))
            except UnitTestError as err:
                return [f"{where}, err: labels {es.get('labels')!r}: {err}"]
            exp.append((lb, _float(es.get("value", 0))))
        exp.sort(key=lambda s: s[0])
        got = sorted(got, key=lambda s: s[0])
        # Exact comparison like promtool's reflect.DeepEqual (so NaN never equals NaN).
        same = len(exp) == len(got) and all(e[0] == g[0] and e[1] == g[1] for e, g in zip(exp, got, strict=True))
        if same:
            return []
        return [f"{where},\n        exp: {_render_samples(exp)}\n        got: {_render_samples(got)}"]


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise UnitTestError(f"exp_samples value must be a number, got {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    text = str(v).strip()
    low = text.lower().lstrip("+-.")
    if low in ("inf", "nan"):
        sign = -1.0 if text.startswith("-") else 1.0
        return math.nan if low == "nan" else sign * math.inf
    try:
        return float(text)
    except ValueError as err:
        raise UnitTestError(f"exp_samples value must be a number, got {v!r}") from err


def run_file(path: Path, out: TextIO) -> bool:
    """Run one unit-test file; prints promtool-style progress to ``out``; True on success."""
    print(f"Unit Testing:  {path}", file=out)
    warnings: list[str] = []
    try:
        errs = _run(path, warnings)
    except AlertsError as err:
        errs = [f"  {err}"]
    for w in warnings:
        print(w, file=out)
    if errs:
        print("  FAILED:", file=out)
        for e in errs:
            print(e, file=out)
            print(file=out)
    else:
        print("  SUCCESS", file=out)
    print(file=out)
    return not errs


def _run(path: Path, warnings: list[str]) -> list[str]:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UnitTestError(f"{path}: cannot read: {err}") from err
    except yaml.YAMLError as err:
        raise UnitTestError(f"{path}: YAML: {err}") from err
    spec = _check_keys(spec or {}, _FILE_KEYS, f"{path}")
    eval_interval = _duration(spec.get("evaluation_interval", "1m"), "evaluation_interval") or 60_000
    order: dict[str, int] = {}
    for i, gn in enumerate(spec.get("group_eval_order") or []):
        if gn in order:
            return [f"group name repeated in evaluation order: {gn}"]
        order[str(gn)] = i
    rule_paths: list[Path] = []
    for rf in spec.get("rule_files") or []:
        pattern = str(rf) if Path(str(rf)).is_absolute() else str(path.parent / str(rf))
        matches = sorted(glob.glob(pattern))
        if not matches:
            warnings.append(f"  WARNING: no file match pattern {pattern}")
        rule_paths.extend(Path(m) for m in matches)
    errs: list[str] = []
    for raw in spec.get("tests") or []:
        tg = _check_keys(raw, _GROUP_KEYS, "test group")
        # Rules are loaded afresh per test group: alert state must not leak between groups.
        groups = [g for p in rule_paths for g in load_file(p)]
        groups.sort(key=lambda g: order.get(g.name, 0))
        errs.extend(_TestGroup(tg, eval_interval, groups).run())
    return errs
