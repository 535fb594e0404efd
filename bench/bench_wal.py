"""Agent WAL: write cost per batch (beside encoding alone, same run) and backfill rate after an
outage (a real collector process; the agent's transport in this process)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from agent.codec import SeriesTable, Stamped, build_batch
from agent.plugin import PluginContext
from agent.plugins.simulated import SimulatedPlugin
from agent.plugins.simulated.plugin import SimulatedConfig
from agent.transport import Transport
from agent.wal import Wal
from tests.fleet import CollectorProc

BATCHES = 600  # ten minutes of an 8-GPU node at one batch a second


def fill(tmp: Path) -> tuple[Wal, SeriesTable, float, float]:
    plugin = SimulatedPlugin(PluginContext(node="bench"), SimulatedConfig(gpus=8))
    plugin.discover()
    col = plugin.collect()
    wal = Wal(tmp / "wal.sqlite", 256 << 20)
    table = SeriesTable()
    t0 = time.time() - BATCHES
    encode = write = 0.0
    for i in range(BATCHES):
        a = time.perf_counter()
        batch, ids = build_batch(table, [Stamped(t0 + i, col)], [])
        defs = table.take_new()
        batch.SerializeToString()
        b = time.perf_counter()
        wal.append(batch, ids, defs, len(col.samples), 0)
        c = time.perf_counter()
        encode += b - a
        write += c - b
    return wal, table, encode / BATCHES, write / BATCHES


async def backfill(wal: Wal, table: SeriesTable, addr: str, rate: float) -> float:
    transport = Transport("bench", {}, [addr], wal, table, batch_interval=1.0, backfill_rate=rate)
    task = asyncio.create_task(transport.run())
    t0 = time.perf_counter()
    while wal.count > 0:
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        col = CollectorProc(t, extra={"log_level": "warning"}, tls=False).start()  # in-process transport, plaintext
        try:
            for rate in (20.0, 1000.0):
                d = t / f"r{int(rate)}"
                d.mkdir()
                wal, table, enc, write = fill(d)
                if rate == 20.0:
                    print(f"WAL append per batch (404 samples): {write * 1e3:.2f} ms, beside encoding alone "
                          f"{enc * 1e3:.2f} ms (ratio {write / enc:.2f}); {wal.bytes / BATCHES / 1024:.1f} KiB a batch")
                elapsed = asyncio.run(backfill(wal, table, col.addr, rate))
                print(f"backfill of {BATCHES} batches at backfill_rate={rate:g}: {elapsed:.1f} s = "
                      f"{BATCHES / elapsed:.0f} batches/s = {BATCHES / elapsed:.0f}x real time "
                      f"({BATCHES * 404 / elapsed:,.0f} samples/s)")
                wal.close()
        finally:
            col.stop()


if __name__ == "__main__":
    main()
