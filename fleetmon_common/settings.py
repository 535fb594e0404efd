"""Typed settings from YAML mappings, shared by the agent and the collector configs.

Small on purpose: the agent runs on every node and should not pull a validation framework.
Errors name the key (``plugins.nvidia.interval``) and say what would be valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from fleetmon_common.secrets import Secret


class SettingsError(ValueError):
    """A setting is wrong; the message names the key and the fix (one line per problem)."""


T = TypeVar("T")

_NUMBER_HINT = "write a number, or a duration such as 500ms, 30s, 5m, 1h30m, 30d"


class Problems:
    """Every problem of one config in one pass, each once, as ``file: key: problem; fix``.

    Builders given a ``Problems`` record into it and carry on with defaults, so one run of the
    validation reports them all (instead of the first, then the next after a fix, ...).
    ``source`` (the file) prefixes each line; set it before adding lines for that file.
    """

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        for raw in str(line).splitlines():
            part = raw.strip()
            if self.source and part and not part.startswith(self.source + ":"):
                part = f"{self.source}: {part}"
            if part and part not in self.lines:
                self.lines.append(part)

    @contextlib.contextmanager
    def gather(self, *errors: type[BaseException]) -> Iterator[None]:
        """Record an error of these types raised inside the block, and go on after it."""
        try:
            yield
        except errors as err:
            self.add(str(err))

    def __bool__(self) -> bool:
        return bool(self.lines)

    def raise_if_any(self, error: type[Exception] = SettingsError) -> None:
        if self.lines:
            raise error("\n".join(self.lines))


def _key(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str, *, error: type[Exception] = SettingsError) -> Any:
    """``value`` as type ``tp``; a wrong value raises ``error`` (the caller's own exception class,
    so each package keeps one exception family) with a message naming ``where``; a list or a
    mapping reports every wrong item, one line each."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if Secret in args and isinstance(value, Mapping):  # {env: NAME} / {file: PATH}: say why not
            return coerce(value, Secret, where, error=error)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where, error=error)
            except error as err:
                errors.append(str(err))
        raise error(errors[0] if errors else _at(where, f"invalid value {value!r}"))
    if origin is typing.Literal:
        if value not in args:
            raise error(_at(where, f"{value!r} is not one of {', '.join(map(repr, args))}"))
        return value
    if origin in (list, tuple):
        if isinstance(value, str) and args and args[0] is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise error(_at(where, f"expected a list, got {type(value).__name__} {value!r}"))
        item = args[0] if args else Any
        problems = Problems()
        out = []
        for i, v in enumerate(value):
            with problems.gather(error):
                out.append(coerce(v, item, f"{where}[{i}]", error=error))
        problems.raise_if_any(error)
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise error(_at(where, f"expected a mapping, got {type(value).__name__}"))
        kt, vt = args if args else (Any, Any)
        problems = Problems()
        mapping = {}
        for k, v in value.items():
            with problems.gather(error):
                mapping[coerce(k, kt, f"{where} key", error=error)] = coerce(v, vt, _key(where, k), error=error)
        problems.raise_if_any(error)
        return mapping
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise error(_at(where, f"expected a mapping of settings, got {value!r}"))
        return build(tp, value, where, error=error)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise error(_at(where, f"expected true or false, got {value!r}"))
    if tp is float:
        return _number(value, where, error)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return parse_size(value)
            except ValueError:
                if value[:1].isdigit():
                    raise error(_at(where, f"{value!r} is not a size; write e.g. 64KB, 256MiB or 1GiB")) from None
        raise error(_at(where, f"expected an integer, got {value!r}"))
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise error(_at(where, f"expected a string, got {value!r}"))
    if tp is Secret:
        try:
            return Secret.from_setting(value, where)
        except ValueError as err:
            raise error(str(err)) from err
    if tp is Path:
        if isinstance(value, str):
            return Path(value)
        raise error(_at(where, f"expected a path, got {value!r}"))
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise error(_at(where, f"expected {_describe(tp)}, got {value!r}"))


def _number(value: Any, where: str, error: type[Exception]) -> float:
    """A ``float`` setting: a number, or a duration in seconds (``30d`` is the documented form
    of every period, so a duration is accepted wherever a number of seconds is)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = parse_duration(value)
        except ValueError:
            raise error(_at(where, f"{value!r} is neither a number nor a duration; {_NUMBER_HINT}")) from None
    else:
        raise error(_at(where, f"expected a number or a duration, got {value!r}; {_NUMBER_HINT}"))
    if not math.isfinite(number):
        raise error(_at(where, f"{value!r} is not a finite number; give a bound, e.g. 30d"))
    return number


def build(cls: type[T], data: Mapping[str, Any] | None, where: str, *,
          error: type[Exception] = SettingsError, problems: Problems | None = None) -> T:
    """Make dataclass ``cls`` from a YAML mapping; unknown keys and bad types raise ``error``.

    Every problem is found in one pass: the raised error has one line per problem. With
    ``problems`` given, nothing is raised: the lines go there and the object is built with
    defaults in place of the wrong values (its ``validate`` is skipped), so the caller can go on
    checking what depends on it. Fields declared ``init=False`` are not settings.
    """
    found = Problems()
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            import difflib  # noqa: PLC0415 - only for a config with a mistake, not in every agent's memory

            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields) or 'none'}"
            found.add(_at(where, f"unknown key {key!r}{hint}"))
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            with found.gather(error):
                kwargs[name] = coerce(data[name], hints[name], _key(where, name), error=error)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            found.add(_at(where, f"missing required key {name!r}"))
    obj: Any = None
    with found.gather(TypeError):  # a required key is missing: already said above
        obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if not found and callable(check):
        try:
            check()
        except (ValueError, error) as err:
            for line in str(err).splitlines():
                found.add(_validate_line(where, line, fields))
    if problems is not None:
        for line in found.lines:
            problems.add(line)
        return obj
    found.raise_if_any(error)
    return obj


def _validate_line(where: str, line: str, fields: Mapping[str, Any]) -> str:
    """``validate`` says ``key: problem``; name it ``where.key: problem`` so the key is whole."""
    head, sep, rest = line.partition(": ")
    if sep and head.split("[")[0] in fields:
        return f"{_key(where, head)}: {rest}"
    return _at(where, line)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365 * 86400.0}


_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def parse_duration(text: str) -> float:
    """Seconds from ``500ms``, ``10s``, ``5m``, ``1h30m``, ``30d``, ``2w``, ``1y`` (Prometheus'
    units) or a bare number of seconds."""
    text = text.strip()
    if _DURATION_RE.fullmatch(text):
        return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 30s, 5m, 1h30m, 30d)") from None


_SIZES = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 1000, "MB": 10**6, "GB": 10**9}


def parse_size(text: str) -> int:
    """``256MiB``, ``1GiB``, ``64KB`` or a bare number of bytes."""
    text = text.strip()
    for unit, mult in _SIZES.items():
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)].strip()) * mult)
            except OverflowError:  # "infKB", "1e400MiB": float() reads them, int() cannot
                raise ValueError(f"{text!r} is not a size") from None
    return int(text)


