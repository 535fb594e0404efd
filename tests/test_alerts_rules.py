"""Rule-file loading, the PromQL-subset parser's refusals, templates and `fleetmon rules check`."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.errors import ParseError, RuleError, TemplateError
from alerts.promql import ast
from alerts.promql.gofloat import format_v
from alerts.promql.lexer import format_duration_ms, parse_duration_ms
from alerts.promql.parser import parse
from alerts.rulefile import AlertingRule, RecordingRule, load_text
from alerts.templates import Template
from alerts.unittest import run_file
from tests.services import REPO, require_binary


@pytest.mark.parametrize(("expr", "message", "pos"), [
    ("frobnicate(x)", 'unknown function with name "frobnicate"', 0),
    ("1 > 2", "comparisons between scalars must use BOOL modifier", 2),
    ("x and 1", "set operator \"and\" not allowed in binary scalar expression", 2),
    ("x + on(a) 1", "vector matching only allowed between instant vectors", 2),
    ("x + bool y", "bool modifier can only be used on comparison operators", 4),
    ("rate(x)", 'expected type range vector in call to function "rate", got instant vector', 5),
    ("sum(x[5m])", "expected type instant vector in aggregation expression, got range vector", 4),
    ("rate(x[5m], 1)", 'expected 1 argument(s) in call to "rate", got 2', 0),
    ("label_join(x, 'a')", 'expected at least 3 argument(s) in call to "label_join", got 2', 0),
    ("round(x, 1, 2)", 'expected at most 2 argument(s) in call to "round", got 3', 0),
    ("topk(x)", "wrong number of arguments for aggregate expression provided, expected 2, got 1", 0),
    ("count_values(1, x)", "expected type string in aggregation parameter, got scalar", 13),
    ("quantile('a', x)", "expected type scalar in aggregation parameter, got string", 9),
    ("sum(x) offset 1m", "offset modifier must be preceded by an instant vector selector", 7),
    ("(x) @ 100", "@ modifier must be preceded by an instant vector selector", 4),
    ("x offset 1m offset 2m", "offset may not be set multiple times", 12),
    ("x @ 1 @ 2", "@ <timestamp> may not be set multiple times", 6),
    ("x @ start", "in @ modifier, expected \"(\"", 9),
    ("x offset 1m [5m]", "no offset modifiers allowed before range", 12),
    ("(x + 1)[5m]", "ranges only allowed for vector selectors", 7),
    ("x[5m][10m:1m]", "subquery is only allowed on instant vector, got range vector", 5),
    ("x[5m:1m][1m]", "ranges only allowed for vector selectors", 8),
    ("x[5q]", "bad duration syntax", 2),
    ('{a=""}', "vector selector must contain at least one non-empty matcher", 0),
    ('x{__name__="y"}', 'metric name must not be set twice: "x"', 0),
    ('x{a=~"(?=b)"}', 'regex "(?=b)": look-around assertions are not supported by RE2', 5),
    ('x{a=~"(a)\\\\1"}', 'regex "(a)\\\\1": back-references are not supported by RE2', 5),
    ('x{a=~"[[:^alpha:]]"}', "negated POSIX character classes", 5),
    ('x{a=~"\\\\pL"}', "\\p, \\P and \\C are not supported", 5),
    ('x{a=~"("}', "invalid regex", 5),
    ("x[0s]", "range must be greater than zero", 2),
    ("x[5m", "unclosed left bracket", 4),
    ("sum(x) by (a) by (b)", "unexpected ident 'by'", 14),
    ("", "no expression found in input", 0),
])
def test_parser_refuses_with_position(expr: str, message: str, pos: int) -> None:
    with pytest.raises(ParseError) as exc:
        parse(expr)
    assert message in exc.value.message
    assert exc.value.pos == pos


@pytest.mark.parametrize("expr", [
    "rate(x[5m] offset 1m)", "x offset -5m", "x @ 1700000000", "x @ start() offset 1m", "rate(x[5m] @ end())",
    "max_over_time(rate(x[1m])[5m:30s])", "max_over_time(x[5m:])", "min_over_time(x[1h:5m] offset 1d @ 100)",
    "topk(3, x)", "bottomk by (a) (2, x)", "quantile(0.9, x)", "count_values(\"v\", x)", "stddev(x)",
    "stdvar without (a) (x)", "group(x)", "histogram_quantile(0.9, rate(x_bucket[5m]))",
    "label_replace(x, 'a', '$1', 'b', '(.*)')", "label_join(x, 'a', ',', 'b', 'c')", "x atan2 y",
    "predict_linear(x[1h], 3600)", "deriv(x[5m])", "idelta(x[5m])", "quantile_over_time(0.5, x[5m])",
    "timestamp(x)", "round(x, 0.5)", "day_of_week()", "holt_winters(x[5m], 0.5, 0.5)", "sort_desc(x)",
])
def test_parser_accepts_the_language(expr: str) -> None:
    e = parse(expr)
    assert e.type in (ast.VECTOR, ast.SCALAR)


def test_offset_and_at_bind_to_the_selector() -> None:
    e = parse("-x offset 1m @ 100.0005")
    assert isinstance(e, ast.Unary) and isinstance(e.expr, ast.VectorSelector)
    assert (e.expr.offset_ms, e.expr.at, e.expr.at_ms) == (60_000, ast.AT_TIME, 100_001)
    e = parse("rate(x[5m:30s] offset -1m)")
    assert isinstance(e, ast.Call) and isinstance(e.args[0], ast.Subquery)
    assert (e.args[0].range_ms, e.args[0].step_ms, e.args[0].offset_ms) == (300_000, 30_000, -60_000)


def test_precedence_and_associativity() -> None:
    # "a or b and c unless d" is "a or ((b and c) unless d)"
    e = parse("a or b and c unless d")
    assert isinstance(e, ast.Binary) and e.op == "or"
    assert isinstance(e.rhs, ast.Binary) and e.rhs.op == "unless"
    # "^" is right-associative; "-" left-associative
    e = parse("2 ^ 3 ^ 2")
    assert isinstance(e, ast.Binary) and isinstance(e.rhs, ast.Binary)
    e = parse("a - b - c")
    assert isinstance(e, ast.Binary) and isinstance(e.lhs, ast.Binary)


def test_group_left_matching_parsed() -> None:
    e = parse("a < on(node, interface) group_left(vendor) b")
    assert isinstance(e, ast.Binary) and e.matching is not None
    assert e.matching.card == "many-to-one"
    assert e.matching.labels == frozenset({"node", "interface"})
    assert e.matching.include == ("vendor",)


def test_durations() -> None:
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("90s") == 90_000
    assert parse_duration_ms("1d") == 86_400_000
    assert parse_duration_ms("250ms") == 250
    assert format_duration_ms(5_400_000) == "1h30m"
    assert format_duration_ms(0) == "0s"
    for bad in ("5", "m5", "1m1h", "1.5h", "1mm"):
        with pytest.raises(ParseError):
            parse_duration_ms(bad)


def test_go_float_formatting() -> None:
    assert [format_v(v) for v in (1e6, 123456.0, 0.5, 1e-5, 3.0, -2.5, math.inf, -math.inf, math.nan)] == [
        "1e+06", "123456", "0.5", "1e-05", "3", "-2.5", "+Inf", "-Inf", "NaN"]


RULES = """\
groups:
  - name: gpu
    interval: 15s
    rules:
      - alert: GpuHot
        expr: gpu_temperature_celsius > 85
        for: 2m
        keep_firing_for: 1m
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.gpu }} hot"}
      - record: node:gpu_power_watts:sum
        expr: sum by (node) (gpu_power_watts)
  - name: defaults
    rules:
      - alert: Always
        expr: vector(1)
