"""Functions of instant vectors and scalars (Prometheus 2.42 ``promql/functions.go``): the
math functions drop the metric name, ``label_replace``/``label_join`` rewrite labels with Go's
regexp template expansion, ``histogram_quantile`` reads classic ``le`` buckets, the date
functions read unix seconds in UTC."""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from typing import TYPE_CHECKING

from alerts.errors import EvalError, ParseError
from alerts.promql import ast, functions
from alerts.promql.labels import NAME, Labels, compile_regex, drop_name, valid_label_name
from alerts.promql.values import Value, Vector, absent_labels, check_unique, is_stale

if TYPE_CHECKING:
    from alerts.promql.evaluator import Evaluator

_MINUTE_MS, _HOUR_MS, _DAY_MS = 60_000, 3_600_000, 86_400_000
_DATE_STEP = {"minute": _MINUTE_MS, "hour": _HOUR_MS}


def call_instant(ev: Evaluator, node: ast.Call) -> Value:
    name = node.func
    args = node.args
    if name == "time":
        if ev.track:
            ev.note_all(ev.t + 1)
        return ev.t / 1000
    if name == "pi":
        return math.pi
    if name == "vector":
        one: Vector = [((), ev.scalar(args[0]))]
        return one
    if name == "scalar":
        vec = ev.vec(args[0])
        return vec[0][1] if len(vec) == 1 else math.nan
    if name == "absent":
        return [] if ev.vec(args[0]) else [(absent_labels(args[0]), 1.0)]
    if name == "timestamp":
        return _timestamp(ev, args[0])
    fn = functions.MATH_FUNCTIONS.get(name)
    if fn is not None:
        return check_unique([(drop_name(lb), fn(v)) for lb, v in ev.vec(args[0])])
    if name in functions.DATE_FUNCTIONS:
        return _date(ev, name, args)
    if name in ("clamp", "clamp_min", "clamp_max", "round"):
        return _clamp_round(ev, name, args)
    if name == "label_replace":
        return _label_replace(ev, node)
    if name == "label_join":
        return _label_join(ev, node)
    if name in ("sort", "sort_desc"):
        vec = ev.vec(args[0])
        return sorted(vec, key=lambda s: (math.isnan(s[1]), s[1]), reverse=name == "sort_desc")
    if name == "histogram_quantile":
        q = ev.scalar(args[0])
        return _histogram_quantile(q, ev.vec(args[1]))
    if name in ("histogram_count", "histogram_sum", "histogram_fraction"):
        # Native histograms only: float samples (all fleetmon has) give no output, as in Prometheus.
        for a in args[:-1]:
            ev.scalar(a)
        ev.vec(args[-1])
        return []
    raise EvalError(f"function {name}() has no evaluator")


def _timestamp(ev: Evaluator, arg: ast.Expr) -> Vector:
    inner = ast.unwrap(arg)
    if isinstance(inner, ast.VectorSelector) and inner.at:
        return _timestamp_pinned(ev, inner)
    if isinstance(inner, ast.VectorSelector):
        # A selector's samples keep their own times (Prometheus evaluates it specially).
        times: list[int] = []
        vec = ev.vector_selector(inner, times)
        return check_unique([(drop_name(lb), t / 1000) for (lb, _v), t in zip(vec, times, strict=True)])
    vec = ev.vec(arg)
    if vec and ev.track:
        ev.note_all(ev.t + 1)  # a computed sample is stamped with the evaluation time
    return check_unique([(drop_name(lb), ev.t / 1000) for lb, _v in vec])


def _timestamp_pinned(ev: Evaluator, sel: ast.VectorSelector) -> Vector:
    """``timestamp(x @ T offset o)`` as Prometheus 2.42 computes it: the newest sample at or
    before T itself (its special case ignores the offset), among the samples the selector's
    storage hints allow (``[T - lookback - o, T - o]``)."""
    at, _ = ev.time_of(0, sel.at, sel.at_ms)
    hi = min(at, at - sel.offset_ms)
    lo = max(at - ev.lookback, at - ev.lookback - sel.offset_ms)
    out: Vector = []
    for s in ev.source.select(sel, ev.parts):
        ts = s.ts
        i = bisect_right(ts, hi) - 1
        if i < 0 or ts[i] < lo or is_stale(s.vals[i]):
            continue
        out.append((drop_name(s.labels), ts[i] / 1000))
    return check_unique(out)


