"""Collector ingest: samples/s from pre-built batches over real gRPC into the embedded store,
beside a raw SQLite insert of the same rows (same schema, same PRAGMAs) in the same run."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from agent.codec import pack_values
from agent.transport import METHOD, frame_batch
from proto import telemetry_pb2 as pb
from tests.fleet import CollectorProc

AGENTS = 4
BATCHES = 60
SERIES = 2000  # per agent: a large node's worth of series, one block per batch


def make_batches(node: int) -> list[bytes]:
    now = int(time.time() * 1000) - BATCHES * 1000
    out = []
    for seq in range(1, BATCHES + 1):
        b = pb.Batch(sequence=seq)
        if seq == 1:
            for i in range(SERIES):
                b.series.add(id=i + 1, measurement="gpu", field=f"f{i % 40}", labels={"gpu": str(i // 40)})
        b.blocks.add(timestamp_ms=now + seq * 1000, series_ids=range(1, SERIES + 1),
                     values=pack_values([random.random() * 100 for _ in range(SERIES)]))
        out.append(frame_batch(b.SerializeToString()))
    return out


async def send(addr: str, node: int, batches: list[bytes]) -> None:
    async with grpc.aio.insecure_channel(addr) as ch:
        call = ch.stream_stream(METHOD, request_serializer=lambda b: b,
                                response_deserializer=pb.CollectorMessage.FromString)()
        await call.write(pb.AgentMessage(hello=pb.Hello(node=f"bench-{node}", wal_id="w")).SerializeToString())
        await call.read()
        window = 8

        async def reader() -> None:
            for _ in batches:
                msg = await call.read()
                assert msg.ack.refused == "", msg.ack.refused

        r = asyncio.create_task(reader())
        for i, b in enumerate(batches):
            await call.write(b)
            if i >= window:
                await asyncio.sleep(0)
        await r
        await call.done_writing()


def raw_sqlite(tmp: Path, rows_per_batch: list[list[tuple[int, int, float]]]) -> float:
    db = sqlite3.connect(tmp / "raw.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE samples (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL, "
               "PRIMARY KEY (series_id, ts)) WITHOUT ROWID")
    t0 = time.perf_counter()
    for rows in rows_per_batch:
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
    return time.perf_counter() - t0


def main() -> None:
    batches = {n: make_batches(n) for n in range(AGENTS)}
    total = AGENTS * BATCHES * SERIES
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        col = CollectorProc(t, tls=False).start()  # plaintext: the clients below are in-process
        try:
            async def run_all() -> float:
                t0 = time.perf_counter()
                await asyncio.gather(*(send(col.addr, n, b) for n, b in batches.items()))
                return time.perf_counter() - t0

            grpc_s = asyncio.run(run_all())
        finally:
            col.stop()
        now = int(time.time() * 1000)
        rows = [[(n * SERIES + i, now + seq, random.random()) for i in range(SERIES)]
                for n in range(AGENTS) for seq in range(BATCHES)]
        raw_s = raw_sqlite(t, rows)
    print(f"{AGENTS} agents x {BATCHES} batches x {SERIES} samples = {total:,} samples")
    print(f"collector over gRPC into the embedded store: {total / grpc_s:,.0f} samples/s ({grpc_s:.2f} s)")
    print(f"raw SQLite insert of the same rows, one transaction per batch: {total / raw_s:,.0f} samples/s "
          f"({raw_s:.2f} s)")
    print(f"ratio collector/raw: {raw_s / grpc_s:.2f}")


if __name__ == "__main__":
    main()
