"""Alert label/annotation templates: the subset of Go's text/template that Prometheus rules use.

Supported: text, ``{{ pipeline }}`` with ``{{-``/``-}}`` trimming and ``{{/* comments */}}``;
operands ``$labels.x``, ``$value``, ``$externalLabels.x``, ``$externalURL``, ``.Labels.x``,
``.Value``, string and number literals, ``( pipeline )``; pipes ``a | f``; functions ``humanize``,
``humanize1024``, ``humanizePercentage``, ``humanizeDuration``, ``printf``, ``toUpper``,
``toLower``, ``index``. Anything else (``if``, ``range``, ``with``, ``query``, variables ...) is
refused when the rule file is loaded, naming the construct. Output follows Go: a missing label
prints as an empty string (``missingkey=zero``), floats print like ``%v`` (``1e+06``), as Prometheus 2.42 does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from alerts.errors import ParseError, TemplateError
from alerts.promql import gofloat
from alerts.promql.labels import go_quote
from alerts.promql.lexer import unquote

NO_VALUE = "<no value>"
_CONTROL = frozenset({"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"})
_PROMETHEUS_ONLY_FUNCS = frozenset({
    "query", "first", "label", "value", "sortByLabel", "strvalue", "args", "safeHtml", "match",
    "reReplaceAll", "graphLink", "tableLink", "stripPort", "stripDomain", "humanizeTimestamp",
    "toTime", "pathPrefix", "externalURL", "parseDuration", "title", "len", "and", "or", "not",
    "eq", "ne", "lt", "le", "gt", "ge", "html", "js", "urlquery", "print", "println", "call", "slice",
})


@dataclass
class _Text:
    text: str


@dataclass
class _Ref:
    """``$var.a.b`` (var may be "" for ``$``) or ``.a.b`` (var None: the root data)."""

    var: str | None
    path: tuple[str, ...]


@dataclass
class _Lit:
    value: Any


@dataclass
class _Func:
    name: str


@dataclass
class _Pipe:
    commands: list[list[_Operand]]


_Operand = _Ref | _Lit | _Func | _Pipe
_Node = Union[_Text, _Pipe]  # noqa: UP007

_ACTION_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
      | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
      | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>:=|=|\||\(|\))
    )""",
    re.VERBOSE,
)

_DATA_FIELDS = frozenset({"Labels", "ExternalLabels", "ExternalURL", "Value"})
# Prometheus prepends these definitions to every alert template.
_PREDEFINED = frozenset({"labels", "value", "externalLabels", "externalURL", ""})


class Template:
    def __init__(self, text: str, *, literal: bool = False) -> None:
        """``literal``: no template syntax at all (recording-rule labels, which Prometheus
        writes verbatim)."""
        self.text = text
        self.nodes = [_Text(text)] if literal else _parse(text)
        self.is_static = all(isinstance(n, _Text) for n in self.nodes)
        # Text only, once comments and trimming are applied ('a{{/* c */}}b' is "ab").
        self.static_text = "".join(n.text for n in self.nodes if isinstance(n, _Text))

    def expand(self, labels: Mapping[str, str], value: float,
               external_labels: Mapping[str, str] | None = None, external_url: str = "") -> str:
        if self.is_static:
            return self.static_text
        data = {"Labels": dict(labels), "ExternalLabels": dict(external_labels or {}),
                "ExternalURL": external_url, "Value": value}
        out: list[str] = []
        for node in self.nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            else:
                out.append(_print(_eval_pipe(node, data)))
        return "".join(out)


def _parse(text: str) -> list[_Node]:
    nodes: list[_Node] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(" \t\r\n")
        if start < 0:
            if chunk:
                nodes.append(_Text(chunk))
            return nodes
        inner_start = start + 2
        if text.startswith(("- ", "-\t", "-\n"), inner_start):
            chunk = chunk.rstrip(" \t\r\n")
            inner_start += 1
        if chunk:
            nodes.append(_Text(chunk))
        end = text.find("}}", inner_start)
        if end < 0:
            raise ParseError("unclosed action: missing \"}}\"", start)
        inner = text[inner_start:end]
        trim_next = False
        if inner.endswith(" -") or inner.endswith("\t-") or inner.endswith("\n-"):
            inner = inner[:-1]
            trim_next = True
        pos = end + 2
        stripped = inner.strip()
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise ParseError("unclosed comment", start)
            continue
        nodes.append(_parse_pipeline(stripped, start))


def _tokens(src: str, at: int) -> list[tuple[str, str]]:
    toks: list[tuple[str, str]] = []
    i = 0
    while i < len(src):
        if src[i:].strip() == "":
            break
        m = _ACTION_TOKEN.match(src, i)
        if not m or m.end() == i:
            raise ParseError(f"unexpected {src[i:].strip()[:20]!r} in template action", at)
        kind = m.lastgroup
        assert kind is not None
        toks.append((kind, m.group(kind)))
        i = m.end()
    return toks


