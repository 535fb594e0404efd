"""PromQL over history: instant and range queries, with the alert engine's evaluator.

Semantics are Prometheus 2.42's (what the rule engine implements, alerts/README.md): a range
query is the instant query evaluated at ``start``, ``start + step``, … ``end``, each with the
5-minute lookback and stale markers ending a series at once; ``@ start()`` and ``@ end()`` are
the range's ends; a subquery without a step uses 1 minute (Prometheus's default evaluation
interval). An instant query of a range selector (``x[1h]``) returns the stored samples.

Memory. The samples a query reads are fetched per *chunk* of its range, each chunk with the
lookback, ranges, offsets and subqueries of its expression in front of it: the first an hour of
steps, the next as many steps as hold about a million samples at the density seen so far (16
MB in the evaluator's arrays), so a month-long range query over any number of series holds a
bounded slice of them at a time. An instant query of a range selector streams series by
series. What stays is the answer: ``range_query`` yields one step's vector at a time, and
:func:`collect_matrix` (the HTTP API's ``query_range``) refuses answers beyond :data:`MAX_POINTS`.
"""

from __future__ import annotations

import copy
import math
import time
from array import array
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alerts.errors import AlertsError, ParseError
from alerts.promql import ast
from alerts.promql.evaluator import Evaluator
from alerts.promql.labels import Labels, from_map
from alerts.promql.parser import parse
from alerts.promql.values import LOOKBACK_MS, STALE_NAN, RangeSeries, Vector
from collector.history import HistoryReader

if TYPE_CHECKING:
    import numpy as np

    from collector.history import Floats, Ints

#: Points per series a range query may have (Prometheus's bound on a range query's resolution).
MAX_STEPS = 11_000
#: Points an answer held in memory may have (the HTTP API's ``query_range``, the raw formats).
MAX_POINTS = 2_000_000
#: A range query reads its samples this much of its range at first, then as much as holds about
#: CHUNK_SAMPLES samples (16 bytes each in the evaluator's arrays).
CHUNK_MS = 3_600_000
CHUNK_SAMPLES = 1_000_000
_OLDEST = -(2**62)
_STALE_BITS = array("Q", array("d", [STALE_NAN]).tobytes())[0]


class QueryError(Exception):
    """The query is wrong or too big; the message is for the person who wrote it."""


# --- parsing ------------------------------------------------------------------------------------
def parse_query(text: str) -> ast.Expr:
    """The expression, or QueryError pointing at the column (and showing where, on two lines)."""
    if not text.strip():
        raise QueryError("empty expression; e.g. gpu_temperature_celsius or max by (node) (gpu_power_watts)")
    try:
        return parse(text)
    except ParseError as err:
        raise QueryError(f"parse error at column {err.pos + 1}: {err.message}\n  {text}\n  {' ' * err.pos}^") from None


def pin_start_end(expr: ast.Expr, start_ms: int, end_ms: int) -> ast.Expr:
    """A copy of ``expr`` with ``@ start()`` / ``@ end()`` as the query's fixed times (what
    Prometheus's engine does before it evaluates)."""
    expr = copy.deepcopy(expr)
    for node in ast.walk(expr):
        if isinstance(node, ast.VectorSelector | ast.Subquery) and node.at in (ast.AT_START, ast.AT_END):
            node.at_ms = start_ms if node.at == ast.AT_START else end_ms
            node.at = ast.AT_TIME
    return expr


# --- what each selector reads -----------------------------------------------------------------
def selector_windows(expr: ast.Expr, first_ms: int, last_ms: int,
                     lookback_ms: int = LOOKBACK_MS) -> dict[ast.VectorSelector, tuple[int, int]]:
    """For evaluations at times in ``[first_ms, last_ms]``: each selector's closed time range
    of samples the evaluator can read (``@ start()/end()`` already pinned)."""
    out: dict[ast.VectorSelector, tuple[int, int]] = {}

    def visit(node: ast.Expr, t0: int, t1: int) -> None:
        if isinstance(node, ast.MatrixSelector | ast.VectorSelector):
            sel = node.vector if isinstance(node, ast.MatrixSelector) else node
            back = node.range_ms if isinstance(node, ast.MatrixSelector) else lookback_ms
            hi0, hi1 = (sel.at_ms, sel.at_ms) if sel.at == ast.AT_TIME else (t0, t1)
            lo, hi = hi0 - sel.offset_ms - back, hi1 - sel.offset_ms
            old = out.get(sel)
            out[sel] = (lo, hi) if old is None else (min(lo, old[0]), max(hi, old[1]))
            return
        if isinstance(node, ast.Subquery):
            hi0, hi1 = (node.at_ms, node.at_ms) if node.at == ast.AT_TIME else (t0, t1)
            visit(node.expr, hi0 - node.offset_ms - node.range_ms, hi1 - node.offset_ms)
            return
        for child in ast.children(node):
            visit(child, t0, t1)

    visit(expr, first_ms, last_ms)
    return out


