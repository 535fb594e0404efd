"""Sizing figures for the shared TSDB tier (docs/capacity.md): VictoriaMetrics ingest per core,
memory per active series, bytes per sample, the cost of the fleet rules' queries, and what the
collector's sinks spend per sample, all measured on this machine in one run.

    .venv/bin/python bench/bench_tsdb.py [--nodes 200] [--series 1000] [--instants 12]

1. **Live ingest.** ``nodes x series`` series shaped like a fleet (8 GPUs x 60 fields, 8 IB ports x
   12 counters, node power, host series; identity labels cluster/rack/node), ``instants``
   instants 10 s apart ending now, sent as the collector sends them: Prometheus remote write,
   10,000 samples per request, one sample per series per request. The request bodies are made
   beforehand; the CPU the encoders spent on them is the sinks' cost per sample (line protocol
   is encoded too, for comparison). VictoriaMetrics' CPU (user+system of its process, until it is
   idle again after a flush) per million samples gives samples/s per core; its RSS growth per
   series the memory per active series.
   The same series are then sent again at later instants with one sample per series per request
   and with all instants of a series in one request, to show what batching buys the server.
2. **Depth.** ``--depth-series`` series of ``--depth-instants`` samples 10 s apart (a day of
   history at 10 s is 8,640), merged: disk bytes per sample, and the rate at which a query scans
   stored samples per CPU-second (what a rule with a ``[1h]`` window costs).
3. **Fleet rules.** Each expression of ``alerts/rules/fleet/fleet.yml`` as an instant query over
   the live data: wall time and VictoriaMetrics CPU per evaluation.

The machine is shared: per-core figures (CPU seconds) are steadier than wall-clock rates, and
everything is printed with what it was measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alerts.rules.fleet import fleet_rule_files
from collector.storage.base import Samples, SeriesCatalog, SeriesKey, SinkBatch
from collector.storage.lines import ColumnLineEncoder, encode_batch
from collector.storage.remote_write import RemoteWriteEncoder
from tests.influx_servers import start_victoria_metrics, vm_flush

GPU_FIELDS = ("up", "temperature_celsius", "power_watts", "utilization_ratio", "memory_used_bytes",
              "sm_clock_hertz", "energy_joules_total", "xid_errors_total")
IB_FIELDS = ("symbol_errors_total", "link_downed_total", "receive_errors_total", "transmit_discards_total",
             "receive_bytes_total", "transmit_bytes_total", "state", "physical_state")
STEP_S = 10


def fleet_catalog(nodes: int, per_node: int) -> SeriesCatalog:
    catalog = SeriesCatalog()
    for n in range(nodes):
        ident = (("cluster", f"c{n % 4}"), ("node", f"node-{n:05d}"), ("rack", f"r{n // 32:04d}"))
        keys = []
        for g in range(8):
            tags = tuple(sorted((*ident, ("gpu", str(g)), ("model", "NVIDIA H100 80GB HBM3"), ("vendor", "nvidia"))))
            keys += [SeriesKey("gpu", f, (*tags, ("xid", "79")) if f == "xid_errors_total" else tags)
                     for f in GPU_FIELDS]
            keys += [SeriesKey("gpu", f"extra_{i}", tags) for i in range(52)]  # 60 series per GPU
        for p in range(8):
            tags = tuple(sorted((*ident, ("device", f"mlx5_{p}"), ("port", "1"))))
            keys += [SeriesKey("ib_port", f, tags) for f in IB_FIELDS]
            keys += [SeriesKey("ib_port", f"extra_{i}_total", tags) for i in range(4)]  # 12 per port
        keys += [SeriesKey("node", "power_watts", tuple(sorted((*ident, ("source", s))))) for s in ("ipmi", "psu")]
        keys += [SeriesKey("host", f"metric_{i}", ident) for i in range(per_node - len(keys))]
        for key in keys[:per_node]:
            catalog.intern(key)
    for r in range((nodes + 31) // 32):
        tags = (("cluster", f"c{(r * 32) % 4}"), ("rack", f"r{r:04d}"))
        catalog.intern(SeriesKey("rack", "power_budget_watts", tags))
    return catalog


def instant_batch(catalog: SeriesCatalog, t: int, ts_ns: int) -> SinkBatch:
    ids = np.arange(len(catalog), dtype=np.int64)
    rng = np.random.default_rng(t)
    # Telemetry-like: most series steady or slowly counting, a third changing every instant.
    values = np.where(ids % 3 == 0, rng.uniform(0, 1000, len(ids)).round(3), (ids % 97).astype(np.float64) + t // 30)
    return SinkBatch(t, samples=Samples(catalog, ids, np.full(len(ids), ts_ns, np.int64), values))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def settle(pid: int, url: str) -> float:
    """Flush, then wait until the server's CPU stops moving (background merges done); its CPU time."""
    vm_flush(url)
    last = cpu_seconds(pid)
    quiet = 0
    deadline = time.monotonic() + 60
    while quiet < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last < 0.02 else 0
        last = now
    return last


