"""InfluxDB v1 sink: line protocol POSTed to ``/write?db=&rp=&precision=ns``; InfluxQL for reads.

Speaks to InfluxDB 1.x, to 3.x's v1 compatibility API and to VictoriaMetrics' ``/write``
(set ``dialect: influxdb2`` for VictoriaMetrics and 2.x/3.x, whose parsers unescape backslashes;
see :mod:`proto.lineprotocol`). InfluxDB 1.x answers 204 only after the points are in its WAL,
so a returned ``write()`` means durable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from collector.errors import SinkError
from collector.storage.http_sink import HttpSinkBase, HttpSinkConfig
from collector.storage.poster import basic_authorization
from collector.storage.retry import http_error
from fleetmon_common.secrets import Secret, redact_url, reveal

log = logging.getLogger(__name__)


@dataclass
class InfluxV1Config(HttpSinkConfig):
    database: str = ""
    retention_policy: str = ""
    username: str | None = None
    # Never logged, never in repr; prefer password_env so the YAML file holds no secret.
    password: str | Secret | None = field(default=None, repr=False)  # or {env: NAME} / {file: PATH}
    password_env: str | None = None
    create_database: bool = False

    def validate_destination(self) -> None:
        if not self.database:
            raise ValueError("database is required (the InfluxDB database to write to)")

    def validate(self) -> None:
        super().validate()
        if self.password_env and self.password:
            raise ValueError("give password or password_env, not both")

    def resolved_password(self) -> str | None:
        if self.password_env:
            return self.secret_from_env(self.password_env, "password_env")
        return reveal(self.password)


@dataclass(frozen=True)
class Series:
    """One series of an InfluxQL answer."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.values]


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes (InfluxQL spec: identifiers)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(text: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxV1Sink(HttpSinkBase):
    Config = InfluxV1Config

    def __init__(self, config: InfluxV1Config) -> None:
        super().__init__(config)
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self._db_ready = not config.create_database
        self._base = config.url.rstrip("/")

    async def start(self) -> None:
        if self._client is not None:
            return
        auth = None
        headers = {}
        if self.config.username is not None:
            password = self.config.resolved_password() or ""
            auth = httpx.BasicAuth(self.config.username, password)
            headers["Authorization"] = basic_authorization(self.config.username, password)
        # Queries (and CREATE DATABASE) go through an async client; writes through the poster.
        self._client = httpx.AsyncClient(timeout=self.config.timeout, auth=auth, verify=self.config.ssl_verify(),
                                         headers={"User-Agent": "fleetmon-collector"})
        params = {"db": self.config.database, "precision": "ns"}
        if self.config.retention_policy:
            params["rp"] = self.config.retention_policy
        self._open("/write", params, headers)
        # The server may be down now: the database is created before the first write instead,
        # so a collector starts (and spools) while InfluxDB is away.
        if not self._db_ready:
            try:
                await self._create_database()
            except SinkError as err:
                log.warning("%s; will retry before the first write", err)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        self._close_poster()
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise SinkError(f"sink {self.name}: write before start()", retryable=False)
        return self._client

    async def _create_database(self) -> None:
        await self.query(f"CREATE DATABASE {quote_ident(self.config.database)}", database=None)
        self._db_ready = True

    async def _before_write(self) -> None:
        if not self._db_ready:
            await self._create_database()

    async def query(self, influxql: str, *, database: str | None = "", epoch: str = "ns") -> list[Series]:
        """Run InfluxQL (one statement) and return its series; ``database=""`` means the
        configured one, ``None`` none (for CREATE DATABASE / SHOW DATABASES). Times come back as
        integers in ``epoch`` units."""
        url = f"{self._base}/query"
        data = {"q": influxql, "epoch": epoch}
        db = self.config.database if database == "" else database
        if db:
            data["db"] = db
        if self.config.retention_policy and db:
            data["rp"] = self.config.retention_policy
        try:
            resp = await self._http().post(url, data=data)
        except httpx.TimeoutException as err:
            raise SinkError(f"sink {self.name}: query to {redact_url(url)} timed out", retryable=True) from err
        except httpx.TransportError as err:
            raise SinkError(f"sink {self.name}: cannot reach {redact_url(url)}: {type(err).__name__}: {err}",
                            retryable=True) from err
        if resp.status_code != 200:
            raise http_error(self.name, resp.status_code, headers=resp.headers, body=resp.content,
                             chunk="", url=redact_url(url))
        try:
            doc = resp.json()
        except ValueError as err:
            raise SinkError(f"sink {self.name}: {redact_url(url)} answered non-JSON to {influxql!r}",
                            retryable=False) from err
        series: list[Series] = []
        for result in doc.get("results", []):
            if "error" in result:
                raise SinkError(f"sink {self.name}: InfluxQL {influxql!r} failed: {result['error']}",
                                retryable=False)
            for s in result.get("series", []):
                series.append(Series(name=s.get("name", ""), tags=dict(s.get("tags") or {}),
                                     columns=list(s.get("columns", [])),
                                     values=[list(v) for v in s.get("values", [])]))
        return series
