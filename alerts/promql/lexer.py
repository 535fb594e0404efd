"""Tokenizer for the PromQL subset (Prometheus 2.42 lexical rules)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from alerts.errors import ParseError

KEYWORDS = frozenset({
    "and", "or", "unless", "atan2", "by", "without", "on", "ignoring",
    "group_left", "group_right", "bool", "offset",
})

# Token kinds
IDENT, NUMBER, DURATION, STRING, OP, EOF = "ident", "number", "duration", "string", "op", "eof"

_OPS = ("==", "!=", "<=", ">=", "=~", "!~", "+", "-", "*", "/", "%", "^", "<", ">", "=",
        "(", ")", "{", "}", "[", "]", ",", ":", "@")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_DURATION = re.compile(r"(?:[0-9]+(?:ms|[smhdwy]))+")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_DURATION_PART = re.compile(r"([0-9]+)(ms|[smhdwy])")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 604_800_000, "y": 31_536_000_000}
_UNIT_ORDER = ["y", "w", "d", "h", "m", "s", "ms"]


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int
    value: object = None


def parse_duration_ms(text: str, pos: int = 0) -> int:
    """Prometheus ``model.ParseDuration``: units y w d h m s ms, each at most once, largest first."""
    if text == "0":
        return 0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ParseError(f"not a valid duration string: {text!r}", pos)
    order = [_UNIT_ORDER.index(u) for _, u in parts]
    if order != sorted(order) or len(set(order)) != len(order):
        raise ParseError(f"not a valid duration string: {text!r} (units must be y w d h m s ms, in order)", pos)
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


def format_duration_ms(ms: int) -> str:
    """Prometheus ``model.Duration.String()``: ``1h30m``, ``5m``, ``0s``."""
    if ms == 0:
        return "0s"
    out = []
    for unit in _UNIT_ORDER:
        size = _UNIT_MS[unit]
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(text: str, pos: int = 0) -> str:
    """Go-style string literal (double, single or back-quoted) as PromQL accepts it."""
    quote = text[0]
    body = text[1:-1]
    if quote == "`":
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise ParseError("escape sequence not terminated", pos + i)
        esc = body[i]
        if esc in _SIMPLE_ESC:
            out.append(_SIMPLE_ESC[esc])
            i += 1
        elif esc == quote:
            out.append(quote)
            i += 1
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 1:i + 1 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ParseError(f"invalid \\{esc} escape in string", pos + i)
            out.append(chr(int(digits, 16)))
            i += 1 + width
        elif esc in "01234567":
            digits = body[i:i + 3]
            if len(digits) != 3 or not all(c in "01234567" for c in digits):
                raise ParseError("invalid octal escape in string", pos + i)
            out.append(chr(int(digits, 8)))
            i += 3
        else:
            raise ParseError(f"unknown escape sequence \\{esc}", pos + i)
    return "".join(out)


def _lex_range(src: str, i: int, toks: list[Token]) -> int:
    """Inside ``[...]``: a duration, optionally ``:`` and a step (Prometheus lexes brackets in
    their own state, so ``[5m:1m]`` is not read as a metric name ``:1m``)."""
    n = len(src)
    while i < n:
        ch = src[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch == "]":
            toks.append(Token(OP, "]", i))
            return i + 1
        if ch == ":":
            toks.append(Token(OP, ":", i))
            i += 1
            continue
        m = _DURATION.match(src, i)
        if m is None or (m.end() < n and (src[m.end()].isalnum() or src[m.end()] == "_")):
            end = i
            while end < n and (src[end].isalnum() or src[end] in "_."):
                end += 1
            raise ParseError(f"bad duration syntax: {src[i:max(end, i + 1)]!r}", i)
        toks.append(Token(DURATION, m.group(), i, parse_duration_ms(m.group(), i)))
        i = m.end()
    raise ParseError("unclosed left bracket", i)


def tokenize(src: str) -> list[Token]:
    toks: list[Token] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch == "#":
            while i < n and src[i] != "\n":
                i += 1
            continue
        if ch in "\"'`":
            j = i + 1
            while j < n and src[j] != ch:
                if src[j] == "\\" and ch != "`":
                    j += 1
                elif src[j] == "\n" and ch != "`":
                    raise ParseError("unterminated quoted string", i)
                j += 1
            if j >= n:
                raise ParseError("unterminated quoted string", i)
            text = src[i:j + 1]
            toks.append(Token(STRING, text, i, unquote(text, i)))
            i = j + 1
            continue
        # ASCII digits only: str.isdigit() is also true for "²", which no number pattern matches.
        if "0" <= ch <= "9" or (ch == "." and i + 1 < n and "0" <= src[i + 1] <= "9"):
            m = _DURATION.match(src, i)
            end_ok = m is not None and (m.end() >= n or not (src[m.end()].isalnum() or src[m.end()] == "_"))
            if m and end_ok:
                toks.append(Token(DURATION, m.group(), i, parse_duration_ms(m.group(), i)))
                i = m.end()
                continue
            m = _NUMBER.match(src, i)
            assert m is not None
            text = m.group()
            if m.end() < n and (src[m.end()].isalnum() or src[m.end()] == "_"):
                raise ParseError(f"bad number or duration syntax: {src[i:m.end() + 1]!r}", i)
            try:
                value = float(int(text, 16)) if text[:2] in ("0x", "0X") else float(text)
            except OverflowError:  # a hex literal past float64 (Prometheus: "error parsing number")
                raise ParseError(f"error parsing number: {text[:20]}... is out of range", i) from None
            toks.append(Token(NUMBER, text, i, value))
            i = m.end()
            continue
        m = _IDENT.match(src, i)
        if m:
            text = m.group()
            low = text.lower()
            if low in ("inf", "nan"):
                toks.append(Token(NUMBER, text, i, float(low)))
            else:
                toks.append(Token(IDENT, text, i))
            i = m.end()
            continue
        if ch == "[":
            toks.append(Token(OP, "[", i))
            i = _lex_range(src, i + 1, toks)
            continue
        for op in _OPS:
            if src.startswith(op, i):
                toks.append(Token(OP, op, i))
                i += len(op)
                break
        else:
            raise ParseError(f"unexpected character {ch!r}", i)
    toks.append(Token(EOF, "", n))
    return toks