def _parse_pipeline(src: str, at: int) -> _Pipe:
    toks = _tokens(src, at)
    if not toks:
        raise ParseError("missing value for command", at)
    if toks[0][0] == "ident" and toks[0][1] in _CONTROL:
        raise ParseError(f"template action {{{{{toks[0][1]}}}}} is not supported by fleetmon "
                         "(only values, pipes and the humanize/printf functions are)", at)
    if any(t in (("punct", ":="), ("punct", "=")) for t in toks):
        raise ParseError("template variable assignments are not supported by fleetmon", at)
    pipe, rest = _pipe(toks, 0, at)
    if rest != len(toks):
        raise ParseError(f"unexpected {toks[rest][1]!r} in template action", at)
    return pipe


def _pipe(toks: list[tuple[str, str]], i: int, at: int) -> tuple[_Pipe, int]:
    commands: list[list[_Operand]] = [[]]
    while i < len(toks):
        kind, text = toks[i]
        if (kind, text) == ("punct", ")"):
            break
        if (kind, text) == ("punct", "|"):
            if not commands[-1]:
                raise ParseError("missing command before \"|\" in template", at)
            commands.append([])
            i += 1
            continue
        if (kind, text) == ("punct", "("):
            sub, i = _pipe(toks, i + 1, at)
            if i >= len(toks) or toks[i] != ("punct", ")"):
                raise ParseError("unclosed \"(\" in template action", at)
            commands[-1].append(sub)
            i += 1
            continue
        commands[-1].append(_operand(kind, text, at))
        i += 1
    if not commands[-1]:
        raise ParseError("missing command in template pipeline", at)
    for cmd in commands:
        if len(cmd) > 1 and not isinstance(cmd[0], _Func):
            raise ParseError("template: can't give arguments to a non-function", at)
    return _Pipe(commands), i


def _operand(kind: str, text: str, at: int) -> _Operand:
    if kind == "str":
        return _Lit(unquote(text, at))
    if kind == "num":
        return _Lit(float(text) if any(c in text for c in ".eE") else int(text))
    if kind == "var":
        parts = text[1:].split(".")
        if parts[0] not in _PREDEFINED:
            raise ParseError(f"undefined variable \"${parts[0]}\" in template", at)
        return _Ref(parts[0], tuple(parts[1:]))
    if kind == "field":
        path = tuple(p for p in text.split(".") if p)
        if path and path[0] not in _DATA_FIELDS:
            raise ParseError(f"template: unknown field .{path[0]} (alert data has "
                             f"{', '.join('.' + f for f in sorted(_DATA_FIELDS))})", at)
        return _Ref(None, path)
    if kind == "ident":
        if text in ("true", "false"):
            return _Lit(text == "true")
        if text in FUNCS:
            return _Func(text)
        if text in _CONTROL:
            raise ParseError(f"template action {text!r} is not supported by fleetmon", at)
        if text in _PROMETHEUS_ONLY_FUNCS:
            raise ParseError(f"template function {text!r} is not supported by fleetmon", at)
        raise ParseError(f"function \"{text}\" not defined", at)
    raise ParseError(f"unexpected {text!r} in template action", at)


# -- evaluation ---------------------------------------------------------------------------------
_VAR_ROOT = {"labels": ("Labels",), "value": ("Value",), "externalLabels": ("ExternalLabels",),
             "externalURL": ("ExternalURL",), "": ()}


class _Missing:
    pass


MISSING = _Missing()


def _eval_pipe(pipe: _Pipe, data: dict[str, Any]) -> Any:
    value: Any = MISSING
    for i, cmd in enumerate(pipe.commands):
        head = cmd[0]
        args = [_eval_operand(op, data) for op in cmd[1:]]
        if i > 0:
            args.append(value)
        if isinstance(head, _Func):
            value = _call(head.name, args)
        else:
            if i > 0:
                raise TemplateError("template: can't pipe a value into a non-function")
            value = _eval_operand(head, data)
    return value


def _eval_operand(op: _Operand, data: dict[str, Any]) -> Any:
    if isinstance(op, _Lit):
        return op.value
    if isinstance(op, _Pipe):
        return _eval_pipe(op, data)
    if isinstance(op, _Func):
        return _call(op.name, [])
    path = (_VAR_ROOT[op.var] if op.var is not None else ()) + op.path
    cur: Any = data
    for depth, part in enumerate(path):
        if not isinstance(cur, dict):
            raise TemplateError(f"template: can't evaluate field {part} in type {_go_type(cur)}")
        if depth == 0:
            if part not in cur:
                raise TemplateError(f"template: can't evaluate field {part} in the alert data")
            cur = cur[part]
        else:
            # Prometheus expands with missingkey=zero: a label the series lacks prints as "".
            cur = cur.get(part, "")
    return cur


def _go_type(v: Any) -> str:
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "map[string]string"
    return type(v).__name__


def _print(v: Any) -> str:
    if v is MISSING:
        return NO_VALUE
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return gofloat.format_v(v)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_print(v[k])}" for k in sorted(v)) + "]"
    return str(v)