# --- series for the evaluator -------------------------------------------------------------------
class _Stored:
    """A fetched series as the evaluator reads it (alerts.promql.values.SeriesData)."""

    __slots__ = ("chg_ts", "dec_ts", "labels", "part", "stale", "ts", "vals")

    def __init__(self, labels: Labels, ts: array[int], vals: array[float], *, stale: int, dec_ts: int,
                 part: str) -> None:
        self.labels = labels
        self.ts = ts
        self.vals = vals
        self.stale = stale
        self.dec_ts = dec_ts
        self.chg_ts = ts[-1] if ts else _OLDEST  # only read while tracking wake-ups (rules), never here
        self.part = part


def _stale_mask(vals: np.ndarray) -> np.ndarray:
    import numpy as np  # noqa: PLC0415 - the command line reads an API without numpy

    return vals.view(np.uint64) == np.uint64(_STALE_BITS)


def _stored(labels: Labels, ts_in: Ints, vals_in: Floats, shard: str) -> _Stored:
    import numpy as np  # noqa: PLC0415 - the command line reads an API without numpy

    ts = np.ascontiguousarray(ts_in, dtype=np.int64)
    vals = np.ascontiguousarray(vals_in, dtype=np.float64)
    stale = int(np.count_nonzero(_stale_mask(vals))) if np.isnan(vals).any() else 0
    # The newest sample lower than the one before it: a range starting after it has no counter
    # reset (NaN compares false, as in Prometheus's reset detection).
    dec = np.flatnonzero(vals[1:] < vals[:-1])
    dec_ts = int(ts[dec[-1] + 1]) if dec.size else _OLDEST
    part = next((v for k, v in labels if k == shard), "")
    return _Stored(labels, array("q", ts.tobytes()), array("d", vals.tobytes()), stale=stale, dec_ts=dec_ts,
                   part=part)


class _Source:
    """What the evaluator selects from: the series fetched for each selector of one chunk."""

    def __init__(self, by_selector: dict[ast.VectorSelector, list[_Stored]], samples: int, reach_ms: int) -> None:
        self.by_selector = by_selector
        self.samples = samples  # held, for sizing the next chunk
        self.reach_ms = reach_ms  # how far before the first evaluation the selectors read

    def select(self, sel: ast.VectorSelector, parts: Collection[str] | None = None) -> Sequence[_Stored]:
        return self.by_selector.get(sel, ())


def _matcher_key(sel: ast.VectorSelector) -> tuple[tuple[str, str, str], ...]:
    return tuple(sorted((m.name, m.op, m.value) for m in sel.matchers))


def fetch(reader: HistoryReader, expr: ast.Expr, first_ms: int, last_ms: int, *,
          lookback_ms: int = LOOKBACK_MS, shard: str = "node") -> _Source:
    """The series every selector of ``expr`` reads for evaluations in ``[first_ms, last_ms]``:
    one ``select`` per distinct matcher set (over the union of its selectors' ranges), sorted by
    labels as Prometheus's block querier returns them (which sets the order ``sum`` adds in)."""
    windows = selector_windows(expr, first_ms, last_ms, lookback_ms)
    groups: dict[tuple[tuple[str, str, str], ...], list[ast.VectorSelector]] = {}
    for sel in windows:
        groups.setdefault(_matcher_key(sel), []).append(sel)
    by_selector: dict[ast.VectorSelector, list[_Stored]] = {}
    samples = 0
    for sels in groups.values():
        lo = min(windows[s][0] for s in sels)
        hi = max(windows[s][1] for s in sels)
        found = [_stored(from_map(s.labels), s.ts_ms, s.values, shard)
                 for s in reader.select(sels[0].matchers, lo, hi) if len(s.ts_ms)]
        found.sort(key=lambda s: s.labels)
        samples += sum(len(s.ts) for s in found)
        for sel in sels:
            by_selector[sel] = found
    reach = max([first_ms - lo for lo, _hi in windows.values()] + [0])
    return _Source(by_selector, samples, reach)


