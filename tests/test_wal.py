"""The agent WAL: persistence across restarts, acks, bound with drop-oldest accounting."""

from __future__ import annotations

from pathlib import Path

from agent.codec import SeriesTable, Stamped, build_batch
from agent.model import Collection, gauge
from agent.wal import Wal
from proto import telemetry_pb2 as pb

M = gauge("gpu_power_watts", "p", "watts")


def _append(wal: Wal, table: SeriesTable, n: int, value: float = 1.0) -> int:
    col = Collection([M.sample(value, {"gpu": str(i)}) for i in range(n)])
    batch, ids = build_batch(table, [Stamped(1000.0, col)], [])
    return wal.append(batch, ids, table.take_new(), n, 0)


def test_sequence_and_series_survive_restart(tmp_path: Path) -> None:
    path = tmp_path / "wal.sqlite"
    wal = Wal(path, 1 << 20)
    table = SeriesTable()
    assert _append(wal, table, 3) == 1
    assert _append(wal, table, 3) == 2
    wal.ack(1)
    wal_id = wal.wal_id
    wal.close()

    wal2 = Wal(path, 1 << 20)
    assert wal2.wal_id == wal_id
    t2 = SeriesTable()
    t2.load(wal2.load_series())
    assert len(t2) == 3
    assert wal2.oldest() == 2 and wal2.count == 1
    entries = wal2.read(0, 100, 10)
    assert [e.seq for e in entries] == [2]
    batch = pb.Batch.FromString(entries[0].body)
    assert batch.sequence == 2 and sorted(entries[0].ids) == [1, 2, 3]
    assert _append(wal2, t2, 3) == 3  # ids reused, sequence continues
    assert t2.take_new() == []


def test_full_wal_drops_oldest_and_counts(tmp_path: Path) -> None:
    wal = Wal(tmp_path / "wal.sqlite", 1 << 20)
    table = SeriesTable()
    for _ in range(400):  # each batch ~ 2.4 KB of values: well past 1 MiB
        _append(wal, table, 300)
    assert wal.bytes <= 1 << 20
    assert wal.dropped_samples > 0 and wal.dropped_samples % 300 == 0
    assert wal.oldest() == 400 - wal.count + 1
    assert wal.take_unreported_drops() == wal.dropped_samples
    assert wal.take_unreported_drops() == 0


def test_ack_upto(tmp_path: Path) -> None:
    wal = Wal(tmp_path / "wal.sqlite", 1 << 20)
    table = SeriesTable()
    for _ in range(5):
        _append(wal, table, 2)
    wal.ack_upto(3)
    assert [e.seq for e in wal.read(0, 10, 10)] == [4, 5]
    assert wal.newest() == 5
