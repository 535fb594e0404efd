"""The agent's write-ahead log: every batch is on disk before it is sent.

SQLite (WAL journal mode) in one file: ``batches`` holds serialized ``fleetmon.v1.Batch``
bodies without series definitions, keyed by sequence; ``series`` holds the definitions (ids
are stable across restarts); ``meta`` holds the next sequence, the WAL's identity and the
count of samples dropped because the WAL was full. Only an ack from the collector deletes a
batch. Bounded: past ``max_bytes`` the oldest batches go first, and the loss is counted.

Every database call runs on the WAL's own thread (:meth:`Wal.run`), never on the event loop.
Acks are noted in memory and deleted in the next write's transaction (or in batches of their
own during a backfill), so a second of streaming costs one transaction.

Failures (STYLE 8, DESIGN "Trust": a clear message and a way back, never a crash loop):

- **A full disk**: the batch that does not fit is dropped and counted (no sequence number is
  used for it), the batches already stored are kept and still sent; one error line names the
  path, and one line says when writing works again (acks free space inside the file).
- **A corrupt file** (garbage, a truncated copy, "file is not a database"): found when the WAL
  opens (SQLite's ``quick_check``), moved aside as ``<name>.corrupt-<time>`` with one error line
  saying so, and a fresh WAL started. Its batches were never acked, so the collector is missing
  them; the fresh WAL has a new ``wal_id``, which the collector treats as a new sequence space.
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures as cf
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from agent.codec import SeriesRow, series_from_json, series_to_json
from agent.errors import AgentError
from proto import telemetry_pb2 as pb

log = logging.getLogger("fleetmon.agent.wal")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, def TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, created_ms INTEGER NOT NULL, samples INTEGER NOT NULL,
    ids BLOB NOT NULL, body BLOB NOT NULL
);
"""
#: SQLite page cache of the WAL, in KiB (negative cache_size = KiB). The agent only appends
#: and reads back recent rows; 2 MiB (the default) would mostly hold pages it never reads again.
_CACHE_KIB = 512
#: Journal pages between checkpoints (SQLite's default is 1000), and the size the journal file is
#: cut back to after one.
_CHECKPOINT_PAGES = 64
_JOURNAL_LIMIT = 1 << 20
#: Acks kept in memory before they get a transaction of their own (a backfill acks fast).
ACKS_PER_DELETE = 64


class WalError(AgentError):
    """The WAL file cannot be opened or written; the message names the file."""


class WalFull(WalError):
    """The disk (or file system quota) holding the WAL is full: the batch was not stored."""


@dataclass
class WalEntry:
    seq: int
    samples: int
    ids: list[int]
    body: bytes


# sqlite3.h primary result codes (the module has them from Python 3.11, its stubs do not).
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26


def _primary(err: sqlite3.Error) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None  # extended codes keep the primary in the low byte


def _is_full(err: sqlite3.Error) -> bool:
    return _primary(err) == _SQLITE_FULL or "disk is full" in str(err)


