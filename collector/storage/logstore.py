"""The embedded store as the collector uses it: append log for durability, blocks for history.

Data dir layout::

    fleetmon.sqlite   series, segments (blocks.py), events, node sequence checkpoints, sink cursors
    log/*.log         the append log (applog.py): batches as received, series definitions, node resets

Who writes what:

- the ingest process (:class:`LogStore`, on the collector's store thread): the log (an
  agent is acked once its batch's record is fsynced, group commit), series rows, events, node
  sequence checkpoints and sink cursors;
- the compactor (``collector/storage/compactor.py``, its own process by default): tails the log
  into per-node heads, level-0 and level-1 segments, retention, and deletes log files every
  reader is done with.

The log is the source of truth; SQLite is what it has been compacted into. After a crash the
ingest side replays the log from its last node checkpoint (node sequences, series rows,
events: all idempotent), and the compactor from the oldest position it had not flushed.
Readers (collector/storage/logreader.py) see segments plus the log's unflushed tail.
"""

from __future__ import annotations

import bisect
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from collector.errors import CorruptStoreError, StoreError
from collector.sequence import NodeState, SeqRange, SeqUpdate
from collector.seriesdefs import canonical_labels
from collector.storage import applog
from collector.storage.blocks import (
    BlockStore,
    SeriesIds,
    series_key,
)
from collector.storage.codec import Block
from collector.storage.embedded import EventRow, NewSeries, SampleColumns, SeriesMeta, SpoolDepth, SpoolRow, WriteItem
from collector.storage.migrate import migrate, needs_migration
from collector.storage.sqlite import move_aside

log = logging.getLogger("fleetmon.collector.store")

STORE_FILE = "fleetmon.sqlite"

T = TypeVar("T")


def across_compaction(low: Callable[[], int], read: Callable[[int], T]) -> T:
    """``read(compactor_low)``, SQLite first and then the log's tail from that position, again
    until ``compactor_low`` stayed put across it. The compactor (another process) copies series
    into SQLite, then moves ``compactor_low`` past their log records, and only then may delete
    those log files: with ``low`` unmoved, no series fell between the two reads."""
    for _ in range(10):
        before = low()
        got = read(before)
        if low() == before:
            return got
    return got  # the compactor kept moving: the last read, as good as any

LOG_DIR = "log"

_EXTRA_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL,
    severity TEXT NOT NULL, message TEXT NOT NULL, action TEXT NOT NULL, labels TEXT NOT NULL,
    UNIQUE (node, ts, kind, labels)
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS node_seq (
    node TEXT PRIMARY KEY, wal_id TEXT NOT NULL, floor INTEGER NOT NULL, ranges TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}', last_seen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sink_cursor (sink TEXT PRIMARY KEY, spool_id INTEGER NOT NULL);
