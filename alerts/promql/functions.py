"""PromQL functions over range vectors and instant vectors, ported in behaviour (not code) from
Prometheus 2.42 ``promql/functions.go``. Timestamps are integer milliseconds, like Prometheus,
so extrapolation arithmetic is identical."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from alerts.promql import gofloat

Points = tuple[Sequence[int], Sequence[float]]


def extrapolated_rate(ts: Sequence[int], vals: Sequence[float], range_start: int, range_end: int, *,
                      range_ms: int, is_counter: bool, is_rate: bool, may_reset: bool = True) -> float | None:
    """``rate``/``increase``/``delta``: the change over the window, extrapolated towards the window
    edges when the first/last samples are within 1.1 average intervals of them (Prometheus
    ``extrapolatedRate``). None (no output) with fewer than two samples."""
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
    return extrapolate(result, ts[0], ts[-1], vals[0], n, range_start=range_start, range_end=range_end,
                       range_ms=range_ms, is_counter=is_counter, is_rate=is_rate)


def extrapolate(result: float, first_t: int, last_t: int, first_v: float, n: int, *, range_start: int,
                range_end: int, range_ms: int, is_counter: bool, is_rate: bool) -> float:
    """The extrapolation step of ``extrapolatedRate``, given the (reset-corrected) change."""
    duration_to_start = (first_t - range_start) / 1000
    duration_to_end = (range_end - last_t) / 1000
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
        factor /= range_ms / 1000
    return result * factor


def irate(ts: Sequence[int], vals: Sequence[float]) -> float | None:
    if len(vals) < 2:
        return None
    last, prev = vals[-1], vals[-2]
    result = last if last < prev else last - prev  # counter reset
    interval = ts[-1] - ts[-2]
    if interval == 0:
        return None
    return result / (interval / 1000)


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


def avg_over_time(vals: Sequence[float]) -> float:
    # Incremental mean, as Prometheus computes it, to avoid overflow of a plain sum.
    mean = 0.0
    count = 0.0
    for v in vals:
        count += 1
        if math.isinf(mean):
            if math.isinf(v) and (mean > 0) == (v > 0):
                continue
            if not math.isinf(v) and not math.isnan(v):
                continue
        mean += v / count - mean / count
    return mean


def sum_over_time(vals: Sequence[float]) -> float:
    total = 0.0
    for v in vals:
        total += v
    return total


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


OVER_TIME: dict[str, Callable[[Sequence[float]], float]] = {
    "avg_over_time": avg_over_time,
    "sum_over_time": sum_over_time,
    "min_over_time": min_over_time,
    "max_over_time": max_over_time,
    "count_over_time": lambda vals: float(len(vals)),
    "last_over_time": lambda vals: vals[-1],
    "changes": changes,
    "resets": resets,
}


def clamp(v: float, lo: float, hi: float) -> float:
    return gofloat.fmax(lo, gofloat.fmin(hi, v))