def _date(ev: Evaluator, name: str, args: list[ast.Expr]) -> Vector:
    if not args:
        t = ev.t
        seconds = t // 1000 if t >= 0 else -((-t) // 1000)
        if ev.track:
            step = _DATE_STEP.get(name, _DAY_MS)
            ev.note_all((t // step + 1) * step)  # the next minute, hour or day
        return [((), functions.date_part(name, float(seconds)))]
    return check_unique([(drop_name(lb), functions.date_part(name, v)) for lb, v in ev.vec(args[0])])


def _clamp_round(ev: Evaluator, name: str, args: list[ast.Expr]) -> Vector:
    vec = ev.vec(args[0])
    bounds = [ev.scalar(a) for a in args[1:]]
    if name == "clamp_min":
        return check_unique([(drop_name(lb), functions.gomath.fmax(bounds[0], v)) for lb, v in vec])
    if name == "clamp_max":
        return check_unique([(drop_name(lb), functions.gomath.fmin(bounds[0], v)) for lb, v in vec])
    if name == "clamp":
        lo, hi = bounds
        if hi < lo:
            return []
        return check_unique([(drop_name(lb), functions.clamp(v, lo, hi)) for lb, v in vec])
    to_nearest = bounds[0] if bounds else 1.0
    return check_unique([(drop_name(lb), functions.round_to(v, to_nearest)) for lb, v in vec])


def _string_arg(ev: Evaluator, node: ast.Expr) -> str:
    val = ev.eval(node)
    assert isinstance(val, str)
    return val


_REGEX_CACHE: dict[str, re.Pattern[str] | None] = {}


def _regex(pattern: str) -> re.Pattern[str] | None:
    if pattern not in _REGEX_CACHE:
        if len(_REGEX_CACHE) > 1000:
            _REGEX_CACHE.clear()
        try:
            _REGEX_CACHE[pattern] = compile_regex(pattern)
        except ParseError:
            _REGEX_CACHE[pattern] = None
    return _REGEX_CACHE[pattern]


def _label_replace(ev: Evaluator, node: ast.Call) -> Vector:
    vec = ev.vec(node.args[0])
    dst, repl, src, pattern = (_string_arg(ev, a) for a in node.args[1:])
    rx = _regex(pattern)
    if rx is None:
        raise EvalError(f"invalid regular expression in label_replace(): {pattern}")
    if not valid_label_name(dst):
        raise EvalError(f"invalid destination label name in label_replace(): {dst}")
    out: Vector = []
    for lb, v in vec:
        m = rx.match(dict(lb).get(src, ""))
        out.append((lb if m is None else _with_label(lb, dst, expand_template(repl, m)), v))
    return check_unique(out)


def _label_join(ev: Evaluator, node: ast.Call) -> Vector:
    vec = ev.vec(node.args[0])
    dst, sep, *srcs = (_string_arg(ev, a) for a in node.args[1:])
    for src in srcs:
        if not valid_label_name(src):
            raise EvalError(f"invalid source label name in label_join(): {src}")
    if not valid_label_name(dst):
        raise EvalError(f"invalid destination label name in label_join(): {dst}")
    out: Vector = []
    for lb, v in vec:
        d = dict(lb)
        out.append((_with_label(lb, dst, sep.join(d.get(src, "") for src in srcs)), v))
    return check_unique(out)


def _with_label(lb: Labels, name: str, value: str) -> Labels:
    """``lb`` with ``name`` set to ``value``, or removed when the value is empty."""
    d = dict(lb)
    d.pop(name, None)
    if value:
        d[name] = value
    return tuple(sorted(d.items()))


def expand_template(template: str, m: re.Match[str]) -> str:
    """Go ``regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; a name runs as long
    as letters, digits and underscores do (``$1x`` is the group named ``1x``: empty)."""
    out: list[str] = []
    rest = template
    while True:
        before, dollar, after = rest.partition("$")
        if not dollar:
            break
        out.append(before)
        rest = after
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        parsed = _extract(rest)
        if parsed is None:
            out.append("$")  # malformed: the dollar is text
            continue
        name, num, rest = parsed
        if num >= 0:
            if num <= (m.re.groups or 0) and m.group(num) is not None:
                out.append(m.group(num))
        elif name in m.re.groupindex and m.group(name) is not None:
            out.append(m.group(name))
    out.append(rest)
    return "".join(out)


def _extract(text: str) -> tuple[str, int, str] | None:
    brace = text.startswith("{")
    body = text[1:] if brace else text
    i = 0
    while i < len(body) and (body[i].isalpha() or body[i].isdecimal() or body[i] == "_"):
        i += 1
    if i == 0:
        return None
    name = body[:i]
    if brace:
        if i >= len(body) or body[i] != "}":
            return None
        i += 1
    num = int(name) if name.isdigit() and name.isascii() and len(name) <= 8 else -1
    if name[0] == "0" and len(name) > 1:
        num = -1
    return name, num, body[i:]


def _histogram_quantile(q: float, vec: Vector) -> Vector:
    groups: dict[Labels, tuple[Labels, list[tuple[float, float]]]] = {}
    for lb, v in vec:
        le = ""
        for k, val in lb:
            if k == "le":
                le = val
                break
        upper = functions.parse_go_float(le)
        if upper is None:
            continue  # no bucket label, or not a number: skipped, as Prometheus does
        key = tuple(p for p in lb if p[0] != "le")
        got = groups.get(key)
        if got is None:
            got = groups[key] = (tuple(p for p in key if p[0] != NAME), [])
        got[1].append((upper, v))
    return check_unique([(metric, functions.bucket_quantile(q, buckets)) for metric, buckets in groups.values()])
