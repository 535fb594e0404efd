"""Every storage sink against real servers, beside a raw POST of the same points, in one run.

    .venv/bin/python bench/bench_sinks.py [--gpus 1000] [--instants 8] [--repeat 20] [--layout both]

Starts influxd 1.x, VictoriaMetrics and vmagent on loopback (Debian packages), then for each
target writes the same points (GPUs x 10 fields x instants) through:

* ``raw``: the request bodies made beforehand, in the sink's wire format (line protocol in
  5,000-line requests, uncompressed and gzipped; remote write as the snappy protobuf the sink
  sends, in 10,000-sample requests), POSTed one after the other over one keep-alive
  ``http.client`` connection in a worker thread (the leanest Python client: the sinks' own
  transport, :mod:`collector.storage.poster`, with nothing to render): the floor a sink can
  approach;
* the sink's ``write()`` of one SinkBatch (planning, encoding, compression, HTTP, error checks),
  for the line-protocol sinks with gzip off and on (the default). The gzip sink is also set
  against the uncompressed raw POST: that ratio is the price of compression itself, on both
  sides (ISA-L level 1 here, gunzip at the server).

Batches are what the spool hands the sinks: columns over a long-lived series catalog, so the
sinks' per-series caches are warm after the first (untimed) write, as in a running collector.
Values look like GPU telemetry (whole-degree temperatures, mW power, MiB memory, three clocks,
an energy counter, error counters at 0), so some repeat, as in a fleet; the share of distinct
values per batch is printed. ``--distinct`` makes every value distinct instead (worst case).

Each run writes new timestamps into the same series (as a live fleet does); the best of
``--repeat`` runs is printed as points/s, and in brackets the median over the runs of the ratio
sink/raw, each raw POST paired with the sink write next to it (the machine is shared: compare
ratios, not absolute figures, between runs). Within a pair the order alternates from run to run,
since the server's deferred work lands on the second write; use an even ``--repeat``. The
server's CPU time per million samples during the raw POSTs is printed too (``docs/capacity.md``
uses it).

Layouts (``--layout``, both by default on a machine with two CPUs or more):

* **separate cores**: the servers pinned to one half of the CPUs, this process (sinks and raw
  POSTs) to the other: a model of production, where the TSDB runs on hosts of its own. The ratio
  is then what the sink's own work adds to the server's time.
* **shared cores**: everything on every CPU. On a small machine the server uses every core while
  it parses, so each CPU-millisecond a sink spends encoding is taken from the server: the ratio
  then measures the machine as much as the sink (``docs/capacity.md`` has both on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import http.client
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.storage.base import Samples, SeriesCatalog, SeriesKey, SinkBatch
from collector.storage.influx_v1 import InfluxV1Config, InfluxV1Sink
from collector.storage.influx_v2 import InfluxV2Config, InfluxV2Sink
from collector.storage.lines import ColumnLineEncoder, encode_batch
from collector.storage.remote_write import RemoteWriteConfig, RemoteWriteEncoder, RemoteWriteSink
from collector.storage.retry import gzip_body
from tests.influx_servers import influx_create_database, start_influxd, start_victoria_metrics, start_vmagent
from tests.services import proc_cpu

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
class Variant:
    """One wire format: how the raw bodies are made and sent, and the sink that makes them itself."""

    name: str
    raw_bodies: Callable[[SinkBatch], list[bytes]]
    raw_headers: dict[str, str]
    sink: Callable[[], AnySink]


@dataclass
class Target:
    label: str
    raw_url: str
    raw_params: dict[str, str]
    variants: list[Variant]
    server_pid: int


def line_bodies(dialect: Any, compress: bool = False) -> Callable[[SinkBatch], list[bytes]]:
    def make(batch: SinkBatch) -> list[bytes]:
        encoded = encode_batch(batch, ColumnLineEncoder(dialect), events=False)
        bodies = [encoded.render(i) for i in range(encoded.n_chunks)]
        return [gzip_body(b) for b in bodies] if compress else bodies
    return make


def line_variants(dialect: Any, sink: Callable[[bool], AnySink]) -> list[Variant]:
    plain = {"Content-Type": "text/plain; charset=utf-8"}
    return [Variant("plain", line_bodies(dialect), plain, lambda: sink(False)),
            Variant("gzip", line_bodies(dialect, True), {**plain, "Content-Encoding": "gzip"}, lambda: sink(True))]


def remote_write_bodies(batch: SinkBatch) -> list[bytes]:
    plan = RemoteWriteEncoder().plan(batch, RemoteWriteConfig.batch_size)
    return [plan.render(i)[1] for i in range(len(plan.chunks))]


def remote_write_variant(url: str) -> list[Variant]:
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
               "X-Prometheus-Remote-Write-Version": "0.1.0"}
    return [Variant("snappy", remote_write_bodies, headers, lambda: RemoteWriteSink(RemoteWriteConfig(url=url)))]


async def compare(target: Target, fleet: Fleet, repeat: int) -> list[float]:
    """Per wire format, a raw POST of ready-made bodies and the sink making them from a batch,
    interleaved per repeat so all see the same server state."""

    async def raw(conn: http.client.HTTPConnection, variant: Variant, bodies: list[bytes]) -> float:
        query = f"?{urlencode(target.raw_params)}" if target.raw_params else ""
        target_path = urlsplit(target.raw_url).path + query

        def post_all() -> None:
            for body in bodies:
                conn.request("POST", target_path, body=body, headers=variant.raw_headers)
                resp = conn.getresponse()
                answer = resp.read()
                if resp.status not in (200, 204):
                    raise RuntimeError(f"{target.raw_url} answered {resp.status}: {answer[:200]!r}")

        started = time.perf_counter()
        await asyncio.to_thread(post_all)
        return time.perf_counter() - started

    async def via(sink: AnySink, batch: SinkBatch) -> float:
        started = time.perf_counter()
        await sink.write(batch)
        return time.perf_counter() - started

    sinks = {v.name: v.sink() for v in target.variants}
    best = {(v.name, kind): float("inf") for v in target.variants for kind in ("raw", "sink")}
    # Ratios of each raw POST and the sink write right after it: the machine's other load hits
    # both alike, so their median is steadier than a ratio of the bests.
    paired: dict[str, list[float]] = {v.name: [] for v in target.variants}
    n = len(fleet.catalog) * fleet.instants
    cpu_raw = 0.0
    parts = urlsplit(target.raw_url)
    client = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        for sink in sinks.values():
            await sink.start()
        try:
            for v in target.variants:  # warm up: the series exist and the caches are full before timing
                await raw(client, v, v.raw_bodies(fleet.batch()))
                await via(sinks[v.name], fleet.batch())
            for round_ in range(repeat):
                for v in target.variants:
                    # Both made before either is timed, and the order alternates: the server's
                    # deferred work (VictoriaMetrics answers before it merges) lands on whichever
                    # write comes second, so each goes second as often as the other.
                    bodies, batch = v.raw_bodies(fleet.batch()), fleet.batch()
                    sink_s = await via(sinks[v.name], batch) if round_ % 2 else 0.0
                    cpu = proc_cpu(target.server_pid)
                    raw_s = await raw(client, v, bodies)
                    cpu_raw += proc_cpu(target.server_pid) - cpu
                    if not round_ % 2:
                        sink_s = await via(sinks[v.name], batch)
                    best[v.name, "raw"] = min(best[v.name, "raw"], raw_s)
                    best[v.name, "sink"] = min(best[v.name, "sink"], sink_s)
                    paired[v.name].append(raw_s / sink_s)
        finally:
            for sink in sinks.values():
                await sink.aclose()
    finally:
        client.close()
    rate = {k: n / t for k, t in best.items()}
    cells = []
    for v in target.variants:
        raw_rate, sink_rate = rate[v.name, "raw"], rate[v.name, "sink"]
        cells.append(f"{v.name}: raw {raw_rate:>9,.0f} sink {sink_rate:>9,.0f} pts/s "
                     f"({statistics.median(paired[v.name]):.2f}x)")
    if any(v.name == "gzip" for v in target.variants):
        cells.append(f"gzip sink vs plain raw {rate['gzip', 'sink'] / rate['plain', 'raw']:.2f}x")
    print(f"{target.label:<34} {n:>6} pts | " + " | ".join(cells)
          + f" | server {cpu_raw / (repeat * len(target.variants) * n) * 1e6:.2f} cpu-s per 1M pts (raw)",
          flush=True)
    return [statistics.median(paired[v.name]) for v in target.variants]


def encode_rates(fleet: Fleet) -> None:
    """The encoders alone (no HTTP), warm, on batches they have not seen (new values, as in a
    running collector), as points per CPU-second of this process."""
    values = fleet.batch().columns().values
    distinct = len(np.unique(values.view(np.int64))) / len(values)
    for label, encode in (("line protocol", _render_lines), ("remote write", _render_remote)):
        enc: Any = ColumnLineEncoder("influxdb2") if label == "line protocol" else RemoteWriteEncoder()
        encode(enc, fleet.batch())
        batches = [fleet.batch() for _ in range(3)]
        started = time.process_time()
        for batch in batches:
            encode(enc, batch)
        n = sum(b.n_points for b in batches)
        print(f"encode alone: {label:<14} {n / (time.process_time() - started):>10,.0f} pts per CPU-second "
              f"(distinct values {distinct:.0%} of a batch)", flush=True)


def gzip_rates(fleet: Fleet) -> None:
    """The line-protocol sinks' gzip (ISA-L igzip, level 1) beside zlib's level 1 on the same body."""
    encoded = encode_batch(fleet.batch(), ColumnLineEncoder("influxdb2"), events=False)
    body = b"".join(encoded.render(i) for i in range(encoded.n_chunks))
    for label, compress in (("igzip level 1 (the sinks')", gzip_body),
                            ("zlib level 1", lambda b: gzip.compress(b, compresslevel=1, mtime=0))):
        started = time.process_time()
        for _ in range(5):
            out = compress(body)
        seconds = (time.process_time() - started) / 5
        print(f"gzip alone: {label:<26} {len(body) / seconds / 1e6:7,.0f} MB/s = "
              f"{seconds / len(encoded.plan.values) * 1e6:.3f} us per point, {len(body) / len(out):.1f}x smaller",
              flush=True)


def _render_lines(enc: ColumnLineEncoder, batch: SinkBatch) -> None:
    encoded = encode_batch(batch, enc, events=False)
    for i in range(encoded.n_chunks):
        encoded.render(i)


def _render_remote(enc: RemoteWriteEncoder, batch: SinkBatch) -> None:
    plan = enc.plan(batch, RemoteWriteConfig.batch_size)
    for i in range(len(plan.chunks)):
        plan.render(i)


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` onto ``cpus`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # the thread has ended
            os.sched_setaffinity(int(task.name), cpus)


def layouts(choice: str) -> list[tuple[str, set[int], set[int]]]:
    """(name, the servers' CPUs, this process' CPUs) for each layout to run."""
    cpus = sorted(os.sched_getaffinity(0))
    half = len(cpus) // 2
    separate = ("separate cores", set(cpus[:half]), set(cpus[half:]))
    shared = ("shared cores", set(cpus), set(cpus))
    if len(cpus) < 2:
        return [shared]
    return {"separate": [separate], "shared": [shared], "both": [separate, shared]}[choice]


def run_layout(name: str, server_cpus: set[int], own_cpus: set[int], fleet: Fleet, repeat: int) -> float:
    """Every target in one layout; returns the lowest median sink/raw ratio."""
    os.sched_setaffinity(0, own_cpus)  # this thread; the event loops' worker threads inherit it
    print(f"-- {name}: servers on CPUs {sorted(server_cpus)}, the sinks and raw POSTs on {sorted(own_cpus)}",
          flush=True)
    ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fleetmon-bench-") as tmp:
        influxd, influx_url = start_influxd(Path(tmp))
        vm, vm_url = start_victoria_metrics(Path(tmp))
        vmagent, vmagent_url = start_vmagent(Path(tmp), f"{vm_url}/api/v1/write")
        try:
            for server in (influxd, vm, vmagent):
                pin(server.pid, server_cpus)
            influx_create_database(influx_url, "bench")
            targets = [
                Target("influxd 1.x /write (v1 sink)", f"{influx_url}/write", {"db": "bench", "precision": "ns"},
                       line_variants("influxdb1", lambda gz: InfluxV1Sink(InfluxV1Config(
                           url=influx_url, database="bench", gzip=gz))), influxd.pid),
                Target("VictoriaMetrics /api/v2/write (v2)", f"{vm_url}/api/v2/write",
                       {"org": "o", "bucket": "b", "precision": "ns"},
                       line_variants("influxdb2", lambda gz: InfluxV2Sink(InfluxV2Config(
                           url=vm_url, org="o", bucket="b", gzip=gz))), vm.pid),
                Target("VictoriaMetrics /write (v1 sink)", f"{vm_url}/write", {"db": "bench", "precision": "ns"},
                       line_variants("influxdb2", lambda gz: InfluxV1Sink(InfluxV1Config(
                           url=vm_url, database="bench", gzip=gz, dialect="influxdb2"))), vm.pid),
                Target("VictoriaMetrics remote write", f"{vm_url}/api/v1/write", {},
                       remote_write_variant(f"{vm_url}/api/v1/write"), vm.pid),
                Target("vmagent remote write", f"{vmagent_url}/api/v1/write", {},
                       remote_write_variant(f"{vmagent_url}/api/v1/write"), vmagent.pid),
            ]
            for target in targets:
                ratios.extend(asyncio.run(compare(target, fleet, repeat)))
        finally:
            vmagent.stop()
            influxd.stop()
            vm.stop()
    print(f"-- {name}: lowest sink/raw {min(ratios):.2f}x", flush=True)
    return min(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--instants", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--distinct", action="store_true", help="every value distinct (the encoders' worst case)")
    ap.add_argument("--layout", choices=["both", "separate", "shared"], default="both",
                    help="servers and sinks on separate CPUs (a model of separate hosts), on the same ones, or both")
    args = ap.parse_args()
    fleet = Fleet(args.gpus, args.instants, args.distinct)
    encode_rates(fleet)
    gzip_rates(fleet)
    for name, server_cpus, own_cpus in layouts(args.layout):
        run_layout(name, server_cpus, own_cpus, fleet, args.repeat)


if __name__ == "__main__":
    main()
