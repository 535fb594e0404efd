"""A client of the Prometheus HTTP query API, as VictoriaMetrics (single: ``http://vm:8428``;
cluster: ``http://vmselect:8481/select/<tenant>/prometheus``), Prometheus, Mimir and Thanos
serve it: ``/api/v1/query`` and ``/api/v1/series``.

fleetmon reads the shared TSDB through it (DESIGN.md, Scale): a node's whole history and the
whole fleet from any collector (collector/remote_read.py: the query engine's reader), and,
when a collector adopts a node, the node's alert state and recent samples (collector/handover.py).

Raw samples come from an instant query of a range selector (``x{node="n1"}[10m]``), which
every one of these servers answers with the stored samples themselves, unevaluated; stale
markers come back as NaN. (VictoriaMetrics hides the last ``-search.latencyOffset``, 30 s by
default, from ``query_range`` but not from such raw reads: run it with a lower offset for
dashboards that must show the last seconds.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from collector.errors import CollectorError
from fleetmon_common.secrets import Secret, redact_url, reveal


class QueryError(CollectorError):
    """The query API could not answer; the message names the server (credentials redacted)."""


@dataclass
class QueryConfig:
    """``query:`` in the collector config; ``url`` is the API's base (``…/api/v1/…`` follows)."""

    url: str = ""
    timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)  # e.g. X-Scope-OrgID for Mimir/Cortex
    bearer_token: Secret | None = field(default=None, repr=False)  # or {env: NAME} / {file: PATH}
    tls_ca: str | None = None
    tls_verify: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def validate(self) -> None:
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {redact_url(self.url)!r}")
        if self.url.rstrip("/").endswith("/api/v1"):
            raise ValueError("url is the API's base, without /api/v1 (e.g. http://victoria-metrics:8428)")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout}")


@dataclass(frozen=True)
class RawSeries:
    """One series of an answer: its labels (``__name__`` included) and samples, oldest first."""

    labels: dict[str, str]
    ts_ms: list[int]
    values: list[float]

    @property
    def name(self) -> str:
        return self.labels.get("__name__", "")


def duration_ms(seconds: float) -> str:
    """A PromQL duration every server parses (``300000ms``)."""
    return f"{max(1, round(seconds * 1000))}ms"


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def any_of(values: list[str]) -> str:
    """A regex matching exactly these values (for ``label=~…``)."""
    specials = set("\\.^$|?*+()[]{}")
    return "|".join("".join("\\" + c if c in specials else c for c in v) for v in values)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


@dataclass(frozen=True)
class Call:
    """One API request and how its answer is read."""

    path: str
    params: list[tuple[str, str]]
    read: Callable[[Any], Any]


def raw_call(selector: str, range_s: float, at: float) -> Call:
    """The stored samples of ``selector`` in ``(at - range_s, at]``: an instant query of a range
    selector, which answers with the samples themselves (stale markers as NaN)."""
    return Call("/api/v1/query", [("query", f"{selector}[{duration_ms(range_s)}]"), ("time", f"{at:.3f}")], matrix)


def series_call(match: str, start: float, end: float) -> Call:
    """The label sets of the series ``match`` selects that have samples in ``[start, end]``."""
    return Call("/api/v1/series", [("match[]", match), ("start", f"{start:.3f}"), ("end", f"{end:.3f}")],
                lambda data: [dict(d) for d in data or []])


def matrix(data: Any) -> list[RawSeries]:
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        kind = data.get("resultType") if isinstance(data, dict) else data
        raise QueryError(f"query API: expected a matrix, got {kind!r}")
    out = []
    for item in data.get("result") or []:
        values = item.get("values") or []
        out.append(RawSeries(dict(item.get("metric") or {}), [round(float(t) * 1000) for t, _ in values],
                             [_float(v) for _, v in values]))
    return out


class _Api:
    """What both clients share: the base URL, headers and TLS of ``cfg``, and reading answers."""

    def __init__(self, cfg: QueryConfig) -> None:
        self.cfg = cfg
        self.base = cfg.url.rstrip("/")
        headers = {"User-Agent": "fleetmon", **cfg.headers}
        token = reveal(cfg.bearer_token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client_args: dict[str, Any] = {"timeout": cfg.timeout, "headers": headers,
                                            "verify": cfg.tls_ca if cfg.tls_ca else cfg.tls_verify}

    def _request(self, call: Call) -> tuple[str, bytes]:
        # POSTed as a form (every server takes it): a selector of many nodes fits.
        return self.base + call.path, urlencode(call.params).encode()

    @staticmethod
    def _answer(call: Call, url: str, resp: httpx.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            why = body.get("error") if isinstance(body, dict) else resp.text[:200]
            raise QueryError(f"query API {redact_url(url)}: HTTP {resp.status_code}: {why}")
        return call.read(body.get("data"))

    @staticmethod
    def _failed(url: str, err: httpx.HTTPError) -> QueryError:
        return QueryError(f"query API {redact_url(url)}: {type(err).__name__}: {err}")


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class PromQueryClient(_Api):
    """For the event loop (the collector's hand-over)."""

    def __init__(self, cfg: QueryConfig) -> None:
        super().__init__(cfg)
        self._client = httpx.AsyncClient(**self.client_args)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, call: Call) -> Any:
        url, body = self._request(call)
        try:
            resp = await self._client.post(url, content=body, headers=_FORM)
        except httpx.HTTPError as err:
            raise self._failed(url, err) from err
        return self._answer(call, url, resp)

    async def raw(self, selector: str, range_s: float, at: float) -> list[RawSeries]:
        return list(await self.call(raw_call(selector, range_s, at)))


class PromQuerySync(_Api):
    """For threads and the command line (the reader interface is synchronous)."""

    def __init__(self, cfg: QueryConfig) -> None:
        super().__init__(cfg)
        self._client = httpx.Client(**self.client_args)

    def close(self) -> None:
        self._client.close()

    def call(self, call: Call) -> Any:
        url, body = self._request(call)
        try:
            resp = self._client.post(url, content=body, headers=_FORM)
        except httpx.HTTPError as err:
            raise self._failed(url, err) from err
        return self._answer(call, url, resp)
