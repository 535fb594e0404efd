"""PromQL function bodies with Prometheus 2.42's arithmetic (``promql/functions.go``,
``promql/quantile.go``), re-implemented from its documented behaviour and checked against
promtool: the same float operations in the same order, Kahan-compensated sums where Prometheus
uses them (``sum_over_time``, ``avg_over_time``, ``stddev/stdvar_over_time``, the linear
regression of ``deriv``/``predict_linear``), and Go's ``math`` (``gomath``) for the elementary
functions. Timestamps are integer milliseconds, as in Prometheus.

Range functions take the samples of one series inside the window (stale markers removed) and
a :class:`RangeCtx`; they return the output value or None (no output for that series).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from alerts.promql import gofloat, gomath

NAN = math.nan
INF = math.inf


@dataclass(slots=True)
class RangeCtx:
    start: int  # window start (ms), inclusive in 2.x
    end: int  # window end (ms) = evaluation time - offset
    range_ms: int
    t: int  # evaluation time (ms): predict_linear's intercept
    args: tuple[float, ...] = ()  # the scalar arguments (quantile_over_time's φ, holt_winters' factors ...)


def kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    """One step of Neumaier's compensated summation (Prometheus ``kahanSumInc``)."""
    t = total + inc
    if abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


# -- rate family --------------------------------------------------------------------------------
def extrapolated_rate(ts: Sequence[int], vals: Sequence[float], ctx: RangeCtx, *, is_counter: bool,
                      is_rate: bool, may_reset: bool = True) -> float | None:
    """``rate``/``increase``/``delta``: the change over the window, extrapolated towards the
    window edges when the first/last samples are within 1.1 average intervals of them
    (Prometheus ``extrapolatedRate``). None (no output) with fewer than two samples."""
    n = len(vals)
    if n < 2:
        return None
    result = vals[-1] - vals[0]
    # Most windows hold no counter reset; the windows know that without a scan (``may_reset``).
    if is_counter and may_reset:
        prev = vals[0]
        for cur in vals[1:]:
            if cur < prev:  # a counter reset: the counter restarted from zero
                result += prev
            prev = cur
    return extrapolate(result, ts[0], ts[-1], vals[0], n, ctx=ctx, is_counter=is_counter, is_rate=is_rate)


def extrapolate(result: float, first_t: int, last_t: int, first_v: float, n: int, *, ctx: RangeCtx,
                is_counter: bool, is_rate: bool) -> float:
    """The extrapolation step of ``extrapolatedRate``, given the (reset-corrected) change."""
    duration_to_start = (first_t - ctx.start) / 1000
    duration_to_end = (ctx.end - last_t) / 1000
    sampled_interval = (last_t - first_t) / 1000
    average_between = sampled_interval / (n - 1)
    if is_counter and result > 0 and first_v >= 0:
        # A counter cannot go below zero: do not extrapolate past the point where it would.
        duration_to_zero = sampled_interval * (first_v / result)
        duration_to_start = min(duration_to_start, duration_to_zero)
    threshold = average_between * 1.1
    extrapolate_to = sampled_interval
    extrapolate_to += duration_to_start if duration_to_start < threshold else average_between / 2
    extrapolate_to += duration_to_end if duration_to_end < threshold else average_between / 2
    factor = extrapolate_to / sampled_interval
    if is_rate:
        factor /= ctx.range_ms / 1000
    return result * factor


def instant_value(ts: Sequence[int], vals: Sequence[float], *, is_rate: bool) -> float | None:
    """``irate`` / ``idelta``: from the last two samples (Prometheus ``instantValue``)."""
    if len(vals) < 2:
        return None
    last, prev = vals[-1], vals[-2]
    result = last if is_rate and last < prev else last - prev  # irate: a counter reset
    interval = ts[-1] - ts[-2]
    if interval == 0:
        return None
    if is_rate:
        result /= interval / 1000
    return result


def _rate(ts: Sequence[int], vals: Sequence[float], ctx: RangeCtx) -> float | None:
    return extrapolated_rate(ts, vals, ctx, is_counter=True, is_rate=True)