"""

#: How often the node sequence state is checkpointed into SQLite (bounds the replay at start).
CHECKPOINT_S = 10.0


def open_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA busy_timeout=30000")
    return db


@dataclass
class NodeRecord:
    """A node's durable sequence state (collector/sequence.py's ranges), as the store keeps it."""

    wal_id: str = ""
    ranges: list[SeqRange] = field(default_factory=list)
    floor: int = 0
    labels_json: str = "{}"
    last_seen: int = 0

    def apply(self, u: SeqUpdate) -> None:
        """Persist exactly what the sequence plan says (SqliteStore does the same in SQL)."""
        if u.reset:
            self.wal_id, self.ranges = u.wal_id, []
        for r in u.ranges:
            los = [x.lo for x in self.ranges]
            start, end = bisect.bisect_left(los, r.lo), bisect.bisect_right(los, r.hi)
            self.ranges[start:end] = [SeqRange(r.lo, r.hi)]
        self.floor = u.floor

    @property
    def contiguous(self) -> int:
        return self.ranges[0].hi if self.ranges and self.ranges[0].lo == 1 else 0


class Nodes:
    """Node sequence state: checkpoint in SQLite + replay of the log after it."""

    def __init__(self) -> None:
        self.recs: dict[str, NodeRecord] = {}

    def state(self, node: str) -> NodeState:
        rec = self.recs.get(node)
        if rec is None:
            return NodeState(node)
        return NodeState(node, rec.wal_id, rec.ranges, rec.floor)

    def load(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'nodes_pos'").fetchone()
        for node, wal, floor, ranges, labels, seen in db.execute(
                "SELECT node, wal_id, floor, ranges, labels, last_seen FROM node_seq"):
            self.recs[node] = NodeRecord(wal, [SeqRange(lo, hi) for lo, hi in json.loads(ranges)], int(floor),
                                         labels, int(seen))
        return int(row[0]) if row else 0

    def apply(self, payload: bytes) -> None:
        if applog.kind(payload) != applog.BATCH:
            return
        rec = applog.decode_batch(payload, blocks=False)
        self.apply_update(rec.meta, rec.node)

    def apply_update(self, meta: dict[str, Any], node: str) -> None:
        if not node or "u" not in meta:
            return  # a migrated spool batch, for the sinks only
        wal, reset, seq, ranges, floor, contiguous, version = meta["u"]
        rec = self.recs.setdefault(node, NodeRecord())
        rec.apply(SeqUpdate(node, wal, bool(reset), seq, tuple(SeqRange(lo, hi) for lo, hi in ranges), floor,
                            contiguous, version))
        rec.labels_json = meta.get("l", rec.labels_json)

    def snapshot(self) -> list[tuple[Any, ...]]:
        return [(n, r.wal_id, r.floor, json.dumps([list(x) for x in r.ranges]), r.labels_json, r.last_seen)
                for n, r in self.recs.items()]

    @staticmethod
    def save_rows(db: sqlite3.Connection, rows: list[tuple[Any, ...]], pos: int) -> None:
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO node_seq VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node) DO UPDATE SET "
                           "wal_id = excluded.wal_id, floor = excluded.floor, ranges = excluded.ranges, "
                           "labels = excluded.labels, last_seen = excluded.last_seen", rows)
            db.execute("INSERT INTO meta VALUES ('nodes_pos', ?) ON CONFLICT (key) DO UPDATE SET "
                       "value = excluded.value", (str(pos),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def update_meta(it: WriteItem) -> dict[str, Any]:
    u = it.update
    return {"u": [u.wal_id, u.reset, u.seq, [list(r) for r in u.ranges], u.floor, u.contiguous, u.version],
            "l": it.labels_json}


def item_blocks(it: WriteItem) -> list[Block]:
    """The item's samples as blocks (the ingest path gives blocks; columns are grouped by ts)."""
    if it.blocks is not None:
        return it.blocks
    cols = it.samples
    if not len(cols):
        return []
    ts = np.asarray(cols.ts_ms, np.int64)
    sids = np.asarray(cols.series_ids, np.int64)
    vals = np.asarray(cols.values, np.float64)
    out = []
    for t in dict.fromkeys(ts.tolist()):  # first appearance order
        m = ts == t
        out.append(Block(int(t), sids[m], vals[m]))
    return out


