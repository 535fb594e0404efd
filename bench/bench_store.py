"""Embedded store: the block store against rows in SQLite and against DuckDB, same samples, same run.

Data: ``--nodes`` simulated nodes (bench/fleetdata.py: the simulated plugin's 1,000 series per
node — rounded gauges, counters, constants) for ``--hours`` at a 10 s interval. Every store
takes the same batches (one block of 1,000 samples each) committed in groups of ``--group``
batches, as group commit does under load, each commit durable (fsync):

- **rows**: SQLite ``executemany`` of (series, ts, value) rows, the old store's table and
  PRAGMAs (WAL, synchronous=FULL);
- **blocks**: the append log (one write + fdatasync per group) + head → level-0 segments each
  minute → level-1 hourly segments (``collector/storage/blocks.py``); the time includes the
  flushes and the merge, i.e. all the work the store does for these samples;
- **duckdb** (if installed): INSERT of the same columns per group, COMMIT, CHECKPOINT.

Then bytes per sample on disk, and a query of 1,000 series × 1 h (one node's series, the last
hour) in a fresh process: wall time and peak RSS above that process's baseline.
The machine is shared: read the ratios, and repeat (``--repeat``) to see the spread.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from fleetdata import Profile

from collector.storage import applog
from collector.storage.blocks import BlockReader, BlockStore, SeriesDef
from collector.storage.codec import Block

INTERVAL_MS = 10_000
T0 = (int(time.time()) // 3600 - 48) * 3_600_000  # two days ago, hour-aligned


def dataset(nodes: int, hours: float) -> tuple[list[list[SeriesDef]], list[tuple[int, int, np.ndarray]]]:
    """Series per node, and batches (node, ts, values) in arrival order (nodes interleaved)."""
    rows = int(hours * 3600_000 / INTERVAL_MS)
    profiles = [Profile(f"node-{n}", 1000, INTERVAL_MS / 1000) for n in range(nodes)]
    defs = []
    for n, p in enumerate(profiles):
        defs.append([SeriesDef(f"{d.measurement}_{d.field}", d.measurement, d.field,
                               {**dict(d.labels), "node": f"node-{n}"}, f"node-{n}", int(d.type))
                     for d in p.defs])
    rng = np.random.default_rng(7)
    batches = []
    for k in range(rows):
        for n, p in enumerate(profiles):
            ts = T0 + k * INTERVAL_MS + int(rng.integers(0, 40))  # collection jitter, ms
            batches.append((n, ts, np.frombuffer(p.values(k), np.float64)))
    return defs, batches


def run_rows(path: Path, batches: list[tuple[int, int, np.ndarray]], group: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE samples (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL, "
               "PRIMARY KEY (series_id, ts)) WITHOUT ROWID")
    t0 = time.perf_counter()
    for g in range(0, len(batches), group):
        rows = []
        for n, ts, vals in batches[g:g + group]:
            base = n * 1000 + 1
            rows.extend(zip(range(base, base + len(vals)), [ts] * len(vals), vals.tolist(), strict=True))
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
    el = time.perf_counter() - t0
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return el


def run_blocks(folder: Path, defs: list[list[SeriesDef]], batches: list[tuple[int, int, np.ndarray]],
               group: int) -> tuple[float, BlockStore]:
    store = BlockStore(folder / "store.sqlite", retention_s=10 * 365 * 86400)
    sids = [np.array(store.define(d), np.int64) for d in defs]
    log = applog.AppendLog(folder / "log")
    t0 = time.perf_counter()
    last_flush = T0
    for g in range(0, len(batches), group):
        chunk = batches[g:g + group]
        recs = [applog.encode_batch(f"node-{n}", g + i + 1, [Block(ts, sids[n], vals)])
                for i, (n, ts, vals) in enumerate(chunk)]
        positions = log.write(recs)
        log.sync()
        for (n, ts, vals), pos in zip(chunk, positions, strict=True):
            store.append(f"node-{n}", [Block(ts, sids[n], vals)], pos, now=ts / 1000)
        now_ms = chunk[-1][1]
        if now_ms - last_flush >= 60_000:
            store.flush(now=now_ms / 1000)
            last_flush = now_ms
    store.flush(force=True)
    store.compact(now=batches[-1][1] / 1000 + 3600)
    el = time.perf_counter() - t0
    log.close()
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return el, store


def run_duckdb(path: Path, batches: list[tuple[int, int, np.ndarray]], group: int) -> float | None:
    try:
        import duckdb  # noqa: PLC0415 - optional: only this comparison needs it
    except ImportError:
        return None
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE samples (series_id INTEGER, ts BIGINT, value DOUBLE)")
    t0 = time.perf_counter()
    ids = np.arange(1, 1001, dtype=np.int32)
    for g in range(0, len(batches), group):
        chunk = batches[g:g + group]
        cols = {"series_id": np.concatenate([ids + n * 1000 for n, _t, _v in chunk]),
                "ts": np.concatenate([np.full(len(v), t, np.int64) for _n, t, v in chunk]),
                "value": np.concatenate([v for _n, _t, v in chunk])}
        con.register("batch", cols)
        con.execute("BEGIN")
        con.execute("INSERT INTO samples SELECT * FROM batch")
        con.execute("COMMIT")
        con.unregister("batch")
    con.execute("CHECKPOINT")
    el = time.perf_counter() - t0
    con.close()
    return el


_QUERY = r"""
import resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np, sqlite3
kind, path, node, since, until = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if kind == "blocks":
    from collector.storage.blocks import BlockReader
    from collector.storage.sqlite import Matcher
