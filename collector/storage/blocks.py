"""The embedded block store: series, and their samples in compressed per-node segments.

Samples reach the store already durable (in the append log, ``collector/storage/applog.py``);
the store's job is to keep them small and quick to read:

- the *head*: per node, the blocks received since its last flush, in memory (a minute or so);
- level-0 segments: a node's head, flushed about once a minute, zlib over the raw columns —
  cheap to write (~0.2 ms per node), ~1.3 bytes/sample on hardware telemetry;
- level-1 segments: per node and hour window, every series a column encoded by
  ``collector/storage/codec.py`` (~0.4 bytes/sample, decodable one series at a time), made
  from the level-0 segments once their hour closed.

Order of arrival decides between two samples of one series at one instant (a replay after a
new agent WAL, a backfill that overlaps): the first received is kept, the later one counted in
``duplicates``. Segments carry ``key``, the arrival order of their oldest data, so readers and
merges apply the same rule. Retention deletes whole segments (an index on ``t_max``).

The file is SQLite (WAL journal): readers (``fleetmon query``, the HTTP API) use their own
connection while the collector writes, and a series is selected with the same SQL index as
before. ``bench/bench_store.py`` compares it with raw rows and with DuckDB.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from collector.seriesdefs import canonical_labels
from collector.storage import codec
from collector.storage.codec import F64, I64, Block
from collector.storage.sqlite import Matcher, SeriesRow

SCHEMA_VERSION = "blocks-1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, measurement TEXT NOT NULL, field TEXT NOT NULL,
    labels TEXT NOT NULL, node TEXT NOT NULL, type INTEGER NOT NULL, help TEXT NOT NULL DEFAULT ''
);
-- (name, labels) is unique by construction: the collector assigns ids from a key of both.
CREATE INDEX IF NOT EXISTS series_name ON series (name);
CREATE INDEX IF NOT EXISTS series_node ON series (node);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY, node TEXT NOT NULL, level INTEGER NOT NULL, key INTEGER NOT NULL,
    t_min INTEGER NOT NULL, t_max INTEGER NOT NULL, samples INTEGER NOT NULL, body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_node ON segments (node, t_max);
CREATE INDEX IF NOT EXISTS segments_t_max ON segments (t_max);
CREATE TABLE IF NOT EXISTS flushed (node TEXT PRIMARY KEY, pos INTEGER NOT NULL);
"""

_L0 = struct.Struct("<I")
LEVEL0, LEVEL1 = 0, 1


@dataclass(frozen=True)
class SeriesDef:
    """A series as the collector defines it: full label set, node identity included."""

    name: str
    measurement: str
    field: str
    labels: dict[str, str]
    node: str
    type: int = 0
    help: str = ""


def labels_json(labels: dict[str, str]) -> str:
    return canonical_labels(labels)


def series_key(name: str, labels_json: str) -> bytes:
    """What identifies a series, in 16 bytes (millions of them stay in memory)."""
    return hashlib.blake2b(f"{name}\0{labels_json}".encode(), digest_size=16).digest()


