"""The block store's pieces: the column codec, segments and their merge, the append log."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collector.errors import CorruptStoreError
from collector.sequence import NodeState
from collector.spool import decode_spool, encode_spool
from collector.storage import applog, codec
from collector.storage.blocks import (
    BlockReader,
    BlockStore,
    SeriesDef,
    SeriesIds,
    decode_l0,
    encode_l0,
    series_key,
)
from collector.storage.codec import Block
from collector.storage.compactor import Compactor
from collector.storage.embedded import EventRow, NewSeries, SampleColumns, WriteItem
from collector.storage.logreader import LogStoreReader
from collector.storage.logstore import LogStore, open_log_store
from collector.storage.migrate import MigrationError
from collector.storage.sqlite import Matcher, SqliteStore  # SqliteStore: the row store to migrate from

T0 = 1_700_000_000_000


def telemetry(rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Hardware-like columns: rounded gauges, steady counters, constants, and raw doubles."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    cols = [
        np.round(55 + 10 * np.sin(t / 30) + rng.normal(0, 0.3, rows), 1),  # temperature, 0.1 °C
        np.round(400 + 200 * np.sin(t / 50), 2),  # power, 0.01 W
        np.cumsum(np.full(rows, 2e10)),  # IB bytes at line rate: a steady counter
        np.round(np.cumsum(rng.uniform(5000, 6000, rows)), 3),  # energy in joules
        np.full(rows, 700.0),  # power limit
        np.zeros(rows),  # an idle error counter
        np.round(0.0075 + 0.0003 * np.sin(t / 9), 6),  # laser bias, amperes
        rng.random(rows),  # a value with no decimal shape
    ]
    ts = T0 + t * 10_000 + rng.integers(0, 25, rows)  # collection jitter
    return ts.astype(np.int64), np.stack(cols)


def blocks_of(ts: np.ndarray, m: np.ndarray, first_sid: int = 1) -> list[Block]:
    sids = np.arange(first_sid, first_sid + m.shape[0], dtype=np.int64)
    return [Block(int(t), sids, m[:, i].copy()) for i, t in enumerate(ts)]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a.view(np.int64), b.view(np.int64)))


def test_codec_round_trips_bit_for_bit_and_compresses_telemetry() -> None:
    ts, m = telemetry(360)
    enc = codec.encode(blocks_of(ts, m))
    got = codec.decode(enc.blob)
    for i in range(m.shape[0]):
        t, v = got[i + 1]
        assert np.array_equal(t, ts)
        assert same_bits(v, m[i]), f"column {i}"
    # One series alone decodes the same.
    t, v = codec.decode(enc.blob, [3])[3]
    assert same_bits(v, m[2])
    shaped = codec.encode(blocks_of(ts, m[:-1]))  # without the random column
    assert len(shaped.blob) / shaped.samples < 1.0, "hardware-like columns should pack below a byte a sample"
    assert (enc.samples, enc.duplicates, enc.t_min, enc.t_max) == (360 * 8, 0, ts.min(), ts.max())


@pytest.mark.parametrize("values", [
    [0.0, -0.0, 1.5], [np.inf, 1.0, -np.inf], [1e300, 1e-300, 3.3], [0.1 + 0.2, 0.3, 7.0],
    [2.0**60, 2.0**60 + 2**8, 5.0], [42.0], [np.nan, 1.0, 2.0],
])
def test_codec_edge_values(values: list[float]) -> None:
    arr = np.array(values)
    enc = codec.encode([Block(T0 + i, np.array([7]), np.array([x])) for i, x in enumerate(arr)])
    t, v = codec.decode(enc.blob)[7]
    assert same_bits(v, arr)
    assert np.array_equal(t, T0 + np.arange(len(arr)))


def test_codec_groups_series_by_instants_and_keeps_the_first_duplicate() -> None:
    blocks = [Block(1000, np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0])),
              Block(2000, np.array([1, 2]), np.array([1.5, 2.5])),
              Block(1000, np.array([3]), np.array([9.0])),  # same series and instant again
              Block(3000, np.array([4]), np.array([4.0]))]
    enc = codec.encode(blocks)
    assert enc.duplicates == 1 and enc.samples == 6
    got = codec.decode(enc.blob)
    assert got[3][1].tolist() == [3.0]
    assert got[1][0].tolist() == [1000, 2000] and got[4][0].tolist() == [3000]
    sids, _ts, vals = codec.decode_all(enc.blob)
    assert sids.tolist() == [1, 1, 2, 2, 3, 4] and vals.tolist() == [1.0, 1.5, 2.0, 2.5, 3.0, 4.0]
    with pytest.raises(codec.CodecError, match="not a segment"):
        codec.decode(b"nope" + enc.blob[4:])


def _store(tmp: Path, **kw: float) -> BlockStore:
    return BlockStore(tmp / "store.sqlite", **kw)


def _defs(node: str, n: int) -> list[SeriesDef]:
    return [SeriesDef("gpu_temperature_celsius", "gpu", "temperature_celsius", {"gpu": str(i), "node": node}, node)
            for i in range(n)]


def test_series_are_defined_in_bulk_and_keep_their_ids(tmp_path: Path) -> None:
    s = _store(tmp_path)
    a = s.define(_defs("n1", 500) + _defs("n2", 500))
    assert a == list(range(1, 1001))
    assert s.define(_defs("n2", 3)) == [501, 502, 503]
    s.close()
    s = _store(tmp_path)
    assert s.define(_defs("n3", 1)) == [1001]
    s.close()
    r = BlockReader(tmp_path / "store.sqlite")
    rows = r.find_series("gpu_temperature_celsius", [Matcher("node", "=", "n2"), Matcher("gpu", "=~", "1|2")])
    assert sorted(x.id for x in rows) == [502, 503]


def test_series_ids_in_sorted_columns_match_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys move from the dict into the sorted columns in bulk; lookups see both, a key defined
    twice in one call gets one id, and keys ending in NUL bytes (numpy strips them from items)
    are told apart."""
    monkeypatch.setattr(SeriesIds, "MERGE", 64)
    ids = SeriesIds()
    defs = [(f"m{i % 7}", "m", "f", {"node": "n", "i": str(i)}, 0, "") for i in range(500)]
    first, new = ids.resolve("n", defs[:300] + defs[:5])
    assert len(new) == 300 and first[300:] == first[:5] and len(ids._keys) > 0
    again, new = ids.resolve("n", defs)
    assert again[:300] == first[:300] and len(new) == 200 and sorted(again) == list(range(1, 501))
    assert ids.resolve("n", defs[::-1]) == (again[::-1], []) and len(ids) == 500
    ids.forget(new[:3])
    assert len(ids) == 497 and ids.get_many([series_key(r[1], r[4]) for r in new[:4]]) == [None] * 3 + [new[3][0]]
    nul = SeriesIds()
    a, b = b"a" + bytes(15), b"a" + bytes(14) + b"\x01"
    nul._recent = {a: 1, b: 2}
    nul.merge()
    assert nul.get_many([a, b, b"b" * 16]) == [1, 2, None] and a in nul and len(nul) == 2


