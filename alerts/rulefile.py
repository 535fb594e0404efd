"""Prometheus rule files: ``groups`` of alerting and recording rules, loaded with positions.

Errors name ``file:line:col`` (1-based) of the offending key or, for a bad expression, of the
token inside ``expr`` (PyYAML's node marks give where each scalar starts in the file).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from alerts.errors import ParseError, RuleError, RuleErrors
from alerts.promql import ast
from alerts.promql.labels import NAME, go_quote, valid_label_name, valid_metric_name
from alerts.promql.lexer import format_duration_ms, parse_duration_ms
from alerts.promql.parser import check_rule_expr, parse
from alerts.templates import Template

#: fleetmon evaluates on the stream: a group without ``interval`` runs every second.
DEFAULT_INTERVAL_S = 1.0

_GROUP_KEYS = ("name", "interval", "limit", "rules")
_RULE_KEYS = ("record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations")


@dataclass
class Rule:
    name: str
    expr: ast.Expr
    expr_text: str
    labels: dict[str, Template]
    file: str = ""
    line: int = 0

    @property
    def selectors(self) -> list[ast.VectorSelector]:
        return [n for n in ast.walk(self.expr) if isinstance(n, ast.VectorSelector)]

    @property
    def max_range_ms(self) -> int:
        return max((n.range_ms for n in ast.walk(self.expr) if isinstance(n, ast.MatrixSelector)), default=0)


@dataclass
class RecordingRule(Rule):
    pass


@dataclass
class AlertingRule(Rule):
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    annotations: dict[str, Template] = field(default_factory=dict)


@dataclass
class RuleGroup:
    name: str
    rules: list[Rule]
    interval_s: float = DEFAULT_INTERVAL_S
    interval_set: bool = False  # False when the file left it out
    limit: int = 0
    file: str = ""


class _Loc:
    def __init__(self, file: str, src: str) -> None:
        self.file = file
        self.lines = src.splitlines()

    def err(self, msg: str, node: yaml.Node | None) -> RuleError:
        if node is None:
            return RuleError(msg, self.file)
        return RuleError(msg, self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def expr_err(self, err: ParseError, node: yaml.ScalarNode) -> RuleError:
        line, col = node.start_mark.line, node.start_mark.column
        value, pos = node.value, err.pos
        if node.style in ("|", ">"):
            k = value.count("\n", 0, pos)
            line = line + 1 + k
            src = self.lines[line] if line < len(self.lines) else ""
            value_line = value.split("\n")[k]
            # The source line is the block's indentation followed by the value's line.
            col = len(src) - len(value_line) + pos - (value.rfind("\n", 0, pos) + 1)
        elif node.style in ('"', "'"):
            col += 1 + pos
        else:
            col += pos
        return RuleError(err.message, self.file, line + 1, col + 1)


def _mapping(loc: _Loc, node: yaml.Node, what: str, keys: Sequence[str]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise loc.err(f"{what} must be a mapping", node)
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for k, v in node.value:
        key = k.value if isinstance(k, yaml.ScalarNode) else None
        if key not in keys:
            raise loc.err(f"unknown key {key!r} in {what} (allowed: {', '.join(keys)})", k)
        assert key is not None
        if key in out:
            raise loc.err(f"duplicate key {key!r} in {what}", k)
        out[key] = (k, v)
    return out


def _scalar(loc: _Loc, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise loc.err(f"{what} must be a string", node)
    return str(node.value)


def _duration(loc: _Loc, node: yaml.Node, what: str) -> int:
    text = _scalar(loc, node, what)
    try:
        return parse_duration_ms(text)
    except ParseError as err:
        raise loc.err(f"{what}: {err.message}", node) from err


def _templates(loc: _Loc, node: yaml.Node, what: str, check_names: bool, literal: bool = False) -> dict[str, Template]:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise loc.err(f"{what} must be a mapping of names to strings", node)
    out: dict[str, Template] = {}
    for k, v in node.value:
        name = _scalar(loc, k, f"{what} name")
        if not valid_label_name(name) or (check_names and name == NAME):
            raise loc.err(f"invalid {what} name: {name!r}", k)
        if name in out:
            raise loc.err(f"duplicate {what} name {name!r}", k)
        text = "" if isinstance(v, yaml.ScalarNode) and v.tag.endswith(":null") else _scalar(loc, v, f"{what} {name!r}")
        try:
            out[name] = Template(text, literal=literal)
        except ParseError as err:
            raise loc.err(f"{what} {name!r}: template: {err.message}", v) from err
    return out


def _rule(loc: _Loc, node: yaml.Node) -> Rule:
    f = _mapping(loc, node, "rule", _RULE_KEYS)
    has_record, has_alert = "record" in f, "alert" in f
    if has_record == has_alert:
        raise loc.err("a rule needs exactly one of 'record' or 'alert'", node)
    if "expr" not in f:
        raise loc.err("field 'expr' must be set in rule", node)
    expr_node = f["expr"][1]
    expr_text = _scalar(loc, expr_node, "expr")
    if not expr_text.strip():
        raise loc.err("field 'expr' must be set in rule", expr_node)
    assert isinstance(expr_node, yaml.ScalarNode)
    try:
        expr = parse(expr_text)
        check_rule_expr(expr)
    except ParseError as err:
        raise loc.expr_err(err, expr_node) from err
    # Recording-rule labels are written verbatim by Prometheus (no template expansion).
    labels = _templates(loc, f["labels"][1], "label", True, literal=has_record) if "labels" in f else {}
    line = node.start_mark.line + 1
    if has_record:
        name_node = f["record"][1]
        name = _scalar(loc, name_node, "record")
        if not valid_metric_name(name):
            raise loc.err(f"invalid recording rule name: {name!r}", name_node)
        for key in ("for", "keep_firing_for", "annotations"):
            if key in f:
                raise loc.err(f"invalid field {key!r} in recording rule", f[key][0])
        return RecordingRule(name, expr, expr_text, labels, loc.file, line)
    name_node = f["alert"][1]
    name = _scalar(loc, name_node, "alert")
    if not name:
        raise loc.err("alert name must not be empty", name_node)
    for_ms = _duration(loc, f["for"][1], "for") if "for" in f else 0
    keep_ms = _duration(loc, f["keep_firing_for"][1], "keep_firing_for") if "keep_firing_for" in f else 0
    annotations = _templates(loc, f["annotations"][1], "annotation", False) if "annotations" in f else {}
    return AlertingRule(name, expr, expr_text, labels, loc.file, line, for_ms, keep_ms, annotations)


def load_text(src: str, file: str = "<string>") -> list[RuleGroup]:
    """Parse a rule file. Every error in it is reported (``RuleErrors`` when there is more than
    one), each naming file:line:col, as ``promtool check rules`` reports them all; only a YAML
    syntax error stops at once."""
    loc = _Loc(file, src)
    try:
        root = yaml.compose(src, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise RuleError(f"YAML: {err.problem or err.context}", file, line, col) from err
    except yaml.YAMLError as err:
        raise RuleError(f"YAML: {err}", file) from err
    if root is None:
        return []
    top = _mapping(loc, root, "rule file", ("groups",))
    if "groups" not in top:
        return []
    groups_node = top["groups"][1]
    if isinstance(groups_node, yaml.ScalarNode) and groups_node.tag.endswith(":null"):
        return []
    if not isinstance(groups_node, yaml.SequenceNode):
        raise loc.err("'groups' must be a list", groups_node)
    groups: list[RuleGroup] = []
    errors: list[RuleError] = []
    seen: set[str] = set()
    for gnode in groups_node.value:
        try:
            group = _group(loc, gnode, seen, errors)
        except RuleError as err:
            errors.append(err)
            continue
        groups.append(group)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RuleErrors(errors)
    return groups


def _group(loc: _Loc, gnode: yaml.Node, seen: set[str], errors: list[RuleError]) -> RuleGroup:
    g = _mapping(loc, gnode, "group", _GROUP_KEYS)
    if "name" not in g:
        raise loc.err("group name must not be empty", gnode)
    gname = _scalar(loc, g["name"][1], "group name")
    if not gname:
        raise loc.err("group name must not be empty", g["name"][1])
    if gname in seen:
        errors.append(loc.err(f"{gname!r}: repeated in the same file", g["name"][1]))
    seen.add(gname)
    interval_s, interval_set = DEFAULT_INTERVAL_S, False
    if "interval" in g:
        ms = _duration(loc, g["interval"][1], "interval")
        if ms <= 0:
            raise loc.err("group interval must be greater than zero", g["interval"][1])
        interval_s, interval_set = ms / 1000, True
    limit = 0
    if "limit" in g:
        text = _scalar(loc, g["limit"][1], "limit")
        if not re.fullmatch(r"\d+", text):
            raise loc.err(f"limit must be a non-negative integer, got {text!r}", g["limit"][1])
        limit = int(text)
    rules: list[Rule] = []
    if "rules" in g:
        rnode = g["rules"][1]
        if not (isinstance(rnode, yaml.ScalarNode) and rnode.tag.endswith(":null")):
            if not isinstance(rnode, yaml.SequenceNode):
                raise loc.err("'rules' must be a list", rnode)
            for i, r in enumerate(rnode.value, 1):
                try:
                    rules.append(_rule(loc, r))
                except RuleError as err:
                    errors.append(_in_rule(err, gname, i, r))
    return RuleGroup(gname, rules, interval_s, interval_set, limit, loc.file)


def _in_rule(err: RuleError, group: str, index: int, node: yaml.Node) -> RuleError:
    """Prefix an error with the rule it is in, as promtool does: group "g", rule 2, "Name"."""
    name = ""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value in ("alert", "record") and isinstance(v, yaml.ScalarNode):
                name = str(v.value)
    where = f"group {go_quote(group)}, rule {index}" + (f", {go_quote(name)}" if name else "")
    return RuleError(f"{where}: {err.message}", err.file, err.line, err.col)


def load_file(path: Path) -> list[RuleGroup]:
    try:
        src = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RuleError(f"cannot read rule file: {err}", str(path)) from err
    return load_text(src, str(path))


def load_files(paths: Sequence[Path]) -> list[RuleGroup]:
    groups: list[RuleGroup] = []
    for p in paths:
        groups.extend(load_file(p))
    return groups


__all__ = ["AlertingRule", "RecordingRule", "Rule", "RuleGroup", "format_duration_ms", "load_file",
           "load_files", "load_text"]
