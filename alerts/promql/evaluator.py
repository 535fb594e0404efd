"""Instant evaluation of a parsed expression at one timestamp over a series source.

Semantics are those of Prometheus 2.42 for instant queries (what rule evaluation runs):
instant selectors take the newest sample at or before ``t`` within the 5-minute lookback, and a
stale marker ends a series; range selectors take the samples in the closed interval
``[t - range, t]`` (2.x; Prometheus 3 made it left-open).
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, Union

from alerts.errors import EvalError
from alerts.promql import ast, functions, gofloat
from alerts.promql.labels import NAME, Labels, drop_name, keep, render, without

LOOKBACK_MS = 5 * 60 * 1000

Sample = tuple[Labels, float]
Vector = list[Sample]
MatrixSeries = tuple[Labels, Sequence[int], Sequence[float], bool]  # labels, ts, values, may decrease
Value = Union[float, str, Vector, list[MatrixSeries]]  # noqa: UP007 - a runtime alias on 3.10


# A stale marker is a NaN with a payload no arithmetic produces (Prometheus uses 0x7ff0000000000002,
# a signalling NaN; the quiet variant here survives any FPU path unchanged). Stored in float arrays
# like any value; told apart from an ordinary NaN by its bits.
_STALE_BITS = 0x7FF8000000000002
_STALE_BYTES = struct.pack("<Q", _STALE_BITS)
STALE_NAN: float = struct.unpack("<d", _STALE_BYTES)[0]


def is_stale(v: float) -> bool:
    return math.isnan(v) and struct.pack("<d", v) == _STALE_BYTES


class SeriesData(Protocol):
    """One stored series: ``ts`` ascending integer milliseconds; ``vals`` floats with stale
    markers as ``STALE_NAN``; ``stale`` counts the markers (0 lets range reads skip filtering);
    ``dec_ts`` is the time of the newest sample lower than its predecessor."""

    @property
    def labels(self) -> Labels: ...
    @property
    def ts(self) -> Sequence[int]: ...
    @property
    def vals(self) -> Sequence[float]: ...
    @property
    def stale(self) -> int: ...
    @property
    def dec_ts(self) -> int: ...


class SeriesSource(Protocol):
    def select(self, sel: ast.VectorSelector) -> Iterable[SeriesData]:
        """Every series matching the selector's matchers, in creation order (as Prometheus)."""


def instant_value(s: SeriesData, t: int, lookback: int = LOOKBACK_MS) -> float | None:
    ts = s.ts
    n = len(ts)
    if n == 0:
        return None
    if ts[-1] <= t:
        i = n - 1
    else:
        i = bisect_right(ts, t) - 1
        if i < 0:
            return None
    if ts[i] < t - lookback:
        return None
    v = s.vals[i]
    if math.isnan(v) and is_stale(v):
        return None
    return v


def range_points(s: SeriesData, start: int, end: int) -> tuple[Sequence[int], Sequence[float], bool]:
    """Samples in ``[start, end]`` without stale markers, and whether a value may decrease
    within them (a counter reset), known from ``dec_ts`` without scanning."""
    ts = s.ts
    i = bisect_left(ts, start)
    j = len(ts) if ts and ts[-1] <= end else bisect_right(ts, end)
    if i >= j:
        return (), (), False
    if s.stale == 0:
        return ts[i:j], s.vals[i:j], s.dec_ts > ts[i]
    pts = [(t, v) for t, v in zip(ts[i:j], s.vals[i:j], strict=True) if not is_stale(v)]
    # Stale markers break the ingest-time bookkeeping of decreases: let the functions scan.
    return [p[0] for p in pts], [p[1] for p in pts], True


