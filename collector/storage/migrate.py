"""Migrate a row store (fleetmon ≤ 0.1: a ``samples`` table, a row per sample) to the block store.

Done in place, once, when a collector opens such a data dir: every node's samples become
hourly level-1 segments (read a node-day at a time, so memory stays bounded), node sequence
state and events are kept, and batches still waiting in the old spool for external sinks go
into the new append log, so the sinks still receive them. Then the old tables are dropped.
A store that is neither (another program's file) is refused with a message naming it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

import numpy as np

from collector.errors import CollectorError
from collector.storage import applog, codec
from collector.storage.blocks import LEVEL1, SCHEMA_VERSION, BlockStore
from collector.storage.codec import Block

log = logging.getLogger("fleetmon.collector.migrate")

DAY_MS = 86_400_000


class MigrationError(CollectorError):
    """The data dir holds a store this collector cannot read or convert."""


def needs_migration(path: Path) -> bool:
    if not path.exists():
        return False
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        raise MigrationError(f"{path}: not an SQLite store ({err}); move it away or point data_dir elsewhere") from err
    finally:
        db.close()
    if "samples" in tables:
        return True
    if tables and "segments" not in tables and "series" not in tables:
        raise MigrationError(f"{path}: not a fleetmon store (tables: {', '.join(sorted(tables))}); "
                             "move it away or point data_dir elsewhere")
    return False


def migrate(path: Path, log_dir: Path, window_s: float = 3600) -> int:
    """Convert the row store at ``path``; returns the samples moved."""
    started = time.monotonic()
    db = sqlite3.connect(path, isolation_level=None)
    total = int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
    log.warning("%s: converting %d samples from the row store to blocks (once; the collector starts after)",
                path, total)
    # The new schema beside the old tables; `series` and `events` are the same tables. Node
    # sequence state: ranges (collector/sequence.py), from seq_ranges, or from contiguous + held.
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    cols = {c[1] for c in db.execute("PRAGMA table_info(nodes)")}
    db.execute("CREATE TABLE IF NOT EXISTS node_seq (node TEXT PRIMARY KEY, wal_id TEXT NOT NULL, "
               "floor INTEGER NOT NULL, ranges TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '{}', "
               "last_seen INTEGER NOT NULL DEFAULT 0)")
    floor = "floor" if "floor" in cols else "0"
    for node, wal, cont, labels, seen, fl in db.execute(
            f"SELECT node, wal_id, contiguous, labels, last_seen, {floor} FROM nodes").fetchall():
        if "seq_ranges" in tables:
            ranges = db.execute("SELECT lo, hi FROM seq_ranges WHERE node = ? ORDER BY lo", (node,)).fetchall()
        else:
            held = [s for (s,) in db.execute("SELECT seq FROM held WHERE node = ? ORDER BY seq", (node,))] \
                if "held" in tables else []
            ranges = ([(1, int(cont))] if cont else []) + [(s, s) for s in held]
        db.execute("INSERT OR REPLACE INTO node_seq VALUES (?, ?, ?, ?, ?, ?)",
                   (node, wal, int(fl), json.dumps([list(r) for r in ranges]), labels, int(seen)))
    db.close()
    store = BlockStore(path, window_s=window_s)
    win = store.window_ms
    moved = 0
    rows = store._db.execute("SELECT node, group_concat(id) FROM series GROUP BY node").fetchall()
    for node, ids_text in rows:
        ids = [int(i) for i in ids_text.split(",")]
        lo_hi = store._db.execute(
            f"SELECT min(ts), max(ts) FROM samples WHERE series_id IN ({','.join('?' * len(ids))})", ids).fetchone()
        if lo_hi[0] is None:
            continue
        day = int(lo_hi[0]) // DAY_MS * DAY_MS
        while day <= int(lo_hi[1]):
            got = store._db.execute(
                f"SELECT series_id, ts, value FROM samples WHERE series_id IN ({','.join('?' * len(ids))}) "
                "AND ts >= ? AND ts < ? ORDER BY series_id, ts", [*ids, day, day + DAY_MS]).fetchall()
            if got:
                arr = np.array(got, dtype=np.float64)
                sid, ts = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
                vals = np.array([r[2] for r in got], np.float64)  # exact doubles, not via the float matrix
                segs = []
                for w in np.unique(ts // win).tolist():
                    m = ts // win == w
                    enc = codec.encode_sorted(sid[m], ts[m], vals[m])
                    segs.append((node, LEVEL1, 0, enc.t_min, enc.t_max, enc.samples, enc.blob))
                with store.lock:
                    store._db.executemany("INSERT INTO segments (node, level, key, t_min, t_max, samples, body) "
                                          "VALUES (?, ?, ?, ?, ?, ?, ?)", segs)
                moved += len(got)
            day += DAY_MS
        log.warning("%s: node %s converted (%d/%d samples)", path, node, moved, total)
    _spool_to_log(store._db, log_dir)
    with store.lock:
        for table in ("samples", "held", "seq_ranges", "spool", "nodes"):
            store._db.execute(f"DROP TABLE IF EXISTS {table}")
        store._db.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) DO UPDATE SET "
                          "value = excluded.value", (SCHEMA_VERSION,))
    store.close()
    log.warning("%s: %d samples converted in %.0fs", path, moved, time.monotonic() - started)
    return moved


def _spool_to_log(db: sqlite3.Connection, log_dir: Path) -> None:
    """Batches the old spool still owed external sinks become log records the sinks read first."""
    from collector.spool import decode_spool  # noqa: PLC0415 - spool.py imports the store modules

    has = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'spool'").fetchone()
    if not has:
        return
    bodies = db.execute("SELECT body FROM spool ORDER BY id").fetchall()
    if not bodies:
        return
    out = applog.AppendLog(log_dir)
    start = out.end()
    recs = []
    for (body,) in bodies:
        spooled = decode_spool(bytes(body))
        sids, ts, vals = spooled.samples.series_ids, spooled.samples.ts_ms, spooled.samples.values
        events = spooled.events
        blocks = [Block(t, np.array([s for s, t2 in zip(sids, ts, strict=True) if t2 == t], np.int64),
                        np.array([v for v, t2 in zip(vals, ts, strict=True) if t2 == t], np.float64))
                  for t in sorted(set(ts))]
        # Node "" and sequence 0: for the sinks only (the samples are in the blocks already).
        recs.append(applog.encode_batch("", 0, blocks, events))
    out.write(recs)
    out.sync()
    out.close()
    db.execute("UPDATE sink_cursor SET spool_id = ?", (start,))
    log.warning("%d spooled batches moved to the append log for the external sinks", len(recs))


__all__ = ["MigrationError", "migrate", "needs_migration"]
