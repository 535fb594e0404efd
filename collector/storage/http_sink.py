"""What the HTTP sinks share: the endpoint's config keys and their checks, the sink's name and
health metrics; and what the InfluxDB-family sinks share on top (line-protocol keys, encoder).

The v1 sink (:mod:`collector.storage.influx_v1`) and the v2 sink
(:mod:`collector.storage.influx_v2`) differ in the destination (database/retention policy vs
org/bucket), the credentials and the client; the remote-write sink
(:mod:`collector.storage.remote_write`) speaks protobuf instead of line protocol. Everything
here is the same for all of them.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from collector.errors import ConfigError, SinkError
from collector.storage.base import HealthSample, SinkBatch
from collector.storage.lines import ColumnLineEncoder, encode_batch
from collector.storage.poster import ChunkPoster
from collector.storage.retry import MAX_LINES, SinkHealth, gzip_body, http_error, raise_refused
from fleetmon_common.secrets import redact_url
from proto.lineprotocol import DIALECTS, Dialect


@dataclass
class HttpEndpointConfig:
    """The keys of every HTTP sink: where, how long to wait, which TLS trust, and its name. A
    subclass checks its destination in :meth:`validate_destination` and extends :meth:`validate`."""

    url: str = ""
    timeout: float = 10.0
    # TLS: a CA bundle (PEM) for a private CA, or verification off (tls_verify: false, tests only).
    tls_ca: str | None = None
    tls_verify: bool = True
    name: str = ""
    # What the spool hands the sink per write (collector/spool.py): at most write_samples samples,
    # and, with flush_interval > 0, up to that many seconds' worth (so a series brings several
    # samples per request: several times cheaper for the TSDB, docs/capacity.md).
    flush_interval: float = 0.0
    write_samples: int = 100_000

    def validate(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {redact_url(self.url)!r}")
        # Right after the url, so a section missing its destination hears about that first.
        self.validate_destination()
        if self.tls_ca is not None and not os.path.isfile(self.tls_ca):
            raise ValueError(f"tls_ca: no such file {self.tls_ca!r}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout}")
        if not 0 <= self.flush_interval <= 300:
            raise ValueError(f"flush_interval must be 0..300 seconds, got {self.flush_interval}")
        if not 1 <= self.write_samples <= 10_000_000:
            raise ValueError(f"write_samples must be 1..10000000, got {self.write_samples}")

    def validate_destination(self) -> None:
        """Raise ValueError when the sink's required destination keys are missing."""

    def secret_from_env(self, variable: str, key: str) -> str:
        """The value of environment ``variable``, named in the ``key`` setting (``password_env``)."""
        value = os.environ.get(variable)
        if value is None:
            raise ConfigError(f"sink {self.name}: environment variable {variable} ({key}) is not set")
        return value

    def ssl_verify(self) -> bool | ssl.SSLContext:
        """What an httpx client takes as ``verify``."""
        if self.tls_ca and self.tls_verify:
            return ssl.create_default_context(cafile=self.tls_ca)
        return self.tls_verify


@dataclass
class HttpSinkConfig(HttpEndpointConfig):
    """The keys every InfluxDB-family sink takes; a subclass adds its destination and credentials."""

    gzip: bool = True
    batch_size: int = MAX_LINES
    dialect: Dialect = "influxdb1"
    # Events go to measurement "event" (tags node, kind, severity + labels; fields message,
    # action). VictoriaMetrics cannot store strings, so its preset turns this off.
    events: bool = True
    name: str = "influxdb"

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.batch_size <= MAX_LINES:
            raise ValueError(f"batch_size must be 1..{MAX_LINES}, got {self.batch_size}")
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, got {self.dialect!r}")