else:
    import duckdb
import tracemalloc
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
base = rss()
peak_rss = base
tracemalloc.start()
t0 = time.perf_counter()
n = pts = 0
if kind == "blocks":
    r = BlockReader(__import__("pathlib").Path(path))
    rows = r.find_series(None, [Matcher("node", "=", node)])
    for row, ts, vals in r.query(rows, since, until):
        n += 1
        pts += len(ts)
        peak_rss = max(peak_rss, rss())
elif kind == "rows":
    db = sqlite3.connect(f"file:{{path}}?mode=ro", uri=True)
    lo = int(node.split("-")[1]) * 1000 + 1
    for sid in range(lo, lo + 1000):
        got = db.execute("SELECT ts, value FROM samples WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts",
                         (sid, since, until)).fetchall()
        n += 1
        pts += len(got)
        peak_rss = max(peak_rss, rss())
else:
    con = duckdb.connect(path, read_only=True)
    lo = int(node.split("-")[1]) * 1000 + 1
    got = con.execute("SELECT series_id, ts, value FROM samples WHERE series_id BETWEEN ? AND ? AND ts >= ? "
                      "AND ts <= ? ORDER BY series_id, ts", [lo, lo + 999, since, until]).fetchnumpy()
    n, pts = len(np.unique(got["series_id"])), len(got["ts"])
    peak_rss = max(peak_rss, rss())
el = time.perf_counter() - t0
print(el, n, pts, tracemalloc.get_traced_memory()[1] / 2**20, (peak_rss - base) / 2**20)
"""


def query(kind: str, path: Path, node: str, since: int, until: int) -> tuple[float, int, int, float, float]:
    code = _QUERY.format(root=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code, kind, str(path), node, str(since), str(until)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2]), float(out[3]), float(out[4])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--hours", type=float, default=1.5)
    ap.add_argument("--group", type=int, default=16, help="batches per durable commit")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    defs, batches = dataset(args.nodes, args.hours)
    total = len(batches) * 1000
    print(f"{args.nodes} simulated nodes x 1,000 series x {args.hours:g} h at 10 s = {total:,} samples; "
          f"{len(batches):,} batches committed {args.group} per fsync")
    for rep in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
            t = Path(tmp)
            rows_s = run_rows(t / "rows.sqlite", batches, args.group)
            blocks_s, store = run_blocks(t / "blocks", defs, batches, args.group)
            duck_s = run_duckdb(t / "duck.duckdb", batches, args.group)
            seg_bytes = store._db.execute("SELECT sum(length(body)) FROM segments WHERE level = 1").fetchone()[0]
            stored = BlockReader(t / "blocks" / "store.sqlite").count_samples()
            rows_b = (t / "rows.sqlite").stat().st_size
            # Pages in use: pages freed by merged level-0 segments are reused by the next ones.
            pc, fl, ps = (store._db.execute(f"PRAGMA {p}").fetchone()[0]
                          for p in ("page_count", "freelist_count", "page_size"))
            blocks_b = (pc - fl) * ps
            store.close()
            print(f"-- run {rep + 1}: ingest (all work, durable per group)")
            print(f"   rows   (SQLite executemany): {total / rows_s:>12,.0f} samples/s  {rows_b / total:6.2f} B/sample")
            print(f"   blocks (log + segments)    : {total / blocks_s:>12,.0f} samples/s  "
                  f"{blocks_b / total:6.2f} B/sample in the file, {seg_bytes / stored:.2f} in level-1 blocks  "
                  f"x{rows_s / blocks_s:.1f} rows' rate, {rows_b / blocks_b:.0f}x smaller")
            if duck_s is not None:
                duck_b = (t / "duck.duckdb").stat().st_size
                print(f"   duckdb (INSERT per group)  : {total / duck_s:>12,.0f} samples/s  {duck_b / total:6.2f} "
                      f"B/sample  x{rows_s / duck_s:.1f} rows' rate")
            until = batches[-1][1]
            since = until - 3_600_000
            print("   query: one node's 1,000 series x the last hour, fresh process: time, series, points, "
                  "peak traced MB, peak RSS growth MB")
            for kind, path in (("rows", t / "rows.sqlite"), ("blocks", t / "blocks" / "store.sqlite"),
                               ("duckdb", t / "duck.duckdb")):
                if kind == "duckdb" and duck_s is None:
                    continue
                el, n, pts, mb, rss = query(kind, path, "node-1", since, until)
                print(f"   {kind:<7}{el:7.3f} s  {n:>5} series  {pts:>8,} points  {mb:6.1f} MB  {rss:6.1f} MB")
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
          f"{os.cpu_count()} CPUs, shared)")


if __name__ == "__main__":
    main()
