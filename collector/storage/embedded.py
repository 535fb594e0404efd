"""The embedded store's contract: what ingest writes, the spool reads, and the named rows between them.

:class:`collector.storage.sqlite.SqliteStore` implements it; another engine (a block store)
can replace it behind the same :class:`EmbeddedStore` protocol. Every method may block (disk):
the collector calls them on the store's own thread, never on the event loop. Every failure
is a :class:`collector.errors.StoreError` naming the file; a store never lets its engine's
exceptions escape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from collector.sequence import NodeState, SeqUpdate
from collector.storage.codec import Block


@dataclass(slots=True)
class SampleColumns:
    """A batch's samples as three columns (cheaper than a tuple per sample on the hot path)."""

    series_ids: list[int] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series_ids)


class EventRow(NamedTuple):
    """A hardware event as stored; ``labels_json`` carries the node identity labels too."""

    ts_ms: int
    kind: str
    severity: str
    message: str
    action: str
    labels_json: str


class NewSeries(NamedTuple):
    """A series definition, checked, with the node's identity labels merged into ``labels``."""

    name: str
    measurement: str
    field: str
    labels: dict[str, str]
    type: int
    help: str


class SeriesMeta(NamedTuple):
    """What the external sinks need of a stored series."""

    measurement: str
    field: str
    tags: tuple[tuple[str, str], ...]  # sorted


class SpoolRow(NamedTuple):
    spool_id: int
    body: bytes


class SpoolDepth(NamedTuple):
    rows: int
    size_bytes: int


@dataclass(slots=True)
class WriteItem:
    """One agent batch, ready to commit: its data and the sequence change it makes."""

    update: SeqUpdate
    labels_json: str  # the node's identity labels, kept with its sequence state
    samples: SampleColumns
    events: list[EventRow]
    spool_body: bytes | None = None
    #: The same samples as columnar blocks (one timestamp, numpy ids and values), when the
    #: ingest path built them so; a block store takes these and leaves ``samples`` empty.
    blocks: list[Block] | None = None

    @property
    def node(self) -> str:
        return self.update.node


class EmbeddedStore(Protocol):
    path: Path
    @property
    def duplicate_samples(self) -> int:
        """Samples dropped because the store already held their (series, timestamp): the first
        value stored is kept (tests/test_store_contract.py)."""
        ...

    def load_node(self, node: str) -> NodeState:
        """The node's durable sequence state (an empty one for a node never stored)."""
        ...

    def known_series(self, defs: Sequence[NewSeries]) -> list[int | None]:
        """The ids of those series the store holds already (None for the others); creates nothing."""
        ...

    def series_count(self) -> int: ...

    def node_series_count(self, node: str) -> int:
        """Series the store holds for ``node`` (``limits.max_series_per_node``)."""
        ...

    def series_ids(self, node: str, defs: Sequence[NewSeries]) -> list[int]:
        """The store's ids for these series, creating the missing ones durably."""
        ...

    def commit(self, items: Sequence[WriteItem]) -> None:
        """Store several batches and their sequence updates atomically; durable when it returns."""
        ...

    def apply_retention(self, now: float | None = None) -> int: ...

    def spool_read(self, after: int, limit: int) -> list[SpoolRow]: ...

    def sink_cursor(self, sink: str) -> int: ...

    def set_sink_cursor(self, sink: str, spool_id: int, sinks: Iterable[str]) -> None: ...

    def series_meta(self, sid: int) -> SeriesMeta: ...

    def spool_depth(self) -> SpoolDepth: ...

    def close(self) -> None: ...
