"""InfluxDB v2 API sink (``/api/v2/write``, url/token/org/bucket).

The same API is served by InfluxDB 2.x, 3.x, 1.8+ (``token: "user:password"``, bucket
``db/rp``) and VictoriaMetrics (token/org/bucket ignored).

Writes are plain HTTP POSTs of line protocol with ``Authorization: Token <token>``, made by the
sinks' shared poster (:mod:`collector.storage.poster`), not by ``influxdb-client``:

* the client's default batching WriteApi loses points silently: its background thread retries,
  then logs and drops a batch unless an error callback is wired (influxdb-client-python issues
  #80, #198, #332); retrying is the spool's job here (:mod:`collector.storage.retry`);
* its synchronous write call sends a request and waits for the answer in one call, so the next
  request body could only be made in another thread, contending with that call for the GIL:
  against VictoriaMetrics this sink stayed at 0.65-0.71x of a raw POST of the same bodies (issue
  14); the poster makes the next body while the server parses the one just sent;
* it compresses with gzip level 9 (more than half the sink's time once); the sink compresses
  itself, with ISA-L at level 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.storage.http_sink import HttpSinkBase, HttpSinkConfig
from fleetmon_common.secrets import Secret, reveal
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

    async def start(self) -> None:
        if self._poster is not None:
            return
        # No network I/O here: a collector starts (and spools) while InfluxDB is away.
        token = self.config.resolved_token()
        headers = {"Authorization": f"Token {token}"} if token else {}
        params = {"org": self.config.org} if self.config.org else {}
        self._open("/api/v2/write", {**params, "bucket": self.config.bucket, "precision": "ns"}, headers)

    async def aclose(self) -> None:
        self._close_poster()
