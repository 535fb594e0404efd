"""Typed settings from YAML mappings, shared by the agent and the collector configs.

Small on purpose: the agent runs on every node and should not pull a validation framework.
Errors name the key (``plugins.nvidia.interval``) and say what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from fleetmon_common.secrets import Secret


class SettingsError(ValueError):
    """A setting is wrong; the message names the key and the fix."""


T = TypeVar("T")

def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str, *, error: type[Exception] = SettingsError) -> Any:
    """``value`` as type ``tp``; a wrong value raises ``error`` (the caller's own exception class,
    so each package keeps one exception family) with a message naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where, error=error)
            except error as err:
                errors.append(str(err))
        raise error(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise error(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str) and args and args[0] is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise error(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        out = [coerce(v, item, f"{where}[{i}]", error=error) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise error(f"{where}: expected a mapping, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt, f"{where} key", error=error): coerce(v, vt, f"{where}.{k}", error=error)
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise error(f"{where}: expected a mapping of settings, got {value!r}")
        return build(tp, value, where, error=error)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise error(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return parse_duration(value) if value[-1:].isalpha() else float(value)
            except ValueError:
                pass
        raise error(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return parse_size(value)
            except ValueError:
                pass
        raise error(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise error(f"{where}: expected a string, got {value!r}")
    if tp is Secret:
        try:
            return Secret.from_setting(value, where)
        except ValueError as err:
            raise error(str(err)) from err
    if tp is Path:
        if isinstance(value, str):
            return Path(value)
        raise error(f"{where}: expected a path, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise error(f"{where}: expected {_describe(tp)}, got {value!r}")


def build(cls: type[T], data: Mapping[str, Any] | None, where: str, *,
          error: type[Exception] = SettingsError) -> T:
    """Make dataclass ``cls`` from a YAML mapping; unknown keys and bad types raise ``error``."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields) or 'none'}"
            raise error(f"{where}: unknown key {key!r}{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], f"{where}.{name}", error=error)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise error(f"{where}: missing required key {name!r}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as err:
            raise error(f"{where}: {err}") from err
    return obj


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``500ms``, ``10s``, ``5m``, ``1h``, ``30d`` or a bare number of seconds."""
    text = text.strip()
    for unit in ("ms", "s", "m", "h", "d", "w"):
        if text.endswith(unit):
            number = text[: -len(unit)]
            if number.replace(".", "", 1).isdigit():
                return float(number) * _UNITS[unit]
    return float(text)


_SIZES = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 1000, "MB": 10**6, "GB": 10**9}


def parse_size(text: str) -> int:
    """``256MiB``, ``1GiB``, ``64KB`` or a bare number of bytes."""
    text = text.strip()
    for unit, mult in _SIZES.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)].strip()) * mult)
    return int(text)


