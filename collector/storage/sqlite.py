"""The embedded store: one SQLite file in the data dir, WAL journal mode, retention.

It is also where the collector's delivery state lives, so that storing a batch, advancing the
node's sequence and queueing it for the other sinks is one transaction: when it commits, the
batch is durable and the agent may be acked (DESIGN.md, Delivery guarantees).

Tables:
- ``series``: one row per series (name + full label set, node identity included).
- ``samples``: (series, ts ms) primary key, so a replayed batch stores nothing twice. Two
  *different* batches (or one batch twice) carrying the same series and timestamp: the first value
  stored is kept, the later one is dropped and counted in :attr:`SqliteStore.duplicate_samples`
  (the collector's ``duplicate_samples`` stat). Tested through the public API in
  ``tests/test_store_contract.py``; any replacement store keeps this rule.
- ``events``: hardware events as received.
- ``nodes``: per node, the agent's WAL identity and the highest contiguous sequence held;
  ``held``: sequences received above it (live data arrives before backfill).
- ``spool``/``sink_cursor``: batches waiting for the external sinks (collector/spool.py).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, measurement TEXT NOT NULL, field TEXT NOT NULL,
    labels TEXT NOT NULL, node TEXT NOT NULL, type INTEGER NOT NULL, help TEXT NOT NULL DEFAULT '',
    UNIQUE (name, labels)
);
CREATE INDEX IF NOT EXISTS series_node ON series (node);
CREATE TABLE IF NOT EXISTS samples (
    series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL,
    severity TEXT NOT NULL, message TEXT NOT NULL, action TEXT NOT NULL, labels TEXT NOT NULL,
    UNIQUE (node, ts, kind, labels)
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY, wal_id TEXT NOT NULL, contiguous INTEGER NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}', last_seen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS held (node TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (node, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, created INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sink_cursor (sink TEXT PRIMARY KEY, spool_id INTEGER NOT NULL);
"""


@dataclass
class NodeState:
    """Which sequences of one agent's WAL the collector holds durably."""

    node: str
    wal_id: str = ""
    contiguous: int = 0
    held: set[int] = field(default_factory=set)

    def has(self, seq: int) -> bool:
        return seq <= self.contiguous or seq in self.held

    def add(self, seq: int) -> None:
        if seq <= self.contiguous:
            return
        self.held.add(seq)
        self._advance()

    def skip_below(self, oldest: int) -> None:
        """The agent no longer has anything older than ``oldest``: stop waiting for it."""
        if oldest - 1 > self.contiguous:
            self.contiguous = oldest - 1
            self.held = {s for s in self.held if s > self.contiguous}
            self._advance()

    def _advance(self) -> None:
        while self.contiguous + 1 in self.held:
            self.contiguous += 1
            self.held.discard(self.contiguous)


@dataclass
class SeriesRow:
    id: int
    name: str
    labels: dict[str, str]


