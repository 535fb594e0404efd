"""History from the shared TSDB, behind the embedded store's reader interface.

:class:`RemoteReader` answers ``find_series`` and ``query`` as
:class:`collector.storage.logreader.LogStoreReader` does, from a Prometheus-compatible query API
(VictoriaMetrics; collector/promquery.py), so ``fleetmon query``, ``/api/v1/query`` and the
dashboard's plots read a moved node's whole history, and any node of the fleet, from any
collector: whatever every collector wrote through its remote-write sink.

A reader covers one query's time window (the series API needs one). Samples are read one node
at a time, as the local reader does, so memory holds one node's answer whatever the query's
size; they are the stored samples themselves (a range selector's raw answer), stale markers
left out. PromQL beyond selectors goes straight to the API (:func:`promql_range`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from collector.promquery import (
    PromQuerySync,
    QueryError,
    RawSeries,
    any_of,
    quote,
    range_call,
    raw_call,
    series_call,
)
from collector.storage.codec import F64, I64
from collector.storage.sqlite import Matcher, SeriesRow

log = logging.getLogger("fleetmon.collector.query")


def promql_selector(name: str | None, matchers: Sequence[Matcher], node: str | None = None) -> str:
    """``name{label op "value", …}`` (plus ``node="…"`` when given), as PromQL writes it."""
    parts = [f"{m.label}{m.op}{quote(m.value)}" for m in matchers]
    if node is not None:
        parts.append(f"node={quote(node)}")
    return f"{name or ''}{{{', '.join(parts)}}}"


def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


class RemoteReader:
    """``find_series`` / ``query`` over the query API, for the window ``[since, until]`` (unix s)."""

    def __init__(self, client: PromQuerySync, since: float, until: float) -> None:
        self.client = client
        self.since = since
        self.until = until

    def find_series(self, name: str | None, matchers: Sequence[Matcher]) -> list[SeriesRow]:
        found = self.client.call(series_call(promql_selector(name, matchers), self.since, self.until))
        rows = sorted(_key(d.pop("__name__", ""), d) for d in found)
        return [SeriesRow(i, n, dict(labels)) for i, (n, labels) in enumerate(rows)]

    def query(self, series: Sequence[SeriesRow], since_ms: int, until_ms: int) -> Iterator[tuple[SeriesRow, I64, F64]]:
        by_node: dict[str, list[SeriesRow]] = {}
        for row in series:
            by_node.setdefault(row.labels.get("node", ""), []).append(row)
        range_s = (until_ms - since_ms + 1) / 1000  # the raw answer is (at - range, at]: since included
        for node in sorted(by_node):
            rows = by_node[node]
            names = sorted({r.name for r in rows})
            sel = f"{{__name__=~{quote(any_of(names))}, node={quote(node)}}}"
            got: dict[Any, RawSeries] = {}
            for s in self.client.call(raw_call(sel, range_s, until_ms / 1000)):
                labels = dict(s.labels)
                got[_key(labels.pop("__name__", ""), labels)] = s
            for row in rows:
                s = got.get(_key(row.name, row.labels))
                if s is None:
                    continue
                keep = [i for i, v in enumerate(s.values) if not math.isnan(v)]  # stale markers are not samples
                if keep:
                    yield (row, np.array([s.ts_ms[i] for i in keep], np.int64),
                           np.array([s.values[i] for i in keep], np.float64))

    def close(self) -> None:
        """The client is the caller's."""


def promql_range(client: PromQuerySync, expr: str, since: float, until: float,
                 step: float) -> Iterator[dict[str, Any]]:
    """``expr`` (any PromQL) evaluated by the API every ``step`` over the window, as rows of
    ``fleetmon query`` and ``/api/v1/query`` (name, labels, values)."""
    for s in client.call(range_call(expr, since, until, step)):
        labels = dict(s.labels)
        name = labels.pop("__name__", "")
        yield {"name": name, "labels": labels,
               "values": [[t / 1000, v] for t, v in zip(s.ts_ms, s.values, strict=True) if not math.isnan(v)]}


class FallbackReader:
    """The query API first; the embedded store when the API does not answer (a TSDB outage
    still leaves this collector's own history readable). Decided at ``find_series``, so one
    query reads one source."""

    def __init__(self, remote: RemoteReader, local: Any) -> None:
        self.remote = remote
        self.local = local
        self.source: Any = remote

    def find_series(self, name: str | None, matchers: Sequence[Matcher]) -> list[SeriesRow]:
        try:
            self.source = self.remote
            return self.remote.find_series(name, matchers)
        except QueryError as err:
            log.warning("query API unavailable, reading this collector's own store instead: %s", err)
            self.source = self.local
            return list(self.local.find_series(name, matchers))

    def query(self, series: Sequence[SeriesRow], since_ms: int, until_ms: int) -> Iterator[tuple[SeriesRow, I64, F64]]:
        return iter(self.source.query(series, since_ms, until_ms))
