"""Every storage sink against real servers, beside a raw POST of the same points, in one run.

    .venv/bin/python bench/bench_sinks.py [--gpus 1000] [--instants 8] [--repeat 3]

Starts influxd 1.x, VictoriaMetrics and vmagent on loopback (Debian packages), then for each
target writes the same points (GPUs x 10 fields x instants) through:

* ``raw``: the request bodies made beforehand (line protocol uncompressed in 5,000-line requests;
  remote write as the snappy protobuf the sink would send, in 10,000-sample requests), POSTed one
  after the other with one keep-alive httpx client: the floor a sink can approach;
* the sink's ``write()`` of one SinkBatch (planning, encoding, compression, HTTP, error checks),
  for the line-protocol sinks with gzip on (the default) and off.

Batches are what the spool hands the sinks: columns over a long-lived series catalog, so the
sinks' per-series caches are warm after the first (untimed) write, as in a running collector.
Values look like GPU telemetry (whole-degree temperatures, mW power, MiB memory, three clocks,
an energy counter, error counters at 0), so some repeat, as in a fleet; the share of distinct
values per batch is printed. ``--distinct`` makes every value distinct instead (worst case).

Each run writes new timestamps into the same series (as a live fleet does); the best of
``--repeat`` runs is printed as points/s, with the ratio sink/raw measured in the same run (the
machine is shared: compare ratios, not absolute figures, between runs). The server's CPU time
per million samples during the raw POSTs is printed too (``docs/capacity.md`` uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.storage.base import Samples, SeriesCatalog, SeriesKey, SinkBatch
from collector.storage.influx_v1 import InfluxV1Config, InfluxV1Sink
from collector.storage.influx_v2 import InfluxV2Config, InfluxV2Sink
from collector.storage.lines import ColumnLineEncoder, encode_batch
from collector.storage.remote_write import RemoteWriteConfig, RemoteWriteEncoder, RemoteWriteSink
from tests.influx_servers import influx_create_database, start_influxd, start_victoria_metrics, start_vmagent

FIELDS = ("temperature_celsius", "memory_temperature_celsius", "power_watts", "utilization_ratio",
          "memory_used_bytes", "sm_clock_hertz", "energy_joules_total", "pcie_replay_total",
          "ecc_errors_total", "power_limit_watts")


class AnySink(Protocol):
    name: str

    async def start(self) -> None: ...

    async def write(self, batch: SinkBatch) -> None: ...

    async def aclose(self) -> None: ...


class Fleet:
    """The bench's series (one catalog for the whole run) and batches of new instants."""

    def __init__(self, gpus: int, instants: int, distinct: bool) -> None:
        self.gpus, self.instants, self.distinct = gpus, instants, distinct
        self.catalog = SeriesCatalog()
        for g in range(gpus):
            tags = (("cluster", "c1"), ("gpu", str(g % 8)), ("model", "NVIDIA H100 80GB HBM3"),
                    ("node", f"node-{g // 8:04d}"), ("rack", f"r{g // 64:03d}"))
            for f in FIELDS:
                self.catalog.intern(SeriesKey("gpu", f, tags))
        self.slot = 0

    def batch(self) -> SinkBatch:
        self.slot += 1  # a fresh minute of timestamps per batch: the server does the same work each time
        base = (time.time_ns() // 1_000_000_000 - 86_400 + self.slot * 60) * 1_000_000_000
        n_series = len(self.catalog)
        ids = np.tile(np.arange(n_series, dtype=np.int64), self.instants)
        t = np.repeat(np.arange(self.instants, dtype=np.int64), n_series)
        ts = base + t * 1_000_000_000
        g, f = ids // len(FIELDS), ids % len(FIELDS)
        if self.distinct:
            values = np.random.default_rng(self.slot).uniform(0, 1000, len(ids))
        else:
            values = self.telemetry(g, f, t + self.slot * self.instants)
        return SinkBatch(self.slot, samples=Samples(self.catalog, ids, ts, values))

    @staticmethod
    def telemetry(g: np.ndarray, f: np.ndarray, t: np.ndarray) -> np.ndarray:
        per_field = [
            45.0 + (g * 7 + t // 4) % 30,  # whole degrees, as NVML reports
            50.0 + (g * 5 + t // 4) % 30,
            250 + ((g * 7919 + t * 104729) % 450_000) / 1000,  # NVML reports milliwatts
            ((g * 13 + t * 7) % 101) / 100,
            ((g * 2_654_435_761 + t * 40_503) % 80_000) * 1_048_576.0,  # MiB steps of 80 GB
            np.choose((g + t) % 3, [1.41e9, 1.755e9, 1.98e9]),
            1e9 + g * 1e6 + t * 412.345,  # energy, ever increasing
            np.where(g % 97 == 0, 3.0, 0.0),
            np.zeros_like(g, dtype=np.float64),
            np.full(g.shape, 700.0),
        ]
        return np.choose(f, per_field).astype(np.float64)


@dataclass
class Target:
    label: str
    raw_url: str
    raw_params: dict[str, str]
    raw_headers: dict[str, str]
    raw_bodies: Callable[[SinkBatch], list[bytes]]
    sinks: dict[str, Callable[[], AnySink]]
    server_pid: int


def line_bodies(dialect: Any) -> Callable[[SinkBatch], list[bytes]]:
    def make(batch: SinkBatch) -> list[bytes]:
        encoded = encode_batch(batch, ColumnLineEncoder(dialect), events=False)
        return [encoded.render(i).encode() for i in range(encoded.n_chunks)]
    return make


def remote_write_bodies(batch: SinkBatch) -> list[bytes]:
    plan = RemoteWriteEncoder().plan(batch, RemoteWriteConfig.batch_size)
    return [plan.render(i)[1] for i in range(len(plan.chunks))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def compare(target: Target, fleet: Fleet, repeat: int) -> None:
    """Raw POST and each sink, interleaved per repeat so all see the same server state."""

    async def raw(client: httpx.AsyncClient, bodies: list[bytes]) -> float:
        started = time.perf_counter()
        for body in bodies:
            resp = await client.post(target.raw_url, params=target.raw_params, content=body,
                                     headers=target.raw_headers)
            if resp.status_code not in (200, 204):
                raise RuntimeError(f"{target.raw_url} answered {resp.status_code}: {resp.text[:200]}")
        return time.perf_counter() - started

    async def via(sink: AnySink, batch: SinkBatch) -> float:
        started = time.perf_counter()
        await sink.write(batch)
        return time.perf_counter() - started

    sinks = {key: make() for key, make in target.sinks.items()}
    best = {"raw": float("inf"), **{key: float("inf") for key in sinks}}
    n = len(fleet.catalog) * fleet.instants
    cpu_raw = 0.0
    async with httpx.AsyncClient(timeout=60) as client:
        for sink in sinks.values():
            await sink.start()
        try:
            await raw(client, target.raw_bodies(fleet.batch()))  # warm up: the series exist before timing
            for sink in sinks.values():
                await via(sink, fleet.batch())
            for _ in range(repeat):
                bodies = target.raw_bodies(fleet.batch())
                cpu = cpu_seconds(target.server_pid)
                best["raw"] = min(best["raw"], await raw(client, bodies))
                cpu_raw += cpu_seconds(target.server_pid) - cpu
                for key, sink in sinks.items():
                    best[key] = min(best[key], await via(sink, fleet.batch()))
        finally:
            for sink in sinks.values():
                await sink.aclose()
    rate = {k: n / v for k, v in best.items()}
    cells = " | ".join(f"sink {k} {rate[k]:>9,.0f} pts/s ({rate[k] / rate['raw']:.2f}x)" for k in sinks)
    print(f"{target.label:<34} {n:>7} pts | raw POST {rate['raw']:>9,.0f} pts/s | {cells} | "
          f"server {cpu_raw / (repeat * n) * 1e6:.2f} cpu-s per 1M pts (raw)", flush=True)


def encode_rates(fleet: Fleet) -> None:
    """The encoders alone (no HTTP), warm, as points per second of one core."""
    batch = fleet.batch()
    n = len(fleet.catalog) * fleet.instants
    values = batch.columns().values
    distinct = len(np.unique(values.view(np.int64))) / len(values)
    for label, encode in (("line protocol", lambda enc: _render_lines(enc, batch)),
                          ("remote write", lambda enc: _render_remote(enc, batch))):
        enc: Any = ColumnLineEncoder("influxdb2") if label == "line protocol" else RemoteWriteEncoder()
        encode(enc)
        started = time.perf_counter()
        encode(enc)
        print(f"encode alone: {label:<14} {n / (time.perf_counter() - started):>10,.0f} pts/s "
              f"(distinct values {distinct:.0%} of the batch)", flush=True)


def _render_lines(enc: ColumnLineEncoder, batch: SinkBatch) -> None:
    encoded = encode_batch(batch, enc, events=False)
    for i in range(encoded.n_chunks):
        encoded.render(i).encode()


def _render_remote(enc: RemoteWriteEncoder, batch: SinkBatch) -> None:
    plan = enc.plan(batch, RemoteWriteConfig.batch_size)
    for i in range(len(plan.chunks)):
        plan.render(i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--instants", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--distinct", action="store_true", help="every value distinct (the encoders' worst case)")
    args = ap.parse_args()
    fleet = Fleet(args.gpus, args.instants, args.distinct)
    encode_rates(fleet)
    lp = {"Content-Type": "text/plain; charset=utf-8"}
    rw = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
          "X-Prometheus-Remote-Write-Version": "0.1.0"}
    with tempfile.TemporaryDirectory(prefix="fleetmon-bench-") as tmp:
        influxd, influx_url = start_influxd(Path(tmp))
        vm, vm_url = start_victoria_metrics(Path(tmp))
        vmagent, vmagent_url = start_vmagent(Path(tmp), f"{vm_url}/api/v1/write")
        try:
            influx_create_database(influx_url, "bench")
            targets = [
                Target("influxd 1.x /write (v1 sink)", f"{influx_url}/write", {"db": "bench", "precision": "ns"},
                       lp, line_bodies("influxdb1"),
                       {"gzip": lambda: InfluxV1Sink(InfluxV1Config(url=influx_url, database="bench")),
                        "plain": lambda: InfluxV1Sink(InfluxV1Config(url=influx_url, database="bench",
                                                                     gzip=False))}, influxd.pid),
                Target("VictoriaMetrics /api/v2/write (v2)", f"{vm_url}/api/v2/write",
                       {"org": "o", "bucket": "b", "precision": "ns"}, lp, line_bodies("influxdb2"),
                       {"gzip": lambda: InfluxV2Sink(InfluxV2Config(url=vm_url, org="o", bucket="b")),
                        "plain": lambda: InfluxV2Sink(InfluxV2Config(url=vm_url, org="o", bucket="b",
                                                                     gzip=False))}, vm.pid),
                Target("VictoriaMetrics /write (v1 sink)", f"{vm_url}/write", {"db": "bench", "precision": "ns"},
                       lp, line_bodies("influxdb2"),
                       {"gzip": lambda: InfluxV1Sink(InfluxV1Config(url=vm_url, database="bench",
                                                                    dialect="influxdb2")),
                        "plain": lambda: InfluxV1Sink(InfluxV1Config(url=vm_url, database="bench", gzip=False,
                                                                     dialect="influxdb2"))}, vm.pid),
                Target("VictoriaMetrics remote write", f"{vm_url}/api/v1/write", {}, rw, remote_write_bodies,
                       {"snappy": lambda: RemoteWriteSink(RemoteWriteConfig(url=f"{vm_url}/api/v1/write"))},
                       vm.pid),
                Target("vmagent remote write", f"{vmagent_url}/api/v1/write", {}, rw, remote_write_bodies,
                       {"snappy": lambda: RemoteWriteSink(RemoteWriteConfig(url=f"{vmagent_url}/api/v1/write"))},
                       vmagent.pid),
            ]
            for target in targets:
                asyncio.run(compare(target, fleet, args.repeat))
        finally:
            vmagent.stop()
            influxd.stop()
            vm.stop()


if __name__ == "__main__":
    main()