class Wal:
    """Thread-safe; every call is short. Sizes count batch bodies (what the bound limits)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pool: cf.ThreadPoolExecutor | None = None
        self._acked: list[int] = []
        self._series_rows: list[SeriesRow] = []
        self._full_since: float | None = None  # a write failed for lack of space; None when writing works
        self.full_dropped_samples = 0  # samples lost to a full disk (not stored at all)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WalError(f"{path}: cannot create the WAL's directory: {err.strerror}") from err
        try:
            self._db, meta = self._open()
        except sqlite3.Error as err:
            if not _corrupt(err):
                raise WalError(f"{path}: cannot open the WAL: {err}") from err
            aside = self._move_aside(err)
            try:
                self._db, meta = self._open()
            except sqlite3.Error as err2:
                raise WalError(f"{path}: cannot start a fresh WAL after moving the corrupt one to {aside}: "
                               f"{err2}") from err2
        try:
            if "wal_id" not in meta:
                meta["wal_id"] = uuid.uuid4().hex
                self._db.execute("INSERT INTO meta VALUES ('wal_id', ?)", (meta["wal_id"],))
            self.wal_id: str = meta["wal_id"]
            last, oldest, size, count = self._db.execute(
                "SELECT max(seq), min(seq), coalesce(sum(length(body)), 0), count(*) FROM batches").fetchone()
        except sqlite3.Error as err:
            raise WalError(f"{path}: cannot read the WAL: {err}") from err
        self._next_seq = max(int(meta.get("next_seq", 1)), (last or 0) + 1)
        self._oldest = int(oldest) if oldest is not None else self._next_seq
        self.dropped_samples = int(meta.get("dropped_samples", 0))
        self.dropped_unreported = int(meta.get("dropped_unreported", 0))
        self.bytes, self.count = int(size), int(count)

    def _open(self) -> tuple[sqlite3.Connection, dict[str, str]]:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: an agent crash loses nothing committed; a power cut may lose the
            # last batches, which the collector has not acked either (so nothing acked is lost).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            # Checkpoint often and keep the journal file small: what lives in the main file is
            # reused in place once acked batches are deleted, so a WAL on a full disk can still
            # delete and then write again; a large journal file would have to grow first.
            db.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            # Debian builds SQLite with SECURE_DELETE: every acked batch would be overwritten with
            # zeros, doubling the writes, and a delete on a full disk would need as much room as
            # the data it frees. FAST zeroes only where it costs no extra I/O.
            db.execute("PRAGMA secure_delete=FAST")
            db.execute(f"PRAGMA journal_size_limit={_JOURNAL_LIMIT}")
            check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            self._series_rows = self._read_series(db)
        except BaseException:
            db.close()
            raise
        return db, meta

    def _move_aside(self, err: sqlite3.Error) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    side.rename(aside.with_name(aside.name + suffix))
        except OSError as move_err:
            raise WalError(f"{self.path}: the WAL is corrupt ({err}) and cannot be moved aside "
                           f"({move_err.strerror}); remove it by hand (rm {self.path}*) and start again") from err
        log.error("WAL %s is corrupt (%s): moved it to %s and started a fresh WAL; the batches it held were "
                  "never acknowledged and are not sent (inspect or delete the old file)", self.path, err, aside)
        return aside

    # -- the WAL thread -------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run one WAL method on the WAL's own thread (the event loop never touches the file)."""
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetmon-wal")
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    # -- reads and writes -------------------------------------------------------------------

    def load_series(self) -> list[SeriesRow]:
        """The series definitions the WAL holds (read, and checked, when it opened)."""
        rows, self._series_rows = self._series_rows, []
        return rows

    def _read_series(self, db: sqlite3.Connection) -> list[SeriesRow]:
        out = []
        for sid, text in db.execute("SELECT id, def FROM series ORDER BY id"):
            try:
                out.append(SeriesRow(int(sid), series_from_json(text)))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                # Raised as corruption: a WAL whose definitions cannot be read cannot be sent either.
                raise sqlite3.DatabaseError(f"integrity check failed: series {sid} is unreadable ({err})") from err
        return out

    def append(self, batch: pb.Batch, ids: list[int], new_defs: list[SeriesRow], samples: int,
               now_ms: int) -> WalEntry:
        """Assign the next sequence, persist the batch (and new series), delete what was acked.

        Raises :class:`WalFull` when the disk is full (the sequence is not used) and
        :class:`WalError` for any other failure; the WAL stays usable either way.
        """
        with self._lock:
            seq = self._next_seq
            batch.sequence = seq
            body = batch.SerializeToString()
            acked, self._acked = self._acked, []
            drops = self.dropped_samples, self.dropped_unreported
            try:
                self._db.execute("BEGIN")
                if acked:
                    self._delete_locked(acked)
                if new_defs:
                    self._db.executemany("INSERT OR REPLACE INTO series VALUES (?, ?)",
                                         [(row.sid, series_to_json(row.series)) for row in new_defs])
                ids_blob = array.array("I", ids).tobytes()
                self._db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?)", (seq, now_ms, samples, ids_blob, body))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (str(seq + 1),))
                dropped = self._trim_locked(len(body))
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                self._reload_locked()
                self.dropped_samples, self.dropped_unreported = drops  # the trim did not happen either
                self._acked = acked + self._acked  # not deleted: kept for the next write
                if _is_full(err):
                    self._full_locked(samples)
                    raise WalFull(f"{self.path}: disk full, batch of {samples} samples not stored: {err}") from err
                raise WalError(f"{self.path}: cannot write batch {seq}: {err}") from err
            # Committed: only now is the sequence used and the counters true.
            self._next_seq = seq + 1
            self.bytes += len(body)
            self.count += 1
            if self.count == 1 or acked or dropped:
                self._oldest = self._min_seq_locked()
            if self._full_since is not None:
                log.warning("WAL %s: writing again after %.0fs with a full disk; %d samples were not stored",
                            self.path, time.monotonic() - self._full_since, self.full_dropped_samples)
                self._full_since = None
            return WalEntry(seq, samples, ids, body)

    def _full_locked(self, samples: int) -> None:
        self.full_dropped_samples += samples
        self.dropped_samples += samples
        self.dropped_unreported += samples
        if self._full_since is None:
            self._full_since = time.monotonic()
            log.error("WAL %s: disk full: new batches are dropped (counted in fleetmon_agent_dropped_samples_total) "
                      "until space returns; the %d batches already stored are kept and sent; free space on that "
                      "file system or lower wal.max_bytes", self.path, self.count)

    def _rollback(self) -> None:
        # SQLite rolls a transaction back by itself after some errors (SQLITE_FULL among them);
        # a ROLLBACK then fails with "no transaction is active" and would hide the real error.
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as err:
                log.debug("WAL %s: rollback: %s", self.path, err)
        # Move what the journal holds into the main file where it can (pages reused in place), so
        # the next transaction finds room in the journal without growing it.
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            log.debug("WAL %s: checkpoint: %s", self.path, err)

    def _reload_locked(self) -> None:
        """Counters from the file, after a transaction that did not commit."""
        try:
            oldest, size, count = self._db.execute(
                "SELECT min(seq), coalesce(sum(length(body)), 0), count(*) FROM batches").fetchone()
        except sqlite3.Error as err:
            log.debug("WAL %s: cannot re-read counters: %s", self.path, err)
            return
        self._oldest = int(oldest) if oldest is not None else self._next_seq
        self.bytes, self.count = int(size), int(count)

    def _trim_locked(self, incoming: int) -> int:
        """Delete the oldest batches past ``max_bytes`` (counting their samples); returns how many."""
        dropped = 0
        size, count = self.bytes + incoming, self.count + 1
        while size > self.max_bytes and count > 1:
            rows = self._db.execute(
                "SELECT seq, samples, length(body) FROM batches ORDER BY seq LIMIT 64").fetchall()
            if not rows:
                break
            for seq, samples, length in rows:
                if size <= self.max_bytes or count <= 1:
                    break
                self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
                size -= length
                count -= 1
                dropped += 1
                self.dropped_samples += samples
                self.dropped_unreported += samples
        if dropped:
            self.bytes, self.count = size - incoming, count - 1
            self._save_drops_locked()
        return dropped

    def _save_drops_locked(self) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
            ("dropped_samples", str(self.dropped_samples)), ("dropped_unreported", str(self.dropped_unreported))])

    def take_unreported_drops(self) -> int:
        """Samples dropped since the last call (WAL full, oldest first; or disk full), for an event."""
        with self._lock:
            n, self.dropped_unreported = self.dropped_unreported, 0
            if n:
                try:
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped_unreported', '0')")
                except sqlite3.Error as err:  # a full disk: the count is reported again after a restart
                    log.debug("WAL %s: cannot save the reported drops: %s", self.path, err)
            return n

    # -- acks -------------------------------------------------------------------------------

    def ack(self, seq: int) -> None:
        """The collector holds ``seq`` durably: deleted with the next write (memory only, no I/O)."""
        with self._lock:
            self._acked.append(seq)

    @property
    def acks_waiting(self) -> int:
        """Acks noted and not yet deleted."""
        return len(self._acked)

    def apply_acks(self) -> None:
        """Delete the acked batches now, in one transaction (a backfill, or before closing)."""
        with self._lock:
            acked, self._acked = self._acked, []
            if not acked:
                return
            try:
                self._db.execute("BEGIN")
                self._delete_locked(acked)
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                self._reload_locked()
                self._acked = acked + self._acked
                if _is_full(err):
                    raise WalFull(f"{self.path}: disk full, acknowledged batches kept for now: {err}") from err
                raise WalError(f"{self.path}: cannot delete acknowledged batches: {err}") from err
            self._oldest = self._min_seq_locked()

    def _delete_locked(self, seqs: list[int]) -> None:
        rows = self._db.execute(
            f"SELECT count(*), coalesce(sum(length(body)), 0) FROM batches WHERE seq IN ({','.join('?' * len(seqs))})",
            seqs).fetchone()
        self._db.executemany("DELETE FROM batches WHERE seq = ?", [(s,) for s in seqs])
        self.count -= int(rows[0])
        self.bytes -= int(rows[1])

    def ack_upto(self, seq: int) -> None:
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT coalesce(sum(length(body)), 0), count(*) FROM batches WHERE seq <= ?", (seq,)).fetchone()
                if row[1]:
                    self._db.execute("DELETE FROM batches WHERE seq <= ?", (seq,))
                    self.bytes -= int(row[0])
                    self.count -= int(row[1])
                    self._oldest = self._min_seq_locked()
            except sqlite3.Error as err:
                raise WalError(f"{self.path}: cannot delete acknowledged batches: {err}") from err
            self._acked = [s for s in self._acked if s > seq]

    def _min_seq_locked(self) -> int:
        v = self._db.execute("SELECT min(seq) FROM batches").fetchone()[0]
        return int(v) if v is not None else self._next_seq

    @property
    def oldest(self) -> int:
        """The oldest sequence still held (the next one when empty); kept in memory, no query."""
        return self._oldest

    def newest(self) -> int:
        return self._next_seq - 1

    @property
    def full(self) -> bool:
        """True while writes fail for lack of space."""
        return self._full_since is not None

    def read(self, after: int, upto: int, limit: int) -> list[WalEntry]:
        """Batches with after < seq <= upto, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, samples, ids, body FROM batches WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (after, upto, limit)).fetchall()
            except sqlite3.Error as err:
                raise WalError(f"{self.path}: cannot read batches: {err}") from err
        out = []
        for seq, samples, ids, body in rows:
            arr = array.array("I")
            arr.frombytes(ids)
            out.append(WalEntry(seq, samples, arr.tolist(), body))
        return out

    def close(self) -> None:
        try:
            self.apply_acks()
        except WalError as err:
            log.warning("%s", err)
        with self._lock:
            self._db.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _corrupt(err: sqlite3.Error) -> bool:
    """SQLite's words for a damaged or foreign file (SQLITE_CORRUPT, SQLITE_NOTADB)."""
    if _primary(err) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(err)
    return "malformed" in text or "not a database" in text or "integrity check failed" in text
