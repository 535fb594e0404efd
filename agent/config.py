"""Agent configuration: YAML, validated at start with errors that name the key and the fix.

Plugin sections are checked against each plugin's ``Config`` dataclass by :func:`build`.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

from agent.errors import ConfigError
from agent.failback import FailbackConfig
from agent.model import check_label_name
from agent.tls import AgentTlsConfig
from fleetmon_common import settings
from fleetmon_common.secrets import Secret
from fleetmon_common.settings import parse_duration, parse_size

__all__ = ["AgentConfig", "PluginSection", "PrometheusConfig", "WalConfig", "build", "load_config", "parse_duration",
           "parse_size"]

T = TypeVar("T")


def build(cls: type[T], data: Mapping[str, Any] | None, where: str,
          problems: settings.Problems | None = None) -> T:
    """Make dataclass ``cls`` from a YAML mapping; unknown keys and bad types are ConfigErrors
    (every one found, a line each; recorded in ``problems`` instead when given).

    Public: every plugin builds its ``Config`` section with it."""
    return settings.build(cls, data, where, error=ConfigError, problems=problems)


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
class PrometheusConfig:
    """The agent's own ``/metrics`` (:mod:`agent.exposition`); off unless ``listen`` is set."""

    listen: str = ""  # host:port, e.g. "0.0.0.0:9401" or ":9401"
    names: Literal["fleetmon", "dcgm", "both"] = "fleetmon"  # dcgm: dcgm-exporter's names for GPU series

    def validate(self) -> None:
        if self.listen and not self.listen.rpartition(":")[2].isdigit():
            raise ValueError(f"listen: {self.listen!r} must be host:port; write e.g. 0.0.0.0:9401")


@dataclass
class AgentConfig:
    node: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    collectors: list[str] = field(default_factory=lambda: ["127.0.0.1:7700"])
    #: Return to the preferred collector once it is healthy again, staggered (agent/failback.py).
    failback: FailbackConfig = field(default_factory=FailbackConfig)
    #: TLS to the collectors (and this node's client certificate): agent/tls.py.
    tls: AgentTlsConfig | None = None
    #: Bearer token the collectors want (inline, {env: NAME} or {file: PATH}).
    auth_token: Secret | None = None
    data_dir: Path = Path("/var/lib/fleetmon")
    sysfs_root: Path = Path("/sys")
    procfs_root: Path = Path("/proc")
    dev_root: Path = Path("/dev")
    batch_interval: float = 1.0
    wal: WalConfig = field(default_factory=WalConfig)
    log_level: str = "warning"
    plugins: dict[str, Any] = field(default_factory=lambda: {"host": {}})
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    #: Debugging/audit aid, off by default: append every batch written to the WAL as JSON lines
    #: (sequence, name, labels, time, value) so delivery can be checked against the store.
    audit_log: Path | None = None
    #: The file it came from, for messages (``file: key: problem; fix``); not a setting.
    source: str = field(default="agent config", init=False, repr=False, compare=False)

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

    def plugin_sections(self, default_interval: dict[str, float],
                        problems: settings.Problems | None = None) -> list[PluginSection]:
        """Each plugin's section; every wrong value is reported (into ``problems`` when given)."""
        found = problems if problems is not None else settings.Problems(self.source)
        out = []
        for name, section in self.plugins.items():
            where = f"plugins.{name}"
            if section is not None and not isinstance(section, Mapping):
                found.add(f"{where}: expected a mapping of settings, got {section!r}; write {name}: {{}} for defaults")
                continue
            raw = dict(section or {})
            interval = timeout = default_interval.get(name, 10.0)
            with found.gather(ConfigError):
                interval = _coerce(raw.pop("interval", interval), float, where + ".interval")
                if interval <= 0:
                    interval = default_interval.get(name, 10.0)  # one problem, not a second about the timeout
                    raise ConfigError(f"{where}.interval: must be positive; write e.g. 10s")
            with found.gather(ConfigError):
                timeout = _coerce(raw.pop("timeout", min(interval * 0.8, 30.0)), float, where + ".timeout")
                if timeout <= 0:
                    raise ConfigError(f"{where}.timeout: must be positive; write e.g. 5s")
            enabled = True
            with found.gather(ConfigError):
                enabled = _coerce(raw.pop("enabled", True), bool, where + ".enabled")
            out.append(PluginSection(name, interval, timeout, enabled, raw))
        if problems is None:
            found.raise_if_any(ConfigError)
        return out


def start_only_yaml() -> ModuleType:
    """PyYAML, for reading the config at start; the agent forgets it once it runs (main.py).

    Imported without its libyaml extension (``yaml._yaml``): ``safe_load`` is the pure-Python
    loader either way, and the extension, once loaded, would keep the parser's classes alive
    after the agent has dropped the module (~0.9 MiB of a running agent's RSS).
    """
    if "yaml" not in sys.modules:
        sys.modules.setdefault("yaml._yaml", None)  # type: ignore[arg-type] # None: not importable, PyYAML falls back
    import yaml  # noqa: PLC0415

    return yaml


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None,
                problems: settings.Problems | None = None) -> AgentConfig:
    """Read and validate the agent config; every error names the file and the key.

    With ``problems`` given, errors are recorded there and a best-effort config is returned, so
    the plugin sections can be checked in the same pass (:func:`agent.scheduler.build_runners`).
    """
    data: dict[str, Any] = {}
    where = str(path) if path else "agent config"
    if path is not None:
        yaml = start_only_yaml()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from err
        try:
            loaded = yaml.safe_load(text)
        except RecursionError as err:  # PyYAML composes nested collections recursively
            raise ConfigError(f"{path}: not valid YAML: nested too deeply") from err
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
    found = problems if problems is not None else settings.Problems()
    found.source = where
    cfg = build(AgentConfig, data, "", found)
    if cfg is None:  # a required key is missing: nothing to go on with
        cfg = AgentConfig()
    cfg.source = where
    if problems is None:
        found.raise_if_any(ConfigError)
    return cfg
