"""The agent's write-ahead log: every batch is on disk before it is sent.

SQLite (WAL journal mode) in one file: ``batches`` holds serialized ``fleetmon.v1.Batch``
bodies without series definitions, keyed by sequence; ``series`` holds the definitions (ids
are stable across restarts); ``meta`` holds the next sequence, the WAL's identity and the
count of samples dropped because the WAL was full. Only an ack from the collector deletes a
batch. Bounded: past ``max_bytes`` the oldest batches go first, and the loss is counted.
"""

from __future__ import annotations

import array
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from agent.codec import def_from_json, def_to_json
from agent.errors import AgentError
from proto import telemetry_pb2 as pb

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, def TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, created_ms INTEGER NOT NULL, samples INTEGER NOT NULL,
    ids BLOB NOT NULL, body BLOB NOT NULL
);
"""


class WalError(AgentError):
    """The WAL file cannot be opened or written; the message names the file."""


@dataclass
class WalEntry:
    seq: int
    samples: int
    ids: list[int]
    body: bytes


class Wal:
    """Thread-safe; every call is short. Sizes count batch bodies (what the bound limits)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: an agent crash loses nothing committed; a power cut may lose the
            # last batches, which the collector has not acked either (so nothing acked is lost).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as err:
            raise WalError(f"{path}: cannot open the WAL: {err}") from err
        if "wal_id" not in meta:
            meta["wal_id"] = uuid.uuid4().hex
            self._db.execute("INSERT INTO meta VALUES ('wal_id', ?)", (meta["wal_id"],))
        self.wal_id: str = meta["wal_id"]
        last = self._db.execute("SELECT max(seq) FROM batches").fetchone()[0] or 0
        self._next_seq = max(int(meta.get("next_seq", 1)), last + 1)
        self.dropped_samples = int(meta.get("dropped_samples", 0))
        self.dropped_unreported = int(meta.get("dropped_unreported", 0))
        row = self._db.execute("SELECT coalesce(sum(length(body)), 0), count(*) FROM batches").fetchone()
        self.bytes, self.count = int(row[0]), int(row[1])

    def load_series(self) -> list[pb.SeriesDef]:
        with self._lock:
            rows = self._db.execute("SELECT id, def FROM series ORDER BY id").fetchall()
        return [def_from_json(sid, text) for sid, text in rows]

    def append(self, batch: pb.Batch, ids: list[int], new_defs: list[pb.SeriesDef], samples: int,
               now_ms: int) -> int:
        """Assign the next sequence, persist the batch (and new series), return the sequence."""
        with self._lock:
            seq = self._next_seq
            batch.sequence = seq
            body = batch.SerializeToString()
            try:
                self._db.execute("BEGIN")
                if new_defs:
                    self._db.executemany("INSERT OR REPLACE INTO series VALUES (?, ?)",
                                         [(d.id, def_to_json(d)) for d in new_defs])
                self._db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?)",
                                 (seq, now_ms, samples, array.array("I", ids).tobytes(), body))
                self._next_seq = seq + 1
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (str(self._next_seq),))
                self.bytes += len(body)
                self.count += 1
                self._trim_locked()
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._db.execute("ROLLBACK")
                raise WalError(f"{self.path}: cannot write batch {seq}: {err}") from err
            return seq

    def _trim_locked(self) -> None:
        while self.bytes > self.max_bytes and self.count > 1:
            rows = self._db.execute(
                "SELECT seq, samples, length(body) FROM batches ORDER BY seq LIMIT 64").fetchall()
            for seq, samples, size in rows:
                if self.bytes <= self.max_bytes or self.count <= 1:
                    break
                self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
                self.bytes -= size
                self.count -= 1
                self.dropped_samples += samples
                self.dropped_unreported += samples
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped_samples', ?)", (str(self.dropped_samples),))
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped_unreported', ?)",
                         (str(self.dropped_unreported),))

    def take_unreported_drops(self) -> int:
        with self._lock:
            n, self.dropped_unreported = self.dropped_unreported, 0
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped_unreported', '0')")
            return n

    def ack(self, seq: int) -> None:
        with self._lock:
            row = self._db.execute("SELECT length(body) FROM batches WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            self.bytes -= int(row[0])
            self.count -= 1

    def ack_upto(self, seq: int) -> None:
        with self._lock:
            row = self._db.execute(
                "SELECT coalesce(sum(length(body)), 0), count(*) FROM batches WHERE seq <= ?", (seq,)).fetchone()
            if row[1]:
                self._db.execute("DELETE FROM batches WHERE seq <= ?", (seq,))
                self.bytes -= int(row[0])
                self.count -= int(row[1])

    def oldest(self) -> int:
        with self._lock:
            v = self._db.execute("SELECT min(seq) FROM batches").fetchone()[0]
            return int(v) if v is not None else self._next_seq

    def newest(self) -> int:
        with self._lock:
            return self._next_seq - 1

    def read(self, after: int, upto: int, limit: int) -> list[WalEntry]:
        """Batches with after < seq <= upto, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, samples, ids, body FROM batches WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, upto, limit)).fetchall()
        out = []
        for seq, samples, ids, body in rows:
            arr = array.array("I")
            arr.frombytes(ids)
            out.append(WalEntry(seq, samples, arr.tolist(), body))
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