def test_flush_merge_query_and_retention(tmp_path: Path) -> None:
    s = _store(tmp_path, flush_s=60)
    sids = s.define(_defs("n1", 8))
    assert sids == list(range(1, 9))
    ts, m = telemetry(720)  # two hours
    for i in range(0, 720, 6):  # a flush a minute
        s.append("n1", blocks_of(ts[i:i + 6], m[:, i:i + 6]), pos=i + 1, now=i * 10)
        s.flush(now=i * 10 + 60)
    assert s.flushed_positions() == {"n1": 715}
    r = BlockReader(tmp_path / "store.sqlite")
    rows = r.find_series("gpu_temperature_celsius", [])
    whole = {row.id: (t, v) for row, t, v in r.query(rows, 0, 2**62)}
    assert all(same_bits(whole[i + 1][1], m[i]) for i in range(8))
    # Merge the closed hour: level-1 for it, the open hour stays at level 0; answers unchanged.
    assert s.compact(now=(ts[400]) / 1000) == 1
    levels = r._db.execute("SELECT level, count(*) FROM segments GROUP BY level").fetchall()
    assert dict(levels)[1] >= 1 and dict(levels)[0] >= 1
    merged = {row.id: (t, v) for row, t, v in r.query(rows, int(ts[100]), int(ts[500]))}
    for i in range(8):
        sel = (ts >= ts[100]) & (ts <= ts[500])
        assert np.array_equal(merged[i + 1][0], ts[sel])
        assert same_bits(merged[i + 1][1], m[i][sel])
    # Retention drops whole segments: everything before the second hour's start.
    dropped = s.apply_retention(now=ts[360] / 1000 + s.retention_s)
    assert dropped >= 1
    left = {row.id: t for row, t, _v in r.query(rows, 0, 2**62)}
    assert left[1].min() > ts[0]
    s.close()