class NamedSink(ABC):
    """The name and health counters of an HTTP sink, how the spool should batch for it, and how a
    write goes: ``_before_write`` on the event loop, then ``_post_batch`` (plan, render and post
    through the sink's :class:`~collector.storage.poster.ChunkPoster`) in one worker thread."""

    def __init__(self, config: HttpEndpointConfig) -> None:
        config.validate()
        self._health = SinkHealth(config.name)
        self.flush_interval = config.flush_interval
        self.write_samples = config.write_samples
        self._poster: ChunkPoster | None = None  # made by start()
        # One batch at a time through the encoder's caches (their byte tables grow in place) and
        # the poster's connection, should two writes of this sink ever overlap.
        self._write_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The ``sink`` label of the health metrics and the prefix of every error message."""
        return self._health.sink

    @name.setter
    def name(self, value: str) -> None:
        self._health.sink = value

    def health(self) -> list[HealthSample]:
        return self._health.samples()

    async def write(self, batch: SinkBatch) -> None:
        poster = self._poster
        if poster is None:
            raise SinkError(f"sink {self.name}: write before start()", retryable=False)
        self._health.attempt(batch)
        started = time.monotonic()
        try:
            await self._before_write()
            written, events = await asyncio.to_thread(self._post_locked, poster, batch)
        except SinkError as err:
            self._health.failure(batch, err, time.monotonic() - started)
            raise
        self._health.success(batch, written, time.monotonic() - started, events=events)

    async def _before_write(self) -> None:
        """Anything the destination needs before a write (the v1 sink creates its database)."""

    def _post_locked(self, poster: ChunkPoster, batch: SinkBatch) -> tuple[int, int]:
        with self._write_lock:
            return self._post_batch(poster, batch)

    @abstractmethod
    def _post_batch(self, poster: ChunkPoster, batch: SinkBatch) -> tuple[int, int]:
        """In the worker thread: write ``batch``; (lines or TimeSeries written, events written)."""

    def _close_poster(self) -> None:
        poster, self._poster = self._poster, None
        if poster is not None:
            poster.close()


class HttpSinkBase(NamedSink):
    """The line encoder of an InfluxDB-family sink and how it writes a batch: planned, rendered
    (and gzipped) and posted in one worker thread, each chunk rendered while the server works on
    the one before (:class:`~collector.storage.poster.ChunkPoster`). A subclass opens its poster
    in ``start()`` (:meth:`_open`)."""

    def __init__(self, config: HttpSinkConfig) -> None:
        super().__init__(config)
        self._lines = config
        self._encoder = ColumnLineEncoder(config.dialect)

    def _open(self, path: str, params: dict[str, str], headers: dict[str, str]) -> None:
        """The poster for ``<url><path>?<params>``, with the line-protocol headers and ``headers``."""
        cfg = self._lines
        own = {"User-Agent": "fleetmon-collector", "Content-Type": "text/plain; charset=utf-8"}
        if cfg.gzip:
            own["Content-Encoding"] = "gzip"
        self._poster = ChunkPoster(self._health, cfg.url.rstrip("/") + path, params=params,
                                   headers={**own, **headers}, timeout=cfg.timeout, verify=cfg.ssl_verify(),
                                   refusal=self._refused)

    def _refused(self, status: int, headers: Mapping[str, str], body: bytes, chunk: bytes) -> SinkError:
        url = self._poster.url if self._poster is not None else redact_url(self._lines.url)
        return http_error(self.name, status, headers=headers, body=body, chunk=chunk.decode("utf-8", "replace"),
                          url=url)

    def _post_batch(self, poster: ChunkPoster, batch: SinkBatch) -> tuple[int, int]:
        cfg = self._lines
        encoded = encode_batch(batch, self._encoder, events=cfg.events, max_lines=cfg.batch_size)

        def body(i: int) -> tuple[bytes, bytes]:
            chunk = encoded.render(i)
            return chunk, gzip_body(chunk) if cfg.gzip else chunk

        poster.post_all(encoded.n_chunks, body)
        return encoded.n_lines, encoded.n_event_lines


__all__ = ["HttpEndpointConfig", "HttpSinkBase", "HttpSinkConfig", "NamedSink", "raise_refused"]