def _absent_labels(node: ast.Expr) -> Labels:
    """Labels of ``absent(sel)``: the selector's equality matchers, minus any label that also
    has another matcher (Prometheus ``createLabelsForAbsentFunction``)."""
    if isinstance(node, ast.MatrixSelector):
        node = node.vector
    if not isinstance(node, ast.VectorSelector):
        return ()
    out: dict[str, str] = {}
    drop: set[str] = set()
    for m in node.matchers:
        if m.name == NAME:
            continue
        if m.op == "=" and m.name not in out:
            out[m.name] = m.value
        else:
            drop.add(m.name)
    return tuple(sorted((k, v) for k, v in out.items() if k not in drop and v != ""))


def _check_unique(vec: Vector) -> Vector:
    if len(vec) > 1 and len({s[0] for s in vec}) != len(vec):
        raise EvalError("vector cannot contain metrics with the same labelset")
    return vec


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return gofloat.div(a, b)
    if op == "%":
        return gofloat.mod(a, b)
    if op == "^":
        return gofloat.power(a, b)
    raise EvalError(f"operator {op!r} not allowed for arithmetic")


def _compare(op: str, a: float, b: float) -> bool:
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == ">":
        return a > b
    if op == "<":
        return a < b
    if op == ">=":
        return a >= b
    if op == "<=":
        return a <= b
    raise EvalError(f"operator {op!r} is not a comparison")


_COMPARISONS = frozenset({"==", "!=", "<", ">", "<=", ">="})
_SIG_CACHE_MAX = 200_000