# --- queries ------------------------------------------------------------------------------------
@dataclass
class Scalar:
    t_ms: int
    value: float


@dataclass
class String:
    t_ms: int
    value: str


@dataclass
class InstantVector:
    t_ms: int
    samples: Vector
    ordered: bool  # the expression ordered it (sort, sort_desc, topk, bottomk): keep that order


@dataclass
class RangeMatrix:
    """Series with their samples; ``series`` may be a stream (one pass)."""

    start_ms: int
    end_ms: int
    series: Iterator[tuple[Labels, Sequence[int], Sequence[float]]]


InstantResult = Scalar | String | InstantVector | RangeMatrix
_ORDERING = frozenset({"sort", "sort_desc"})


def keeps_order(expr: ast.Expr) -> bool:
    """Whether the expression orders its answer (``sort``, ``sort_desc``, ``topk``, ``bottomk``)."""
    top = ast.unwrap(expr)
    return (isinstance(top, ast.Call) and top.func in _ORDERING) or \
        (isinstance(top, ast.Aggregate) and top.op in ("topk", "bottomk"))


class _Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.monotonic() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise QueryError(f"query timed out after {self.seconds:g}s; narrow the selector or the range")


def instant_query(reader: HistoryReader, expr: ast.Expr, t_ms: int, *, timeout: float | None = None,
                  lookback_ms: int = LOOKBACK_MS) -> InstantResult:
    expr = pin_start_end(expr, t_ms, t_ms)
    top = ast.unwrap(expr)
    if isinstance(top, ast.MatrixSelector):
        return RangeMatrix(*_matrix_window(top, t_ms), _stream_matrix(reader, top, t_ms, _Deadline(timeout)))
    try:
        val = Evaluator(fetch(reader, expr, t_ms, t_ms, lookback_ms=lookback_ms), t_ms, lookback_ms=lookback_ms,
                        query_ms=t_ms).eval(expr)
    except AlertsError as err:
        raise QueryError(str(err)) from None
    if isinstance(val, float):
        return Scalar(t_ms, val)
    if isinstance(val, str):
        return String(t_ms, val)
    if expr.type == ast.MATRIX:  # a subquery
        lo, hi = _matrix_window(top, t_ms)
        return RangeMatrix(lo, hi, iter([(rs.labels, rs.ts, rs.vals) for rs in val
                                         if isinstance(rs, RangeSeries)]))
    return InstantVector(t_ms, val, keeps_order(expr))  # type: ignore[arg-type]


def matrix_window(expr: ast.Expr, t_ms: int) -> tuple[int, int]:
    """The time range an instant query's range-vector answer covers (for a trend's axis)."""
    return _matrix_window(ast.unwrap(pin_start_end(expr, t_ms, t_ms)), t_ms)


def _matrix_window(node: ast.Expr, t_ms: int) -> tuple[int, int]:
    if isinstance(node, ast.MatrixSelector):
        sel = node.vector
        end = (sel.at_ms if sel.at == ast.AT_TIME else t_ms) - sel.offset_ms
        return end - node.range_ms, end
    if isinstance(node, ast.Subquery):
        end = (node.at_ms if node.at == ast.AT_TIME else t_ms) - node.offset_ms
        return end - node.range_ms, end
    return t_ms, t_ms


def _stream_matrix(reader: HistoryReader, node: ast.MatrixSelector, t_ms: int,
                   deadline: _Deadline) -> Iterator[tuple[Labels, Sequence[int], Sequence[float]]]:
    """The stored samples of a range selector, series by series as the store yields them, stale
    markers left out (Prometheus's matrix selector)."""
    import numpy as np  # noqa: PLC0415 - the command line reads an API without numpy

    lo, hi = _matrix_window(node, t_ms)
    for s in reader.select(node.vector.matchers, lo, hi):
        deadline.check()
        ts = np.asarray(s.ts_ms, dtype=np.int64)
        vals = np.asarray(s.values, dtype=np.float64)
        keep = (ts >= lo) & (ts <= hi) & ~_stale_mask(vals)
        if keep.any():
            yield from_map(s.labels), ts[keep].tolist(), vals[keep].tolist()


