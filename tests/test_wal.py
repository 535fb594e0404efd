"""The agent WAL: persistence across restarts, acks, bound with drop-oldest accounting."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.codec import SeriesTable, Stamped, build_batch
from agent.model import Collection, gauge
from agent.wal import Wal, WalFull
from proto import telemetry_pb2 as pb

M = gauge("gpu_power_watts", "p", "watts")


def _append(wal: Wal, table: SeriesTable, n: int, value: float = 1.0) -> int:
    col = Collection([M.sample(value, {"gpu": str(i)}) for i in range(n)])
    batch, ids = build_batch(table, [Stamped(1000.0, col)], [])
    return wal.append(batch, ids, table.take_new(), n, 0).seq


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
    assert wal2.oldest == 2 and wal2.count == 1
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
    assert wal.oldest == 400 - wal.count + 1
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


# --- full disk and corrupt files (issue 12) ---------------------------------------------------


@contextlib.contextmanager
def small_disk(where: Path, size_kib: int) -> Iterator[tuple[Path, str]]:
    """A real file system of ``size_kib`` (tmpfs): writes past it fail with ENOSPC.

    Mounting needs root (CI's container has it) or an unprivileged user namespace; without
    either, SQLite's own page limit (``PRAGMA max_page_count``) gives the same SQLITE_FULL,
    which is what the WAL sees either way.
    """
    where.mkdir()
    mount = shutil.which("mount")
    mounted = mount is not None and subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)], capture_output=True, check=False,
    ).returncode == 0
    try:
        yield where, "tmpfs" if mounted else "max_page_count"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


def _fill_until_full(wal: Wal, table: SeriesTable, how: str) -> list[int]:
    if how == "max_page_count":
        wal._db.execute("PRAGMA max_page_count = 200")  # 200 pages of 4 KiB, as a full disk would stop it
    stored = []
    for _ in range(2000):
        try:
            stored.append(_append(wal, table, 300))
        except WalFull:
            return stored
    raise AssertionError("the WAL never filled its disk")


def test_full_disk_keeps_what_it_has_burns_no_sequence_and_drains(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with small_disk(tmp_path / "disk", 1024) as (disk, how):
        other = disk / "someone-elses.log"  # what filled the disk besides the WAL
        other.write_bytes(b"x" * (256 << 10))
        path = disk / "wal.sqlite"
        wal = Wal(path, 256 << 20)
        table = SeriesTable()
        with caplog.at_level(logging.WARNING, logger="fleetmon.agent.wal"):
            stored = _fill_until_full(wal, table, how)
            assert stored == list(range(1, len(stored) + 1)) and len(stored) > 10
            count, size = wal.count, wal.bytes
            for _ in range(5):  # still full: nothing stored, no sequence used, one log line
                with pytest.raises(WalFull, match="disk full"):
                    _append(wal, table, 300)
            assert (wal.count, wal.bytes, wal.newest()) == (count, size, stored[-1])
            assert wal.full and wal.dropped_samples == 6 * 300
            full_lines = [r.getMessage() for r in caplog.records if "disk full" in r.getMessage()]
            assert len(full_lines) == 1 and str(path) in full_lines[0], full_lines
            # What it holds is still there to send; acks are kept in memory while even a delete
            # finds no room in the journal.
            assert [e.seq for e in wal.read(0, stored[-1], 5)] == stored[:5]
            for seq in stored[: len(stored) // 2]:
                wal.ack(seq)
            with contextlib.suppress(WalFull):
                wal.apply_acks()
            # Space returns: the acked batches go, and writing resumes with the very next sequence.
            other.unlink()
            if how == "max_page_count":
                wal._db.execute("PRAGMA max_page_count = 100000")
            wal.apply_acks()
            assert wal.oldest == stored[len(stored) // 2]
            assert _append(wal, table, 300) == stored[-1] + 1
            assert not wal.full
            assert any("writing again" in r.getMessage() for r in caplog.records)
        assert wal.take_unreported_drops() == 6 * 300
        wal.close()


def test_corrupt_wal_is_moved_aside_and_a_fresh_one_started(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "wal.sqlite"
    wal = Wal(path, 16 << 20)
    table = SeriesTable()
    for _ in range(50):
        _append(wal, table, 300)
    old_id = wal.wal_id
    wal.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:  # 8 KiB of garbage in the middle of the file
        f.seek(size // 2)
        f.write(os.urandom(8192))
    with caplog.at_level(logging.ERROR, logger="fleetmon.agent.wal"):
        fresh = Wal(path, 16 << 20)
    assert fresh.wal_id != old_id and fresh.count == 0 and fresh.newest() == 0
    aside = list(tmp_path.glob("wal.sqlite.corrupt-*"))
    assert aside and aside[0].stat().st_size == size
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "corrupt" in lines[0] and str(path) in lines[0] and str(aside[0]) in lines[0]
    assert _append(fresh, SeriesTable(), 3) == 1
    fresh.close()

    # Not a database at all (a file overwritten from its first byte).
    path.write_bytes(b"not sqlite, just some text someone put here\n" * 100)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="fleetmon.agent.wal"):
        again = Wal(path, 16 << 20)
    assert again.count == 0
    assert "not a database" in caplog.records[0].getMessage()
    again.close()