class LogStore:
    """The embedded store (collector/storage/embedded.py's contract) on the append log and blocks.

    Every method runs on the collector's store thread, except the spool's readers (any thread)."""

    #: Block timestamps per node remembered to catch a (series, ts) sent twice (a node's batches
    #: built in the same millisecond): found here, dropped before the log, counted. Collisions
    #: further apart are found when segments merge (counted by the compactor).
    RECENT = 4

    def __init__(self, data_dir: Path, retention_s: float = 30 * 86400) -> None:
        self.data_dir = data_dir
        self.path = data_dir / STORE_FILE
        self.retention_s = retention_s
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            if needs_migration(self.path):
                migrate(self.path, data_dir / LOG_DIR)
            BlockStore(self.path, retention_s=retention_s).close()  # creates the schema
            self._db = open_db(self.path)
            self._db.execute("PRAGMA synchronous=NORMAL")  # the log is the durable copy
            self._db.executescript(_EXTRA_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise CorruptStoreError(f"{self.path}: {err}") from err
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"{self.path}: cannot open the store: {err}") from err
        self._lock = threading.Lock()
        self.nodes = Nodes()
        self._meta: dict[int, SeriesMeta] = {}
        self._ids = SeriesIds()
        self._per_node: dict[str, int] = {}
        for sid, name, labels, node in self._db.execute("SELECT id, name, labels, node FROM series"):
            self._ids.add(int(sid), name, labels)
            self._per_node[node] = self._per_node.get(node, 0) + 1
        nodes_pos = self.nodes.load(self._db)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'compactor_low'").fetchone()
        self._recover(nodes_pos, int(row[0]) if row else 0)
        self.log = applog.AppendLog(data_dir / LOG_DIR)
        self._last_checkpoint = time.monotonic()
        self._aux = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetmon-store-aux")
        self.commits = 0
        self._batch_end = 0  # log position after the newest batch record
        self._recent: dict[str, dict[int, np.ndarray]] = {}  # node -> block ts -> series ids stored
        self._duplicates = 0

    def _recover(self, nodes_pos: int, compactor_low: int) -> None:
        """Replay the log: series the compactor has not put into SQLite yet (from its low mark),
        node sequences and events after the node checkpoint."""
        events: list[tuple[Any, ...]] = []
        for pos, payload in applog.read(self.data_dir / LOG_DIR, min(nodes_pos, compactor_low)):
            kind = applog.kind(payload)
            if kind == applog.SERIES:
                for row in applog.decode_json(payload)["series"]:
                    if series_key(row[1], row[4]) not in self._ids:  # not copied into SQLite yet
                        self._per_node[row[5]] = self._per_node.get(row[5], 0) + 1
                    self._ids.add(int(row[0]), row[1], row[4])
            elif kind == applog.BATCH and pos >= nodes_pos:
                rec = applog.decode_batch(payload, blocks=False)
                events.extend((e[0], rec.node, *e[1:]) for e in rec.events)
                self.nodes.apply_update(rec.meta, rec.node)
        if events:
            self._insert_events(events)

    @property
    def duplicate_samples(self) -> int:
        """Samples dropped because their (series, ts) was stored already: found at commit, and
        by the compactor when it merges segments."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'duplicates'").fetchone()
        return self._duplicates + (int(row[0]) if row else 0)

    # --- nodes --------------------------------------------------------------------------------
    def load_node(self, node: str) -> NodeState:
        return self.nodes.state(node)

    def note_node(self, node: str, online: bool, labels: dict[str, str], skew: float) -> None:
        """A stream started or ended: for the rules process (not synced: advisory, in order)."""
        self.log.write([applog.encode_json(applog.NODE, {"op": "status", "node": node, "online": online,
                                                         "labels": labels, "skew": skew, "ts": time.time()})])

    # --- series ---------------------------------------------------------------------------------
    def known_series(self, defs: Sequence[NewSeries]) -> list[int | None]:
        """The ids of these series where the store has them (nothing is created)."""
        return self._ids.get_many([series_key(d.name, canonical_labels(d.labels)) for d in defs])

    def series_count(self) -> int:
        return len(self._ids)

    def node_series_count(self, node: str) -> int:
        return self._per_node.get(node, 0)

    def series_ids(self, node: str, defs: Sequence[NewSeries]) -> list[int]:
        """Ids of these series. New ones go into the log as one record, made durable by the group
        commit of the batch that uses them (no fsync of their own); the compactor copies them
        into SQLite."""
        out, new = self._ids.resolve(node, defs)
        if new:
            self._per_node[node] = self._per_node.get(node, 0) + len(new)
            self.log.write([applog.encode_json(applog.SERIES, {"series": new})])
        return out

    def series_meta(self, sid: int) -> SeriesMeta:
        """What the sinks (and error messages) need of a series."""
        meta = self._meta.get(sid)
        if meta is not None:
            return meta

        def read(low: int) -> SeriesMeta | None:
            got = self._meta_from_db(sid)
            if got is not None:
                return got
            # Defined moments ago: the compactor has not copied it into SQLite yet. It is in the log.
            for _pos, payload in applog.read(self.data_dir / LOG_DIR, low, frozenset({applog.SERIES})):
                for r in applog.decode_json(payload)["series"]:
                    if int(r[0]) == sid:
                        got = self._meta[sid] = SeriesMeta(r[2], r[3], tuple(sorted(json.loads(r[4]).items())))
                        return got
            return None

        meta = across_compaction(self._compactor_low, read)
        if meta is None:
            raise KeyError(f"series id {sid} is neither in {self.path} nor in its log")
        return meta

    def _compactor_low(self) -> int:
        with self._lock:
            return int(self._meta_get("compactor_low") or 0)

    def _meta_from_db(self, sid: int) -> SeriesMeta | None:
        with self._lock:
            row = self._db.execute("SELECT measurement, field, labels FROM series WHERE id = ?", (sid,)).fetchone()
        if row is None:
            return None
        meta = self._meta[sid] = SeriesMeta(row[0], row[1], tuple(sorted(json.loads(row[2]).items())))
        return meta

    # --- batches --------------------------------------------------------------------------------
    def _first_only(self, node: str, blocks: list[Block]) -> list[Block]:
        """Drop (series, ts) pairs this node stored in a recent block or repeats in this batch."""
        recent = self._recent.setdefault(node, {})
        out = []
        for b in blocks:
            sids, vals = b.sids, b.values
            _u, first = np.unique(sids, return_index=True)
            if len(first) < len(sids):
                keep = np.zeros(len(sids), bool)
                keep[first] = True
                self._duplicates += int(len(sids) - len(first))
                sids, vals = sids[keep], vals[keep]
            seen = recent.get(b.ts_ms)
            if seen is not None:
                fresh = ~np.isin(sids, seen)
                self._duplicates += int(len(sids) - fresh.sum())
                sids, vals = sids[fresh], vals[fresh]
                recent[b.ts_ms] = np.concatenate([seen, sids])
            else:
                # A node sends the same series batch after batch: keep one array of them, not
                # RECENT copies (80 MB at 2,500 nodes).
                kept = sids
                for held in recent.values():
                    if len(held) == len(sids) and np.array_equal(held, sids):
                        kept = held
                        break
                recent[b.ts_ms] = kept
                while len(recent) > self.RECENT:
                    del recent[min(recent)]
            if len(sids):
                out.append(b if sids is b.sids else Block(b.ts_ms, sids, vals))
        return out

    def commit(self, items: Sequence[WriteItem]) -> None:
        """Durable when it returns: one log write and one fdatasync for all of them."""
        recs = []
        for it in items:
            blocks = self._first_only(it.node, item_blocks(it))
            recs.append(applog.encode_batch(it.node, it.update.seq, blocks, it.events,
                                            contiguous=it.update.contiguous, meta=update_meta(it)))
        positions = self.log.write(recs)
        self.log.sync()
        self._batch_end = self.log.end()
        now = int(time.time() * 1000)
        events: list[tuple[Any, ...]] = []
        for it in items:
            self.nodes.apply_update(update_meta(it), it.node)
            self.nodes.recs[it.node].last_seen = now
            events.extend((e[0], it.node, *e[1:]) for e in it.events)
        # SQLite work happens on the aux thread: the compactor may hold the file's write lock
        # for a moment, and an ack must never wait for that (the log has made it durable).
        if events:
            self._aux.submit(self._insert_events, events)
        self.commits += 1
        if time.monotonic() - self._last_checkpoint >= CHECKPOINT_S:
            self._last_checkpoint = time.monotonic()
            self._aux.submit(self._save_nodes, self.nodes.snapshot(), positions[-1] if positions else self.log.end())

    def checkpoint(self, pos: int | None = None) -> None:
        """Node sequences as of the log's end (replay starts there); waits until written."""
        self._aux.submit(self._save_nodes, self.nodes.snapshot(), self.log.end() if pos is None else pos).result()
        self._last_checkpoint = time.monotonic()

    def _save_nodes(self, rows: list[tuple[Any, ...]], pos: int) -> None:
        with self._lock:
            Nodes.save_rows(self._db, rows, pos)

    def _insert_events(self, rows: Sequence[tuple[Any, ...]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO events (ts, node, kind, severity, message, action, labels) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def apply_retention(self, now: float | None = None) -> int:
        """Events only: the compactor drops whole segments."""
        cutoff = int(((time.time() if now is None else now) - self.retention_s) * 1000)
        with self._lock:
            return int(self._db.execute("DELETE FROM events WHERE ts < ?", (cutoff,)).rowcount)

    def set_sinks(self, names: Sequence[str]) -> None:
        """The configured sinks: the compactor keeps log files until each of them confirmed."""
        with self._lock:
            self._db.execute("INSERT INTO meta VALUES ('sinks', ?) ON CONFLICT (key) DO UPDATE SET "
                             "value = excluded.value", (json.dumps(sorted(names)),))
            marks = [int(c) for s, c in self._db.execute("SELECT sink, spool_id FROM sink_cursor") if s in names]
        if marks:  # where the last batch a sink may still owe ends (for spool_depth)
            for pos, payload in applog.read(self.data_dir / LOG_DIR, min(marks), frozenset({applog.BATCH})):
                self._batch_end = max(self._batch_end, pos + applog.FRAME_BYTES + len(payload))

    # --- spool for the external sinks: the log is the spool --------------------------------------
    def spool_read(self, after: int, limit: int) -> list[SpoolRow]:
        """Batches from log position ``after`` on, as (position after the record, spool body in
        collector/spool.py's format): a sink's cursor is where its next batch starts."""
        from collector.spool import encode_spool  # noqa: PLC0415 - spool.py imports this module

        out: list[SpoolRow] = []
        for pos, payload in applog.read(self.data_dir / LOG_DIR, after, frozenset({applog.BATCH})):
            if pos < after:
                continue
            rec = applog.decode_batch(payload)
            cols = SampleColumns()
            for b in rec.blocks:
                cols.series_ids.extend(b.sids.tolist())
                cols.ts_ms.extend([b.ts_ms] * len(b.sids))
                cols.values.extend(b.values.tolist())
            rows = [EventRow(*e) for e in rec.events]
            out.append(SpoolRow(pos + applog.FRAME_BYTES + len(payload), encode_spool(cols, rows)))
            if len(out) >= limit:
                break
        return out

    def sink_cursor(self, sink: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT spool_id FROM sink_cursor WHERE sink = ?", (sink,)).fetchone()
            if row is None:
                # A sink configured now starts with the batches acked from now on.
                self._db.execute("INSERT INTO sink_cursor VALUES (?, ?)", (sink, self.log.end()))
                return self.log.end()
        return int(row[0])

    def set_sink_cursor(self, sink: str, spool_id: int, sinks: Iterable[str]) -> None:
        del sinks  # log files are deleted by the compactor once every cursor passed them
        with self._lock:
            self._db.execute("INSERT INTO sink_cursor VALUES (?, ?) ON CONFLICT (sink) DO UPDATE SET "
                             "spool_id = excluded.spool_id", (sink, spool_id))

    def spool_depth(self) -> SpoolDepth:
        """(files, bytes) of log between the slowest sink's cursor and the last batch."""
        with self._lock:
            names = json.loads(self._meta_get("sinks") or "[]")
            marks = [int(c) for s, c in self._db.execute("SELECT sink, spool_id FROM sink_cursor") if s in names]
        if not marks or min(marks) >= self._batch_end:
            return SpoolDepth(0, 0)
        lo_file, lo_off = applog.split_position(min(marks))
        hi_file, hi_off = applog.split_position(self._batch_end)
        total = files = 0
        for no, p in applog.log_files(self.data_dir / LOG_DIR):
            if lo_file <= no <= hi_file:
                size = hi_off if no == hi_file else p.stat().st_size
                total += size - (lo_off if no == lo_file else 0)
                files += 1
        return SpoolDepth(files, max(total, 0))

    def _meta_get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        self.checkpoint()
        self._aux.shutdown(wait=True)
        self.log.close()
        with self._lock:
            self._db.close()


def _check_file(path: Path, how: str) -> None:
    """SQLite's quick_check / integrity_check of the store file; CorruptStoreError if damaged."""
    if how == "off" or not path.exists():
        return
    pragma = "integrity_check" if how == "full" else "quick_check"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [str(r[0]) for r in db.execute(f"PRAGMA {pragma}(20)").fetchall()]
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        raise CorruptStoreError(f"{path}: {err}") from err
    if rows != ["ok"]:
        raise CorruptStoreError(f"{path}: {pragma} found {len(rows)} problem(s), first: {rows[0]}")


def open_log_store(data_dir: Path, retention_s: float, *, check: str = "quick",
                   on_corrupt: str = "move_aside") -> LogStore:
    """The collector's store in ``data_dir``. A damaged SQLite file is moved aside (with a clear
    error line; the append log still holds the recent batches, which the compactor stores again)
    or, with ``on_corrupt="refuse"``, a CorruptStoreError says what to run."""
    path = data_dir / STORE_FILE
    try:
        _check_file(path, check)
        return LogStore(data_dir, retention_s)
    except CorruptStoreError as err:
        moved = move_aside(path, err, on_corrupt)
        log.error("embedded store damaged (%s); moved it aside to %s and started an empty one; the batches "
                  "still in its append log are stored again, older history is not served any more. To read "
                  "the old file: sqlite3 %s .recover", err, ", ".join(moved), moved[0] if moved else path)
        return LogStore(data_dir, retention_s)


__all__ = ["LogStore", "Nodes", "open_db", "open_log_store"]