class Evaluator:
    def __init__(self, source: SeriesSource, t_ms: int, lookback_ms: int = LOOKBACK_MS) -> None:
        self.source = source
        self.t = t_ms
        self.lookback = lookback_ms

    def eval(self, node: ast.Expr) -> Value:
        if isinstance(node, ast.NumberLiteral):
            return node.value
        if isinstance(node, ast.StringLiteral):
            return node.value
        if isinstance(node, ast.Paren):
            return self.eval(node.expr)
        if isinstance(node, ast.VectorSelector):
            return self.vector_selector(node)
        if isinstance(node, ast.MatrixSelector):
            return self.matrix_selector(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Aggregate):
            return self.aggregate(node)
        if isinstance(node, ast.Binary):
            return self.binary(node)
        if isinstance(node, ast.Unary):
            val = self.eval(node.expr)
            if isinstance(val, float):
                return -val
            assert isinstance(val, list)
            return _check_unique([(drop_name(lb), -v) for lb, v in val])  # type: ignore[misc]
        raise EvalError(f"cannot evaluate {type(node).__name__}")

    def eval_vector(self, node: ast.Expr) -> Vector:
        val = self.eval(node)
        if isinstance(val, float):
            return [((), val)]
        if not isinstance(val, list):
            raise EvalError(f"expression result is a {type(val).__name__}, not a vector or scalar")
        return val  # type: ignore[return-value]

    # -- selectors ----------------------------------------------------------------------------
    def vector_selector(self, node: ast.VectorSelector) -> Vector:
        out: Vector = []
        t, lb = self.t, self.lookback
        oldest = t - lb
        isnan = math.isnan
        for s in self.source.select(node):
            ts = s.ts
            if not ts:
                continue
            last = ts[-1]
            if last <= t:  # the live case, inlined: the newest sample is the one
                if last < oldest:
                    continue
                v = s.vals[-1]
                if isnan(v) and is_stale(v):
                    continue
                out.append((s.labels, v))
                continue
            found = instant_value(s, t, lb)
            if found is not None:
                out.append((s.labels, found))
        return out

    def matrix_selector(self, node: ast.MatrixSelector) -> list[MatrixSeries]:
        start, end = self.t - node.range_ms, self.t
        out: list[MatrixSeries] = []
        for s in self.source.select(node.vector):
            ts, vals, may_decrease = range_points(s, start, end)
            if ts:
                out.append((s.labels, ts, vals, may_decrease))
        return out

    # -- functions ----------------------------------------------------------------------------
    def call(self, node: ast.Call) -> Value:
        name = node.func
        if name == "time":
            return self.t / 1000
        arg0 = node.args[0] if node.args else None
        if isinstance(arg0, ast.MatrixSelector):
            return self.range_function(name, arg0)
        assert arg0 is not None
        if name == "vector":
            val = self.eval(arg0)
            assert isinstance(val, float)
            one: Vector = [((), val)]
            return one
        vec = self.eval_vector(arg0)
        if name == "absent":
            return [] if vec else [(_absent_labels(arg0), 1.0)]
        if name == "scalar":
            return vec[0][1] if len(vec) == 1 else math.nan
        if name == "abs":
            return _check_unique([(drop_name(lb), abs(v)) for lb, v in vec])
        scalars = [self.eval(a) for a in node.args[1:]]
        assert all(isinstance(x, float) for x in scalars)
        bounds: list[float] = scalars  # type: ignore[assignment]
        if name == "clamp_min":
            return _check_unique([(drop_name(lb), gofloat.fmax(v, bounds[0])) for lb, v in vec])
        if name == "clamp_max":
            return _check_unique([(drop_name(lb), gofloat.fmin(v, bounds[0])) for lb, v in vec])
        if name == "clamp":
            lo, hi = bounds
            if hi < lo:
                return []
            return _check_unique([(drop_name(lb), functions.clamp(v, lo, hi)) for lb, v in vec])
        raise EvalError(f"function {name}() has no evaluator")

    _FAST = frozenset({"rate", "increase", "delta", "irate", "count_over_time", "last_over_time"})

    def range_fast(self, name: str, arg: ast.MatrixSelector) -> Vector | None:
        """The functions that need only the window's ends, read in place without copying the
        window, for series without stale markers (the others take the general path)."""
        if name not in self._FAST:
            return None
        start, end = self.t - arg.range_ms, self.t
        series = self.source.select(arg.vector)
        if any(s.stale for s in series):
            return None
        counter, is_rate = name != "delta", name == "rate"
        out: Vector = []
        for s in series:
            ts = s.ts
            if not ts:
                continue
            i = bisect_left(ts, start)
            j = len(ts) if ts[-1] <= end else bisect_right(ts, end)
            n = j - i
            if n <= 0:
                continue
            vals = s.vals
            v: float | None
            if name == "count_over_time":
                out.append((drop_name(s.labels), float(n)))
                continue
            if name == "last_over_time":
                out.append((s.labels, vals[j - 1]))
                continue
            if n < 2:
                continue
            if name == "irate":
                v = functions.irate(ts[j - 2:j], vals[j - 2:j])
            elif counter and s.dec_ts > ts[i]:  # a reset inside the window: the full computation
                v = functions.extrapolated_rate(ts[i:j], vals[i:j], start, end, range_ms=arg.range_ms,
                                                is_counter=True, is_rate=is_rate)
            else:
                v = functions.extrapolate(vals[j - 1] - vals[i], ts[i], ts[j - 1], vals[i], n, range_start=start,
                                          range_end=end, range_ms=arg.range_ms, is_counter=counter,
                                          is_rate=is_rate)
            if v is not None:
                out.append((drop_name(s.labels), v))
        return _check_unique(out)

    def range_function(self, name: str, arg: ast.MatrixSelector) -> Vector:
        if name != "absent_over_time":
            fast = self.range_fast(name, arg)
            if fast is not None:
                return fast
        mat = self.matrix_selector(arg)
        if name == "absent_over_time":
            return [] if mat else [(_absent_labels(arg), 1.0)]
        out: Vector = []
        start, end = self.t - arg.range_ms, self.t
        if name in ("rate", "increase", "delta"):
            counter, is_rate = name != "delta", name == "rate"
            for lb, ts, vals, may_decrease in mat:
                v = functions.extrapolated_rate(ts, vals, start, end, range_ms=arg.range_ms,
                                                 is_counter=counter, is_rate=is_rate, may_reset=may_decrease)
                if v is not None:
                    out.append((drop_name(lb), v))
        elif name == "irate":
            for lb, ts, vals, _dec in mat:
                v = functions.irate(ts, vals)
                if v is not None:
                    out.append((drop_name(lb), v))
        else:
            fn = functions.OVER_TIME[name]
            # last_over_time acts like a selector and keeps the metric name (Prometheus 2.x).
            keep_name = name == "last_over_time"
            for lb, _ts, vals, may_decrease in mat:
                value = 0.0 if name == "resets" and not may_decrease else fn(vals)
                out.append((lb if keep_name else drop_name(lb), value))
        return _check_unique(out)

    # -- aggregation --------------------------------------------------------------------------
    def aggregate(self, node: ast.Aggregate) -> Vector:
        vec = self.eval_vector(node.expr)
        op = node.op
        groups: dict[Labels, list[float]] = {}  # key -> [value, count, mean]
        for lb, v in vec:
            key = without(lb, node.grouping) if node.without else (
                keep(lb, node.grouping) if node.grouping else ())
            g = groups.get(key)
            if g is None:
                groups[key] = [v, 1.0, v]
                continue
            g[1] += 1
            if op == "sum":
                g[0] += v
            elif op == "min":
                if g[0] > v or math.isnan(g[0]):
                    g[0] = v
            elif op == "max":
                if g[0] < v or math.isnan(g[0]):
                    g[0] = v
            elif op == "avg":
                mean, count = g[2], g[1]
                if math.isinf(mean):
                    if math.isinf(v) and (mean > 0) == (v > 0):
                        continue
                    if not math.isinf(v) and not math.isnan(v):
                        continue
                g[2] = mean + (v / count - mean / count)
        out: Vector = []
        for key, g in groups.items():
            if op == "count":
                out.append((key, g[1]))
            elif op == "avg":
                out.append((key, g[2]))
            else:
                out.append((key, g[0]))
        return out

    # -- binary operators ---------------------------------------------------------------------
    def binary(self, node: ast.Binary) -> Value:
        lhs = self.eval(node.lhs)
        rhs = self.eval(node.rhs)
        op = node.op
        if isinstance(lhs, float) and isinstance(rhs, float):
            if op in _COMPARISONS:
                return 1.0 if _compare(op, lhs, rhs) else 0.0
            return _arith(op, lhs, rhs)
        if isinstance(lhs, float):
            assert isinstance(rhs, list)
            return self.vector_scalar(op, rhs, lhs, True, node.return_bool)  # type: ignore[arg-type]
        if isinstance(rhs, float):
            assert isinstance(lhs, list)
            return self.vector_scalar(op, lhs, rhs, False, node.return_bool)  # type: ignore[arg-type]
        assert isinstance(lhs, list) and isinstance(rhs, list) and node.matching is not None
        lv: Vector = lhs  # type: ignore[assignment]
        rv: Vector = rhs  # type: ignore[assignment]
        m = node.matching
        if op in ("and", "or", "unless"):
            return self.set_op(op, lv, rv, m)
        return _check_unique(self.vector_vector(op, lv, rv, m, node.return_bool))

    def vector_scalar(self, op: str, vec: Vector, scalar: float, swap: bool, return_bool: bool) -> Vector:
        out: Vector = []
        comparison = op in _COMPARISONS
        for lb, v in vec:
            a, b = (scalar, v) if swap else (v, scalar)
            if comparison:
                hit = _compare(op, a, b)
                if return_bool:
                    out.append((drop_name(lb), 1.0 if hit else 0.0))
                elif hit:
                    out.append((lb, v))  # the vector's value is kept even when it is on the right
            else:
                out.append((drop_name(lb), _arith(op, a, b)))
        return _check_unique(out)

    @staticmethod
    def _signature(m: ast.VectorMatching) -> Callable[[Labels], Labels]:
        names = m.labels
        fn: Callable[[Labels], Labels] = (lambda lb: keep(lb, names)) if m.on else (lambda lb: without(lb, names))
        cache = m.cache
        if len(cache) > _SIG_CACHE_MAX:  # series churn: start over rather than grow without bound
            cache.clear()

        # Series label sets repeat every evaluation, so their match signatures are memoised on
        # the expression node.
        def sig(lb: Labels) -> Labels:
            got = cache.get(lb)
            if got is None:
                got = cache[lb] = fn(lb)
            return got
        return sig

    def set_op(self, op: str, lhs: Vector, rhs: Vector, m: ast.VectorMatching) -> Vector:
        sig = self._signature(m)
        if op == "and":
            if not lhs or not rhs:
                return []
            rs = {sig(lb) for lb, _ in rhs}
            return [s for s in lhs if sig(s[0]) in rs]
        if op == "or":
            ls = {sig(lb) for lb, _ in lhs}
            return lhs + [s for s in rhs if sig(s[0]) not in ls]
        rs = {sig(lb) for lb, _ in rhs}
        return [s for s in lhs if sig(s[0]) not in rs]

    def vector_vector(self, op: str, lhs: Vector, rhs: Vector, m: ast.VectorMatching,
                      return_bool: bool) -> Vector:
        sig = self._signature(m)
        card = m.card
        if card == "one-to-many":
            lhs, rhs = rhs, lhs
        right: dict[Labels, Sample] = {}
        for s in rhs:
            k = sig(s[0])
            if k in right:
                side = "left" if card == "one-to-many" else "right"
                raise EvalError(
                    f"found duplicate series for the match group {render(k)} on the {side} hand-side of the "
                    f"operation: [{render(s[0])}, {render(right[k][0])}];many-to-many matching not allowed: "
                    "matching labels must be unique on one side")
            right[k] = s
        comparison = op in _COMPARISONS
        drop = not comparison
        include = m.include
        matched: dict[Labels, set[Labels] | None] = {}
        out: Vector = []
        for ls in lhs:
            k = sig(ls[0])
            rs = right.get(k)
            if rs is None:
                continue
            vl, vr = ls[1], rs[1]
            if card == "one-to-many":
                vl, vr = vr, vl
            if comparison:
                hit = _compare(op, vl, vr)
                value = vl
                if return_bool:
                    value = 1.0 if hit else 0.0
                elif not hit:
                    continue
            else:
                value = _arith(op, vl, vr)
            metric = self._result_metric(ls[0], rs[0], drop or return_bool, m, include)
            if card == "one-to-one":
                if k in matched:
                    raise EvalError("multiple matches for labels: many-to-one matching must be explicit "
                                    "(group_left/group_right)")
                matched[k] = None
            else:
                seen = matched.get(k)
                if seen is None:
                    seen = set()
                    matched[k] = seen
                elif metric in seen:
                    raise EvalError("multiple matches for labels: grouping labels must ensure unique matches")
                seen.add(metric)
            out.append((metric, value))
        return out

    @staticmethod
    def _result_metric(lhs: Labels, rhs: Labels, drop: bool, m: ast.VectorMatching,
                       include: tuple[str, ...]) -> Labels:
        d = dict(lhs)
        if drop:
            d.pop(NAME, None)
        if m.card == "one-to-one":
            if m.on:
                d = {k: v for k, v in d.items() if k in m.labels}
            else:
                for name in m.labels:
                    d.pop(name, None)
        if include:
            r = dict(rhs)
            for name in include:
                v = r.get(name, "")
                if v:
                    d[name] = v
                else:
                    d.pop(name, None)
        return tuple(sorted(d.items()))


def evaluate(expr: ast.Expr, source: SeriesSource, t_ms: int) -> Vector:
    """Evaluate a rule expression at ``t_ms``; a scalar result becomes a one-sample vector."""
    return Evaluator(source, t_ms).eval_vector(expr)