def _increase(ts: Sequence[int], vals: Sequence[float], ctx: RangeCtx) -> float | None:
    return extrapolated_rate(ts, vals, ctx, is_counter=True, is_rate=False)


def _delta(ts: Sequence[int], vals: Sequence[float], ctx: RangeCtx) -> float | None:
    return extrapolated_rate(ts, vals, ctx, is_counter=False, is_rate=False)


def _irate(ts: Sequence[int], vals: Sequence[float], _ctx: RangeCtx) -> float | None:
    return instant_value(ts, vals, is_rate=True)


def _idelta(ts: Sequence[int], vals: Sequence[float], _ctx: RangeCtx) -> float | None:
    return instant_value(ts, vals, is_rate=False)


# -- over_time ----------------------------------------------------------------------------------
def avg_over_time(vals: Sequence[float]) -> float:
    # An incremental, compensated mean (no overflow of a plain sum), as Prometheus computes it.
    mean = c = 0.0
    count = 0.0
    for v in vals:
        count += 1
        if math.isinf(mean):
            if math.isinf(v) and (mean > 0) == (v > 0):
                continue  # Inf of the same sign: the mean is right already
            if not math.isinf(v) and not math.isnan(v):
                continue  # Inf += v - Inf would turn the mean into NaN
        mean, c = kahan_inc(v / count - mean / count, mean, c)
    if math.isinf(mean):
        return mean
    return mean + c


def sum_over_time(vals: Sequence[float]) -> float:
    total = c = 0.0
    for v in vals:
        total, c = kahan_inc(v, total, c)
    if math.isinf(total):
        return total
    return total + c


def min_over_time(vals: Sequence[float]) -> float:
    out = vals[0]
    for v in vals:
        if v < out or math.isnan(out):
            out = v
    return out


def max_over_time(vals: Sequence[float]) -> float:
    out = vals[0]
    for v in vals:
        if v > out or math.isnan(out):
            out = v
    return out


def stdvar_over_time(vals: Sequence[float]) -> float:
    count = mean = c_mean = aux = c_aux = 0.0
    for v in vals:
        count += 1
        delta = v - (mean + c_mean)
        mean, c_mean = kahan_inc(delta / count, mean, c_mean)
        aux, c_aux = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def stddev_over_time(vals: Sequence[float]) -> float:
    return math.sqrt(stdvar_over_time(vals))


def changes(vals: Sequence[float]) -> float:
    n = 0
    prev = vals[0]
    for cur in vals[1:]:
        if cur != prev and not (math.isnan(cur) and math.isnan(prev)):
            n += 1
        prev = cur
    return float(n)


def resets(vals: Sequence[float]) -> float:
    n = 0
    prev = vals[0]
    for cur in vals[1:]:
        if cur < prev:
            n += 1
        prev = cur
    return float(n)


