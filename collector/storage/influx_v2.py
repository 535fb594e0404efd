"""InfluxDB v2 API sink (``/api/v2/write``, url/token/org/bucket) through ``influxdb-client``.

The same API is served by InfluxDB 2.x, 3.x, 1.8+ (``token: "user:password"``, bucket
``db/rp``) and VictoriaMetrics (token/org/bucket ignored).

``influxdb-client``'s default batching WriteApi loses points silently: its background thread
retries, then logs and drops a batch unless an error callback is wired (influxdb-client-python
issues #80, #198, #332). This sink therefore never batches inside the client: it calls the
client's synchronous write call (``WriteService.post_write``, which the SYNCHRONOUS WriteApi
wraps) once per chunk, in a worker thread so the event loop never blocks (urllib3 is blocking),
while the next chunk is encoded in another, and every failure raises
:class:`~collector.errors.SinkError`. The client's own retries are switched off
(``retries=False``): retrying is the spool's job, with the back-off in
:mod:`collector.storage.retry`.

Why ``post_write`` rather than ``WriteApi.write``: the WriteApi compresses with gzip level 9
(``enable_gzip``), which cost more than half the sink's time in ``bench/bench_sinks.py``; the
sink compresses at level 1 itself and passes ``content_encoding="gzip"``, which ``WriteApi.write``
cannot forward.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import urllib3.exceptions
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService

from collector.errors import SinkError
from collector.storage.base import SinkBatch
from collector.storage.http_sink import HttpSinkBase, HttpSinkConfig
from collector.storage.retry import http_error, parse_retry_after
from fleetmon_common.secrets import Secret, redact_url, reveal
from proto.lineprotocol import Dialect


@dataclass
class InfluxV2Config(HttpSinkConfig):
    org: str = ""
    bucket: str = ""
    # Never logged, never in repr; prefer token_env so the YAML file holds no secret.
    token: str | Secret | None = field(default=None, repr=False)  # or {env: NAME} / {file: PATH}
    token_env: str | None = None
    # InfluxDB 2.x/3.x and VictoriaMetrics unescape "\\"; use influxdb1 against 1.8's v2 API.
    dialect: Dialect = "influxdb2"
    name: str = "influxdb2"

    def validate_destination(self) -> None:
        if not self.bucket:
            raise ValueError("bucket is required (InfluxDB 1.8: database/retention_policy)")

    def validate(self) -> None:
        super().validate()
        if self.token_env and self.token:
            raise ValueError("give token or token_env, not both")

    def resolved_token(self) -> str:
        if self.token_env:
            return self.secret_from_env(self.token_env, "token_env")
        return reveal(self.token) or ""


class InfluxV2Sink(HttpSinkBase):
    Config = InfluxV2Config

    def __init__(self, config: InfluxV2Config) -> None:
        super().__init__(config)
        self.config = config
        self._client: Any = None
        self._service: Any = None
        # One write at a time goes through the client (urllib3 pool, health counters).
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._client is not None:
            return
        # No network I/O here: a collector starts (and spools) while InfluxDB is away.
        self._client = InfluxDBClient(
            url=self.config.url, token=self.config.resolved_token(), org=self.config.org,
            timeout=int(self.config.timeout * 1000),  # the client takes milliseconds
            enable_gzip=False,  # compressed here, at level 1 (module doc)
            retries=False, verify_ssl=self.config.tls_verify, ssl_ca_cert=self.config.tls_ca,
        )
        self._service = WriteService(self._client.api_client)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        self._service = None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def write(self, batch: SinkBatch) -> None:
        if self._service is None:
            raise SinkError(f"sink {self.name}: write before start()", retryable=False)
        async with self._lock:
            self._health.attempt(batch)
            started = time.monotonic()
            try:
                # The client's blocking call in a worker thread of its own.
                encoded = await self._send_lines(
                    batch, lambda chunk, body: asyncio.to_thread(self._write_one, chunk, body))
            except SinkError as err:
                self._health.failure(batch, err, time.monotonic() - started)
                raise
            self._health.success(batch, encoded.n_lines, time.monotonic() - started,
                                events=encoded.n_event_lines)

    def _write_one(self, chunk: bytes, body: bytes) -> None:
        url = f"{self.config.url.rstrip('/')}/api/v2/write"
        self._health.requests += 1
        try:
            if self.config.gzip:
                self._service.post_write(org=self.config.org, bucket=self.config.bucket, body=body,
                                         precision=WritePrecision.NS, content_encoding="gzip",
                                         content_type="text/plain; charset=utf-8")
            else:
                self._service.post_write(org=self.config.org, bucket=self.config.bucket, body=body,
                                         precision=WritePrecision.NS, content_type="text/plain; charset=utf-8")
        except ApiException as err:
            if not err.status:
                # No HTTP answer: the client reports TLS failures as status 0 with the reason.
                reason = " ".join(str(err.reason or err).split())
                raise SinkError(f"sink {self.name}: cannot reach {redact_url(url)}: {reason}", retryable=True) from err
            headers = {k: v for k, v in (err.headers or {}).items()} if err.headers else {}
            raise http_error(self.name, int(err.status), headers=headers, body=err.body,
                             chunk=chunk.decode("utf-8", "replace"), url=redact_url(url)) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            # Connection refused/reset, timeouts: urllib3 raises these with retries=False.
            raise SinkError(f"sink {self.name}: cannot reach {redact_url(url)}: {type(err).__name__}: {err}",
                            retryable=True) from err
        except InfluxDBError as err:
            retry_after = parse_retry_after(str(err.retry_after)) if err.retry_after else None
            raise SinkError(f"sink {self.name}: {redact_url(url)}: {err}", retryable=True,
                            retry_after=retry_after) from err