"""


def test_load_rule_file() -> None:
    g1, g2 = load_text(RULES, "r.yml")
    assert (g1.name, g1.interval_s, g1.interval_set) == ("gpu", 15.0, True)
    assert (g2.interval_s, g2.interval_set) == (1.0, False)  # fleetmon default: every second
    alert, record = g1.rules
    assert isinstance(alert, AlertingRule) and isinstance(record, RecordingRule)
    assert (alert.name, alert.for_ms, alert.keep_firing_for_ms, alert.line) == ("GpuHot", 120_000, 60_000, 5)
    assert [s.name for s in alert.selectors] == ["gpu_temperature_celsius"]


@pytest.mark.parametrize(("text", "where", "message"), [
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x >\n",
     "f.yml:5:18", "unexpected end of input"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n        fro: 5m\n",
     "f.yml:6:9", "unknown key 'fro' in rule"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n        for: 5 minutes\n",
     "f.yml:6:14", "for: not a valid duration string"),
    ("groups:\n  - name: g\n    rules:\n      - record: a-b\n        expr: x\n",
     "f.yml:4:17", "invalid recording rule name: 'a-b'"),
    ("groups:\n  - name: g\n    rules:\n      - record: a\n        expr: x\n        for: 1m\n",
     "f.yml:6:9", "invalid field 'for' in recording rule"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: x\n",
     "f.yml:4:9", "exactly one of 'record' or 'alert'"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n"
     "        annotations: {s: '{{ if $value }}x{{ end }}'}\n",
     "f.yml:6:26", "template action {{if}} is not supported"),
    ("groups:\n  - name: g\n  - name: g\n", "f.yml:3:11", "'g': repeated in the same file"),
    ("groups:\n  - name: g\n    rules: [\n", "f.yml:4:1", "YAML:"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n          sum by (a) (\n"
     "            rate(x)\n          )\n", "f.yml:7:18", 'expected type range vector in call to function "rate"'),
])
def test_rule_errors_name_file_line_col(text: str, where: str, message: str) -> None:
    with pytest.raises(RuleError) as exc:
        load_text(text, "f.yml")
    assert str(exc.value).startswith(where + ": "), str(exc.value)
    assert message in str(exc.value)


def test_templates_refuse_unsupported_at_load() -> None:
    for text, message in [("{{ query \"up\" }}", "template function 'query' is not supported"),
                          ("{{ range $labels }}{{ end }}", "template action {{range}} is not supported"),
                          ("{{ $x := 1 }}", "variable assignments are not supported"),
                          ("{{ .Foo }}", "unknown field .Foo"),
                          ("{{ $nope }}", "undefined variable \"$nope\""),
                          ("{{ humanize $value ", "unclosed action")]:
        with pytest.raises(ParseError) as exc:
            Template(text)
        assert message in exc.value.message, (text, exc.value.message)


def test_template_expansion_errors_are_reported() -> None:
    with pytest.raises(TemplateError):
        Template("{{ humanize $labels.gpu }}").expand({"gpu": "zero"}, 1.0)
    assert Template("{{ humanize $labels.gpu }}").expand({"gpu": "2048"}, 1.0) == "2.048k"


def test_rules_check_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text(RULES)
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: topk(x)\n"
                   "      - alert: B\n        expr: sum(x) offset 1m\n      - record: a-b\n        expr: x\n"
                   "      - alert: C\n        expr: x > 1\n  - name: g\n    rules: []\n")
    res = subprocess.run([sys.executable, "-m", "fleetmon", "rules", "check", str(good), str(bad)],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1
    assert f"Checking {good}\n  SUCCESS: 3 rules found (2 alerting, 1 recording)" in res.stdout
    # Every error in the file, each with its position, as promtool reports them.
    assert res.stderr.splitlines() == [
        "  FAILED:",
        f'{bad}:5:15: group "g", rule 1, "A": wrong number of arguments for aggregate expression provided, '
        "expected 2, got 1",
        f'{bad}:7:22: group "g", rule 2, "B": offset modifier must be preceded by an instant vector selector '
        "or range vector selector or a subquery",
        f"{bad}:8:17: group \"g\", rule 3, \"a-b\": invalid recording rule name: 'a-b'",
        f"{bad}:12:11: 'g': repeated in the same file",
    ]


def test_rule_files_of_the_suite_pass_promtool_check() -> None:
    """Every rule file fleetmon accepts in the suite is also valid for promtool."""
    promtool = require_binary("promtool")
    files = sorted((REPO / "tests" / "promql").glob("*_rules.yml"))
    res = subprocess.run([promtool, "check", "rules", *map(str, files)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(("body", "message"), [
    ("tests:\n  - interval: 1m\n    input_series:\n      - series: 'a{'\n        values: '1'\n",
     "bad series 'a{'"),
    ("tests:\n  - interval: 1m\n    input_series:\n      - series: 'a'\n        values: '1 x2'\n",
     "bad value 'x2'"),
    ("tests:\n  - interval: 1 minute\n", "interval: not a valid duration string"),
    ("tests:\n  - intervall: 1m\n", "unknown field 'intervall' in test group"),
    ("rule_files: [missing.yml]\ntests: []\n", "WARNING: no file match pattern"),
])
def test_unit_test_file_errors_are_reported_not_raised(tmp_path: Path, body: str, message: str) -> None:

    p = tmp_path / "t.yml"
    p.write_text(body)
    out = io.StringIO()
    ok = run_file(p, out)
    assert message in out.getvalue()
    assert ok == ("WARNING" in message)