def test_first_received_wins_across_segments_and_duplicates_are_counted(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.define(_defs("n1", 2))
    s.append("n1", [Block(T0, np.array([1, 2]), np.array([1.0, 2.0]))], now=0)
    s.flush(force=True)
    # A later batch (another agent WAL replaying old data) carries the same instant, other values.
    s.append("n1", [Block(T0, np.array([1, 2]), np.array([10.0, 20.0])),
                    Block(T0 + 10_000, np.array([1]), np.array([3.0]))], now=0)
    r = BlockReader(tmp_path / "store.sqlite")
    rows = r.find_series(None, [Matcher("node", "=", "n1")])
    with_head = {row.id: v.tolist() for row, _t, v in r.query(rows, 0, 2**62, head=s.head)}
    assert with_head == {1: [1.0, 3.0], 2: [2.0]}
    s.flush(force=True)
    s.compact(now=T0 / 1000 + 7200)
    assert s.stats.duplicates == 2
    after = {row.id: v.tolist() for row, _t, v in r.query(rows, 0, 2**62)}
    assert after == {1: [1.0, 3.0], 2: [2.0]}
    assert r.count_samples("n1") == 3
    # A late backfill into the merged hour is merged into its level-1 segment, not beside it.
    s.append("n1", [Block(T0 + 20_000, np.array([2]), np.array([5.0]))], now=0)
    s.flush(force=True)
    s.compact(now=T0 / 1000 + 7200)
    assert r._db.execute("SELECT count(*) FROM segments WHERE level = 1").fetchone()[0] == 1
    assert {row.id: v.tolist() for row, _t, v in r.query(rows, 0, 2**62)} == {1: [1.0, 3.0], 2: [2.0, 5.0]}
    s.close()


def test_level0_round_trip_keeps_arrival_order() -> None:
    blocks = [Block(5, np.array([3, 1]), np.array([1.0, 2.0])), Block(4, np.array([1]), np.array([7.0]))]
    back = decode_l0(encode_l0(blocks))
    assert [(b.ts_ms, b.sids.tolist(), b.values.tolist()) for b in back] == [(5, [3, 1], [1.0, 2.0]), (4, [1], [7.0])]


def test_append_log_group_commit_and_torn_tail(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    gc = applog.GroupCommit(applog.AppendLog(folder, file_bytes=4096))

    async def many() -> list[int]:
        recs = [applog.encode_batch(f"n{i % 3}", i, [Block(T0 + i, np.array([1, 2]), np.array([i, -i], float))],
                                    [[T0, "gpu.xid", "critical", "XID 79", "drain", "{}"]] if i == 5 else [])
                for i in range(1, 101)]
        out: list[int] = []
        for i in range(0, 100, 10):  # waves: each is one group or a few
            out += await asyncio.gather(*(gc.append(r) for r in recs[i:i + 10]))
        return out

    positions = asyncio.run(many())
    assert positions == sorted(positions) and gc.records == 100 and 10 <= gc.groups < 100
    gc.close()
    files = sorted(folder.glob("*.log"))
    assert len(files) > 1, "the log rotates past file_bytes"
    # A torn write at the end of the first file: the reader skips to the next file.
    with files[0].open("ab") as f:
        f.write(struct.pack("<II", 1000, 0) + b"partial")
    got = [applog.decode_batch(p) for _pos, p in applog.read(folder)]
    assert [g.seq for g in got] == list(range(1, 101))
    assert got[4].events[0][1] == "gpu.xid" and got[4].blocks[0].values.tolist() == [5.0, -5.0]
    # Reading from a position; a reopened log starts a new file; old files can be dropped.
    assert next(applog.decode_batch(p).seq for _pos, p in applog.read(folder, positions[60])) == 61
    log2 = applog.AppendLog(folder)
    assert log2.file_no == len(files) + 1
    log2.write([applog.encode_json(applog.NODE, {"node": "n1", "wal_id": "w2"})])
    log2.sync()
    last = list(applog.read(folder))[-1][1]
    assert applog.kind(last) == applog.NODE and applog.decode_json(last)["wal_id"] == "w2"
    assert log2.delete_before(positions[-1]) > 0
    assert next(applog.decode_batch(p).seq for _pos, p in applog.read(folder)
            if applog.kind(p) == applog.BATCH) > 1
    log2.close()


# --- the store as the collector uses it: log + compactor + reader ------------------------------------
TN = (int(time.time()) // 3600 - 3) * 3_600_000  # recent: inside the retention


class _Agent:
    """WriteItems as the ingest path builds them: the sequence planned, applied once committed."""

    def __init__(self, store: Any, node: str = "n1", wal: str = "wal-a") -> None:
        self.store = store
        self.node = node
        loaded = store.load_node(node)
        self.state = loaded if loaded.wal_id == wal else NodeState.new_wal(node, wal)

    def commit(self, batches: list[tuple[int, list[int], int, list[float]]],
               events: list[EventRow] | None = None) -> None:
        items, updates = [], []
        for seq, ids, ts, vals in batches:
            u = self.state.plan(seq)
            updates.append(u)
            cols = SampleColumns(list(ids), [ts] * len(ids), list(vals))
            items.append(WriteItem(u, '{"rack":"r1"}', cols, list(events or []) if not items else []))
            self.state.apply(u)  # plans of one group build on each other, as the ingestor's do
        self.store.commit(items)


def _new_series(node: str, n: int) -> list[NewSeries]:
    return [NewSeries("gpu_temperature_celsius", "gpu", "temperature_celsius", {"gpu": str(i), "node": node}, 0, "")
            for i in range(n)]


def test_embedded_store_recovers_from_the_log_and_compacts(tmp_path: Path) -> None:
    es = LogStore(tmp_path)
    ids = es.series_ids("n1", _new_series("n1", 3))
    assert es.series_ids("n1", _new_series("n1", 3)) == ids  # idempotent
    ev = EventRow(TN, "gpu.xid", "critical", "XID 79", "drain", '{"node":"n1"}')
    _Agent(es).commit([(1, ids, TN, [50.0, 51.0, 52.0]), (3, ids, TN + 20_000, [53.0, 54.0, 55.0])], [ev])
    # A crash: no close, no checkpoint. A new process replays the log.
    es2 = LogStore(tmp_path)
    st2 = es2.load_node("n1")
    assert (st2.wal_id, st2.contiguous, st2.has(3), st2.has(2)) == ("wal-a", 1, True, False)
    _Agent(es2).commit([(2, ids, TN + 10_000, [1.0, 2.0, 3.0])])
    assert es2.load_node("n1").contiguous == 3
    r = LogStoreReader(tmp_path)
    assert r.contiguous("n1") == 3
    assert [e["kind"] for e in r.events(0)] == ["gpu.xid"]
    # Before any compaction the reader answers from the log's tail.
    assert r.count_samples("n1") == 9
    assert r.samples(ids[1], 0, 2**62) == [(TN, 51.0), (TN + 10_000, 2.0), (TN + 20_000, 54.0)]
    comp = Compactor(tmp_path, flush_s=0)
    assert comp.poll() >= 4
    comp.maintain(now=TN / 1000 + 7200, force_flush=True)
    levels = dict(r._db.execute("SELECT level, count(*) FROM segments GROUP BY level").fetchall())
    assert levels == {1: 1}
    assert r.count_samples("n1") == 9 and r.samples(ids[2], 0, 2**62)[1] == (TN + 10_000, 3.0)
    # A restarted compactor does not store anything twice.
    comp.store.close()
    comp = Compactor(tmp_path, flush_s=0)
    comp.poll()
    comp.maintain(force_flush=True)
    assert r.count_samples("n1") == 9
    es2.close()
    comp.store.close()


class _CompactorBetween:
    """The store's SQLite connection, with the compactor run right after its ``after``-th statement:
    the compactor is another process and may copy a series, move ``compactor_low`` past its record
    and delete its log file between any two statements of the ingest side."""

    def __init__(self, db: sqlite3.Connection, after: int, compact: Any) -> None:
        self._db, self._after, self._compact, self.statements = db, after, compact, 0

    def execute(self, *args: Any) -> sqlite3.Cursor:
        cur = self._db.execute(*args)
        self.statements += 1
        if self.statements == self._after:
            self._compact()
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _two_series_in_several_log_files(tmp_path: Path) -> tuple[LogStore, list[int], Compactor, Callable[[], None]]:
    """A store whose two new series are defined in the first of several log files (so the file with
    their record can be deleted), the compactor beside it, and a call that runs it to the end."""
    es = LogStore(tmp_path)
    es.log.file_bytes = 256
    ids = es.series_ids("n1", _new_series("n1", 2))
    agent = _Agent(es)
    for seq in range(1, 20):
        agent.commit([(seq, ids, TN + seq * 1000, [float(seq), 1.0])])
    es.checkpoint()
    comp = Compactor(tmp_path, flush_s=0)

    def compact() -> None:
        comp.poll()
        comp._next_retention = 0
        comp.maintain(force_flush=True)

    return es, ids, comp, compact


@pytest.mark.parametrize("after", [1, 2])
def test_a_new_series_is_found_while_the_compactor_moves_it(tmp_path: Path, after: int) -> None:
    # The sinks look up a series defined moments ago (CI saw a KeyError that stopped a sink's
    # spool): wherever the compactor runs, the series is in SQLite or in the log.
    es, ids, comp, compact = _two_series_in_several_log_files(tmp_path)
    spy = _CompactorBetween(es._db, after, compact)
    es._db = spy  # type: ignore[assignment]
    meta = es.series_meta(ids[1])
    assert spy.statements >= after, "the compactor ran inside the lookup"
    assert not (tmp_path / "log" / "00000001.log").exists(), "the series' log file was deleted meanwhile"
    assert (meta.measurement, meta.field, dict(meta.tags)) == ("gpu", "temperature_celsius", {"gpu": "1", "node": "n1"})
    es.close()
    comp.store.close()


@pytest.mark.parametrize("after", [1, 2])
def test_a_reader_finds_a_new_series_while_the_compactor_moves_it(tmp_path: Path, after: int) -> None:
    # The same move as above, seen by a reader (queries, an adopted node's history).
    es, ids, comp, compact = _two_series_in_several_log_files(tmp_path)
    reader = LogStoreReader(tmp_path)
    spy = _CompactorBetween(reader._db, after, compact)
    reader._db = reader.blocks._db = spy  # type: ignore[assignment]
    rows = reader.find_series("gpu_temperature_celsius", [Matcher("node", "=", "n1")])
    assert spy.statements >= after, "the compactor ran inside the lookup"
    assert not (tmp_path / "log" / "00000001.log").exists(), "the series' log file was deleted meanwhile"
    assert sorted(r.id for r in rows) == sorted(ids)
    assert reader.count_samples("n1") == 38
    es.close()
    comp.store.close()


def test_log_files_go_once_every_reader_passed_them(tmp_path: Path) -> None:
    es = LogStore(tmp_path)
    es.log.file_bytes = 512
    ids = es.series_ids("n1", _new_series("n1", 1))
    agent = _Agent(es)
    for seq in range(1, 60):
        agent.commit([(seq, ids, TN + seq * 1000, [float(seq)])])
    files = len(list((tmp_path / "log").glob("*.log")))
    assert files > 3
    comp = Compactor(tmp_path, flush_s=0)
    comp.poll()
    comp.maintain(force_flush=True)
    assert len(list((tmp_path / "log").glob("*.log"))) == files, "no node checkpoint yet: keep the log"
    es.checkpoint()
    comp._next_retention = 0
    comp.maintain(force_flush=True)
    assert len(list((tmp_path / "log").glob("*.log"))) < files
    assert LogStoreReader(tmp_path).count_samples("n1") == 59
    es.close()
    comp.store.close()


def test_a_row_store_is_migrated_in_place(tmp_path: Path) -> None:
    old = SqliteStore(tmp_path / "fleetmon.sqlite")
    sids = old.series_ids("n1", _new_series("n1", 3))
    rows = [(sid, TN + k * 10_000, 40.0 + k + i) for k in range(400) for i, sid in enumerate(sids)]
    agent = _Agent(old)
    ev = EventRow(TN, "gpu.xid", "critical", "XID 79", "drain", '{"node":"n1"}')
    u1 = agent.state.plan(1)
    agent.state.apply(u1)
    u3 = agent.state.plan(3)
    agent.state.apply(u3)
    first = SampleColumns(*(list(c) for c in zip(*rows[:600], strict=True)))
    second = SampleColumns(*(list(c) for c in zip(*rows[600:], strict=True)))
    owed = SampleColumns(*(list(c) for c in zip(*rows[600:603], strict=True)))
    old.commit([WriteItem(u1, "{}", first, [ev]), WriteItem(u3, "{}", second, [], spool_body=encode_spool(owed, []))])
    old.close()
    es = LogStore(tmp_path)
    st2 = es.load_node("n1")
    assert (st2.wal_id, st2.contiguous, st2.has(3), st2.has(2)) == ("wal-a", 1, True, False)
    r = LogStoreReader(tmp_path)
    assert r.count_samples("n1") == 1200
    assert r.samples(sids[2], 0, 2**62)[:2] == [(TN, 42.0), (TN + 10_000, 43.0)]
    assert [e["kind"] for e in r.events(0)] == ["gpu.xid"]
    assert r._db.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('samples', 'spool', 'held')"
                         ).fetchone()[0] == 0
    # What the old spool still owed a sink is read from the new log.
    spooled = es.spool_read(0, 10)
    assert [decode_spool(b).samples.values for _p, b in spooled] == [[r[2] for r in rows[600:603]]]
    es.close()
    # Someone else's SQLite file is refused, naming it.
    other = tmp_path / "other"
    other.mkdir()
    con = sqlite3.connect(other / "fleetmon.sqlite")
    con.execute("CREATE TABLE t (x)")
    con.close()
    with pytest.raises(MigrationError, match="not a fleetmon store"):
        LogStore(other)


def test_a_collision_apart_in_time_is_dropped_at_the_merge_and_counted(tmp_path: Path) -> None:
    es = LogStore(tmp_path)
    (sid,) = es.series_ids("n1", _new_series("n1", 1))
    agent = _Agent(es)
    # seq 1 at TN; then more than LogStore.RECENT other instants; then TN again (a replayed WAL).
    agent.commit([(1, [sid], TN, [1.0])])
    for k in range(2, 3 + LogStore.RECENT):
        agent.commit([(k, [sid], TN + k * 10_000, [float(k)])])
    agent.commit([(10, [sid], TN, [99.0])])
    assert es.duplicate_samples == 0, "too far apart for the ingest side to see"
    comp = Compactor(tmp_path, flush_s=0)
    comp.poll()
    comp.maintain(now=TN / 1000 + 7200, force_flush=True)
    assert es.duplicate_samples == 1
    assert LogStoreReader(tmp_path).samples(sid, TN, TN) == [(TN, 1.0)], "the first stored is kept"
    comp.store.close()
    es.close()


def test_count_by_node_matches_per_node_counts(tmp_path: Path) -> None:
    es = LogStore(tmp_path)
    for node in ("n1", "n2"):
        ids = es.series_ids(node, _new_series(node, 2))
        _Agent(es, node).commit([(1, ids, TN, [1.0, 2.0]), (2, ids, TN + 10_000, [3.0, 4.0])])
    comp = Compactor(tmp_path, flush_s=0)
    comp.poll()
    comp.maintain(force_flush=True)
    es2 = LogStore(tmp_path)  # more in the log's tail, not compacted
    ids = es2.series_ids("n2", _new_series("n2", 2))
    _Agent(es2, "n2").commit([(3, ids, TN + 20_000, [5.0, 6.0])])
    r = LogStoreReader(tmp_path)
    assert r.count_by_node() == {"n1": 4, "n2": 6} == {n: r.count_samples(n) for n in ("n1", "n2")}
    comp.store.close()
    es.close()
    es2.close()


def test_a_damaged_store_file_is_moved_aside_and_the_log_refills_it(tmp_path: Path) -> None:
    es = LogStore(tmp_path)
    ids = es.series_ids("n1", _new_series("n1", 2))
    _Agent(es).commit([(1, ids, TN, [1.0, 2.0])])
    comp = Compactor(tmp_path, flush_s=0)
    comp.poll()
    comp.maintain(force_flush=True)
    comp.store.close()
    es.close()
    raw = (tmp_path / "fleetmon.sqlite").read_bytes()
    (tmp_path / "fleetmon.sqlite").write_bytes(raw[:4096] + b"\xff" * 8192 + raw[4096 + 8192:])
    with pytest.raises(CorruptStoreError, match=r"did not start.*recover"):
        open_log_store(tmp_path, 86400, on_corrupt="refuse")
    es = open_log_store(tmp_path, 86400)
    assert list(tmp_path.glob("fleetmon.sqlite.corrupt-*"))
    # The append log still held the batch: the series and the node's sequence come back from it.
    assert es.load_node("n1").contiguous == 1
    comp = Compactor(tmp_path, flush_s=0)
    comp.poll()
    comp.maintain(force_flush=True)
    assert LogStoreReader(tmp_path).count_samples("n1") == 2
    comp.store.close()
    es.close()
