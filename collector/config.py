"""Collector configuration: YAML, validated at start with errors naming the file, key and fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collector.alerting_config import BUILTIN, check_notifiers, check_rules, expand_rule_paths
from collector.errors import ConfigError
from fleetmon_common import settings


@dataclass
class Limits:
    """What one agent may send; beyond these a batch is refused with the reason."""

    max_message_bytes: int = 16 << 20
    max_series_per_node: int = 200_000
    max_labels: int = 32
    max_label_value_bytes: int = 1024
    max_future_seconds: float = 300.0
    max_past_seconds: float = 14 * 86400.0  # WAL backfill after a long outage
    hello_timeout: float = 10.0
    #: How far past the highest sequence an agent WAL has sent a batch may jump (2^32 batches
    #: is over a century at one a second); further is a corrupt or hostile sequence.
    max_sequence_jump: int = 1 << 32
    #: Gaps the collector tracks in one agent's sequence before refusing batches that open more.
    max_sequence_ranges: int = 1024


@dataclass
class AlertingConfig:
    rules: list[Path] = field(default_factory=list)
    evaluation_interval: float = 1.0
    resend_delay: float = 60.0
    notifiers: dict[str, Any] = field(default_factory=lambda: {"log": {}})
    external_labels: dict[str, str] = field(default_factory=dict)


@dataclass
class CollectorConfig:
    listen: str = "127.0.0.1:7700"
    http: str = "127.0.0.1:7780"
    data_dir: Path = Path("/var/lib/fleetmon-collector")
    retention: float = 30 * 86400.0
    #: External sinks by kind (influxdb_v1, influxdb_v2); the embedded store is always on.
    sinks: dict[str, Any] = field(default_factory=dict)
    #: Bound of the spool that holds acked data for the external sinks; when full, agents wait.
    spool_max_bytes: int = 1 << 30
    node_timeout: float = 30.0
    limits: Limits = field(default_factory=Limits)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    log_level: str = "warning"

    def validate(self) -> None:
        for addr, key in ((self.listen, "listen"), (self.http, "http")):
            if addr and ":" not in addr:
                raise ValueError(f"{key}: {addr!r} must be host:port")
        if self.retention < 3600:
            raise ValueError("retention must be at least 1h")
        if self.alerting.evaluation_interval <= 0:
            raise ValueError("alerting.evaluation_interval must be positive")


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> CollectorConfig:
    data: dict[str, Any] = {}
    where = str(path) if path else "collector config"
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from err
        except RecursionError as err:  # PyYAML composes nested collections recursively
            raise ConfigError(f"{path}: not valid YAML: nested too deeply") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        data = loaded or {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "rules":  # from the command line: relative to the working directory
            data.setdefault("alerting", {})
            data["alerting"] = {**data["alerting"], "rules": [
                str(v) if str(v).startswith(BUILTIN) else str(Path(v).absolute()) for v in value]}
        else:
            data[key] = value
    # Every problem in one pass, the alerting section's rule files and notifiers included.
    problems = settings.Problems(where)
    cfg = settings.build(CollectorConfig, data, "", error=ConfigError, problems=problems)
    cfg.alerting.rules = expand_rule_paths(cfg.alerting.rules, path.parent if path else Path.cwd(), problems)
    check_rules(cfg.alerting.rules, problems)
    check_notifiers(cfg.alerting.notifiers, problems)
    problems.raise_if_any(ConfigError)
    return cfg
