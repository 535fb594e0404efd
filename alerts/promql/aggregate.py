"""Aggregation operators with Prometheus 2.42's arithmetic (``aggregation()`` in
``promql/engine.go``): groups in order of first appearance, ``sum`` as a plain running sum,
``avg`` as an incremental mean, ``stddev``/``stdvar`` by Welford's update, ``topk``/``bottomk``
through a binary heap with Go's ``container/heap`` moves (so ties keep the same series), and
``count_values`` labels printed as Go's ``strconv.FormatFloat(v, 'f', -1, 64)``."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from alerts.errors import EvalError
from alerts.promql import ast, functions, gofloat
from alerts.promql.labels import NAME, Labels, go_quote, keep, valid_label_name, without
from alerts.promql.values import Sample, Vector

if TYPE_CHECKING:
    from alerts.promql.evaluator import Evaluator

_MAX_INT64_F = 9.223372036854775807e18
_MIN_INT64_F = -9.223372036854775808e18


class _Group:
    __slots__ = ("count", "heap", "labels", "mean", "value")

    def __init__(self, labels: Labels, value: float) -> None:
        self.labels = labels
        self.value = value
        self.mean = value
        self.count = 1
        self.heap: list[Sample] = []


def format_f(v: float) -> str:
    """Go ``strconv.FormatFloat(v, 'f', -1, 64)``: the shortest digits, never an exponent."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = format(Decimal(repr(v)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "-0" if text == "-0" else text


# -- Go's container/heap over a "less" function ---------------------------------------------------
def _up(h: list[Sample], j: int, less: Callable[[float, float], bool]) -> None:
    while True:
        i = (j - 1) // 2 if j > 0 else 0
        if i == j or not less(h[j][1], h[i][1]):
            break
        h[i], h[j] = h[j], h[i]
        j = i


def _down(h: list[Sample], i0: int, n: int, less: Callable[[float, float], bool]) -> bool:
    i = i0
    while True:
        j1 = 2 * i + 1
        if j1 >= n:
            break
        j = j1
        j2 = j1 + 1
        if j2 < n and less(h[j2][1], h[j1][1]):
            j = j2
        if not less(h[j][1], h[i][1]):
            break
        h[i], h[j] = h[j], h[i]
        i = j
    return i > i0


def _less_top(a: float, b: float) -> bool:  # vectorByValueHeap: the smallest on top, NaN first
    return math.isnan(a) or a < b


def _less_bottom(a: float, b: float) -> bool:  # vectorByReverseValueHeap
    return math.isnan(a) or a > b


def _replaces(op: str, top: float, v: float) -> bool:
    """Whether ``v`` displaces the heap's top (Prometheus: a NaN top gives way to a number)."""
    if math.isnan(top) and not math.isnan(v):
        return True
    return top < v if op == "topk" else top > v


def _k_param(ev: Evaluator, node: ast.Aggregate) -> int:
    assert node.param is not None
    f = ev.scalar(node.param)
    if not (_MIN_INT64_F <= f <= _MAX_INT64_F):
        raise EvalError(f"Scalar value {gofloat.format_v(f)} overflows int64")
    return int(f)


def aggregate(ev: Evaluator, node: ast.Aggregate) -> Vector:
    op = node.op
    k = 0
    q = 0.0
    value_label = ""
    if op in ("topk", "bottomk"):
        k = _k_param(ev, node)
        if k < 1:
            ev.vec(node.expr)  # still evaluated (and its errors raised), as Prometheus does
            return []
    elif op == "quantile":
        assert node.param is not None
        q = ev.scalar(node.param)
    elif op == "count_values":
        assert node.param is not None
        param = ev.eval(node.param)
        assert isinstance(param, str)
        value_label = param
        if not valid_label_name(value_label):
            raise EvalError(f"invalid label name {go_quote(value_label)}")
    vec = ev.vec(node.expr)
    grouping = node.grouping
    if op == "count_values" and not node.without:
        grouping = grouping | {value_label}
    by_without = node.without
    groups: dict[Labels, _Group] = {}
    for lb, v in vec:
        metric = lb
        if op == "count_values":
            d = dict(lb)
            d[value_label] = format_f(v)
            metric = tuple(sorted(d.items()))
        key = without(metric, grouping) if by_without else (keep(metric, grouping) if grouping else ())
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group(key, v)
            if op in ("stddev", "stdvar"):
                g.value = 0.0
            elif op == "group":
                g.value = 1.0
            elif op in ("topk", "bottomk", "quantile"):
                g.heap = [(lb, v)]
            continue
        if op == "sum":
            g.value += v
        elif op == "avg":
            g.count += 1
            mean = g.mean
            if math.isinf(mean):
                if math.isinf(v) and (mean > 0) == (v > 0):
                    continue  # the same infinity: the mean is right already
                if not math.isinf(v) and not math.isnan(v):
                    continue  # Inf - Inf would make it NaN
            # Each side divided by the count so that large values cannot overflow.
            g.mean = mean + (v / g.count - mean / g.count)
        elif op == "max":
            if g.value < v or math.isnan(g.value):
                g.value = v
        elif op == "min":
            if g.value > v or math.isnan(g.value):
                g.value = v
        elif op in ("count", "count_values"):
            g.count += 1
        elif op in ("stddev", "stdvar"):
            g.count += 1
            delta = v - g.mean
            g.mean += delta / g.count
            g.value += delta * (v - g.mean)
        elif op in ("topk", "bottomk"):
            less = _less_top if op == "topk" else _less_bottom
            h = g.heap
            if len(h) < k:
                h.append((lb, v))
                _up(h, len(h) - 1, less)
            elif _replaces(op, h[0][1], v):
                h[0] = (lb, v)
                if not _down(h, 0, len(h), less):
                    _up(h, 0, less)
            continue
        elif op == "quantile":
            g.heap.append((lb, v))
    out: Vector = []
    for key, g in groups.items():
        if op == "avg":
            out.append((key, g.mean))
        elif op in ("count", "count_values"):
            out.append((key, float(g.count)))
        elif op == "stdvar":
            out.append((key, g.value / g.count))
        elif op == "stddev":
            out.append((key, math.sqrt(g.value / g.count)))
        elif op in ("topk", "bottomk"):
            descending = op == "topk"
            ranked = sorted(g.heap, key=lambda s: (math.isnan(s[1]), -s[1] if descending else s[1]))
            out.extend(ranked)
        elif op == "quantile":
            out.append((key, functions.quantile(q, [s[1] for s in g.heap])))
        else:
            out.append((key, g.value))
    return out


__all__ = ["NAME", "aggregate", "format_f"]
