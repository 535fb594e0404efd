"""What the InfluxDB-family sinks share: the HTTP config keys and their checks, the sink's name
and health metrics, and how refused chunks are reported.

The v1 sink (:mod:`collector.storage.influx_v1`) and the v2 sink
(:mod:`collector.storage.influx_v2`) differ in the destination (database/retention policy vs
org/bucket), the credentials and the client; everything here is the same for both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from collector.errors import ConfigError, SinkError
from collector.storage.base import HealthSample
from collector.storage.retry import MAX_LINES, SinkHealth
from fleetmon_common.secrets import redact_url
from proto.lineprotocol import DIALECTS, Dialect, LineEncoder


@dataclass
class HttpSinkConfig:
    """The keys every InfluxDB-family sink takes; a subclass adds its destination and credentials,
    checks the destination in :meth:`validate_destination` and extends :meth:`validate`."""

    url: str = ""
    timeout: float = 10.0
    gzip: bool = True
    batch_size: int = MAX_LINES
    dialect: Dialect = "influxdb1"
    # Events go to measurement "event" (tags node, kind, severity + labels; fields message,
    # action). VictoriaMetrics cannot store strings, so its preset turns this off.
    events: bool = True
    # TLS: a CA bundle (PEM) for a private CA, or verification off (tls_verify: false, tests only).
    tls_ca: str | None = None
    tls_verify: bool = True
    name: str = "influxdb"

    def validate(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {redact_url(self.url)!r}")
        # Right after the url, so a section missing its destination hears about that first.
        self.validate_destination()
        if not 1 <= self.batch_size <= MAX_LINES:
            raise ValueError(f"batch_size must be 1..{MAX_LINES}, got {self.batch_size}")
        if self.tls_ca is not None and not os.path.isfile(self.tls_ca):
            raise ValueError(f"tls_ca: no such file {self.tls_ca!r}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout}")
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, got {self.dialect!r}")

    def validate_destination(self) -> None:
        """Raise ValueError when the sink's required destination keys are missing."""

    def secret_from_env(self, variable: str, key: str) -> str:
        """The value of environment ``variable``, named in the ``key`` setting (``password_env``)."""
        value = os.environ.get(variable)
        if value is None:
            raise ConfigError(f"sink {self.name}: environment variable {variable} ({key}) is not set")
        return value


class HttpSinkBase:
    """The name, health counters and line encoder of an InfluxDB-family sink."""

    def __init__(self, config: HttpSinkConfig) -> None:
        config.validate()
        self._health = SinkHealth(config.name)
        self._encoder = LineEncoder(config.dialect)

    @property
    def name(self) -> str:
        """The ``sink`` label of the health metrics and the prefix of every error message."""
        return self._health.sink

    @name.setter
    def name(self, value: str) -> None:
        self._health.sink = value

    def health(self) -> list[HealthSample]:
        return self._health.samples()


def raise_refused(rejected: list[SinkError]) -> None:
    """After every chunk of a batch was tried: report the chunks the server refused, if any.

    A refused chunk does not stop the others (they may be fine), so the refusals are collected
    and raised together, not retryable, naming the first.
    """
    if rejected:
        first = rejected[0]
        more = f" (and {len(rejected) - 1} more refused requests)" if len(rejected) > 1 else ""
        raise SinkError(f"{first}{more}", retryable=False) from first
