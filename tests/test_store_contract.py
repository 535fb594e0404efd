"""The embedded store's contract, through its public API only (series_ids, commit, the reader).

Any store that replaces it (a block store, ...) must pass these: add it to ``STORES``.

The rule for one series and one timestamp arriving twice (two different batches, or twice in one
batch): the store keeps the first value it stored, drops the later one and counts it in
``duplicate_samples``. Sequence replays never get this far (the collector drops sequences it
holds, see tests/test_collector_ingest.py); this is about distinct batches that collide, e.g.
two batches an agent built within the same millisecond.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.sequence import NodeState
from collector.storage.compactor import Compactor
from collector.storage.embedded import NewSeries, SampleColumns, WriteItem
from collector.storage.logreader import LogStoreReader
from collector.storage.logstore import LogStore
from collector.storage.sqlite import SqliteStore, StoreReader

NODE = "n1"
DEFS = [NewSeries("gpu_temperature_celsius", "gpu", "temperature_celsius", {"gpu": "0", "node": NODE}, 1, ""),
        NewSeries("gpu_power_watts", "gpu", "power_watts", {"gpu": "0", "node": NODE}, 1, "")]


@dataclass
class Opened:
    store: SqliteStore
    read: Callable[[int], list[tuple[int, float]]]  # series id -> [(ts ms, value)], oldest first


def _sqlite(tmp: Path) -> Iterator[Opened]:
    store = SqliteStore(tmp / "fleetmon.sqlite")
    reader = StoreReader(store.path)
    try:
        yield Opened(store, lambda sid: reader.samples(sid, 0, 2**62))
    finally:
        reader.close()
        store.close()


def _blocks(tmp: Path) -> Iterator[Opened]:
    """The block store the collector runs on: append log + compactor + reader (blocks and the
    log's unflushed tail)."""
    store = LogStore(tmp)
    compactor = Compactor(tmp, flush_s=0)

    def read(sid: int) -> list[tuple[int, float]]:
        compactor.poll()
        compactor.maintain(force_flush=True)
        return LogStoreReader(tmp).samples(sid, 0, 2**62)

    try:
        yield Opened(store, read)  # type: ignore[arg-type]
    finally:
        compactor.store.close()
        store.close()


STORES = {"sqlite": _sqlite, "blocks": _blocks}


@pytest.fixture(params=sorted(STORES))
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opened]:
    yield from STORES[request.param](tmp_path)


class Agent:
    """Builds WriteItems as the ingest path does: one per batch, sequence state advanced first."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.state = NodeState.new_wal(NODE, "wal-1")
        self.seq = 0

    def item(self, samples: list[tuple[int, int, float]]) -> WriteItem:
        self.seq += 1
        update = self.state.plan(self.seq)
        self.state.apply(update)
        sids, ts, values = (list(col) for col in zip(*samples, strict=True))
        return WriteItem(update, "{}", SampleColumns(sids, ts, values), [])


def test_two_batches_same_series_and_timestamp_keep_the_first(opened: Opened) -> None:
    temp, power = opened.store.series_ids(NODE, DEFS)
    agent = Agent(opened.store)
    t = int(time.time() * 1000)
    opened.store.commit([agent.item([(temp, t, 40.0), (power, t, 300.0)])])
    assert opened.store.duplicate_samples == 0
    # A different batch, same millisecond: temp collides (dropped, counted), power at t+1 is new.
    opened.store.commit([agent.item([(temp, t, 41.0), (power, t + 1, 301.0)])])
    assert opened.read(temp) == [(t, 40.0)]
    assert opened.read(power) == [(t, 300.0), (t + 1, 301.0)]
    assert opened.store.duplicate_samples == 1


def test_collision_inside_one_group_commit_and_one_batch(opened: Opened) -> None:
    (temp, _power) = opened.store.series_ids(NODE, DEFS)
    agent = Agent(opened.store)
    t = int(time.time() * 1000)
    # Two batches in one group commit, the second also repeating a pair within itself.
    opened.store.commit([agent.item([(temp, t, 1.0)]),
                         agent.item([(temp, t, 2.0), (temp, t + 5, 3.0), (temp, t + 5, 4.0)])])
    assert opened.read(temp) == [(t, 1.0), (t + 5, 3.0)]
    assert opened.store.duplicate_samples == 2
    # Equal values are no exception: a repeated (series, timestamp) is counted whatever it carries.
    opened.store.commit([agent.item([(temp, t, 1.0)])])
    assert opened.read(temp) == [(t, 1.0), (t + 5, 3.0)]
    assert opened.store.duplicate_samples == 3