def check_range(start_ms: int, end_ms: int, step_ms: int) -> int:
    """The number of steps; QueryError when the range is backwards or has too many."""
    if step_ms <= 0:
        raise QueryError("the step must be positive")
    if end_ms < start_ms:
        raise QueryError("the range ends before it starts (--until before --since)")
    steps = (end_ms - start_ms) // step_ms + 1
    if steps > MAX_STEPS:
        least = math.ceil((end_ms - start_ms) / 1000 / (MAX_STEPS - 1))
        raise QueryError(f"{steps} steps: more than {MAX_STEPS} points per series; give a step of at least {least}s")
    return steps


def range_query(reader: HistoryReader, expr: ast.Expr, start_ms: int, end_ms: int, step_ms: int, *,
                chunk_ms: int = CHUNK_MS, chunk_samples: int | None = CHUNK_SAMPLES, timeout: float | None = None,
                lookback_ms: int = LOOKBACK_MS) -> Iterator[tuple[int, Vector]]:
    """``(t, vector)`` for every step, oldest first; a scalar expression gives one series
    without labels. Samples are fetched chunk by chunk: the first ``chunk_ms`` of steps, then
    as many steps as hold about ``chunk_samples`` samples at the density found so far (None:
    every chunk ``chunk_ms``)."""
    if expr.type not in (ast.VECTOR, ast.SCALAR):
        raise QueryError(f"invalid expression type {expr.type!r} for range query, must be scalar or instant "
                         "vector (an instant query returns the samples of a range: drop --since/--step)")
    n = check_range(start_ms, end_ms, step_ms)
    expr = pin_start_end(expr, start_ms, end_ms)
    deadline = _Deadline(timeout)
    per_chunk = max(1, chunk_ms // step_ms)
    first = 0
    while first < n:
        times = [start_ms + k * step_ms for k in range(first, min(n, first + per_chunk))]
        first += len(times)
        source = fetch(reader, expr, times[0], times[-1], lookback_ms=lookback_ms)
        for t in times:
            deadline.check()
            try:
                val = Evaluator(source, t, lookback_ms=lookback_ms, query_ms=t).eval(expr)
            except AlertsError as err:
                raise QueryError(f"at {t / 1000:.3f}: {err}") from None
            yield t, [((), val)] if isinstance(val, float) else val  # type: ignore[misc]
        if chunk_samples is not None:
            per_chunk = _next_chunk(source, times, step_ms, per_chunk, chunk_samples)


def _next_chunk(source: _Source, times: list[int], step_ms: int, steps: int, budget: int) -> int:
    """Steps for the next chunk: what holds about ``budget`` samples at this chunk's density
    (samples over the time it read), at most 8 times this chunk's (a history that was empty
    so far may fill up) and at least one step."""
    read_ms = times[-1] - times[0] + step_ms + source.reach_ms
    if not source.samples:
        return steps * 8
    want_ms = budget * read_ms / source.samples - source.reach_ms
    return max(1, min(steps * 8, int(want_ms // step_ms)))


def collect_matrix(steps: Iterator[tuple[int, Vector]],
                   max_points: int = MAX_POINTS) -> list[tuple[Labels, array[int], array[float]]]:
    """A range query's answer as series (sorted by labels, as Prometheus returns a matrix),
    held compactly (16 bytes a point); QueryError past ``max_points``."""
    series: dict[Labels, tuple[array[int], array[float]]] = {}
    points = 0
    for t, vec in steps:
        points += len(vec)
        if points > max_points:
            raise QueryError(f"the answer would hold more than {max_points:,} points; narrow the selector, "
                             "shorten the range or raise the step")
        for labels, v in vec:
            got = series.get(labels)
            if got is None:
                got = series[labels] = (array("q"), array("d"))
            got[0].append(t)
            got[1].append(v)
    return [(lb, ts, vals) for lb, (ts, vals) in sorted(series.items(), key=lambda kv: kv[0])]
