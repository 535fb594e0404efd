"""Differential test: random expressions covering all of PromQL as Prometheus 2.42 evaluates it in
rules (every function, aggregation, operator and modifier, subqueries, ``offset``/``@``), evaluated
by fleetmon and by Debian's promtool (Prometheus 2.42) over the same series; the answers (samples or
errors) must be identical.

promtool only prints what it got when a test fails, so each generated case expects a sample no
expression can return (``SENTINEL``): promtool fails every case and prints its answer, ``nil``
included, in ``labels.String()`` + ``%E`` form, parsed back here. promtool must exit 1 (tests
failed) with every case in its output: any other exit, or a case missing, fails this test rather
than reading as an empty answer. Errors (many-to-many matching, duplicate label sets) must be the
same errors.
"""

from __future__ import annotations

import math
import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from alerts.errors import AlertsError
from alerts.promql.evaluator import Evaluator
from alerts.promql.labels import Labels, render
from alerts.promql.lexer import parse_duration_ms, unquote
from alerts.promql.parser import parse
from alerts.unittest import expand_values, parse_series_desc
from alerts.windows import Windows
from tests.services import require_binary

INTERVAL_MS = 60_000
SERIES = {
    'gauge{node="n1", gpu="0"}': "1 3 -2 7 7 0.5 4 _ 9 2 6",
    'gauge{node="n1", gpu="1"}': "5 5 5 6 2 8 1 3 3 0 -1",
    'gauge{node="n2", gpu="0"}': "0 0 1 1 2 NaN 2 3 5 8 13",
    'gauge{node="n2", gpu="1"}': "_ _ _ 4 4 stale _ 6 7 7 7",
    'ctr_total{node="n1", gpu="0"}': "0+10x10",
    'ctr_total{node="n1", gpu="1"}': "0 5 12 20 3 9 15 15 40 2 8",
    'ctr_total{node="n2", gpu="0"}': "100 110 120 stale 130 140 150 160 170 180 190",
    'thr{node="n1"}': "4x10",
    'thr{node="n2"}': "6x10",
    'flag{node="n1", gpu="0", reason="x"}': "0 1 1 0 1 0 0 1 1 1 0",
    'flag{node="n2", gpu="1", reason="y"}': "1 1 1 1 1 1 1 1 1 1 1",
    # Distinct values at every time, so topk/bottomk never meet a tie (promtool loads series in
    # random order, so a tie could keep either series).
    'uniq{node="n1", gpu="0"}': "1.5 2.25 -3.5 4.125 9.75 -6.5 7.0625 3.3 12.5 0.3 5.5",
    'uniq{node="n1", gpu="1"}': "8.5 -1.75 6.5 0.625 2.25 4.5 -2.9375 5.1 1.5 7.7 0.7",
    'uniq{node="n2", gpu="0"}': "3.5 5.25 0.5 -7.125 6.75 1.5 10.0625 -4.4 8.5 2.2 -3.3",
    # A classic histogram per node (cumulative buckets, one "le" missing a number).
    'lat_bucket{node="n1", le="0.1"}': "0+1x10",
    'lat_bucket{node="n1", le="0.5"}': "0+4x10",
    'lat_bucket{node="n1", le="1"}': "0+7x10",
    'lat_bucket{node="n1", le="+Inf"}': "0+9x10",
    'lat_bucket{node="n2", le="0.25"}': "1 1 2 3 5 8 13 21 34 55 89",
    'lat_bucket{node="n2", le="2.5"}': "2 3 5 8 13 21 34 55 89 144 233",
    'lat_bucket{node="n2", le="+Inf"}': "3 5 8 13 21 34 55 89 144 233 377",
}
TIMES = ["2m", "5m", "7m30s", "10m"]
CASES = 1000
SENTINEL = {"labels": 'fleetmon_differential_sentinel{never="returned"}', "value": 0}


def generate(rng: random.Random) -> str:
    """One random expression of instant-vector or scalar type."""
    return _vector(rng, 3)


def _selector(rng: random.Random, name: str | None = None) -> str:
    name = name or rng.choice(["gauge", "ctr_total", "flag"])
    matchers = []
    if rng.random() < 0.5:
        matchers.append(rng.choice(['node="n1"', 'node!="n1"', 'node=~"n[12]"', 'node!~"n2"', 'gpu=~"0|1"',
                                    'gpu!="1"', 'reason=~""', 'reason!~""', 'gpu=""']))
    return name + ("{" + ", ".join(matchers) + "}" if matchers else "")


