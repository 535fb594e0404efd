"""A client of the Prometheus HTTP query API, as VictoriaMetrics (single: ``http://vm:8428``;
cluster: ``http://vmselect:8481/select/<tenant>/prometheus``), Prometheus, Mimir and Thanos
serve it: ``/api/v1/query``, ``/api/v1/query_range``, ``/api/v1/series``.

fleetmon reads the shared TSDB through it (DESIGN.md, Scale): a node's whole history and the
whole fleet from any collector (``fleetmon query``, the HTTP API, the dashboard), and, when a
collector adopts a node, the node's alert state and recent samples (``collector/handover.py``).

Raw samples come from an instant query of a range selector (``x{node="n1"}[10m]``), which
every one of these servers answers with the stored samples themselves, unevaluated; stale
markers come back as NaN. (VictoriaMetrics hides the last ``-search.latencyOffset``, 30 s by
default, from ``query_range`` but not from such raw reads: run it with a lower offset for
dashboards that must show the last seconds.)
"""

from __future__ import annotations

import math
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


class PromQueryClient:
    """One HTTP client per collector (or per ``fleetmon query``); all calls are async."""

    def __init__(self, cfg: QueryConfig) -> None:
        self.cfg = cfg
        self.base = cfg.url.rstrip("/")
        headers = {"User-Agent": "fleetmon", **cfg.headers}
        token = reveal(cfg.bearer_token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        verify: Any = cfg.tls_ca if cfg.tls_ca else cfg.tls_verify
        self._client = httpx.AsyncClient(timeout=cfg.timeout, headers=headers, verify=verify)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, params: list[tuple[str, str]]) -> Any:
        url = self.base + path
        try:
            # POSTed as a form (every server takes it): a selector of many nodes fits.
            resp = await self._client.post(url, content=urlencode(params),
                                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        except httpx.HTTPError as err:
            raise QueryError(f"query API {redact_url(url)}: {type(err).__name__}: {err}") from err
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            why = body.get("error") if isinstance(body, dict) else resp.text[:200]
            raise QueryError(f"query API {redact_url(url)}: HTTP {resp.status_code}: {why}")
        return body.get("data")

    async def raw(self, selector: str, range_s: float, at: float) -> list[RawSeries]:
        """The stored samples of ``selector`` in ``(at - range_s, at]`` (an instant query of a
        range selector: the samples themselves, stale markers as NaN)."""
        data = await self._get("/api/v1/query", [("query", f"{selector}[{duration_ms(range_s)}]"),
                                                 ("time", f"{at:.3f}")])
        return self._matrix(data)

    async def query(self, expr: str, at: float) -> dict[str, Any]:
        """An instant query, its ``data`` as the API gives it (``resultType``, ``result``)."""
        data = await self._get("/api/v1/query", [("query", expr), ("time", f"{at:.3f}")])
        return data if isinstance(data, dict) else {}

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[RawSeries]:
        data = await self._get("/api/v1/query_range", [("query", expr), ("start", f"{start:.3f}"),
                                                       ("end", f"{end:.3f}"), ("step", f"{step:g}")])
        return self._matrix(data)

    async def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        data = await self._get("/api/v1/series", [("match[]", match), ("start", f"{start:.3f}"),
                                                  ("end", f"{end:.3f}")])
        return [dict(d) for d in data or []]

    @staticmethod
    def _matrix(data: Any) -> list[RawSeries]:
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            kind = data.get("resultType") if isinstance(data, dict) else data
            raise QueryError(f"query API: expected a matrix, got {kind!r}")
        out = []
        for item in data.get("result") or []:
            values = item.get("values") or []
            out.append(RawSeries(dict(item.get("metric") or {}), [round(float(t) * 1000) for t, _ in values],
                                 [_float(v) for _, v in values]))
        return out
