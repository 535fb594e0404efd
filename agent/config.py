"""Agent configuration: YAML, validated at start with errors that name the key and the fix.

Plugin sections are checked against each plugin's ``Config`` dataclass by :func:`build`.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import ConfigError
from agent.model import check_label_name
from fleetmon_common import settings
from fleetmon_common.settings import parse_duration, parse_size

__all__ = ["AgentConfig", "PluginSection", "WalConfig", "build", "load_config", "parse_duration", "parse_size"]

T = TypeVar("T")


def build(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """Make dataclass ``cls`` from a YAML mapping; unknown keys and bad types are ConfigErrors.

    Public: every plugin builds its ``Config`` section with it."""
    return settings.build(cls, data, where, error=ConfigError)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    return settings.coerce(value, tp, where, error=ConfigError)

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
    #: Debugging/audit aid, off by default: append every batch written to the WAL as JSON lines
    #: (sequence, name, labels, time, value) so delivery can be checked against the store.
    audit_log: Path | None = None

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
        for name, section in self.plugins.items():
            raw = dict(section or {})
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
        import yaml  # noqa: PLC0415 - the parser is needed at start only; the agent drops it after (main.py)

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
