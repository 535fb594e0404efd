"""Sink throughput against real servers, beside a raw line-protocol POST of the same points.

    .venv/bin/python bench/bench_influx.py [--gpus 1000] [--instants 8] [--repeat 3]

Starts influxd 1.x and VictoriaMetrics on loopback (Debian packages), then for each target
writes the same points (GPUs x 10 fields x instants, one line per GPU and instant) through:

* ``raw``: the lines, encoded and chunked beforehand, POSTed uncompressed in 5,000-line requests
  with one keep-alive httpx client: the floor a sink can approach;
* the sink (``write()`` of one SinkBatch: encoding, chunking, gzip, HTTP, error checks), with
  gzip on (the default) and off.

Every run writes new timestamps into the same series (as a live fleet does); the best of
``--repeat`` runs is printed as points/s, and the ratio sink/raw measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.storage.base import Point, SinkBatch
from collector.storage.influx_v1 import InfluxV1Config, InfluxV1Sink
from collector.storage.influx_v2 import InfluxV2Config, InfluxV2Sink
from collector.storage.retry import batch_lines, chunk_lines
from proto.lineprotocol import Dialect, LineEncoder
from tests.influx_servers import influx_create_database, start_influxd, start_victoria_metrics

FIELDS = ("temperature_celsius", "memory_temperature_celsius", "power_watts", "utilization_ratio",
          "memory_used_bytes", "sm_clock_hertz", "energy_joules_total", "pcie_replay_total",
          "ecc_errors_total", "power_limit_watts")


def make_points(gpus: int, instants: int, base_ns: int) -> list[Point]:
    pts = []
    for t in range(instants):
        ts = base_ns + t * 1_000_000_000
        for g in range(gpus):
            tags = (("cluster", "c1"), ("gpu", str(g % 8)), ("model", "NVIDIA H100 80GB HBM3"),
                    ("node", f"node-{g // 8:04d}"), ("rack", f"r{g // 64:03d}"))
            for i, f in enumerate(FIELDS):
                pts.append(Point("gpu", f, tags, float((g * 31 + t * 7 + i) % 1000) + 0.25, ts))
    return pts


async def compare(label: str, args: argparse.Namespace, *, raw_url: str, raw_params: dict[str, str],
                  sink_factory: Callable[[bool], InfluxV1Sink | InfluxV2Sink], dialect: Dialect,
                  slot: list[int]) -> None:
    """Raw POST and the sink (gzip on, gzip off), interleaved per repeat so all three see the
    same server state. The sinks live across batches, as in the collector (their series cache is
    warm after the first write, which is not timed)."""

    def batch_for(run_no: int) -> SinkBatch:
        slot[0] += 1  # a fresh minute of timestamps per run: the server does the same work each time
        base = (time.time_ns() // 1_000_000_000 - 86_400 + slot[0] * 60) * 1_000_000_000
        return SinkBatch(run_no, make_points(args.gpus, args.instants, base), [])

    def raw_chunks(batch: SinkBatch) -> list[bytes]:
        return [c.encode() for c in chunk_lines(batch_lines(batch, dialect))]

    probe = batch_for(0)
    n = len(probe.points)
    n_lines = len(batch_lines(probe, dialect))
    encoder = LineEncoder(dialect)
    batch_lines(probe, encoder=encoder)
    started = time.perf_counter()
    for _ in range(3):
        batch_lines(probe, encoder=encoder)
    encode_rate = 3 * n / (time.perf_counter() - started)

    async def raw(client: httpx.AsyncClient, chunks: list[bytes]) -> float:
        started = time.perf_counter()
        for body in chunks:
            resp = await client.post(raw_url, params=raw_params, content=body,
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
            if resp.status_code != 204:
                raise RuntimeError(f"{raw_url} answered {resp.status_code}: {resp.text[:200]}")
        return time.perf_counter() - started

    async def via(sink: InfluxV1Sink | InfluxV2Sink, batch: SinkBatch) -> float:
        started = time.perf_counter()
        await sink.write(batch)
        return time.perf_counter() - started

    sinks = {"gzip": sink_factory(True), "plain": sink_factory(False)}
    best = {"raw": float("inf"), "gzip": float("inf"), "plain": float("inf")}
    async with httpx.AsyncClient(timeout=60) as client:
        for sink in sinks.values():
            await sink.start()
        try:
            await raw(client, raw_chunks(probe))  # warm up: the series exist before timing
            for sink in sinks.values():
                await via(sink, batch_for(0))
            for r in range(1, args.repeat + 1):
                best["raw"] = min(best["raw"], await raw(client, raw_chunks(batch_for(r))))
                for key, sink in sinks.items():
                    best[key] = min(best[key], await via(sink, batch_for(r)))
        finally:
            for sink in sinks.values():
                await sink.aclose()
    rate = {k: n / v for k, v in best.items()}
    print(f"{label:<40} {n:>7} pts {n_lines:>6} lines | raw POST {rate['raw']:>9,.0f} pts/s | "
          f"sink gzip {rate['gzip']:>9,.0f} pts/s ({rate['gzip'] / rate['raw']:.2f}x) | "
          f"sink plain {rate['plain']:>9,.0f} pts/s ({rate['plain'] / rate['raw']:.2f}x) | "
          f"encode alone {encode_rate:>9,.0f} pts/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--instants", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    slot = [0]
    with tempfile.TemporaryDirectory(prefix="fleetmon-bench-") as tmp:
        influxd, influx_url = start_influxd(Path(tmp))
        vm, vm_url = start_victoria_metrics(Path(tmp))
        try:
            influx_create_database(influx_url, "bench")
            asyncio.run(compare("influxd 1.x /write (v1 sink)", args, raw_url=f"{influx_url}/write",
                    raw_params={"db": "bench", "precision": "ns"},
                    sink_factory=lambda gz: InfluxV1Sink(InfluxV1Config(url=influx_url, database="bench",
                                                                        gzip=gz)),
                    dialect="influxdb1", slot=slot))
            asyncio.run(compare("VictoriaMetrics /api/v2/write (v2 sink)", args, raw_url=f"{vm_url}/api/v2/write",
                    raw_params={"org": "o", "bucket": "b", "precision": "ns"},
                    sink_factory=lambda gz: InfluxV2Sink(InfluxV2Config(url=vm_url, org="o", bucket="b",
                                                                        gzip=gz)),
                    dialect="influxdb2", slot=slot))
            asyncio.run(compare("VictoriaMetrics /write (v1 sink)", args, raw_url=f"{vm_url}/write",
                    raw_params={"db": "bench", "precision": "ns"},
                    sink_factory=lambda gz: InfluxV1Sink(InfluxV1Config(url=vm_url, database="bench", gzip=gz,
                                                                        dialect="influxdb2")),
                    dialect="influxdb2", slot=slot))
        finally:
            influxd.stop()
            vm.stop()


if __name__ == "__main__":
    main()
