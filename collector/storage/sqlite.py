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
- ``nodes``: per node, the agent's WAL identity, how far the agent gave its WAL up (``floor``)
  and the highest contiguous sequence held; ``seq_ranges``: the sequences stored, as ranges
  (collector/sequence.py has the rules).
- ``spool``/``sink_cursor``: batches waiting for the external sinks (collector/spool.py).

Every sqlite3 error leaves as a :class:`collector.errors.StoreError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from collector.errors import CorruptStoreError, StoreError
from collector.sequence import NodeState, SeqRange
from collector.storage.embedded import NewSeries, SeriesMeta, SpoolDepth, SpoolRow, WriteItem

_log = logging.getLogger("fleetmon.collector.store")

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
    labels TEXT NOT NULL DEFAULT '{}', last_seen INTEGER NOT NULL DEFAULT 0, floor INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS seq_ranges (
    node TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, PRIMARY KEY (node, lo)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, created INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sink_cursor (sink TEXT PRIMARY KEY, spool_id INTEGER NOT NULL);
"""


def _migrate(db: sqlite3.Connection) -> None:
    """Stores written before sequence ranges: ``held`` rows and ``contiguous`` become ranges."""
    cols = {row[1] for row in db.execute("PRAGMA table_info(nodes)")}
    if "floor" not in cols:
        db.execute("ALTER TABLE nodes ADD COLUMN floor INTEGER NOT NULL DEFAULT 0")
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'held'").fetchone() is None:
        return
    db.execute("BEGIN")
    for node, contiguous in db.execute("SELECT node, contiguous FROM nodes").fetchall():
        ranges = [SeqRange(1, contiguous)] if contiguous > 0 else []
        ranges += [SeqRange(s, s) for (s,) in db.execute("SELECT seq FROM held WHERE node = ?", (node,))]
        for r in NodeState(node, ranges=ranges).ranges:
            db.execute("INSERT OR REPLACE INTO seq_ranges VALUES (?, ?, ?)", (node, r.lo, r.hi))
    db.execute("DROP TABLE held")
    db.execute("COMMIT")


@contextlib.contextmanager
def _store_errors(path: Path, what: str) -> Iterator[None]:
    """sqlite3's errors leave as StoreError naming the file and what was being done (damage
    found on the way as CorruptStoreError, which says what to run)."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        if isinstance(err, sqlite3.OperationalError) or not _DAMAGE.search(str(err)):
            raise StoreError(f"{path}: {what} failed: {err}") from err
        raise CorruptStoreError(f"{path}: {what} failed: {err}. {recovery_hint(path)}") from err
    except sqlite3.Error as err:
        raise StoreError(f"{path}: {what} failed: {err}") from err


_DAMAGE = re.compile(r"malformed|not a database|corrupt", re.IGNORECASE)


def recovery_hint(path: Path) -> str:
    return (f"Stop the collector, then either keep what can be read: `sqlite3 {path} .recover > {path}.sql` "
            f"(Debian: apt-get install sqlite3), move {path}, {path}-wal and {path}-shm away and load it with "
            f"`sqlite3 {path} < {path}.sql`; or move the three files away to start with an empty store "
            "(`corrupt_store: move_aside` in the collector config does that by itself)")


def move_aside(path: Path, err: CorruptStoreError, on_corrupt: str) -> list[str]:
    """A damaged SQLite file (with its -wal and -shm) renamed ``<name>.corrupt-<UTC stamp>``;
    the new names. With ``on_corrupt`` other than ``move_aside``, the CorruptStoreError that
    says what to run instead."""
    if on_corrupt != "move_aside":
        raise CorruptStoreError(f"{err} — the collector did not start. {recovery_hint(path)}") from err
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            dst = path.with_name(f"{path.name}.corrupt-{stamp}{suffix}")
            try:
                src.rename(dst)
            except OSError as move_err:
                raise CorruptStoreError(f"{err}; moving it aside failed: {move_err.strerror}. "
                                        f"{recovery_hint(path)}") from move_err
            moved.append(str(dst))
    return moved


def open_store(path: Path, retention_s: float, *, check: str = "quick", on_corrupt: str = "move_aside") -> SqliteStore:
    """The embedded store at ``path``. A damaged file (issue 12: 8 KB of garbage in the middle
    was served silently) is moved aside with a clear error line and a fresh store started, or,
    with ``on_corrupt="refuse"``, a CorruptStoreError says exactly what to run."""
    try:
        return SqliteStore(path, retention_s, check)
    except CorruptStoreError as err:
        moved = move_aside(path, err, on_corrupt)
        _log.error("embedded store damaged (%s); moved it aside to %s and started an empty store. What it held "
                   "(history, the spool for the external sinks, delivery state) is not served any more; agents "
                   "resend what their WALs still hold. To read the old file: sqlite3 %s .recover",
                   err, ", ".join(moved), moved[0] if moved else path)
        return SqliteStore(path, retention_s, check)


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


class SqliteStore:
    """All writes go through one thread (the caller's executor); reads open their own connection.

    Implements :class:`collector.storage.embedded.EmbeddedStore`."""

    def __init__(self, path: Path, retention_s: float = 30 * 86400, check: str = "quick") -> None:
        """``check``: ``quick`` / ``full`` runs SQLite's quick_check / integrity_check first;
        CorruptStoreError when the file is damaged (see :func:`open_store`)."""
        self.path = path
        self.retention_s = retention_s
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"{path.parent}: cannot create the data dir: {err.strerror}") from err
        with self._errors("open"):
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            try:
                self._check(check)
            except BaseException:
                self._db.close()
                raise
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an ack promises durability, so the commit must reach the disk.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            _migrate(self._db)
            self._series: dict[tuple[str, str], int] = {}
            for sid, name, labels in self._db.execute("SELECT id, name, labels FROM series"):
                self._series[(name, labels)] = sid
            self._per_node: Counter[str] = Counter(dict(self._db.execute(
                "SELECT node, count(*) FROM series GROUP BY node").fetchall()))
        #: Samples dropped because the store already held a value for their (series, timestamp):
        #: the first value is kept (see the module docstring). Counted since this process started.
        self.duplicate_samples = 0

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _store_errors(self.path, what)

    def _check(self, how: str) -> None:
        """Damage SQLite can see: a file that is not a database, broken pages, bad indexes."""
        try:
            if how == "off":
                self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return
            pragma = "integrity_check" if how == "full" else "quick_check"
            rows = [str(r[0]) for r in self._db.execute(f"PRAGMA {pragma}(20)").fetchall()]
        except sqlite3.DatabaseError as err:
            raise CorruptStoreError(f"{self.path}: {err}") from err
        if rows != ["ok"]:
            raise CorruptStoreError(f"{self.path}: {pragma} found {len(rows)} problem(s), first: {rows[0]}")

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """BEGIN … COMMIT under the lock; a failed ROLLBACK never hides the error that caused it."""
        with self._lock, self._errors(what):
            db = self._db
            db.execute("BEGIN")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    # --- writing -------------------------------------------------------------------------
    def load_node(self, node: str) -> NodeState:
        with self._lock, self._errors(f"loading node {node}"):
            row = self._db.execute("SELECT wal_id, floor FROM nodes WHERE node = ?", (node,)).fetchone()
            if row is None:
                return NodeState(node)
            ranges = [SeqRange(int(lo), int(hi)) for lo, hi in self._db.execute(
                "SELECT lo, hi FROM seq_ranges WHERE node = ? ORDER BY lo", (node,))]
            return NodeState(node, row[0], ranges, int(row[1]))

    @staticmethod
    def _key(d: NewSeries) -> tuple[str, str]:
        return d.name, json.dumps(d.labels, sort_keys=True, separators=(",", ":"))

    def known_series(self, defs: Sequence[NewSeries]) -> list[int | None]:
        """The ids of those series the store holds already (None for the others); creates nothing."""
        return [self._series.get(self._key(d)) for d in defs]

    def series_count(self) -> int:
        return len(self._series)

    def node_series_count(self, node: str) -> int:
        return self._per_node[node]

    def series_ids(self, node: str, defs: Sequence[NewSeries]) -> list[int]:
        """Ids of these series, creating missing ones in one transaction (a stream's first
        batch defines thousands: one fsync, not thousands)."""
        out: list[int] = []
        missing: list[int] = []
        keys = []
        for i, d in enumerate(defs):
            key = self._key(d)
            keys.append(key)
            sid = self._series.get(key)
            out.append(sid if sid is not None else -1)
            if sid is None:
                missing.append(i)
        if not missing:
            return out
        with self._transaction(f"defining {len(missing)} series of node {node}") as db:
            for i in missing:
                d = defs[i]
                cur = db.execute(
                    "INSERT INTO series (name, measurement, field, labels, node, type, help) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (name, labels) DO UPDATE SET type = excluded.type RETURNING id",
                    (d.name, d.measurement, d.field, keys[i][1], node, d.type, d.help))
                out[i] = int(cur.fetchone()[0])
        for i in missing:
            if keys[i] not in self._series:
                self._per_node[node] += 1
            self._series[keys[i]] = out[i]
        return out

    def commit(self, items: Sequence[WriteItem]) -> None:
        """Store several batches in one transaction (group commit); durable when it returns."""
        now = int(time.time() * 1000)
        dropped = 0
        with self._transaction(f"commit of {len(items)} batches") as db:
            for it in items:
                s = it.samples
                if s.series_ids:
                    # First value wins: OR IGNORE keeps the stored sample; rowcount says how many went in.
                    stored = db.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?)",
                                            zip(s.series_ids, s.ts_ms, s.values, strict=True)).rowcount
                    dropped += len(s) - stored
                if it.events:
                    db.executemany(
                        "INSERT OR IGNORE INTO events (ts, node, kind, severity, message, action, labels) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(e.ts_ms, it.node, e.kind, e.severity, e.message, e.action, e.labels_json)
                         for e in it.events])
                if it.spool_body is not None:
                    db.execute("INSERT INTO spool (created, body) VALUES (?, ?)", (now, it.spool_body))
                u = it.update
                if u.reset:
                    db.execute("DELETE FROM seq_ranges WHERE node = ?", (u.node,))
                for r in u.ranges:
                    db.execute("DELETE FROM seq_ranges WHERE node = ? AND lo >= ? AND lo <= ?", (u.node, r.lo, r.hi))
                    db.execute("INSERT INTO seq_ranges VALUES (?, ?, ?)", (u.node, r.lo, r.hi))
                db.execute(
                    "INSERT INTO nodes (node, wal_id, contiguous, labels, last_seen, floor) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (node) DO UPDATE SET wal_id = excluded.wal_id, contiguous = excluded.contiguous, "
                    "labels = excluded.labels, last_seen = excluded.last_seen, floor = excluded.floor",
                    (u.node, u.wal_id, u.contiguous, it.labels_json, now, u.floor))
        self.duplicate_samples += dropped

    def apply_retention(self, now: float | None = None) -> int:
        cutoff = int(((now or time.time()) - self.retention_s) * 1000)
        with self._transaction("retention") as db:
            n = db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
            db.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
        return int(n)

    # --- spool (collector/spool.py) --------------------------------------------------------
    def spool_read(self, after: int, limit: int) -> list[SpoolRow]:
        with self._lock, self._errors("reading the spool"):
            return [SpoolRow(int(i), bytes(b)) for i, b in self._db.execute(
                "SELECT id, body FROM spool WHERE id > ? ORDER BY id LIMIT ?", (after, limit))]

    def sink_cursor(self, sink: str) -> int:
        with self._lock, self._errors(f"reading sink {sink}'s cursor"):
            row = self._db.execute("SELECT spool_id FROM sink_cursor WHERE sink = ?", (sink,)).fetchone()
            return int(row[0]) if row else 0

    def set_sink_cursor(self, sink: str, spool_id: int, sinks: Iterable[str]) -> None:
        """Advance one sink; drop spool rows every configured sink has confirmed."""
        names = list(sinks)
        with self._transaction(f"advancing sink {sink}'s cursor") as db:
            db.execute("INSERT INTO sink_cursor VALUES (?, ?) ON CONFLICT (sink) DO UPDATE SET "
                       "spool_id = excluded.spool_id", (sink, spool_id))
            marks = [db.execute("SELECT spool_id FROM sink_cursor WHERE sink = ?", (n,)).fetchone() for n in names]
            if all(m is not None for m in marks):
                low = min(int(m[0]) for m in marks if m is not None)
                db.execute("DELETE FROM spool WHERE id <= ?", (low,))

    def series_meta(self, sid: int) -> SeriesMeta:
        """Measurement, field and sorted tags of a stored series, for the external sinks."""
        with self._lock, self._errors(f"reading series {sid}"):
            row = self._db.execute("SELECT measurement, field, labels FROM series WHERE id = ?", (sid,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: series id {sid} is not in the store")
        return SeriesMeta(row[0], row[1], tuple(sorted(json.loads(row[2]).items())))

    def spool_depth(self) -> SpoolDepth:
        with self._lock, self._errors("measuring the spool"):
            row = self._db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM spool").fetchone()
            return SpoolDepth(int(row[0]), int(row[1]))

    def close(self) -> None:
        with self._lock, self._errors("close"):
            self._db.close()


class StoreReader:
    """Read side (queries, dashboard, ``fleetmon query``): its own connection, read-only use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise StoreError(f"{path}: no embedded store here (start a collector with this data dir first)")
        with self._errors("open"):
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _store_errors(self.path, what)

    def find_series(self, name: str | None, matchers: Sequence[Matcher]) -> list[SeriesRow]:
        out = []
        with self._errors("series lookup"):
            if name:
                rows = self._db.execute("SELECT id, name, labels FROM series WHERE name = ?", (name,)).fetchall()
            else:
                rows = self._db.execute("SELECT id, name, labels FROM series").fetchall()
        for sid, n, labels in rows:
            lab = json.loads(labels)
            if all(m.matches(lab) for m in matchers):
                out.append(SeriesRow(int(sid), n, lab))
        return out

    def samples(self, series_id: int, since_ms: int, until_ms: int, limit: int = 0) -> list[tuple[int, float]]:
        """(ts ms, value) of one series, oldest first."""
        q = "SELECT ts, value FROM samples WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts"
        args: tuple[int, ...] = (series_id, since_ms, until_ms)
        if limit:
            q += " LIMIT ?"
            args += (limit,)
        with self._errors("sample query"):
            return [(int(t), float(v)) for t, v in self._db.execute(q, args)]

    def count_samples(self, node: str | None = None) -> int:
        with self._errors("sample count"):
            if node is None:
                return int(self._db.execute("SELECT count(*) FROM samples").fetchone()[0])
            return int(self._db.execute(
                "SELECT count(*) FROM samples JOIN series ON series.id = samples.series_id WHERE series.node = ?",
                (node,)).fetchone()[0])

    def events(self, since_ms: int, limit: int = 200) -> list[dict[str, object]]:
        with self._errors("event query"):
            rows = self._db.execute(
                "SELECT ts, node, kind, severity, message, action, labels FROM events WHERE ts >= ? "
                "ORDER BY ts DESC LIMIT ?", (since_ms, limit)).fetchall()
        return [{"time": t / 1000, "node": n, "kind": k, "severity": s, "message": m, "action": a,
                 "labels": json.loads(lab)} for t, n, k, s, m, a, lab in rows]

    def nodes(self) -> list[dict[str, object]]:
        with self._errors("node query"):
            rows = self._db.execute("SELECT node, contiguous, labels, last_seen FROM nodes ORDER BY node").fetchall()
        return [{"node": n, "sequence": c, "labels": json.loads(lab), "last_seen": ls / 1000}
                for n, c, lab, ls in rows]

    def close(self) -> None:
        self._db.close()
