"""Where PromQL queries over history read samples: a small interface, and the embedded store.

``fleetmon query`` and the HTTP API's ``/api/v1/query`` and ``/api/v1/query_range``
(collector/queryengine.py) evaluate with the alert engine's evaluator over a
:class:`HistoryReader`. The engine asks a reader, once per selector of the expression (and per
chunk of a long range), for the series those matchers select with their samples in a closed
time range; everything else (lookback, staleness, ``offset``, ``@``, subqueries, functions) is
the evaluator's, so any store that can answer ``select`` gets Prometheus's semantics exactly.

To plug in another store (a Prometheus-compatible TSDB through its query API, say), implement
``select`` and ``close``; ``RawSeries``-like objects with ``labels``/``ts_ms``/``values`` are
series already. ``select`` is called from a worker thread (the collector evaluates off its
event loop), so a reader does blocking I/O; an async client can be bridged with
``asyncio.run_coroutine_threadsafe(coro, loop).result()``. For a server that returns raw
samples for an instant query of a range selector (``x{…}[<end-start>ms]`` at ``end``), note that
Prometheus 3 and VictoriaMetrics leave the range's start out; ask for one millisecond more.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from alerts.promql.labels import NAME, Matcher

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from collector.storage.logreader import LogStoreReader
    from collector.storage.sqlite import SeriesRow

    Ints = Sequence[int] | npt.NDArray[np.int64]
    Floats = Sequence[float] | npt.NDArray[np.float64]


class HistoryError(Exception):
    """The history could not be read; the message names the store and why."""


class HistorySeries(Protocol):
    """One stored series: ``labels`` with ``__name__``; ``ts_ms`` ascending integer milliseconds,
    each once; ``values`` floats, a Prometheus stale marker where the store keeps one (see
    ``alerts.promql.values.STALE_NAN``: a NaN told apart by its bits). Lists or numpy arrays."""

    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def ts_ms(self) -> Ints: ...
    @property
    def values(self) -> Floats: ...


class HistoryReader(Protocol):
    """A store the query engine reads (module docstring)."""

    #: For messages: which store answered (``embedded store /var/lib/…``, a URL without credentials).
    description: str

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Iterator[HistorySeries]:
        """Every series all ``matchers`` match (PromQL semantics: ``__name__`` is one of them; a
        missing label is ``""``), with its samples in ``[start_ms, end_ms]`` (both included).
        Series without a sample there may be left out; any order. Lazily, so that memory holds
        what the caller keeps. Raises HistoryError when the store cannot answer."""
        ...

    def close(self) -> None: ...


class _Series:
    __slots__ = ("labels", "ts_ms", "values")

    def __init__(self, labels: Mapping[str, str], ts_ms: Ints, values: Floats) -> None:
        self.labels = labels
        self.ts_ms = ts_ms
        self.values = values


class EmbeddedHistory:
    """The collector's embedded block store (collector/storage/logreader.py), read-only, beside a
    running collector or on a data dir alone. Series come node by node, as the store keeps them."""

    def __init__(self, source: Path | LogStoreReader) -> None:
        from collector.storage.logreader import LogStoreReader  # noqa: PLC0415 - numpy only for local reads

        if isinstance(source, Path):
            try:
                self.reader = LogStoreReader(source)
            except FileNotFoundError as err:
                raise HistoryError(str(err)) from None
            self._own = True
        else:
            self.reader = source
            self._own = False
        self.description = f"embedded store {self.reader.data_dir}"
        #: series found per matcher set: a range query asks again for each chunk of its range
        self._found: dict[tuple[tuple[str, str, str], ...], list[SeriesRow]] = {}

    def _find(self, matchers: Sequence[Matcher]) -> list[SeriesRow]:
        key = tuple(sorted((m.name, m.op, m.value) for m in matchers))
        rows = self._found.get(key)
        if rows is None:
            name = next((m.value for m in matchers if m.name == NAME and m.op == "="), None)
            rows = [r for r in self.reader.find_series(name, [])
                    if all(m.matches(r.labels.get(m.name, "") if m.name != NAME else r.name) for m in matchers)]
            self._found[key] = rows
        return rows

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Iterator[HistorySeries]:
        import sqlite3  # noqa: PLC0415

        try:
            rows = self._find(matchers)
            for row, ts, vals in self.reader.query(rows, start_ms, end_ms):
                yield _Series({**row.labels, NAME: row.name}, ts, vals)
        except (sqlite3.Error, OSError) as err:
            raise HistoryError(f"{self.description}: {err}") from err

    def close(self) -> None:
        if self._own:
            self.reader.close()