class SeriesIds:
    """Series key → id, ids assigned here in order (the one writer of a store assigns them).

    A collector holds millions of series: their keys sit in sorted numpy columns (16 + 8 bytes
    a series; a dict of bytes → int costs ~120), the newest in a dict merged into the columns
    in bulk."""

    #: New keys kept in the dict before they are merged into the sorted columns.
    MERGE = 1 << 16

    def __init__(self) -> None:
        self._keys = np.zeros(0, "S16")
        self._sids = np.zeros(0, np.int64)
        self._recent: dict[bytes, int] = {}
        self.next_id = 1

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent)

    def __contains__(self, key: bytes) -> bool:
        return self.get_many([key])[0] is not None

    def get_many(self, keys: Sequence[bytes]) -> list[int | None]:
        """The ids of these keys (None where unknown)."""
        out: list[int | None] = [None] * len(keys)
        if len(self._keys) and len(keys):
            q = np.array(keys, "S16")  # compared as arrays: numpy strips trailing NULs from items
            pos = np.minimum(np.searchsorted(self._keys, q), len(self._keys) - 1)
            for i in np.flatnonzero(self._keys[pos] == q).tolist():
                out[i] = int(self._sids[pos[i]])
        recent = self._recent
        if recent:
            for i, k in enumerate(keys):
                sid = recent.get(k)
                if sid is not None:
                    out[i] = sid
        return out

    def add(self, sid: int, name: str, labels_json: str) -> None:
        self._recent[series_key(name, labels_json)] = sid
        self.next_id = max(self.next_id, sid + 1)
        if len(self._recent) >= self.MERGE:
            self.merge()

    def merge(self) -> None:
        """Move the dict's keys into the sorted columns (a key in both: the dict's id wins)."""
        if not self._recent:
            return
        keys = np.array(list(self._recent), "S16")
        sids = np.fromiter(self._recent.values(), np.int64, len(keys))
        self._recent = {}
        order = np.argsort(keys, kind="stable")
        keys, sids = keys[order], sids[order]
        if len(self._keys):
            pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            there = self._keys[pos] == keys
            self._sids[pos[there]] = sids[there]
            keys, sids = keys[~there], sids[~there]
        at = np.searchsorted(self._keys, keys)
        self._keys = np.insert(self._keys, at, keys)
        self._sids = np.insert(self._sids, at, sids)

    def resolve(self, node: str, defs: Iterable[tuple[str, str, str, dict[str, str], int, str]]
                ) -> tuple[list[int], list[tuple[int, str, str, str, str, str, int, str]]]:
        """Ids of (name, measurement, field, labels, type, help), and the rows of the new ones
        (id, name, measurement, field, labels json, node, type, help) to store."""
        rows = [(d, canonical_labels(d[3])) for d in defs]
        keys = [series_key(d[0], lj) for d, lj in rows]
        out = self.get_many(keys)
        new: list[tuple[int, str, str, str, str, str, int, str]] = []
        recent = self._recent
        for i, sid in enumerate(out):
            if sid is not None:
                continue
            key = keys[i]
            got = recent.get(key)  # defined twice in this call
            if got is None:
                got = recent[key] = self.next_id
                self.next_id += 1
                (name, measurement, field_, _labels, mtype, help_), lj = rows[i]
                new.append((got, name, measurement, field_, lj, node, mtype, help_))
            out[i] = got
        if len(recent) >= self.MERGE:
            self.merge()
        return out, new  # type: ignore[return-value]  # every entry is an id now

    def forget(self, rows: Iterable[tuple[int, str, str, str, str, str, int, str]]) -> None:
        """Series whose definition could not be stored (their ids are not reused)."""
        self.merge()
        drop = np.array([series_key(row[1], row[4]) for row in rows], "S16")
        if len(drop) and len(self._keys):
            keep = ~np.isin(self._keys, drop)
            self._keys, self._sids = self._keys[keep], self._sids[keep]


@dataclass
class _Head:
    blocks: list[Block] = field(default_factory=list)
    samples: int = 0
    since: float = 0.0  # wall clock of the first block
    pos: int = 0  # log position of the newest record in it
    first: int = 0  # and of the oldest


@dataclass
class StoreStats:
    samples: int = 0
    duplicates: int = 0
    flushes: int = 0
    merges: int = 0
    segments_dropped: int = 0


# --- level 0: raw columns, zlib -------------------------------------------------------------------
def encode_l0(blocks: Sequence[Block]) -> bytes:
    """Blocks as written (arrival order kept, duplicates too: the merge decides)."""
    ts = np.array([b.ts_ms for b in blocks], "<i8")
    counts = np.array([len(b.sids) for b in blocks], "<u4")
    sids = np.concatenate([b.sids for b in blocks]).astype("<i8")
    vals = np.concatenate([b.values for b in blocks]).astype("<f8")
    body = b"".join([_L0.pack(len(blocks)), ts.tobytes(), counts.tobytes(), sids.tobytes(), vals.tobytes()])
    return zlib.compress(body, 1)


