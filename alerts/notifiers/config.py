"""Notifier configuration: plain dataclasses, validated from the collector's ``notifiers:`` section.

```yaml
notifiers:
  log: {}
  alertmanager: {urls: ["http://127.0.0.1:9093"]}
  mqtt: {host: 127.0.0.1, port: 1883}
  webhook: {url: "http://127.0.0.1:8080/hook"}
```

Errors are ``alerts.errors.NotifierError`` and name the key (``collector.yml: notifiers.mqtt.port:
expected an integer, got 'abc'``). This module does not import ``agent/`` (DESIGN, "Layout").
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from alerts.errors import NotifierError
from fleetmon_common import settings
from fleetmon_common.secrets import Secret, redact_url, reveal


@dataclass
class AlertmanagerConfig:
    #: Every replica of the Alertmanager cluster; each one gets every alert (like Prometheus, an
    #: Alertmanager cluster de-duplicates, so sending to one replica is not enough).
    urls: list[str] = field(default_factory=list)
    timeout: float = 5.0
    #: How often the engine re-sends a firing alert (its ``resend_delay``). A firing alert's
    #: ``endsAt`` is ``now + resend * resend_factor`` so Alertmanager keeps it active while re-sends
    #: arrive, and resolves it by itself if the collector vanishes (Prometheus uses 4x too).
    resend: float = 60.0
    resend_factor: float = 4.0
    queue_size: int = 10_000
    max_batch: int = 500
    #: Base of the ``generatorURL`` of alerts that carry none (the collector's dashboard).
    external_url: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.urls:
            raise ValueError("urls: at least one Alertmanager URL is needed")
        for i, url in enumerate(self.urls):
            _check_http_url(url, f"urls[{i}]")
        _positive(self, "timeout", "resend", "resend_factor", "queue_size", "max_batch")


@dataclass
class MqttConfig:
    host: str = ""
    port: int = 1883
    username: str | None = None
    #: Inline, {env: NAME} or {file: PATH} (fleetmon_common.secrets); never logged.
    password: str | Secret | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    topic_prefix: str = "fleetmon/v1"
    qos: int = 1
    client_id: str | None = None
    keepalive: float = 30.0  # seconds; MQTT carries whole seconds
    queue_size: int = 10_000
    #: Resolved alert instances stay in their topic's retained state this long (seconds), then
    #: leave the list. The topic itself is never cleared: it keeps the last (resolved) state.
    resolved_retention: float = 900.0

    def validate(self) -> None:
        if not self.host:
            raise ValueError("host: the MQTT broker's host name is required")
        if not 0 < self.port < 65536:
            raise ValueError(f"port: {self.port} is not a TCP port")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos: {self.qos} is not an MQTT QoS (0, 1 or 2)")
        if self.password is not None and self.username is None:
            raise ValueError("password: set username too")
        if self.ca_file is not None:
            if not self.tls:
                raise ValueError("ca_file: set tls: true to use a CA file")
            if not os.path.isfile(self.ca_file):
                raise ValueError(f"ca_file: {self.ca_file} does not exist")
        prefix = self.topic_prefix.strip("/")
        if not prefix or any(c in prefix for c in "+#\0"):
            raise ValueError(f"topic_prefix: {self.topic_prefix!r} must be non-empty, without + # or NUL")
        _positive(self, "keepalive", "queue_size")


@dataclass
class WebhookConfig:
    #: Inline, {env: NAME} or {file: PATH}: webhook URLs often carry a token. Logs show only
    #: scheme://host:port/… (fleetmon_common.secrets.redact_url).
    url: str | Secret = field(default="", repr=False)
    timeout: float = 5.0
    #: Attempts after the first one before an entry is counted failed and dropped.
    retries: int = 3
    backoff: float = 0.5
    headers: dict[str, str] = field(default_factory=dict)
    queue_size: int = 10_000

    @property
    def endpoint(self) -> str:
        return reveal(self.url) or ""

    def validate(self) -> None:
        _check_http_url(self.endpoint, "url")
        if self.retries < 0:
            raise ValueError("retries: must be 0 or more")
        _positive(self, "timeout", "backoff", "queue_size")


@dataclass
class LogConfig:
    #: Python logger the one-line JSON records go to.
    logger: str = "fleetmon.alerts"
    queue_size: int = 10_000

    def validate(self) -> None:
        _positive(self, "queue_size")


def _positive(cfg: object, *names: str) -> None:
    for n in names:
        if getattr(cfg, n) <= 0:
            raise ValueError(f"{n}: must be greater than 0")


def _check_http_url(url: str, key: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{key}: {redact_url(url)!r} is not an http(s) URL")


C = TypeVar("C")

KINDS: dict[str, type[Any]] = {
    "log": LogConfig,
    "alertmanager": AlertmanagerConfig,
    "mqtt": MqttConfig,
    "webhook": WebhookConfig,
}


def build_config(cls: type[C], raw: Any, where: str) -> C:
    """Validate a mapping into a config dataclass; every wrong key is reported (``where.key``),
    with the wording and the duration forms (``timeout: 5s``) of every other fleetmon config."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise NotifierError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return settings.build(cls, raw, where, error=NotifierError)
