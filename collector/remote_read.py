"""History from the shared TSDB, behind the query engine's reader interface.

:class:`RemoteHistory` is a :class:`collector.history.HistoryReader` over a Prometheus-compatible
query API (VictoriaMetrics; collector/promquery.py): a collector with ``query.url`` set evaluates
``/api/v1/query``, ``/api/v1/query_range`` and its dashboard's plots over it, so any collector
answers for the whole fleet and a moved node's whole history — whatever every collector wrote
through its remote-write sink — with the same PromQL engine as over its own store.

``select`` lists the matching series in the window (``/api/v1/series``), then reads their
samples a few nodes at a time (an instant query of a range selector returns the stored samples
themselves, one millisecond wider than the window, which those servers leave open at its
start), so memory holds a few nodes' answer, not the fleet's. Stale markers come back as NaN
and become the engine's stale marker again (agents never send NaN). :class:`FallbackHistory`
reads the embedded store instead while the API does not answer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

from alerts.promql.labels import Matcher
from alerts.promql.values import STALE_NAN
from collector.history import HistoryError, HistoryReader, HistorySeries
from collector.promquery import PromQuerySync, QueryError, any_of, quote, raw_call, series_call

log = logging.getLogger("fleetmon.collector.query")

#: Nodes whose samples one raw query reads.
NODES_PER_QUERY = 20


class _Series:
    __slots__ = ("labels", "ts_ms", "values")

    def __init__(self, labels: dict[str, str], ts_ms: list[int], values: list[float]) -> None:
        self.labels = labels
        self.ts_ms = ts_ms
        self.values = values


def promql_selector(matchers: Sequence[Matcher], *extra: str) -> str:
    """``{name="…", label=~"…", …}`` as PromQL writes it (``__name__`` as a matcher too)."""
    return "{" + ", ".join([*(f"{m.name}{m.op}{quote(m.value)}" for m in matchers), *extra]) + "}"


class RemoteHistory:
    """A :class:`collector.history.HistoryReader` over the query API (blocking: the engine calls
    it from the collector's read thread)."""

    def __init__(self, client: PromQuerySync) -> None:
        self.client = client
        self.description = f"query API {client.cfg.url}"

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Iterator[HistorySeries]:
        sel = promql_selector(matchers)
        try:
            found = self.client.call(series_call(sel, start_ms / 1000, end_ms / 1000))
            nodes = sorted({labels.get("node", "") for labels in found})
            range_s = (end_ms - start_ms + 1) / 1000
            for i in range(0, len(nodes), NODES_PER_QUERY):
                chunk = nodes[i:i + NODES_PER_QUERY]
                narrowed = promql_selector(matchers, f"node=~{quote(any_of(chunk))}")
                for s in self.client.call(raw_call(narrowed, range_s, end_ms / 1000)):
                    values = [STALE_NAN if math.isnan(v) else v for v in s.values]
                    yield _Series(s.labels, s.ts_ms, values)
        except QueryError as err:
            raise HistoryError(str(err)) from err

    def close(self) -> None:
        """The client is the collector's, kept across queries."""


class FallbackHistory:
    """The query API first; the embedded store while the API does not answer (a TSDB outage
    still leaves this collector's own history readable). Decided per ``select``, before any
    series is returned, so one series never mixes the two."""

    def __init__(self, remote: RemoteHistory, local: HistoryReader) -> None:
        self.remote = remote
        self.local = local
        self.description = remote.description

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Iterator[HistorySeries]:
        got = self.remote.select(matchers, start_ms, end_ms)
        try:
            first = next(got, None)
        except HistoryError as err:
            log.warning("%s; reading this collector's own store instead", err)
            self.description = f"{self.local.description} ({self.remote.description} unavailable)"
            yield from self.local.select(matchers, start_ms, end_ms)
            return
        if first is not None:
            yield first
            yield from got

    def close(self) -> None:
        self.local.close()