def _modifiers(rng: random.Random) -> str:
    """Nothing mostly; else an offset (possibly negative), an ``@`` time, or both."""
    roll = rng.random()
    if roll < 0.7:
        return ""
    offset = f" offset {rng.choice(['1m', '90s', '-1m', '3m'])}"
    at = f" @ {rng.choice(['120', '300.5', 'start()', 'end()', '0'])}"
    if roll < 0.8:
        return offset
    if roll < 0.9:
        return at
    return at + offset if rng.random() < 0.5 else offset + at


def _range(rng: random.Random) -> str:
    return rng.choice(["1m", "2m", "3m", "5m", "150s"])


def _scalar(rng: random.Random) -> str:
    return rng.choice(["1", "2", "0.5", "-3", "10", "0", "time()", "scalar(thr{node=\"n1\"})", "(2 * 3)", "pi()",
                       "scalar(max(uniq))", "-0.25"])


_RANGE_FUNCS = ["rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets", "avg_over_time",
                "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time",
                "present_over_time", "stddev_over_time", "stdvar_over_time", "absent_over_time"]
_MATH_FUNCS = ["abs", "ceil", "floor", "sqrt", "exp", "ln", "log2", "log10", "sgn", "sin", "cos", "tan", "asin",
               "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "deg", "rad"]
_DATE_FUNCS = ["year", "month", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute"]


def _range_call(rng: random.Random, inner: Callable[[bool], str]) -> str:
    """A range function over ``inner(allow_at)`` (a range selector or a subquery)."""
    fn = rng.choice([*_RANGE_FUNCS, "quantile_over_time", "predict_linear", "holt_winters"])
    if fn == "quantile_over_time":
        return f"quantile_over_time({rng.choice(['0', '0.25', '0.5', '0.9', '1', '-1', '2'])}, {inner(True)})"
    if fn == "predict_linear":
        # Prometheus 2.42 slides the window of an @-pinned subquery argument inside another
        # subquery in a way fleetmon does not reproduce (alerts/README.md): no @ there.
        return f"predict_linear({inner(False)}, {rng.choice(['60', '-30', '0', '3600'])})"
    if fn == "holt_winters":
        return f"holt_winters({inner(True)}, {rng.choice(['0.5', '0.1', '0.9'])}, {rng.choice(['0.5', '0.3', '0.99'])})"
    return f"{fn}({inner(True)})"


def _subquery(rng: random.Random, depth: int, allow_at: bool) -> str:
    inner = _vector(rng, depth - 1)
    step = rng.choice(["1m", "30s", "45s", ""])
    modifiers = _modifiers(rng) if allow_at else rng.choice(["", " offset 1m", " offset -1m"])
    return f"({inner})[{rng.choice(['3m', '5m', '4m30s'])}:{step}]{modifiers}"


def _new_function(rng: random.Random, depth: int) -> str:
    """The instant-vector functions beyond the original subset."""
    v = _vector(rng, depth - 1)
    kind = rng.randrange(10)
    if kind == 0:
        return f"{rng.choice(_MATH_FUNCS)}({v})"
    if kind == 1:
        arg = rng.choice([f"{v} * 1e7", f"{v} * 86400 * 40", ""])
        return f"{rng.choice(_DATE_FUNCS)}({arg})"
    if kind == 2:
        return rng.choice([f"round({v})", f"round({v}, {rng.choice(['0.5', '3', '0.1', '-2'])})"])
    if kind == 3:
        return rng.choice([f"timestamp({_selector(rng)}{_modifiers(rng)})", f"timestamp({v})"])
    if kind == 4:
        dst = rng.choice(["node", "host", "gpu", "__name__"])
        src = rng.choice(["node", "gpu", "reason", "missing"])
        regex, repl = rng.choice([("n(.*)", "host-$1"), ("(.*)", "${1}x"), (".*", ""), ("([0-9])", "$1$1"),
                                  ("(?P<id>n.)", "$id"), ("x|y", "$0")])
        return f'label_replace({v}, "{dst}", "{repl}", "{src}", "{regex}")'
    if kind == 5:
        srcs = ", ".join(f'"{s}"' for s in rng.sample(["node", "gpu", "reason", "missing"], rng.randint(0, 3)))
        tail = f", {srcs}" if srcs else ""
        return f'label_join({v}, "{rng.choice(["joined", "node", "gpu"])}", "{rng.choice(["-", "", "/"])}"{tail})'
    if kind == 6:
        return rng.choice([f"sort({v})", f"sort_desc({v})", f"clamp({v}, -1, 4)", f"clamp({v}, 4, -1)"])
    if kind == 7:
        q = rng.choice(["0.5", "0.9", "0", "1", "0.99"])
        buckets = rng.choice(["lat_bucket", "rate(lat_bucket[3m])", "sum by (le) (lat_bucket)",
                              'lat_bucket{node="n2"} offset 2m'])
        return f"histogram_quantile({q}, {buckets})"
    if kind == 8:
        return rng.choice([f"vector({_scalar(rng)})", f"vector(scalar({v}) + 1)", f"histogram_count({v})",
                           f"histogram_sum({v})", f"histogram_fraction(0, 1, {v})"])
    return f"({v} atan2 {rng.choice([_scalar(rng), _vector(rng, depth - 1)])})"


def _new_aggregation(rng: random.Random, depth: int) -> str:
    grouping = rng.choice(["", " by (node)", " without (gpu)", " by (gpu, node)", " without (node, reason)"])
    op = rng.choice(["group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"])
    if op in ("topk", "bottomk"):
        # Over series whose values never tie (see SERIES).
        inner = rng.choice(["uniq", 'uniq{node="n1"}', "uniq * 2", "-uniq", "uniq offset 1m"])
        return f"{op}{grouping} ({rng.choice(['1', '2', '5', '0', '1.9'])}, {inner})"
    inner = _vector(rng, depth - 1)
    if op == "quantile":
        return f"quantile{grouping} ({rng.choice(['0.5', '0.1', '1', '-0.5', '1.5'])}, {inner})"
    if op == "count_values":
        return f'count_values{grouping} ("{rng.choice(["value", "node", "gpu"])}", {inner})'
    return f"{op}{grouping} ({inner})"


def _vector(rng: random.Random, depth: int) -> str:
    if depth <= 0:
        return _selector(rng) + _modifiers(rng)
    kind = rng.randrange(14)
    if kind == 0:
        return _selector(rng) + _modifiers(rng)
    if kind == 1:
        return _range_call(rng, lambda _at: f"{_selector(rng)}[{_range(rng)}]{_modifiers(rng)}")
    if kind == 2:
        op = rng.choice(["sum", "avg", "min", "max", "count"])
        grouping = rng.choice(["", " by (node)", " without (gpu)", " by (gpu, node)", " without (node, reason)"])
        return f"{op}{grouping} ({_vector(rng, depth - 1)})"
    if kind == 3:
        op = rng.choice(["+", "-", "*", "/", "%", "^", ">", "<", ">=", "<=", "==", "!="])
        b = " bool" if op in (">", "<", ">=", "<=", "==", "!=") and rng.random() < 0.4 else ""
        lhs, rhs = _vector(rng, depth - 1), _scalar(rng)
        return f"({lhs} {op}{b} {rhs})" if rng.random() < 0.6 else f"({rhs} {op}{b} {lhs})"
    if kind == 4:
        op = rng.choice(["+", "-", "/", ">", "<", "==", "!="])
        b = " bool" if op in (">", "<", "==", "!=") and rng.random() < 0.4 else ""
        matching = rng.choice(["", " on(node, gpu)", " ignoring(reason)", " on(node) group_left",
                               " on(node) group_left(gpu)", " ignoring(gpu) group_right"])
        lhs = _selector(rng, rng.choice(["gauge", "ctr_total", "flag"]))
        rhs = "thr" if "group_left" in matching else _selector(rng, rng.choice(["gauge", "ctr_total"]))
        if "group_right" in matching:
            lhs, rhs = "thr", lhs
        return f"({lhs} {op}{b}{matching} {rhs})"
    if kind == 5:
        op = rng.choice(["and", "or", "unless"])
        matching = rng.choice(["", " on(node)", " ignoring(reason)", " on(gpu)"])
        return f"({_vector(rng, depth - 1)} {op}{matching} {_vector(rng, depth - 1)})"
    if kind == 6:
        fn = rng.choice(["clamp_min", "clamp_max"])
        return f"{fn}({_vector(rng, depth - 1)}, {rng.choice(['1', '3', '-1'])})"
    if kind == 7:
        return rng.choice([f"abs({_vector(rng, depth - 1)})", f"absent({_selector(rng)})",
                           f"absent_over_time({_selector(rng)}[{_range(rng)}])",
                           f"clamp({_vector(rng, depth - 1)}, 0, 5)", "vector(time())"])
    if kind in (8, 9):
        return _new_function(rng, depth)
    if kind == 10:
        return _new_aggregation(rng, depth)
    if kind == 11:
        return _range_call(rng, lambda allow_at: _subquery(rng, depth, allow_at))
    if kind == 12:
        return _vector(rng, depth - 1) + rng.choice([" atan2 2", " ^ 0.5", " ^ -1.5", " % 2.5"])
    return f"-({_vector(rng, depth - 1)})"


_GOT = re.compile(r"^\s+expr: (\".*\"), time: (\S+?)(?:,$|, err: (.*)$)")


def _parse_promtool(out: str) -> dict[tuple[str, str], object]:
    """(expr, time) -> list of (labels text, value) or ("error", message)."""
    results: dict[tuple[str, str], object] = {}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = _GOT.match(line)
        if not m:
            continue
        key = (unquote(m.group(1)), m.group(2))
        if m.group(3) is not None:
            results[key] = ("error", m.group(3))
            continue
        got = lines[i + 2].split("got: ", 1)[1]
        results[key] = [] if got == "nil" else [
            (lb, _go_float(v)) for lb, v in re.findall(r"(\{[^{}]*\}) (\S+?)(?:, |$)", got)]
    return results


def _go_float(text: str) -> float:
    return float(text.replace("+Inf", "inf").replace("-Inf", "-inf"))


def _same(a: float, b: float) -> bool:
    """Equal, or within 1e-12 relative: promtool loads test series in Go map order (random),
    so the order in which sum/avg add them, hence their last bit, varies from run to run of
    promtool itself. The suite in tests/promql/ uses values where order cannot matter."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def test_random_expressions_match_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rng = random.Random(20260601)
    exprs: list[str] = []
    while len(exprs) < CASES:
        e = generate(rng)
        if e not in exprs:
            exprs.append(e)
    cases = [(e, rng.choice(TIMES)) for e in exprs]
    (tmp_path / "rules.yml").write_text("groups: []\n")
    spec = {"rule_files": ["rules.yml"], "tests": [{
        "interval": "1m",
        "input_series": [{"series": k, "values": v} for k, v in SERIES.items()],
        "promql_expr_test": [{"expr": e, "eval_time": t, "exp_samples": [SENTINEL]} for e, t in cases],
    }]}
    test_file = tmp_path / "diff_test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    res = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True,
                         timeout=120, check=False)
    out = res.stdout + res.stderr
    # Exit 1 is every case failing against the sentinel, as designed; 0 or anything else means
    # promtool did not answer the way this test reads.
    assert res.returncode == 1, f"promtool exited {res.returncode}:\n{out[-3000:]}"
    ref = _parse_promtool(out)
    missing = [f"{e} @ {t}" for e, t in cases if (e, t) not in ref]
    assert not missing, (f"{len(missing)} of {len(cases)} cases have no answer in promtool's output, e.g. "
                         f"{missing[:3]}:\n{out[-3000:]}")

    windows = Windows(retention_ms=2**62, keep_all=True)
    for desc, values in SERIES.items():
        labels = parse_series_desc(desc)
        name = dict(labels)["__name__"]
        for i, v in enumerate(expand_values(values)):
            if v is not False:
                windows.append(name, labels, i * INTERVAL_MS, v)  # type: ignore[arg-type]

    mismatches: list[str] = []
    compared = errors = 0
    for expr, t in cases:
        want = ref[(expr, t)]
        try:
            got_vec = Evaluator(windows, parse_duration_ms(t)).eval_vector(parse(expr))
            got: object = sorted((render(lb), v) for lb, v in got_vec)
        except AlertsError as err:
            got = ("error", str(err))
        if isinstance(want, tuple):
            errors += 1
            if not (isinstance(got, tuple) and _norm(got[1]) == _norm(want[1])):
                mismatches.append(f"{expr} @ {t}: promtool error {want[1]!r}, fleetmon {got!r}")
            continue
        assert isinstance(want, list)
        want_sorted = sorted(want, key=lambda s: _labels_key(s[0]))
        got_list = got if isinstance(got, list) else None
        if got_list is None:
            mismatches.append(f"{expr} @ {t}: promtool {want_sorted}, fleetmon error {got!r}")
            continue
        got_sorted = sorted(got_list, key=lambda s: _labels_key(s[0]))
        compared += 1
        if len(got_sorted) != len(want_sorted) or any(
                _labels_key(g[0]) != _labels_key(w[0]) or not _same(g[1], w[1])
                for g, w in zip(got_sorted, want_sorted, strict=True)):
            mismatches.append(f"{expr} @ {t}:\n  promtool {want_sorted}\n  fleetmon {got_sorted}")
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ:\n" + "\n".join(mismatches[:40])
    assert compared + errors == len(cases)


def _labels_key(text: str) -> Labels:
    return parse_series_desc(text)


def _norm(err: str) -> str:
    # Prometheus lists the two clashing series of a many-to-many error in no fixed order.
    m = re.search(r"\[(\{.*\}), (\{.*\})\]", err)
    if m:
        a, b = sorted((m.group(1), m.group(2)))
        err = err[:m.start()] + f"[{a}, {b}]" + err[m.end():]
    return err
