"""Label sets and label matchers with Prometheus 2.x semantics.

A label set is a tuple of ``(name, value)`` pairs sorted by name, without empty values
(Prometheus treats an empty label value as an absent label). Tuples are hashable, so they key
dicts directly and compare like ``labels.Compare`` does for the orderings we need.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from alerts.errors import ParseError

Labels = tuple[tuple[str, str], ...]
NAME = "__name__"
EMPTY: Labels = ()

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def valid_label_name(name: str) -> bool:
    return bool(_LABEL_NAME.match(name))


def valid_metric_name(name: str) -> bool:
    return bool(_METRIC_NAME.match(name))


def from_map(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in mapping.items() if v != ""))


def from_pairs(pairs: Iterable[tuple[str, str]]) -> Labels:
    return tuple(sorted((k, v) for k, v in pairs if v != ""))


def get(labels: Labels, name: str) -> str:
    for k, v in labels:
        if k == name:
            return v
    return ""


def drop_name(labels: Labels) -> Labels:
    if labels and labels[0][0] == NAME:
        # "__name__" sorts before any label that starts with a lower-case letter, but not before
        # "A".."Z" or "_a"; search rather than assume it is first.
        return labels[1:]
    for i, (k, _) in enumerate(labels):
        if k == NAME:
            return labels[:i] + labels[i + 1:]
    return labels


def keep(labels: Labels, names: frozenset[str]) -> Labels:
    return tuple(p for p in labels if p[0] in names)


def without(labels: Labels, names: frozenset[str]) -> Labels:
    """Every label except ``names`` and the metric name (``HashWithoutLabels`` semantics)."""
    return tuple(p for p in labels if p[0] not in names and p[0] != NAME)


def render(labels: Labels) -> str:
    """Prometheus's ``labels.String()`` form: ``{a="1", b="2"}`` (Go-quoted values)."""
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in labels) + "}"


def render_series(labels: Labels) -> str:
    name = get(labels, NAME)
    rest = drop_name(labels)
    if not rest:
        return name or "{}"
    return name + render(rest)


def go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# RE2 (Go's regexp, used by Prometheus) and Python's ``re`` share the common syntax but differ
# at the edges. Constructs RE2 rejects but Python accepts (look-around, back-references, \Z)
# would make fleetmon match where Prometheus refuses the rule: refused here too. Of RE2's own
# constructs, POSIX classes (``[[:alpha:]]``) and ``\z`` are translated; the few Python cannot
# express (Unicode classes ``\p{..}``, ``\C``, negated POSIX classes) are refused clearly.
_RE2_UNSUPPORTED = (
    (re.compile(r"\(\?[=!]|\(\?<[=!]"), "look-around assertions are not supported by RE2"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]"), "back-references are not supported by RE2"),
    (re.compile(r"\(\?P="), "back-references are not supported by RE2"),
    (re.compile(r"\(\?\("), "conditional groups are not supported by RE2"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\Z"), "\\Z is not supported by RE2 (\\z is)"),
    (re.compile(r"\[:\^[a-z]+:\]"), "negated POSIX character classes ([:^alpha:]) are not supported by fleetmon"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\[pPC]"), r"\p, \P and \C are not supported by fleetmon"),
)
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_POSIX = re.compile(r"\[:([a-z]+):\]")
_END_OF_TEXT = re.compile(r"(?<!\\)((?:\\\\)*)\\z")


def _translate_re2(pattern: str) -> str:
    """RE2 spellings Python reads otherwise: ``[[:digit:]]`` classes, ``\\z``."""
    def posix(m: re.Match[str]) -> str:
        ranges = _POSIX_CLASSES.get(m.group(1))
        if ranges is None:
            raise ParseError(f"regex {go_quote(pattern)}: unknown POSIX class [:{m.group(1)}:]")
        return ranges
    return _END_OF_TEXT.sub(lambda m: m.group(1) + "\\Z", _POSIX.sub(posix, pattern))


_LEADING_FLAGS = re.compile(r"^\(\?([ims]+)\)")


def compile_regex(pattern: str, pos: int = 0) -> re.Pattern[str]:
    """Compile a label-matcher regex, fully anchored like Prometheus (``^(?:re)$``)."""
    for probe, why in _RE2_UNSUPPORTED:
        if probe.search(pattern):
            raise ParseError(f"regex {go_quote(pattern)}: {why}", pos)
    original = pattern
    try:
        pattern = _translate_re2(pattern)
    except ParseError as err:
        raise ParseError(err.message, pos) from err
    flags = ""
    lead = _LEADING_FLAGS.match(pattern)
    if lead:
        # RE2 accepts "(?i)" anywhere; Python only at the very start, so hoist a leading one
        # out of the anchoring group.
        flags, pattern = f"(?{lead.group(1)})", pattern[lead.end():]
    try:
        # RE2's \d \w \s are ASCII-only; re.ASCII gives Python the same classes.
        return re.compile(f"{flags}(?:{pattern})\\Z", re.ASCII)
    except re.error as err:
        raise ParseError(f"invalid regex {go_quote(original)}: {err}", pos) from err


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # "=", "!=", "=~", "!~"
    value: str
    regex: re.Pattern[str] | None = field(default=None, compare=False, hash=False)

    @classmethod
    def new(cls, name: str, op: str, value: str, pos: int = 0) -> Matcher:
        rx = compile_regex(value, pos) if op in ("=~", "!~") else None
        return cls(name, op, value, rx)

    def matches(self, value: str) -> bool:
        op = self.op
        if op == "=":
            return value == self.value
        if op == "!=":
            return value != self.value
        assert self.regex is not None
        hit = self.regex.match(value) is not None
        return hit if op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{go_quote(self.value)}"


def matches_all(labels: Labels, matchers: Iterable[Matcher]) -> bool:
    d = dict(labels)
    return all(m.matches(d.get(m.name, "")) for m in matchers)