@dataclass
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str
    _re: re.Pattern[str] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        v = labels.get(self.label, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        if self._re is None:
            self._re = re.compile(self.value)
        hit = self._re.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit


@dataclass
class WriteItem:
    """One agent batch, ready to commit."""

    node: str
    state: NodeState
    seq: int
    samples: list[tuple[int, int, float]]  # series id, ts ms, value
    events: list[tuple[int, str, str, str, str, str]]  # ts, kind, severity, message, action, labels json
    spool_body: bytes | None = None


class SqliteStore:
    """All writes go through one thread (the caller's executor); reads open their own connection."""

    def __init__(self, path: Path, retention_s: float = 30 * 86400) -> None:
        self.path = path
        self.retention_s = retention_s
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an ack promises durability, so the commit must reach the disk.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._series: dict[tuple[str, str], int] = {}
        for sid, name, labels in self._db.execute("SELECT id, name, labels FROM series"):
            self._series[(name, labels)] = sid
        self._lock = threading.Lock()
        #: Samples dropped because the store already held a value for their (series, timestamp):
        #: the first value is kept (see the module docstring). Counted since this process started.
        self.duplicate_samples = 0

    # --- writing -------------------------------------------------------------------------
    def load_node(self, node: str) -> NodeState:
        with self._lock:
            row = self._db.execute("SELECT wal_id, contiguous FROM nodes WHERE node = ?", (node,)).fetchone()
            if row is None:
                return NodeState(node)
            held = {s for (s,) in self._db.execute("SELECT seq FROM held WHERE node = ?", (node,))}
            return NodeState(node, row[0], int(row[1]), held)

    def reset_node(self, node: str, wal_id: str, labels: dict[str, str]) -> None:
        """A new WAL for this node: its sequences start again."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM held WHERE node = ?", (node,))
            self._db.execute(
                "INSERT INTO nodes (node, wal_id, contiguous, labels, last_seen) VALUES (?, ?, 0, ?, ?) "
                "ON CONFLICT (node) DO UPDATE SET wal_id = excluded.wal_id, contiguous = 0, labels = excluded.labels",
                (node, wal_id, json.dumps(labels, sort_keys=True), int(time.time() * 1000)))
            self._db.execute("COMMIT")

    def series_ids(self, node: str, defs: Sequence[tuple[str, str, str, dict[str, str], int, str]]) -> list[int]:
        """Ids of (name, measurement, field, labels, type, help), creating missing series in one
        transaction (a stream's first batch defines thousands: one fsync, not thousands)."""
        out: list[int] = []
        missing: list[int] = []
        keys = []
        for i, (name, _m, _f, labels, _t, _h) in enumerate(defs):
            key = (name, json.dumps(labels, sort_keys=True, separators=(",", ":")))
            keys.append(key)
            sid = self._series.get(key)
            out.append(sid if sid is not None else -1)
            if sid is None:
                missing.append(i)
        if not missing:
            return out
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for i in missing:
                    name, measurement, field_, _labels, mtype, help_ = defs[i]
                    cur = self._db.execute(
                        "INSERT INTO series (name, measurement, field, labels, node, type, help) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (name, labels) DO UPDATE SET type = excluded.type RETURNING id",
                        (name, measurement, field_, keys[i][1], node, mtype, help_))
                    out[i] = int(cur.fetchone()[0])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        for i in missing:
            self._series[keys[i]] = out[i]
        return out

    def commit(self, items: Sequence[WriteItem]) -> None:
        """Store several batches in one transaction (group commit); durable when it returns."""
        now = int(time.time() * 1000)
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            dropped = 0
            try:
                for it in items:
                    if it.samples:
                        # First value wins: OR IGNORE keeps the stored sample; rowcount says how many went in.
                        stored = db.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?)", it.samples).rowcount
                        dropped += len(it.samples) - stored
                    if it.events:
                        db.executemany(
                            "INSERT OR IGNORE INTO events (ts, node, kind, severity, message, action, labels) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(e[0], it.node, e[1], e[2], e[3], e[4], e[5]) for e in it.events])
                    if it.spool_body is not None:
                        db.execute("INSERT INTO spool (created, body) VALUES (?, ?)", (now, it.spool_body))
                    st = it.state
                    db.execute("UPDATE nodes SET contiguous = ?, last_seen = ? WHERE node = ?",
                               (st.contiguous, now, it.node))
                    db.execute("DELETE FROM held WHERE node = ? AND seq <= ?", (it.node, st.contiguous))
                    if it.seq > st.contiguous:
                        db.execute("INSERT OR IGNORE INTO held VALUES (?, ?)", (it.node, it.seq))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.duplicate_samples += dropped

    def apply_retention(self, now: float | None = None) -> int:
        cutoff = int(((now or time.time()) - self.retention_s) * 1000)
        with self._lock:
            n = self._db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
            self._db.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
        return int(n)

    # --- spool (collector/spool.py) --------------------------------------------------------
    def spool_read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return [(int(i), bytes(b)) for i, b in self._db.execute(
                "SELECT id, body FROM spool WHERE id > ? ORDER BY id LIMIT ?", (after, limit))]

    def sink_cursor(self, sink: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT spool_id FROM sink_cursor WHERE sink = ?", (sink,)).fetchone()
            return int(row[0]) if row else 0

    def set_sink_cursor(self, sink: str, spool_id: int, sinks: Iterable[str]) -> None:
        """Advance one sink; drop spool rows every configured sink has confirmed."""
        names = list(sinks)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO sink_cursor VALUES (?, ?) ON CONFLICT (sink) DO UPDATE SET "
                             "spool_id = excluded.spool_id", (sink, spool_id))
            marks = [self._db.execute("SELECT spool_id FROM sink_cursor WHERE sink = ?", (n,)).fetchone()
                     for n in names]
            if all(m is not None for m in marks):
                low = min(int(m[0]) for m in marks if m is not None)
                self._db.execute("DELETE FROM spool WHERE id <= ?", (low,))
            self._db.execute("COMMIT")

    def series_meta(self, sid: int) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """(measurement, field, sorted tags) of a stored series, for the external sinks."""
        with self._lock:
            row = self._db.execute("SELECT measurement, field, labels FROM series WHERE id = ?", (sid,)).fetchone()
        if row is None:
            raise KeyError(f"series id {sid} is not in {self.path}")
        return row[0], row[1], tuple(sorted(json.loads(row[2]).items()))

    def spool_depth(self) -> tuple[int, int]:
        with self._lock:
            row = self._db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM spool").fetchone()
            return int(row[0]), int(row[1])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class StoreReader:
    """Read side (queries, dashboard, ``fleetmon query``): its own connection, read-only use."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no embedded store here (start a collector with this data dir first)")
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

    def samples(self, series_id: int, since_ms: int, until_ms: int, limit: int = 0) -> list[tuple[int, float]]:
        q = "SELECT ts, value FROM samples WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts"
        args: tuple[int, ...] = (series_id, since_ms, until_ms)
        if limit:
            q += " LIMIT ?"
            args += (limit,)
        return [(int(t), float(v)) for t, v in self._db.execute(q, args)]

    def count_samples(self, node: str | None = None) -> int:
        if node is None:
            return int(self._db.execute("SELECT count(*) FROM samples").fetchone()[0])
        return int(self._db.execute(
            "SELECT count(*) FROM samples JOIN series ON series.id = samples.series_id WHERE series.node = ?",
            (node,)).fetchone()[0])

    def events(self, since_ms: int, limit: int = 200) -> list[dict[str, object]]:
        rows = self._db.execute(
            "SELECT ts, node, kind, severity, message, action, labels FROM events WHERE ts >= ? "
            "ORDER BY ts DESC LIMIT ?", (since_ms, limit))
        return [{"time": t / 1000, "node": n, "kind": k, "severity": s, "message": m, "action": a,
                 "labels": json.loads(lab)} for t, n, k, s, m, a, lab in rows]

    def nodes(self) -> list[dict[str, object]]:
        rows = self._db.execute("SELECT node, contiguous, labels, last_seen FROM nodes ORDER BY node")
        return [{"node": n, "sequence": c, "labels": json.loads(lab), "last_seen": ls / 1000}
                for n, c, lab, ls in rows]

    def close(self) -> None:
        self._db.close()