def _to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise TemplateError(f"can't convert {v} to float")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError as err:
            raise TemplateError(f"strconv.ParseFloat: parsing {v!r}: invalid syntax") from err
    if v is MISSING:
        raise TemplateError("can't convert <nil> to float")
    raise TemplateError(f"can't convert {_go_type(v)} to float")


def _scaled(v: float, steps: tuple[str, ...], base: float) -> str:
    prefix = ""
    for p in steps:
        if abs(v) < base:
            break
        prefix = p
        v /= base
    return gofloat.format_g(v, 4) + prefix


def humanize(x: Any) -> str:
    v = _to_float(x)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return gofloat.format_g(v, 4)
    if abs(v) >= 1:
        return _scaled(v, ("k", "M", "G", "T", "P", "E", "Z", "Y"), 1000.0)
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return gofloat.format_g(v, 4) + prefix


def humanize1024(x: Any) -> str:
    v = _to_float(x)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return gofloat.format_g(v, 4)
    return _scaled(v, ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"), 1024.0)


def humanize_percentage(x: Any) -> str:
    return gofloat.format_g(_to_float(x) * 100, 4) + "%"


def humanize_duration(x: Any) -> str:
    v = _to_float(x)
    if math.isnan(v) or math.isinf(v):
        return gofloat.format_g(v, 4)
    if v == 0:
        return gofloat.format_g(v, 4) + "s"
    if abs(v) >= 1:
        sign = ""
        if v < 0:
            sign, v = "-", -v
        duration = int(v)
        seconds = duration % 60
        minutes = (duration // 60) % 60
        hours = (duration // 3600) % 24
        days = duration // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{gofloat.format_g(v, 4)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{gofloat.format_g(v, 4)}{prefix}s"


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def printf(fmt: Any, *args: Any) -> str:
    """Go ``fmt.Sprintf`` for the verbs alert templates use: %s %v %d %f %e %g %x %q %%."""
    if not isinstance(fmt, str):
        raise TemplateError("printf: format must be a string")
    out: list[str] = []
    pos = 0
    argi = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[argi]
        argi += 1
        spec = flags + (width or "") + (f".{prec}" if prec is not None else "")
        out.append(_format_one(spec, verb, arg))
    out.append(fmt[pos:])
    if argi < len(args):
        extra = ", ".join(f"{_go_type(a)}={_print(a)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _format_one(spec: str, verb: str, arg: Any) -> str:
    if arg is MISSING:
        return f"%!{verb}(<nil>)"
    if verb in "fFeEgG" and isinstance(arg, (int, float)) and not isinstance(arg, bool):
        v = float(arg)
        if math.isnan(v) or math.isinf(v):
            return ("%" + spec.split(".", maxsplit=1)[0] + "s") % gofloat.format_v(v)
        if verb in "gG" and "." not in spec:
            return ("%" + spec + "s") % (gofloat.format_v(v) if verb == "g" else gofloat.format_v(v).upper())
        return ("%" + spec + verb) % v
    if verb == "d" and isinstance(arg, int) and not isinstance(arg, bool):
        return ("%" + spec + "d") % arg
    if verb == "x" and isinstance(arg, int) and not isinstance(arg, bool):
        return ("%" + spec + "x") % arg
    if verb == "v" or (verb == "s" and isinstance(arg, str)):
        return ("%" + spec + "s") % _print(arg)
    if verb == "q" and isinstance(arg, str):
        return go_quote(arg)
    return f"%!{verb}({_go_type(arg)}={_print(arg)})"


def _index(m: Any, *keys: Any) -> Any:
    cur = m
    for k in keys:
        if not isinstance(cur, dict):
            raise TemplateError(f"index of untyped value {_print(cur)}")
        cur = cur.get(k, "")  # Go's index returns the zero value for a missing map key
    return cur


def _str_arg(fn: Callable[[str], str]) -> Callable[[Any], str]:
    def wrapped(x: Any) -> str:
        if not isinstance(x, str):
            raise TemplateError(f"wrong type for value; expected string; got {_go_type(x)}")
        return fn(x)
    return wrapped


FUNCS: dict[str, Callable[..., Any]] = {
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizePercentage": humanize_percentage,
    "humanizeDuration": humanize_duration,
    "printf": printf,
    "toUpper": _str_arg(str.upper),
    "toLower": _str_arg(str.lower),
    "index": _index,
}
_ARITY = {"humanize": 1, "humanize1024": 1, "humanizePercentage": 1, "humanizeDuration": 1,
          "toUpper": 1, "toLower": 1}


def _call(name: str, args: list[Any]) -> Any:
    want = _ARITY.get(name)
    if want is not None and len(args) != want:
        raise TemplateError(f"wrong number of args for {name}: want {want} got {len(args)}")
    if name == "printf" and not args:
        raise TemplateError("wrong number of args for printf: want at least 1 got 0")
    if name == "index" and not args:
        raise TemplateError("wrong number of args for index: want at least 1 got 0")
    try:
        return FUNCS[name](*args)
    except (TypeError, ValueError, OverflowError) as err:
        # Go reports these when the template runs; so does fleetmon, as a template error.
        raise TemplateError(f"error calling {name}: {err}") from err
