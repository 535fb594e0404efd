"""Collector configuration: YAML, validated at start with errors naming the file, key and fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from collector.alerting_config import BUILTIN, check_notifiers, check_rules, expand_rule_paths
from collector.errors import ConfigError
from collector.promquery import QueryConfig
from collector.spool import build_sinks
from fleetmon_common import runtime, settings
from fleetmon_common.secrets import Secret


@dataclass
class Limits:
    """What agents may send. Beyond a limit that holds for good (series, labels, timestamps) the
    batch is refused with the reason; beyond one that passes with time (events per second,
    streams) the stream ends with RESOURCE_EXHAUSTED and the agent resends later."""

    #: A larger message is refused by gRPC itself. An agent batch is far smaller (2,000 series with
    #: their definitions: ~100 KB); parsing one costs ~10x its size in memory, so keep this modest.
    max_message_bytes: int = 4 << 20
    #: Series one node may have in the store; a batch defining more is refused.
    max_series_per_node: int = 50_000
    #: Series in the whole store; past it, batches defining new series are refused.
    max_series_total: int = 5_000_000
    max_labels: int = 32
    max_label_value_bytes: int = 1024
    #: Samples and events must be stamped within this window around the collector's clock.
    max_future_seconds: float = 300.0
    max_past_seconds: float = 14 * 86400.0  # WAL backfill after a long outage
    #: Events one node may send, on average per second, and in one burst.
    max_events_per_second: float = 50.0
    max_event_burst: int = 1000
    #: Concurrent streams of one node (a newer stream supersedes an older one at once).
    max_streams_per_node: int = 4
    hello_timeout: float = 10.0
    #: A stream with no message for this long is closed (its agent reconnects if it is alive).
    stream_idle_timeout: float = 300.0
    #: How far past the highest sequence an agent WAL has sent a batch may jump (2^32 batches
    #: is over a century at one a second); further is a corrupt or hostile sequence.
    max_sequence_jump: int = 1 << 32
    #: Gaps the collector tracks in one agent's sequence before refusing batches that open more.
    max_sequence_ranges: int = 1024


@dataclass
class TlsConfig:
    """A certificate and key to serve, and the CA whose certificates clients must present."""

    cert: Path | None = None
    key: Path | None = None
    #: Clients must present a certificate signed by this CA (mutual TLS). For gRPC the
    #: certificate must also name the node (subjectAltName DNS) that its Hello claims.
    client_ca: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert is not None

    def validate(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        if self.client_ca is not None and self.cert is None:
            raise ValueError("client_ca needs cert and key (the server's own certificate)")
        # The files are read when the server starts (and again whenever they change).


@dataclass
class HttpAuthConfig:
    """How the HTTP API and dashboard are protected when ``http`` is not on loopback."""

    token: Secret | None = None  # clients send ``Authorization: Bearer <token>``
    tls: TlsConfig = field(default_factory=TlsConfig)


def is_loopback(addr: str) -> bool:
    """``host:port`` binds loopback only (127.0.0.0/8, ::1, localhost)."""
    return runtime.is_loopback_host(addr.rpartition(":")[0].strip("[]"))


@dataclass
class AlertingConfig:
    #: Rule files. Absent: fleetmon's default rule pack (alerts/rules/); ``[]``: no rules.
    rules: list[Path] | None = None
    evaluation_interval: float = 1.0
    resend_delay: float = 60.0
    notifiers: dict[str, Any] = field(default_factory=lambda: {"log": {}})
    external_labels: dict[str, str] = field(default_factory=dict)
    #: Evaluate rules in a process of their own that tails the append log (another core: ingest
    #: never waits for rules; the design that carries 2,500 nodes on 2 cores, README "Capacity").
    #: It publishes alerts, notifier health and group counters for the HTTP API. ``false``: the
    #: engine runs in the collector's process (one process fewer, for small installs and tests).
    process: bool = True
    #: Alert state restored when a collector adopts a node (alerts/restore.py), with the meaning
    #: of Prometheus's --rules.alert.for-grace-period / --rules.alert.for-outage-tolerance.
    #: The grace period is shorter than Prometheus's 10m: an adopted node's windows are warmed
    #: from history, so a rule's data is whole at once (a restarted Prometheus starts empty).
    for_grace_period: float = 10.0
    for_outage_tolerance: float = 3600.0

    def validate(self) -> None:
        if self.for_grace_period < 0 or self.for_outage_tolerance <= 0:
            raise ValueError("for_grace_period must not be negative and for_outage_tolerance must be positive")


@dataclass
class CollectorConfig:
    listen: str = "127.0.0.1:7700"
    #: gRPC over TLS; with ``client_ca``, mutual TLS (agents prove their node name).
    tls: TlsConfig = field(default_factory=TlsConfig)
    #: A shared bearer token agents must send (sites without a PKI); with or without ``tls``.
    auth_token: Secret | None = None
    #: Allow gRPC (and HTTP) off loopback without authentication. Anyone who reaches the port
    #: can then write any node's data: for isolated lab networks only.
    insecure: bool = False
    http: str = "127.0.0.1:7780"
    http_auth: HttpAuthConfig = field(default_factory=HttpAuthConfig)
    data_dir: Path = Path("/var/lib/fleetmon-collector")
    retention: float = 30 * 86400.0
    #: External sinks by kind (influxdb_v1, influxdb_v2); the embedded store is always on.
    sinks: dict[str, Any] = field(default_factory=dict)
    #: A Prometheus-compatible query API over the shared TSDB (VictoriaMetrics): where an adopted
    #: node's alert state and windows come from, and whether a node streams elsewhere now.
    query: QueryConfig = field(default_factory=QueryConfig)
    #: Bound of the spool that holds acked data for the external sinks; when full, agents wait.
    spool_max_bytes: int = 1 << 30
    node_timeout: float = 30.0
    #: Where the block store's compaction runs: its own process (another core) or a thread.
    compactor: Literal["process", "thread"] = "process"
    limits: Limits = field(default_factory=Limits)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    log_level: str = "warning"
    #: Checked at start: ``quick`` (PRAGMA quick_check), ``full`` (integrity_check) or ``off``.
    store_check: Literal["quick", "full", "off"] = "quick"
    #: A damaged store found at start: ``move_aside`` (kept for recovery, a fresh one started)
    #: or ``refuse`` (the collector does not start; the message says what to run).
    corrupt_store: Literal["move_aside", "refuse"] = "move_aside"

    def validate(self) -> None:
        for addr, key in ((self.listen, "listen"), (self.http, "http")):
            if addr and ":" not in addr:
                raise ValueError(f"{key}: {addr!r} must be host:port")
        if not self.insecure:
            if not is_loopback(self.listen) and not (self.tls.enabled and (self.tls.client_ca or self.auth_token)):
                raise ValueError(
                    f"listen: {self.listen} is not loopback, so agents must authenticate: set tls (cert, key and "
                    "client_ca for mutual TLS) or tls plus auth_token; or set insecure: true on an isolated network")
            auth = self.http_auth
            if self.http and not is_loopback(self.http) and not (auth.token or auth.tls.client_ca):
                raise ValueError(
                    f"http: {self.http} is not loopback: set http_auth.token (bearer) or http_auth.tls with "
                    "client_ca; or set insecure: true on an isolated network")
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
    # A section with a wrong value is built with its defaults: its rule files, notifiers and
    # the sinks are checked from the file's own text, so they are reported in this pass too.
    raw_alerting = data.get("alerting")
    alerting: dict[str, Any] = raw_alerting if isinstance(raw_alerting, dict) else {}
    if problems and isinstance(alerting.get("rules"), list):
        cfg.alerting.rules = [Path(str(r)) for r in alerting["rules"]]
    if cfg.alerting.rules is None:  # absent: the default rule pack; `rules: []` means none
        cfg.alerting.rules = [Path(f"{BUILTIN}*.yml")]
    cfg.alerting.rules = expand_rule_paths(cfg.alerting.rules, path.parent if path else Path.cwd(), problems)
    check_rules(cfg.alerting.rules, problems)
    check_notifiers(alerting.get("notifiers", cfg.alerting.notifiers), problems)
    if isinstance(data.get("sinks"), dict):
        with problems.gather(ConfigError):
            build_sinks(data["sinks"])  # built again (and started) by the collector
    problems.raise_if_any(ConfigError)
    return cfg