def post(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        if resp.status not in (200, 204):
            raise RuntimeError(f"{url} answered {resp.status}")


def query(url: str, expr: str) -> dict[str, object]:
    data = urllib.parse.urlencode({"query": expr, "time": f"{time.time():.3f}"}).encode()
    with urllib.request.urlopen(f"{url}/api/v1/query", data=data, timeout=120) as resp:
        doc: dict[str, object] = json.loads(resp.read())
    if doc.get("status") != "success":
        raise RuntimeError(f"{expr!r} failed: {doc}")
    return doc


def live_ingest(url: str, pid: int, args: argparse.Namespace) -> None:
    catalog = fleet_catalog(args.nodes, args.series)
    n_series = len(catalog)
    now_ns = time.time_ns()
    batches = [instant_batch(catalog, t, now_ns - (args.instants - t) * STEP_S * 1_000_000_000)
               for t in range(args.instants)]
    rw, lp = RemoteWriteEncoder(), ColumnLineEncoder("influxdb2")
    bodies: list[bytes] = []
    rw_cpu = lp_cpu = 0.0
    for batch in batches:
        started = time.process_time()
        plan = rw.plan(batch, 10_000)
        bodies += [plan.render(i)[1] for i in range(len(plan.chunks))]
        rw_cpu += time.process_time() - started
        started = time.process_time()
        encoded = encode_batch(batch, lp, events=False)
        for i in range(encoded.n_chunks):
            encoded.render(i)
        lp_cpu += time.process_time() - started
    n = n_series * args.instants
    print(f"live shape: {args.nodes} nodes x {args.series} series = {n_series:,} series, {args.instants} instants "
          f"= {n:,} samples, one sample per series per request")
    print(f"  sink encode (this process, incl. catalog caches warming on the first instant): remote write "
          f"{n / rw_cpu:,.0f} samples per CPU-second, line protocol {n / lp_cpu:,.0f}")
    rss0, cpu0 = rss_bytes(pid), settle(pid, url)
    started = time.perf_counter()
    for body in bodies:
        post(f"{url}/api/v1/write", body)
    wall = time.perf_counter() - started
    cpu = settle(pid, url) - cpu0
    rss = rss_bytes(pid) - rss0
    print(f"  VictoriaMetrics ingest: {n / wall:,.0f} samples/s wall (one sender), {cpu / n * 1e6:.2f} CPU-s per 1M "
          f"samples = {n / cpu:,.0f} samples/s per core (incl. new-series registration and merges); "
          f"RSS +{rss / 1e6:.0f} MB = {rss / n_series:,.0f} bytes per active series")
    # The same series again, new instants, as the collector sends them (1 sample per series per
    # request) and as a spool read spanning all the instants at once would (k samples per series).
    for label, span in (("1 sample per series per request", 1), (f"{args.instants} samples per series per request",
                                                                   args.instants)):
        now_ns = time.time_ns() + 3_600_000_000_000 * span  # later instants, not yet stored
        bodies = []
        for t0 in range(0, args.instants, span):
            parts = [instant_batch(catalog, t, now_ns + t * STEP_S * 1_000_000_000).columns()
                     for t in range(t0, min(t0 + span, args.instants))]
            plan = rw.plan(SinkBatch(t0, samples=Samples.concat(parts)), 10_000)
            bodies += [plan.render(i)[1] for i in range(len(plan.chunks))]
        cpu0, started = settle(pid, url), time.perf_counter()
        for body in bodies:
            post(f"{url}/api/v1/write", body)
        wall = time.perf_counter() - started
        cpu = settle(pid, url) - cpu0
        print(f"  series known, {label}: {n / wall:,.0f} samples/s wall, {cpu / n * 1e6:.2f} CPU-s per 1M samples "
              f"= {n / cpu:,.0f} samples/s per core")


def depth(url: str, pid: int, data_dir: Path, args: argparse.Namespace) -> None:
    catalog = SeriesCatalog()
    for i in range(args.depth_series):
        catalog.intern(SeriesKey("depth", f"f{i % 20}", (("node", f"n{i // 20}"), ("gpu", str(i % 8)))))
    enc = RemoteWriteEncoder()
    now_ns = time.time_ns()
    ids = np.arange(len(catalog), dtype=np.int64)
    rng = np.random.default_rng(0)
    total = 0
    du0 = disk_bytes(data_dir)
    for t0 in range(0, args.depth_instants, 30):  # 30 instants per batch: 30 samples per series per request
        t = np.arange(t0, min(t0 + 30, args.depth_instants))
        sid = np.tile(ids, len(t))
        ts = np.repeat(now_ns - (args.depth_instants - t) * STEP_S * 1_000_000_000, len(ids))
        # gauges that wander (temperature-like, 0.1 steps) and counters that grow
        vals = np.where(sid % 2 == 0, 50 + ((sid * 7 + np.repeat(t, len(ids))) % 40) / 10,
                        np.repeat(t, len(ids)) * 13.0 + sid) + rng.integers(0, 2, len(sid))
        samples = Samples(catalog, sid, ts.astype(np.int64), vals.astype(np.float64))
        plan = enc.plan(SinkBatch(0, samples=samples), 10_000)
        for i in range(len(plan.chunks)):
            post(f"{url}/api/v1/write", plan.render(i)[1])
        total += len(sid)
    settle(pid, url)
    month = time.strftime("%Y_%m", time.gmtime())
    urllib.request.urlopen(f"{url}/internal/force_merge?partition_prefix={month}", timeout=120).read()
    settle(pid, url)
    used = disk_bytes(data_dir) - du0
    print(f"depth: {args.depth_series:,} series x {args.depth_instants} samples 10 s apart = {total:,} samples: "
          f"{used / total:.2f} bytes per sample on disk after a merge (telemetry-like values)")
    window = f"{args.depth_instants * STEP_S + 60}s"
    expr = f'count(count_over_time({{__name__=~"depth_.*"}}[{window}]))'
    runs = []
    for _ in range(5):
        cpu0, started = cpu_seconds(pid), time.perf_counter()
        query(url, expr)
        runs.append((time.perf_counter() - started, cpu_seconds(pid) - cpu0))
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    per_core = total / cpu if cpu > 0 else float("nan")
    print(f"  a rollup query over all of it ({window} window): {wall * 1000:.0f} ms wall, {cpu:.2f} CPU-s "
          f"= {per_core:,.0f} samples scanned per CPU-second (CPU ticks are 10 ms: rough when small)")


def disk_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def fleet_rules(url: str, pid: int) -> None:
    print("fleet rules as instant queries over the live data (median of 5):")
    for path in fleet_rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                runs = []
                for _ in range(5):
                    cpu0, started = cpu_seconds(pid), time.perf_counter()
                    query(url, rule["expr"])
                    runs.append((time.perf_counter() - started, cpu_seconds(pid) - cpu0))
                print(f"  {rule['alert']:<24} {statistics.median(r[0] for r in runs) * 1000:7.1f} ms wall, "
                      f"{statistics.median(r[1] for r in runs) * 1000:5.0f} ms CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--series", type=int, default=1000, help="series per node")
    ap.add_argument("--instants", type=int, default=12)
    ap.add_argument("--depth-series", type=int, default=20_000)
    ap.add_argument("--depth-instants", type=int, default=360)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="fleetmon-bench-tsdb-") as tmp:
        vm, url = start_victoria_metrics(Path(tmp))
        try:
            live_ingest(url, vm.pid, args)
            fleet_rules(url, vm.pid)
        finally:
            vm.stop()
        vm, url = start_victoria_metrics(Path(tmp) / "depth")
        try:
            depth(url, vm.pid, Path(tmp) / "depth" / "victoria-metrics" / "data", args)
        finally:
            vm.stop()


if __name__ == "__main__":
    main()
