"""Agent configuration: YAML, validated at start with errors that name the key and the fix.

Plugin sections are checked against each plugin's ``Config`` dataclass by :func:`build`, which
is small on purpose: the agent runs on every node and should not pull a validation framework.
"""

from __future__ import annotations

import dataclasses
import difflib
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from agent.errors import ConfigError
from agent.model import check_label_name

T = TypeVar("T")

_COMMON_PLUGIN_KEYS = ("interval", "timeout", "enabled")


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
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
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str) and args and args[0] is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, f"{where} key"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
        return build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return parse_duration(value) if value[-1:].isalpha() else float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return parse_size(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, str):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")


def build(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """Make dataclass ``cls`` from a YAML mapping; unknown keys and bad types are errors."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields) or 'none'}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from err
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


@dataclass
class PluginSection:
    name: str
    interval: float
    timeout: float
    enabled: bool
    options: dict[str, Any]


@dataclass
class WalConfig:
    path: Path | None = None  # default: <data_dir>/wal.sqlite
    max_bytes: int = 256 * 1024 * 1024
    backfill_rate: float = 20.0  # backfill at this multiple of real time

    def validate(self) -> None:
        if self.max_bytes < 1 << 20:
            raise ValueError("wal.max_bytes must be at least 1MiB")
        if self.backfill_rate < 1:
            raise ValueError("wal.backfill_rate must be at least 1 (times real time)")


@dataclass
class AgentConfig:
    node: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    collectors: list[str] = field(default_factory=lambda: ["127.0.0.1:7700"])
    data_dir: Path = Path("/var/lib/fleetmon")
    sysfs_root: Path = Path("/sys")
    procfs_root: Path = Path("/proc")
    dev_root: Path = Path("/dev")
    batch_interval: float = 1.0
    wal: WalConfig = field(default_factory=WalConfig)
    log_level: str = "warning"
    plugins: dict[str, Any] = field(default_factory=lambda: {"host": {}})

    def validate(self) -> None:
        if not self.node:
            self.node = socket.gethostname()
        for key in self.labels:
            if not check_label_name(key):
                raise ValueError(f"labels: {key!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        if "node" in self.labels:
            raise ValueError("labels: 'node' is set by the top-level 'node' key; remove it from labels")
        if not self.collectors:
            raise ValueError("collectors: give at least one host:port")
        for c in self.collectors:
            if ":" not in c:
                raise ValueError(f"collectors: {c!r} must be host:port")
        if self.batch_interval <= 0:
            raise ValueError("batch_interval must be positive (seconds)")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level must be debug, info, warning or error")

    def plugin_sections(self, default_interval: dict[str, float]) -> list[PluginSection]:
        out = []
        for name, raw in self.plugins.items():
            raw = dict(raw or {})
            where = f"plugins.{name}"
            interval = _coerce(raw.pop("interval", default_interval.get(name, 10.0)), float, where + ".interval")
            if interval <= 0:
                raise ConfigError(f"{where}.interval must be positive (seconds)")
            timeout = _coerce(raw.pop("timeout", min(interval * 0.8, 30.0)), float, where + ".timeout")
            if timeout <= 0:
                raise ConfigError(f"{where}.timeout must be positive (seconds)")
            enabled = _coerce(raw.pop("enabled", True), bool, where + ".enabled")
            out.append(PluginSection(name, interval, timeout, enabled, raw))
        return out


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> AgentConfig:
    """Read and validate the agent config; errors name the file and the key."""
    data: dict[str, Any] = {}
    where = str(path) if path else "agent config"
    if path is not None:
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            pos = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{path}:{pos}: not valid YAML: {getattr(err, 'problem', err)}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        data = loaded or {}
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return build(AgentConfig, data, where)
