"""Instant evaluation of a parsed expression at one timestamp over a series source.

Semantics are those of Prometheus 2.42 for instant queries (what rule evaluation runs):
instant selectors take the newest sample at or before ``t`` within the 5-minute lookback, and a
stale marker ends a series; range selectors take the samples in the closed interval
``[t - range, t]`` (2.x; Prometheus 3 made it left-open); ``offset`` shifts and ``@`` pins the
time a selector or subquery reads; a subquery evaluates its expression at the multiples of its
step inside its range.

For the engine's incremental evaluation the evaluator can work on a subset of the series
(``parts``: the values of the shard label whose inputs changed) and, with ``track``, records
per part the earliest time at which the result could change without any new sample (a sample
leaving the lookback or a range, a future sample becoming visible, a value that moves with the
clock): see ``alerts/engine.py``.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Sequence

from alerts.errors import EvalError
from alerts.promql import ast, functions, gofloat
from alerts.promql.aggregate import aggregate
from alerts.promql.calls import call_instant
from alerts.promql.labels import NAME, Labels, drop_name, keep, render, without
from alerts.promql.values import (
    LOOKBACK_MS,
    NEVER,
    Matrix,
    RangeSeries,
    Sample,
    SeriesSource,
    Value,
    Vector,
    absent_labels,
    check_unique,
    is_stale,
)


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
    if op == "atan2":
        return functions.gomath.atan2(a, b)
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
_CMP: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge,
}
# Memoised match signatures per binary operator: more than the series one operator reads in a
# large fleet (2,500 nodes x 87 optical lanes), so a live fleet never starts over.
_SIG_CACHE_MAX = 1_000_000


class Evaluator:
    def __init__(self, source: SeriesSource, t_ms: int, *, lookback_ms: int = LOOKBACK_MS,
                 parts: Collection[str] | None = None, track: bool = False, by_part: bool = False,
                 default_step_ms: int = 60_000, query_ms: int | None = None, step_shift: int = 0,
                 shard_label: str = "node") -> None:
        self.source = source
        self.shard_label = shard_label
        self.t = t_ms
        self.query_t = t_ms if query_ms is None else query_ms  # what @ start()/end() mean
        self.lookback = lookback_ms
        self.parts = parts
        self.track = track
        self.by_part = by_part
        self.default_step = default_step_ms
        #: inside a subquery: how far this step is from the subquery's first step (see range_function)
        self.step_shift = step_shift
        #: earliest time the result may change without new samples: per part, and for all
        self.wake: dict[str, int] = {}
        self.wake_all = NEVER

    # -- wake-up bookkeeping ------------------------------------------------------------------
    def note(self, part: str, when: int) -> None:
        if self.by_part:
            if when < self.wake.get(part, NEVER):
                self.wake[part] = when
        elif when < self.wake_all:
            self.wake_all = when

    def note_all(self, when: int) -> None:
        self.wake_all = min(self.wake_all, when)

    def clock_dependent(self, part: str) -> None:
        """A value moved with the clock: evaluate that part again next time."""
        if self.track:
            self.note(part, self.t + 1)

    # -- dispatch -----------------------------------------------------------------------------
    def eval(self, node: ast.Expr) -> Value:
        if isinstance(node, ast.VectorSelector):
            return self.vector_selector(node)
        if isinstance(node, ast.Binary):
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Aggregate):
            return aggregate(self, node)
        if isinstance(node, ast.NumberLiteral):
            return node.value
        if isinstance(node, ast.Paren):
            return self.eval(node.expr)
        if isinstance(node, ast.StringLiteral):
            return node.value
        if isinstance(node, ast.Unary):
            val = self.eval(node.expr)
            if isinstance(val, float):
                return -val
            assert isinstance(val, list)
            return check_unique([(drop_name(lb), -v) for lb, v in val])  # type: ignore[misc]
        if isinstance(node, ast.MatrixSelector):
            return self.matrix_selector(node)
        if isinstance(node, ast.Subquery):
            return self.subquery(node)
        raise EvalError(f"cannot evaluate {type(node).__name__}")

    def eval_vector(self, node: ast.Expr) -> Vector:
        """A rule's result: a vector, or a scalar as a one-sample vector without labels."""
        val = self.eval(node)
        if isinstance(val, float):
            return [((), val)]
        if not isinstance(val, list) or (val and isinstance(val[0], RangeSeries)) or node.type == ast.MATRIX:
            raise EvalError("rule result is not a vector or scalar")
        return val  # type: ignore[return-value]

    def vec(self, node: ast.Expr) -> Vector:
        val = self.eval(node)
        assert isinstance(val, list)
        return val  # type: ignore[return-value]

    def scalar(self, node: ast.Expr) -> float:
        val = self.eval(node)
        assert isinstance(val, float)
        return val

    def time_of(self, offset_ms: int, at: str, at_ms: int) -> tuple[int, bool]:
        """The time a selector or subquery reads, and whether ``@ <time>`` pins it (``@ start()``
        and ``@ end()`` follow the query time, which moves with the clock)."""
        if at == ast.AT_TIME:
            return at_ms - offset_ms, True
        if at:
            return self.query_t - offset_ms, False
        return self.t - offset_ms, False

    # -- selectors ----------------------------------------------------------------------------
    def vector_selector(self, node: ast.VectorSelector, with_ts: list[int] | None = None,
                        keep: Callable[[float], bool] | None = None) -> Vector:
        """``with_ts``: filled with each sample's own timestamp (for ``timestamp()``); ``keep``:
        only the samples whose value it accepts (a comparison with a constant, fused)."""
        out: Vector = []
        te, pinned = self.time_of(node.offset_ms, node.at, node.at_ms)
        lb = self.lookback
        oldest = te - lb
        track = self.track and not pinned
        shift = node.offset_ms + lb + 1  # a sample at ts drops out of the lookback at ts + shift
        isnan = math.isnan
        # Series come node by node: keep the earliest wake-up of the current node in locals.
        part: str | None = None
        soonest = NEVER
        for s in self.source.select(node, self.parts):
            ts = s.ts
            if not ts:
                continue
            last = ts[-1]
            if last <= te:  # the live case, inlined: the newest sample is the one
                if last < oldest:
                    continue
                v = s.vals[-1]
                if isnan(v) and is_stale(v):
                    continue
                wake = last + shift
                if keep is None or keep(v):
                    out.append((s.labels, v))
                    if with_ts is not None:
                        with_ts.append(last)
            else:
                i = bisect_right(ts, te) - 1
                wake = ts[i + 1] + node.offset_ms  # a future sample becomes visible
                if i >= 0 and ts[i] >= oldest:
                    v = s.vals[i]
                    if not (isnan(v) and is_stale(v)):
                        wake = min(wake, ts[i] + shift)
                        if keep is None or keep(v):
                            out.append((s.labels, v))
                            if with_ts is not None:
                                with_ts.append(ts[i])
            if track:
                if s.part is not part:
                    if part is not None:
                        self.note(part, soonest)
                    part, soonest = s.part, wake
                elif wake < soonest:
                    soonest = wake
        if track and part is not None:
            self.note(part, soonest)
        return out

    def matrix_selector(self, node: ast.MatrixSelector, flat_ok: bool = False, shift: int = 0) -> Matrix:
        """``flat_ok``: the function reading the range gives the same answer for any window of
        two or more equal values, so the oldest sample leaving such a window wakes nobody.
        ``shift``: read the window that much later, but only the samples of the unshifted one."""
        sel = node.vector
        te, pinned = self.time_of(sel.offset_ms, sel.at, sel.at_ms)
        start = te - node.range_ms
        if shift:
            start, te = start + shift, min(te, te + shift)
        track = self.track and not pinned
        leave = node.range_ms + 1 + sel.offset_ms
        out: Matrix = []
        for s in self.source.select(sel, self.parts):
            ts = s.ts
            if not ts:
                continue
            i, j = _window(ts, start, te)
            n = len(ts)
            if track:
                wake = ts[j] + sel.offset_ms if j < n else NEVER
                if i < j:
                    first = i
                    if flat_ok and j - i >= 3 and s.chg_ts <= ts[i] and not s.stale:
                        first = j - 2
                    wake = min(wake, ts[first] + leave)
                self.note(s.part, wake)
            if i >= j:
                continue
            if s.stale == 0:
                out.append(RangeSeries(s.labels, ts[i:j], s.vals[i:j], s.dec_ts > ts[i], s.part))
                continue
            pts = [(t, v) for t, v in zip(ts[i:j], s.vals[i:j], strict=True) if not is_stale(v)]
            if pts:
                # Stale markers break the ingest-time bookkeeping of decreases: let the functions scan.
                out.append(RangeSeries(s.labels, [p[0] for p in pts], [p[1] for p in pts], True, s.part))
        return out

    def subquery(self, node: ast.Subquery) -> Matrix:
        """The inner expression at every multiple of the step in ``[t - offset - range, t - offset]``."""
        te, pinned = self.time_of(node.offset_ms, node.at, node.at_ms)
        step = node.step_ms or self.default_step
        lo = te - node.range_ms
        first = -(-lo // step) * step  # the first multiple of the step at or after lo
        series: dict[Labels, tuple[list[int], list[float]]] = {}
        for t in range(first, te + 1, step):
            sub = Evaluator(self.source, t, lookback_ms=self.lookback, parts=self.parts,
                            default_step_ms=self.default_step, query_ms=self.query_t, step_shift=t - first,
                            shard_label=self.shard_label)
            val = sub.eval(node.expr)
            points: Vector = [((), val)] if isinstance(val, float) else val  # type: ignore[assignment]
            for lb, v in points:
                got = series.get(lb)
                if got is None:
                    got = series[lb] = ([], [])
                got[0].append(t)
                got[1].append(v)
        if self.track:
            if _follows_query_time(node.expr):
                self.note_all(self.t + 1)  # an inner @ start()/end() moves with every tick
            elif not pinned:
                # The set of steps changes when the next multiple enters or the oldest one leaves.
                nxt = (te // step + 1) * step
                self.note_all(min(nxt, first + node.range_ms + 1) + node.offset_ms)
        shard = self.shard_label
        return [RangeSeries(lb, ts, vals, True, next((v for k, v in lb if k == shard), ""))
                for lb, (ts, vals) in series.items()]

    def range_arg(self, node: ast.Expr, flat_ok: bool = False) -> tuple[Matrix, int, int]:
        """A function's range argument: its series, and the window's start and end."""
        node = ast.unwrap(node)
        if isinstance(node, ast.MatrixSelector):
            sel = node.vector
            te, _ = self.time_of(sel.offset_ms, sel.at, sel.at_ms)
            return self.matrix_selector(node, flat_ok), te - node.range_ms, te
        assert isinstance(node, ast.Subquery)
        te, _ = self.time_of(node.offset_ms, node.at, node.at_ms)
        return self.subquery(node), te - node.range_ms, te

    # -- functions ----------------------------------------------------------------------------
    def call(self, node: ast.Call) -> Value:
        name = node.func
        fn = functions.RANGE_FUNCTIONS.get(name)
        if fn is not None:
            return self.range_function(node, name, fn)
        if name == "absent_over_time":
            mat, _, _ = self.range_arg(node.args[0])
            return [] if mat else [(absent_labels(node.args[0]), 1.0)]
        return call_instant(self, node)

    _FAST = frozenset({"rate", "increase", "delta", "irate", "idelta", "count_over_time", "last_over_time",
                       "present_over_time"})

    def range_function(self, node: ast.Call, name: str, fn: functions.RangeFn) -> Vector:
        arg_index = 1 if name == "quantile_over_time" else 0
        arg = ast.unwrap(node.args[arg_index])
        scalars = tuple(self.scalar(a) for i, a in enumerate(node.args) if i != arg_index)
        if name == "holt_winters":
            problem = functions.check_holt_winters(*scalars)
            if problem:
                raise EvalError(problem)
        flat_ok = name in functions.FLAT_STABLE
        if name == "predict_linear" and self.step_shift and isinstance(arg, ast.MatrixSelector) and arg.vector.at:
            return self.shifted_prediction(arg, scalars)
        if isinstance(arg, ast.MatrixSelector) and name in self._FAST:
            fast = self.range_fast(name, arg)
            if fast is not None:
                return fast
        mat, start, end = self.range_arg(arg, flat_ok)
        ctx = functions.RangeCtx(start, end, end - start, self.t, scalars)
        keep_name = name == "last_over_time"  # a selector in disguise: Prometheus 2.x keeps the name
        clocked = name in functions.TIME_DEPENDENT
        out: Vector = []
        for rs in mat:
            if name in ("rate", "increase") and not rs.may_reset:
                v = functions.extrapolated_rate(rs.ts, rs.vals, ctx, is_counter=True, is_rate=name == "rate",
                                                may_reset=False)
            else:
                v = fn(rs.ts, rs.vals, ctx)
            if v is None:
                continue
            # A prediction moves with the clock; a rate only while its counter moved in the window.
            if clocked and (v != 0 or name == "predict_linear"):
                self.clock_dependent(rs.part)
            out.append((rs.labels if keep_name else drop_name(rs.labels), v))
        return check_unique(out)

    def shifted_prediction(self, arg: ast.MatrixSelector, scalars: tuple[float, ...]) -> Vector:
        """Prometheus 2.42 inside a subquery: ``predict_linear`` (an "@-unsafe" function) of a
        range selector pinned by ``@`` reads its window shifted by the step's distance from the
        subquery's first step, yet sees only the samples of the pinned window (its select
        hints), so later steps lose samples. Reproduced so such subqueries give promtool's
        answers (README: the same for an @-pinned subquery argument is not reproduced)."""
        shift = self.step_shift
        sel = arg.vector
        te, _ = self.time_of(sel.offset_ms, sel.at, sel.at_ms)
        ctx = functions.RangeCtx(te + shift - arg.range_ms, te + shift, arg.range_ms, self.t, scalars)
        out: Vector = []
        for rs in self.matrix_selector(arg, shift=shift):
            v = functions.RANGE_FUNCTIONS["predict_linear"](rs.ts, rs.vals, ctx)
            if v is not None:
                out.append((drop_name(rs.labels), v))
        return check_unique(out)

    def range_fast(self, name: str, arg: ast.MatrixSelector) -> Vector | None:
        """The functions that need only the window's ends, read in place without copying the
        window, for series without stale markers (the others take the general path)."""
        sel = arg.vector
        series = self.source.select(sel, self.parts)
        if any(s.stale for s in series):
            return None
        te, pinned = self.time_of(sel.offset_ms, sel.at, sel.at_ms)
        start, end = te - arg.range_ms, te
        track = self.track and not pinned
        leave = arg.range_ms + 1 + sel.offset_ms
        counter, is_rate = name in ("rate", "increase"), name == "rate"
        extrapolated = name in ("rate", "increase", "delta")
        flat_ok = name != "count_over_time"
        ctx = functions.RangeCtx(start, end, arg.range_ms, self.t)
        out: Vector = []
        for s in series:
            ts = s.ts
            if not ts:
                continue
            i, j = _window(ts, start, end)
            n_all = len(ts)
            n = j - i
            if track:
                wake = ts[j] + sel.offset_ms if j < n_all else NEVER
                if n > 0:
                    first = j - 2 if flat_ok and n >= 3 and s.chg_ts <= ts[i] else i
                    wake = min(wake, ts[first] + leave)
                self.note(s.part, wake)
            if n <= 0:
                continue
            vals = s.vals
            if name == "count_over_time":
                out.append((drop_name(s.labels), float(n)))
                continue
            if name == "present_over_time":
                out.append((drop_name(s.labels), 1.0))
                continue
            if name == "last_over_time":
                out.append((s.labels, vals[j - 1]))
                continue
            if n < 2:
                continue
            v: float | None
            if not extrapolated:
                v = functions.instant_value(ts[j - 2:j], vals[j - 2:j], is_rate=name == "irate")
            elif counter and s.dec_ts > ts[i]:  # a reset inside the window: the full computation
                v = functions.extrapolated_rate(ts[i:j], vals[i:j], ctx, is_counter=True, is_rate=is_rate)
            else:
                v = functions.extrapolate(vals[j - 1] - vals[i], ts[i], ts[j - 1], vals[i], n, ctx=ctx,
                                          is_counter=counter, is_rate=is_rate)
            if v is None:
                continue
            if extrapolated and v != 0 and track:
                self.note(s.part, self.t + 1)
            out.append((drop_name(s.labels), v))
        return check_unique(out)

    # -- binary operators ---------------------------------------------------------------------
    def binary(self, node: ast.Binary) -> Value:
        op = node.op
        if op in _COMPARISONS and not node.return_bool and isinstance(node.lhs, ast.VectorSelector) \
                and isinstance(node.rhs, ast.NumberLiteral):
            # The commonest rule, "metric > threshold", fused: no vector of every series is built.
            threshold = node.rhs.value
            cmp = _CMP[op]
            return self.vector_selector(node.lhs, keep=lambda v: cmp(v, threshold))
        lhs = self.eval(node.lhs)
        rhs = self.eval(node.rhs)
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
        return check_unique(self.vector_vector(op, lv, rv, m, node.return_bool))

    def vector_scalar(self, op: str, vec: Vector, scalar: float, swap: bool, return_bool: bool) -> Vector:
        out: Vector = []
        if op in _COMPARISONS:
            cmp = _CMP[op]
            if not return_bool:
                # The vector's value is kept even when it is on the right.
                if swap:
                    return [s for s in vec if cmp(scalar, s[1])]
                return [s for s in vec if cmp(s[1], scalar)]
            for lb, v in vec:
                hit = cmp(scalar, v) if swap else cmp(v, scalar)
                out.append((drop_name(lb), 1.0 if hit else 0.0))
            return check_unique(out)
        keep_name = op == "atan2"  # Prometheus drops the name for + - * / % ^ only
        for lb, v in vec:
            out.append((lb if keep_name else drop_name(lb), _arith(op, scalar, v) if swap else _arith(op, v, scalar)))
        return check_unique(out)

    @staticmethod
    def _signature(m: ast.VectorMatching) -> Callable[[Labels], Labels]:
        names = m.labels
        fn: Callable[[Labels], Labels] = (lambda lb: keep(lb, names)) if m.on else (lambda lb: without(lb, names))
        cache = m.cache
        if len(cache) > _SIG_CACHE_MAX:  # series churn: start over rather than grow without bound
            cache.clear()

        # Series label sets repeat every evaluation, so their match signatures are memoised on
        # the expression node.
        # A signature is shared by many series (a port's lanes, a GPU's links): kept once, as
        # its own entry (the signature of a signature is itself).
        def sig(lb: Labels) -> Labels:
            got = cache.get(lb)
            if got is None:
                got = fn(lb)
                got = cache[lb] = cache.setdefault(got, got)
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
        cmp = _CMP.get(op)
        drop = not comparison and op != "atan2"
        include = m.include
        matched: dict[Labels, set[Labels] | None] = {}
        out: Vector = []
        cache = m.cache
        swapped = card == "one-to-many"
        for ls in lhs:
            found = cache.get(ls[0])
            k = sig(ls[0]) if found is None else found
            rs = right.get(k)
            if rs is None:
                continue
            vl, vr = ls[1], rs[1]
            if swapped:
                vl, vr = vr, vl
            if cmp is not None:
                hit = cmp(vl, vr)
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


def _window(ts: Sequence[int], start: int, end: int) -> tuple[int, int]:
    """The indexes ``[i, j)`` of the samples in ``[start, end]`` (the live case without a search
    at the end)."""
    return bisect_left(ts, start), (len(ts) if ts[-1] <= end else bisect_right(ts, end))


def _follows_query_time(node: ast.Expr) -> bool:
    return any(isinstance(n, (ast.VectorSelector, ast.Subquery)) and n.at in (ast.AT_START, ast.AT_END)
               for n in ast.walk(node))


def evaluate(expr: ast.Expr, source: SeriesSource, t_ms: int) -> Vector:
    """Evaluate a rule expression at ``t_ms``; a scalar result becomes a one-sample vector."""
    return Evaluator(source, t_ms).eval_vector(expr)