def quantile(q: float, values: Sequence[float]) -> float:
    """Prometheus ``quantile``: linear interpolation between the closest ranks. Values sort
    as Prometheus's ``vectorByValueHeap`` sorts them: NaN first."""
    if not values or math.isnan(q):
        return NAN
    if q < 0:
        return -INF
    if q > 1:
        return INF
    ordered = sorted(values, key=lambda v: (not math.isnan(v), v))
    n = float(len(ordered))
    rank = q * (n - 1)
    lower = max(0.0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[int(lower)] * (1 - weight) + ordered[int(upper)] * weight


def linear_regression(ts: Sequence[int], vals: Sequence[float], intercept_t: int) -> tuple[float, float]:
    """Least squares over the samples, x in seconds from ``intercept_t`` (Prometheus
    ``linearRegression``, compensated sums)."""
    n = sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    init_y = vals[0]
    const_y = True
    for i, (t, v) in enumerate(zip(ts, vals, strict=True)):
        if const_y and i > 0 and v != init_y:
            const_y = False
        n += 1.0
        x = (t - intercept_t) / 1e3
        sum_x, c_x = kahan_inc(x, sum_x, c_x)
        sum_y, c_y = kahan_inc(v, sum_y, c_y)
        sum_xy, c_xy = kahan_inc(x * v, sum_xy, c_xy)
        sum_x2, c_x2 = kahan_inc(x * x, sum_x2, c_x2)
    if const_y:
        if math.isinf(init_y):
            return NAN, NAN
        return 0.0, init_y
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = gofloat.div(cov_xy, var_x)
    intercept = sum_y / n - slope * sum_x / n
    return slope, intercept


def _deriv(ts: Sequence[int], vals: Sequence[float], _ctx: RangeCtx) -> float | None:
    if len(vals) < 2:
        return None
    slope, _ = linear_regression(ts, vals, ts[0])
    return slope


def _predict_linear(ts: Sequence[int], vals: Sequence[float], ctx: RangeCtx) -> float | None:
    if len(vals) < 2:
        return None
    slope, intercept = linear_regression(ts, vals, ctx.t)
    return slope * ctx.args[0] + intercept


def _holt_winters(_ts: Sequence[int], vals: Sequence[float], ctx: RangeCtx) -> float | None:
    sf, tf = ctx.args
    if len(vals) < 2:
        return None
    s0 = 0.0
    s1 = vals[0]
    b = vals[1] - vals[0]
    for i in range(1, len(vals)):
        x = sf * vals[i]
        if i - 1 != 0:  # the trend is smoothed from the second step on
            b = tf * (s1 - s0) + (1 - tf) * b
        y = (1 - sf) * (s1 + b)
        s0, s1 = s1, x + y
    return s1


def check_holt_winters(sf: float, tf: float) -> str | None:
    """The error Prometheus raises for bad factors (Go ``%f`` prints 6 decimals)."""
    if sf <= 0 or sf >= 1:
        return f"invalid smoothing factor. Expected: 0 < sf < 1, got: {go_f(sf)}"
    if tf <= 0 or tf >= 1:
        return f"invalid trend factor. Expected: 0 < tf < 1, got: {go_f(tf)}"
    return None


def go_f(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:.6f}"


def _values_only(fn: Callable[[Sequence[float]], float]) -> Callable[[Sequence[int], Sequence[float], RangeCtx],
                                                                      float | None]:
    def wrapped(_ts: Sequence[int], vals: Sequence[float], _ctx: RangeCtx) -> float | None:
        return fn(vals)
    return wrapped


def _quantile_over_time(_ts: Sequence[int], vals: Sequence[float], ctx: RangeCtx) -> float | None:
    return quantile(ctx.args[0], vals)


RangeFn = Callable[[Sequence[int], Sequence[float], RangeCtx], "float | None"]

#: Functions of one range vector, by name. Every one drops the metric name except
#: ``last_over_time`` (a selector in disguise); ``absent_over_time`` is the evaluator's.
RANGE_FUNCTIONS: dict[str, RangeFn] = {
    "rate": _rate,
    "increase": _increase,
    "delta": _delta,
    "irate": _irate,
    "idelta": _idelta,
    "deriv": _deriv,
    "predict_linear": _predict_linear,
    "holt_winters": _holt_winters,
    "changes": _values_only(changes),
    "resets": _values_only(resets),
    "avg_over_time": _values_only(avg_over_time),
    "sum_over_time": _values_only(sum_over_time),
    "min_over_time": _values_only(min_over_time),
    "max_over_time": _values_only(max_over_time),
    "count_over_time": _values_only(lambda vals: float(len(vals))),
    "last_over_time": _values_only(lambda vals: vals[-1]),
    "present_over_time": _values_only(lambda _vals: 1.0),
    "stddev_over_time": _values_only(stddev_over_time),
    "stdvar_over_time": _values_only(stdvar_over_time),
    "quantile_over_time": _quantile_over_time,
}

#: Range functions whose value moves with the evaluation time even when no sample arrives
#: (extrapolation to the window edges, a prediction from "now"): the engine re-evaluates
#: them every tick while their value is not zero.
TIME_DEPENDENT = frozenset({"rate", "increase", "delta", "predict_linear"})

#: Range functions whose result over a window of equal values does not depend on how many
#: samples it holds (two or more): the engine need not wake when the oldest leaves.
FLAT_STABLE = frozenset({"rate", "increase", "delta", "irate", "idelta", "deriv", "changes", "resets",
                         "avg_over_time", "min_over_time", "max_over_time", "last_over_time",
                         "present_over_time", "stddev_over_time", "stdvar_over_time", "quantile_over_time"})


# -- instant-vector math (Prometheus ``simpleFunc``: the metric name is dropped) -----------------
def sgn(v: float) -> float:
    if v < 0:
        return -1.0
    if v > 0:
        return 1.0
    return v


def _ceil(v: float) -> float:
    return float(math.ceil(v)) if math.isfinite(v) else v


def _floor(v: float) -> float:
    return float(math.floor(v)) if math.isfinite(v) else v


def _sqrt(v: float) -> float:
    return math.sqrt(v) if v >= 0 else (v if math.isnan(v) else NAN)


MATH_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "ceil": _ceil,
    "floor": _floor,
    "sqrt": _sqrt,
    "exp": gomath.exp,
    "ln": gomath.log,
    "log2": gomath.log2,
    "log10": gomath.log10,
    "sgn": sgn,
    "sin": gomath.sin,
    "cos": gomath.cos,
    "tan": gomath.tan,
    "asin": gomath.asin,
    "acos": gomath.acos,
    "atan": gomath.atan,
    "sinh": gomath.sinh,
    "cosh": gomath.cosh,
    "tanh": gomath.tanh,
    "asinh": gomath.asinh,
    "acosh": gomath.acosh,
    "atanh": gomath.atanh,
    "deg": lambda v: v * 180 / math.pi,
    "rad": lambda v: v * math.pi / 180,
}