def decode_l0(blob: bytes) -> list[Block]:
    try:
        body = zlib.decompress(blob)
        (n,) = _L0.unpack_from(body)
        pos = _L0.size
        ts = np.frombuffer(body, "<i8", n, pos)
        pos += 8 * n
        counts = np.frombuffer(body, "<u4", n, pos).astype(np.int64)
        pos += 4 * n
        total = int(counts.sum())
        sids = np.frombuffer(body, "<i8", total, pos).astype(np.int64)
        pos += 8 * total
        vals = np.frombuffer(body, "<f8", total, pos).astype(np.float64)
    except (zlib.error, ValueError, struct.error) as err:
        raise codec.CodecError(f"corrupt level-0 segment: {err}") from err
    ends = np.cumsum(counts)
    starts = ends - counts
    return [Block(int(t), sids[s:e], vals[s:e]) for t, s, e in zip(ts.tolist(), starts.tolist(), ends.tolist(),
                                                                   strict=True)]


def segment_samples(level: int, blob: bytes, want: np.ndarray | None) -> tuple[I64, I64, F64]:
    """(series ids, ts, values) of a segment, sorted by (series, ts), duplicates of level 0 kept."""
    if level == LEVEL1:
        if want is None:
            return codec.decode_all(blob)
        got = codec.decode(blob, want.tolist())
        if not got:
            e = np.zeros(0, np.int64)
            return e, e, np.zeros(0, np.float64)
        sids = np.concatenate([np.full(len(t), s, np.int64) for s, (t, _v) in got.items()])
        ts = np.concatenate([t for t, _v in got.values()])
        vals = np.concatenate([v for _t, v in got.values()])
        return sids, ts, vals
    return blocks_samples(decode_l0(blob), want)


def blocks_samples(blocks: Sequence[Block], want: np.ndarray | None) -> tuple[I64, I64, F64]:
    """Blocks as (series ids, ts, values) sorted by (series, ts), arrival order kept among equals."""
    if want is not None:
        blocks = [Block(b.ts_ms, b.sids[m], b.values[m]) for b in blocks if (m := np.isin(b.sids, want)).any()]
    if not blocks:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float64)
    sid = np.concatenate([b.sids for b in blocks])
    ts = np.concatenate([np.full(len(b.sids), b.ts_ms, np.int64) for b in blocks])
    val = np.concatenate([b.values for b in blocks])
    order = np.lexsort((ts, sid))
    return sid[order], ts[order], val[order]


def first_wins(parts: Sequence[tuple[I64, I64, F64]]) -> tuple[I64, I64, F64, int]:
    """Concatenate parts given oldest first; keep the first of equal (series, ts)."""
    sid = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    val = np.concatenate([p[2] for p in parts])
    order = np.lexsort((ts, sid))
    sid, ts, val = sid[order], ts[order], val[order]
    keep = np.ones(len(sid), bool)
    keep[1:] = (sid[1:] != sid[:-1]) | (ts[1:] != ts[:-1])
    return sid[keep], ts[keep], val[keep], int(len(keep) - keep.sum())


def _disjoint(spans: Sequence[tuple[int, int]]) -> bool:
    ordered = sorted(spans)
    return all(b[0] > a[1] for a, b in itertools.pairwise(ordered))


def _by_series(rows: Sequence[SeriesRow], want: np.ndarray, parts: Sequence[tuple[I64, I64, F64]],
               since_ms: int, until_ms: int) -> Iterator[tuple[SeriesRow, I64, F64]]:
    """Series by series from parts that are each sorted by (series, ts) and lie apart in time."""
    cuts = [(np.searchsorted(p[0], want), np.searchsorted(p[0], want, side="right")) for p in parts]
    index = {int(w): i for i, w in enumerate(want.tolist())}
    for s in rows:
        i = index[s.id]
        ts_parts, val_parts = [], []
        for (_sid, ts, val), (lo, hi) in zip(parts, cuts, strict=True):
            a, b = int(lo[i]), int(hi[i])
            if b > a:
                ts_parts.append(ts[a:b])
                val_parts.append(val[a:b])
        if not ts_parts:
            continue
        t = ts_parts[0] if len(ts_parts) == 1 else np.concatenate(ts_parts)
        v = val_parts[0] if len(val_parts) == 1 else np.concatenate(val_parts)
        m = (t >= since_ms) & (t <= until_ms)
        if m.any():
            yield s, t[m], v[m]