def round_to(v: float, to_nearest: float) -> float:
    """``round(v, to_nearest)``: the inverse is taken first, as Prometheus does (fewer
    representation errors for 0.1-like steps)."""
    inverse = gofloat.div(1.0, to_nearest)
    scaled = v * inverse + 0.5
    return gofloat.div(float(math.floor(scaled)) if math.isfinite(scaled) else scaled, inverse)


def clamp(v: float, lo: float, hi: float) -> float:
    return gomath.fmax(lo, gomath.fmin(hi, v))


# -- dates (UTC, from unix seconds truncated towards zero) ---------------------------------------
# Go's ``time`` computes dates from an unsigned count of seconds since a zero year far in the
# past; an int64 outside its range (NaN becomes MinInt64) wraps around. Done the same way, every
# input gives Go's answer.
_SECONDS_PER_DAY = 86400
_UNIX_TO_INTERNAL = (1969 * 365 + 1969 // 4 - 1969 // 100 + 1969 // 400) * _SECONDS_PER_DAY
_ABSOLUTE_ZERO_YEAR = -292277022399
_INTERNAL_TO_ABSOLUTE = -((_ABSOLUTE_ZERO_YEAR - 1) * 3652425 * _SECONDS_PER_DAY // 10000)
_DAYS_BEFORE = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365)


def _is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def civil_from_unix(seconds: int) -> tuple[int, int, int, int, int, int, int]:
    """(year, month, day, day of year from 0, hour, minute, weekday with Sunday 0) of a unix
    time in UTC, as Go's ``time.Unix(seconds, 0).UTC()`` reports them."""
    absolute = (seconds + _UNIX_TO_INTERNAL + _INTERNAL_TO_ABSOLUTE) & ((1 << 64) - 1)
    d = absolute // _SECONDS_PER_DAY
    n = d // 146097
    y = 400 * n
    d -= 146097 * n
    n = d // 36524
    n -= n >> 2
    y += 100 * n
    d -= 36524 * n
    n = d // 1461
    y += 4 * n
    d -= 1461 * n
    n = d // 365
    n -= n >> 2
    y += n
    d -= 365 * n
    year = y + _ABSOLUTE_ZERO_YEAR
    yday = day = d
    month = 0
    if _is_leap(year) and day >= 31 + 29 - 1:
        if day == 31 + 29 - 1:
            month, day = 2, 29
        else:
            day -= 1
    if not month:
        month = day // 31
        end = _DAYS_BEFORE[month + 1]
        if day >= end:
            month += 1
            begin = end
        else:
            begin = _DAYS_BEFORE[month]
        month += 1
        day = day - begin + 1
    hour = (absolute % _SECONDS_PER_DAY) // 3600
    minute = (absolute % 3600) // 60
    # The absolute zero day was a Monday.
    weekday = ((absolute + _SECONDS_PER_DAY) % (7 * _SECONDS_PER_DAY)) // _SECONDS_PER_DAY
    return year, month, day, yday, hour, minute, weekday


def date_part(name: str, v: float) -> float:
    year, month, day, yday, hour, minute, weekday = civil_from_unix(gomath.to_int64(v))
    if name == "year":
        return float(year)
    if name == "month":
        return float(month)
    if name == "day_of_month":
        return float(day)
    if name == "day_of_week":
        return float(weekday)
    if name == "day_of_year":
        return float(yday + 1)
    if name == "days_in_month":
        if month == 2:
            return 29.0 if _is_leap(year) else 28.0
        return 30.0 if month in (4, 6, 9, 11) else 31.0
    if name == "hour":
        return float(hour)
    if name == "minute":
        return float(minute)
    raise ValueError(name)


DATE_FUNCTIONS = frozenset({"year", "month", "day_of_month", "day_of_week", "day_of_year", "days_in_month",
                            "hour", "minute"})


# -- classic histograms -------------------------------------------------------------------------
def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """``histogram_quantile`` over classic ``le`` buckets (upper bound, cumulative count):
    Prometheus ``bucketQuantile`` with its coalescing of equal bounds and its monotonicity fix."""
    if math.isnan(q):
        return NAN
    if q < 0:
        return -INF
    if q > 1:
        return INF
    buckets = sorted(buckets, key=lambda b: b[0])
    if not math.isinf(buckets[-1][0]) or buckets[-1][0] < 0:
        return NAN
    merged: list[list[float]] = []
    for upper, count in buckets:
        if merged and merged[-1][0] == upper:
            merged[-1][1] += count
        else:
            merged.append([upper, count])
    top = -INF
    for bucket in merged:  # counts must not decrease; Prometheus lifts a dip to the running maximum
        if bucket[1] > top:
            top = bucket[1]
        elif bucket[1] < top:
            bucket[1] = top
    if len(merged) < 2:
        return NAN
    observations = merged[-1][1]
    if observations == 0:
        return NAN
    rank = q * observations
    b = len(merged) - 1
    for i in range(len(merged) - 1):  # sort.Search: the first bucket whose count reaches rank
        if merged[i][1] >= rank:
            b = i
            break
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    bucket_start = 0.0
    bucket_end = merged[b][0]
    count = merged[b][1]
    if b > 0:
        bucket_start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return bucket_start + (bucket_end - bucket_start) * gofloat.div(rank, count)


def parse_go_float(text: str) -> float | None:
    """Go ``strconv.ParseFloat(s, 64)`` for an ``le`` label; None where Go reports an error."""
    s = text
    if not s:
        return None
    body = s[1:] if s[0] in "+-" else s
    low = body.lower()
    if low in ("inf", "infinity"):
        return -INF if s[0] == "-" else INF
    if low == "nan":
        return NAN
    if low.startswith("0x"):
        if "p" not in low:  # Go's hexadecimal floats need the binary exponent
            return None
        try:
            return float.fromhex(s.replace("_", ""))
        except ValueError:
            return None
    if "_" in s or not all(ch in "0123456789.eE+-" for ch in s):
        return None
    try:
        return float(s)
    except ValueError:
        return None