class BlockStore:
    """Writer side. One thread writes (the caller's); ``lock`` guards the connection."""

    def __init__(self, path: Path, *, retention_s: float = 30 * 86400, window_s: float = 3600,
                 flush_s: float = 60.0, flush_samples: int = 200_000) -> None:
        self.path = path
        self.retention_s = retention_s
        self.window_ms = int(window_s * 1000)
        self.flush_s = flush_s
        self.flush_samples = flush_samples
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two processes write this file (ingest: series; compactor: segments): wait, don't fail.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        # Retention frees whole segments; incremental vacuum gives their pages back to the disk.
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        # The append log is what makes data durable; the store is rebuilt from it after a crash
        # (from the positions in `flushed`, committed with the segments), so no fsync per commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise codec.CodecError(f"{path}: store schema {row[0]!r}, this collector reads {SCHEMA_VERSION!r}")
        self.lock = threading.Lock()
        self._series: SeriesIds | None = None  # loaded by the first define()
        self._heads: dict[str, _Head] = {}
        self._key = int(self._db.execute("SELECT coalesce(max(key), 0) FROM segments").fetchone()[0])
        self.stats = StoreStats()

    # --- series ----------------------------------------------------------------------------------
    def define(self, defs: Sequence[SeriesDef]) -> list[int]:
        """Ids of these series, creating the missing ones in one transaction (a reconnect storm
        defines millions: ids are assigned here and inserted with executemany)."""
        if self._series is None:
            self._series = SeriesIds()
            with self.lock:
                for sid, name, labels in self._db.execute("SELECT id, name, labels FROM series"):
                    self._series.add(int(sid), name, labels)
        by_node: dict[str, list[SeriesDef]] = {}
        for d in defs:
            by_node.setdefault(d.node, []).append(d)
        ids: dict[int, int] = {}
        new: list[tuple[int, str, str, str, str, str, int, str]] = []
        for node, group in by_node.items():
            got, rows = self._series.resolve(node, [(d.name, d.measurement, d.field, d.labels, d.type, d.help)
                                                    for d in group])
            ids.update({id(d): sid for d, sid in zip(group, got, strict=True)})
            new += rows
        if new:
            try:
                self.insert_series(new)
            except BaseException:
                self._series.forget(new)
                raise
        return [ids[id(d)] for d in defs]

    def insert_series(self, rows: Sequence[tuple[int, str, str, str, str, str, int, str]]) -> None:
        """(id, name, measurement, field, labels json, node, type, help) rows, one transaction;
        rows already there are left alone (a replayed log)."""
        with self.lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR IGNORE INTO series VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # --- head --------------------------------------------------------------------------------------
    def append(self, node: str, blocks: Sequence[Block], pos: int = 0, now: float | None = None) -> None:
        """Blocks of one batch (durable elsewhere) into the node's head."""
        head = self._heads.get(node)
        if head is None:
            head = self._heads[node] = _Head(since=time.time() if now is None else now, first=pos)
        for b in blocks:
            # A node's blocks usually carry the same series ids: keep one array of them.
            last = head.blocks[-1].sids if head.blocks else None
            if last is not None and last is not b.sids and len(last) == len(b.sids) and np.array_equal(last, b.sids):
                b = Block(b.ts_ms, last, b.values)  # noqa: PLW2901 - the same block, its ids shared
            head.blocks.append(b)
        head.samples += sum(len(b.sids) for b in blocks)
        head.pos = max(head.pos, pos)

    def oldest_head_position(self) -> int | None:
        """Log position of the oldest record still only in a head (None: all flushed)."""
        return min((h.first for h in self._heads.values() if h.blocks), default=None)

    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                             (key, value))

    def get_meta(self, key: str) -> str | None:
        with self.lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def head(self, node: str) -> list[Block]:
        h = self._heads.get(node)
        return list(h.blocks) if h else []

    def flush(self, now: float | None = None, force: bool = False) -> int:
        """Heads older than ``flush_s`` (or bigger than ``flush_samples``) → level-0 segments, all
        in one transaction. Returns the samples flushed."""
        now = time.time() if now is None else now
        due = [n for n, h in self._heads.items()
               if h.blocks and (force or now - h.since >= self.flush_s or h.samples >= self.flush_samples)]
        if not due:
            return 0
        rows = []
        marks = []
        total = 0
        for n in due:
            h = self._heads.pop(n)
            self._key += 1
            t = [b.ts_ms for b in h.blocks]
            rows.append((n, LEVEL0, self._key, min(t), max(t), h.samples, encode_l0(h.blocks)))
            marks.append((n, h.pos))
            total += h.samples
        # In transactions of a few hundred nodes: the ingest side writes to this file too, and
        # must not wait long for its lock.
        for i in range(0, len(rows), 256):
            with self.lock:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany("INSERT INTO segments (node, level, key, t_min, t_max, samples, body) "
                                         "VALUES (?, ?, ?, ?, ?, ?, ?)", rows[i:i + 256])
                    self._db.executemany("INSERT INTO flushed VALUES (?, ?) ON CONFLICT (node) DO UPDATE "
                                         "SET pos = max(pos, excluded.pos)", marks[i:i + 256])
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        self.stats.samples += total
        self.stats.flushes += 1
        return total

    def flushed_positions(self) -> dict[str, int]:
        with self.lock:
            return {n: int(p) for n, p in self._db.execute("SELECT node, pos FROM flushed")}

    # --- level 1 -------------------------------------------------------------------------------------
    def compact(self, now: float | None = None, nodes: Iterable[str] | None = None) -> int:
        """Merge level-0 segments whose hour closed into per-hour level-1 segments (one per node
        and window; an existing one for the window is merged in, its data first). Returns merges."""
        now = time.time() if now is None else now
        boundary = int(now * 1000) // self.window_ms * self.window_ms
        with self.lock:
            if nodes is None:
                nodes = [n for (n,) in self._db.execute(
                    "SELECT DISTINCT node FROM segments WHERE level = 0 AND t_min < ?", (boundary,))]
            todo = list(nodes)
        merges = 0
        for node in todo:
            merges += self._compact_node(node, boundary)
        self.stats.merges += merges
        return merges

    def _compact_node(self, node: str, boundary: int) -> int:
        with self.lock:
            l0 = self._db.execute("SELECT id, key, t_min, body FROM segments WHERE node = ? AND level = 0 "
                                  "ORDER BY key, id", (node,)).fetchall()
        # The oldest level-0 segments up to the first that is all in the open window.
        take = []
        for row in l0:
            if row[2] >= boundary:
                break
            take.append(row)
        if not take:
            return 0
        blocks = [b for row in take for b in decode_l0(row[3])]
        sid, ts, val, dups = codec.dedupe(blocks)
        win = ts // self.window_ms
        rows: list[tuple[str, int, int, int, int, int, bytes]] = []
        drop_l1: list[int] = []
        key0 = int(take[0][1])
        open_part = ts >= boundary
        for w in np.unique(win[~open_part]).tolist():
            m = (win == w) & ~open_part
            lo, hi = w * self.window_ms, (w + 1) * self.window_ms - 1
            with self.lock:
                old = self._db.execute("SELECT id, key, body FROM segments WHERE node = ? AND level = 1 "
                                       "AND t_min >= ? AND t_max <= ?", (node, lo, hi)).fetchall()
            parts = [segment_samples(LEVEL1, bytes(o[2]), None) for o in sorted(old, key=lambda o: (o[1], o[0]))]
            s2, t2, v2, d2 = first_wins([*parts, (sid[m], ts[m], val[m])])
            dups += d2
            enc = codec.encode_sorted(s2, t2, v2)
            key = min([key0, *(int(o[1]) for o in old)])
            rows.append((node, LEVEL1, key, enc.t_min, enc.t_max, enc.samples, enc.blob))
            drop_l1 += [int(o[0]) for o in old]
        if open_part.any():
            # What a straddling segment holds of the open window stays at level 0, same key.
            m = open_part
            rest = [Block(int(t), sid[m][ts[m] == t], val[m][ts[m] == t]) for t in np.unique(ts[m]).tolist()]
            rows.append((node, LEVEL0, int(take[-1][1]), int(ts[m].min()), int(ts[m].max()), int(m.sum()),
                         encode_l0(rest)))
        with self.lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("DELETE FROM segments WHERE id = ?", [(r[0],) for r in take])
                self._db.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in drop_l1])
                self._db.executemany("INSERT INTO segments (node, level, key, t_min, t_max, samples, body) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self.stats.duplicates += dups
        return 1

    def apply_retention(self, now: float | None = None) -> int:
        """Drop whole segments older than the retention; returns how many."""
        cutoff = int(((time.time() if now is None else now) - self.retention_s) * 1000)
        with self.lock:
            n = self._db.execute("DELETE FROM segments WHERE t_max < ?", (cutoff,)).rowcount
            if n:
                self._db.execute("PRAGMA incremental_vacuum")
        self.stats.segments_dropped += int(n)
        return int(n)

    def close(self) -> None:
        with self.lock:
            self._db.close()


class BlockReader:
    """Read side: its own read-only connection; streams series by series."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no embedded store here (start a collector with this data dir first)")
        self.path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def find_series(self, name: str | None, matchers: Sequence[Matcher]) -> list[SeriesRow]:
        if name:
            rows = self._db.execute("SELECT id, name, labels FROM series WHERE name = ?", (name,))
        else:
            rows = self._db.execute("SELECT id, name, labels FROM series")
        out = []
        for sid, n, labels in rows:
            lab = json.loads(labels)
            if all(m.matches(lab) for m in matchers):
                out.append(SeriesRow(int(sid), n, lab))
        return out

    def node_of(self, series: Sequence[SeriesRow]) -> dict[int, str]:
        out: dict[int, str] = {}
        ids = [s.id for s in series]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = f"SELECT id, node FROM series WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({int(a): b for a, b in self._db.execute(q, chunk)})
        return out

    def query(self, series: Sequence[SeriesRow], since_ms: int, until_ms: int,
              head: Callable[[str], Sequence[Block]] | None = None,
              node_of: dict[int, str] | None = None) -> Iterator[tuple[SeriesRow, I64, F64]]:
        """Each series' samples in [since, until], node by node: memory holds one node's answer.
        ``head(node)`` gives the blocks not flushed yet (newest data; later than any segment)."""
        nodes = self.node_of(series) if node_of is None else node_of
        by_node: dict[str, list[SeriesRow]] = {}
        for s in series:
            by_node.setdefault(nodes.get(s.id, ""), []).append(s)
        for node, rows in by_node.items():
            want = np.array(sorted(s.id for s in rows), np.int64)
            segs = self._db.execute(
                "SELECT level, body, t_min, t_max FROM segments WHERE node = ? AND t_max >= ? AND t_min <= ? "
                "ORDER BY key, id", (node, since_ms, until_ms)).fetchall()
            parts = [segment_samples(int(lv), bytes(body), want) for lv, body, _a, _b in segs]
            spans = [(int(a), int(b)) for _lv, _body, a, b in segs]
            if head is not None:
                hb = head(node)
                if hb:
                    parts.append(blocks_samples(hb, want))
                    spans.append((min(b.ts_ms for b in hb), max(b.ts_ms for b in hb)))
            if not parts:
                continue
            if _disjoint(spans):
                # The usual case (hourly blocks, then the newest data): no instant in two parts,
                # so nothing to deduplicate; each series is its slices laid end to end.
                yield from _by_series(rows, want, [parts[i] for i in np.argsort([a for a, _b in spans])],
                                      since_ms, until_ms)
                continue
            sid, ts, val, _d = first_wins(parts)
            m = (ts >= since_ms) & (ts <= until_ms)
            sid, ts, val = sid[m], ts[m], val[m]
            bounds = np.searchsorted(sid, want)
            ends = np.searchsorted(sid, want, side="right")
            ix = {int(w): (int(a), int(b)) for w, a, b in zip(want, bounds, ends, strict=True)}
            for s in rows:
                a, b = ix[s.id]
                if b > a:
                    yield s, ts[a:b], val[a:b]

    def count_samples(self, node: str | None = None) -> int:
        """Samples stored (level-1 segments are deduplicated; level 0 counts as received)."""
        if node is None:
            return int(self._db.execute("SELECT coalesce(sum(samples), 0) FROM segments").fetchone()[0])
        return int(self._db.execute("SELECT coalesce(sum(samples), 0) FROM segments WHERE node = ?",
                                    (node,)).fetchone()[0])

    def close(self) -> None:
        self._db.close()
