"""Rule-engine CPU against ingest CPU, with the default rule pack, at 1 K to 1 M live series.

A simulated fleet of nodes with ~1,000 series each (8 GPUs with NVLink, 8 InfiniBand ports, 8
optical interfaces with 4 lanes and their thresholds, network, power, agent self-metrics), each
node sending one batch every 10 s at its own phase (as 2,500 agents do), the engine evaluating
every second. After filling the windows (the longest range the pack reads, or --warm-min), it
measures over --seconds simulated seconds, with ``time.process_time`` (CPU, not wall time):

* ingest: a real collector process (``fleetmon collector``, no rules) receiving the same node
  batches over gRPC into its embedded store, acks and all: its CPU (psutil) per sample,
  measured on up to --ingest-nodes nodes (the cost per sample does not depend on the fleet);
* rules: ``AlertEngine.append_block`` of those batches (the samples of series a rule reads)
  plus one ``AlertEngine.evaluate`` per simulated second, in this process.

Prints per size: series in the fleet and in the engine, CPU per evaluation, rule and ingest CPU
per simulated second, and their ratio (the goal is <= 1; the whole-rescan engine was ~8).
``--storm F``: a fraction F of the GPUs run hot during the measurement, so alerts start and fire.
Nothing is sampled: at 1 M series (1,000 nodes) a run takes about 7 minutes on 2 cores, most of
it filling 11 simulated minutes of windows (--warm-min) before the measured seconds.

Usage: python bench/bench_rules.py [--series 1000,10000,100000,1000000] [--seconds 20]
       [--warm-min 11] [--rules alerts/rules] [--ingest-nodes 40]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import psutil

from agent.transport import METHOD, frame_batch
from alerts.engine import AlertEngine
from alerts.rulefile import load_files
from proto import telemetry_pb2 as pb
from tests.fleet import CollectorProc

SERIES_PER_NODE = 1_000  # the fleet's size unit: nodes = series / 1,000
INTERVAL_S = 10


@dataclass
class Metric:
    name: str
    labels: dict[str, str]
    kind: str  # "gauge" (noise around base), "flat" (an error counter at rest), "up" (a counter)
    base: float


def node_metrics(node: str) -> list[Metric]:
    """About 1,050 series, the names and labels of DESIGN.md."""
    out: list[Metric] = []

    def add(name: str, labels: dict[str, str], kind: str, base: float) -> None:
        out.append(Metric(name, {"node": node, "cluster": "c1", "rack": f"r{hash(node) % 40}", **labels}, kind, base))

    for g in range(8):
        gl = {"gpu": str(g), "uuid": f"GPU-{node}-{g}", "model": "H100"}
        for name, base in (("gpu_up", 1.0), ("gpu_utilization_ratio", 0.6), ("gpu_memory_used_bytes", 4e10),
                           ("gpu_memory_total_bytes", 8e10), ("gpu_temperature_celsius", 60.0),
                           ("gpu_memory_temperature_celsius", 70.0), ("gpu_power_watts", 450.0),
                           ("gpu_power_limit_watts", 700.0), ("gpu_sm_clock_hertz", 1.98e9),
                           ("gpu_row_remap_pending", 0.0), ("gpu_row_remap_failed", 0.0),
                           ("gpu_pcie_link_generation", 5.0), ("gpu_pcie_link_generation_max", 5.0),
                           ("gpu_pcie_link_width", 16.0), ("gpu_pcie_link_width_max", 16.0)):
            add(name, gl, "gauge" if name.endswith(("ratio", "celsius", "watts", "bytes")) else "flat", base)
        add("gpu_energy_joules_total", gl, "up", 1e9)
        add("gpu_pcie_replay_total", gl, "flat", 3.0)
        for reason in ("gpu_idle", "sw_power_cap", "hw_slowdown", "sync_boost", "sw_thermal_slowdown",
                       "hw_thermal_slowdown", "hw_power_brake_slowdown", "display_clock"):
            add("gpu_clock_event_active", {**gl, "reason": reason}, "flat", 0.0)
        for typ in ("correctable", "uncorrectable"):
            for scope in ("volatile", "aggregate"):
                add("gpu_ecc_errors_total", {**gl, "type": typ, "scope": scope}, "flat", 0.0)
            add("gpu_remapped_rows_total", {**gl, "type": typ}, "flat", 0.0)
        for cause in ("single_bit", "double_bit"):
            add("gpu_retired_pages_total", {**gl, "cause": cause}, "flat", 0.0)
        for link in range(18):
            add("gpu_nvlink_up", {**gl, "link": str(link)}, "flat", 1.0)
            for typ in ("crc_flit", "crc_data"):
                add("gpu_nvlink_errors_total", {**gl, "link": str(link), "type": typ}, "flat", 0.0)
        if g < 2:
            add("gpu_xid_errors_total", {**gl, "xid": ("13", "94")[g]}, "flat", 1.0)
    for p in range(8):
        pl = {"device": f"mlx5_{p}", "port": "1"}
        for name, base in (("ib_port_state", 4.0), ("ib_port_physical_state", 5.0),
                           ("ib_port_rate_bytes_per_second", 5e10), ("ib_port_symbol_errors_total", 0.0),
                           ("ib_port_link_downed_total", 0.0), ("ib_port_link_error_recovery_total", 0.0),
                           ("ib_port_receive_errors_total", 0.0), ("ib_port_transmit_discards_total", 0.0),
                           ("ib_port_saturated", 0.0)):
            add(name, pl, "flat", base)
        for name in ("ib_port_receive_bytes_total", "ib_port_transmit_bytes_total"):
            add(name, pl, "up", 1e12)
    for i in range(8):
        il = {"interface": f"eth{i}"}
        add("optical_temperature_celsius", il, "gauge", 45.0)
        add("optical_voltage_volts", il, "gauge", 3.3)
        for lane in range(4):
            ll = {**il, "lane": str(lane)}
            for name, base in (("optical_tx_bias_amperes", 0.007), ("optical_tx_power_dbm", -1.0),
                               ("optical_rx_power_dbm", -2.0)):
                add(name, ll, "gauge", base)
            add("optical_rx_los", ll, "flat", 0.0)
            add("optical_tx_fault", ll, "flat", 0.0)
        for quantity, level, base in (("rx_power", "low_alarm", -14.0), ("rx_power", "low_warning", -12.0),
                                      ("rx_power", "high_warning", 3.0), ("tx_power", "low_alarm", -11.0),
                                      ("tx_power", "low_warning", -9.0), ("temperature", "high_alarm", 75.0),
                                      ("temperature", "high_warning", 70.0)):
            add("optical_threshold", {**il, "quantity": quantity, "level": level}, "flat", base)
    for i in range(4):
        nl = {"interface": f"ens{i}"}
        add("net_up", nl, "flat", 1.0)
        add("net_carrier_changes_total", nl, "flat", 2.0)
        add("net_speed_bytes_per_second", nl, "flat", 1.25e10)
    for psu in ("1", "2"):
        add("psu_up", {"psu": psu}, "flat", 1.0)
        add("psu_input_power_watts", {"psu": psu}, "gauge", 2500.0)
    add("psu_redundancy_ok", {}, "flat", 1.0)
    add("node_power_watts", {"source": "bmc"}, "gauge", 5000.0)
    add("node_power_cap_watts", {"source": "bmc"}, "flat", 10200.0)
    add("node_expected_gpus", {}, "flat", 8.0)
    for zone in ("package-0", "package-1"):
        add("rapl_energy_joules_total", {"zone": zone}, "up", 1e8)
    for name in ("fleetmon_agent_wal_bytes", "fleetmon_agent_dropped_samples_total", "fleetmon_agent_series"):
        add(name, {}, "flat", 0.0)
    return out


class Node:
    def __init__(self, index: int, engine: AlertEngine, rng: random.Random) -> None:
        self.name = f"node-{index:05d}"
        self.phase = index % INTERVAL_S
        self.metrics = node_metrics(self.name)
        self.rng = rng
        refs = [engine.series_ref(m.name, m.labels) for m in self.metrics]
        self.engine_idx = [i for i, r in enumerate(refs) if r is not None]
        self.engine_refs = [r for r in refs if r is not None]
        self.counters = [m.base for m in self.metrics]
        self.hot: set[int] = set()
        self.ids = list(range(1, len(self.metrics) + 1))  # series ids on the wire

    def values(self) -> list[float]:
        rng = self.rng
        out = []
        for i, m in enumerate(self.metrics):
            if m.kind == "gauge":
                v = m.base * (1 + 0.02 * (rng.random() - 0.5))
                if i in self.hot:
                    v = 95.0
            elif m.kind == "up":
                self.counters[i] += rng.random() * 1e6
                v = self.counters[i]
            else:
                v = m.base
            out.append(v)
        return out


def wire_batches(node: Node, count: int) -> list[bytes]:
    """``count`` framed batches of one node: the first defines its series, as an agent's does."""
    now = int(time.time() * 1000) - count * INTERVAL_S * 1000
    out = []
    for seq in range(1, count + 1):
        b = pb.Batch(sequence=seq)
        if seq == 1:
            for sid, m in zip(node.ids, node.metrics, strict=True):
                measurement, _, fld = m.name.partition("_")
                labels = {k: v for k, v in m.labels.items() if k != "node"}
                b.series.add(id=sid, measurement=measurement, field=fld, labels=labels,
                             type=pb.COUNTER if m.name.endswith("_total") else pb.GAUGE)
        b.blocks.add(timestamp_ms=now + seq * INTERVAL_S * 1000, series_ids=node.ids,
                     values=array("d", node.values()).tobytes())
        out.append(frame_batch(b.SerializeToString()))
    return out


async def _stream(addr: str, name: str, batches: list[bytes], defined: asyncio.Queue[str],
                  go: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(addr) as ch:
        call = ch.stream_stream(METHOD, request_serializer=lambda b: b,
                                response_deserializer=pb.CollectorMessage.FromString)()
        await call.write(pb.AgentMessage(hello=pb.Hello(node=name, wal_id="bench")).SerializeToString())
        await call.read()
        for i, data in enumerate(batches):
            await call.write(data)
            msg = await call.read()  # acked once durable
            if msg.ack.refused:
                raise RuntimeError(f"{name}: batch refused: {msg.ack.refused}")
            if i == 0:  # the series definitions are in; measurement starts when every node is there
                defined.put_nowait(name)
                await go.wait()
        await call.done_writing()


def collector_ingest_cpu(nodes: list[Node], batches: int) -> float:
    """CPU seconds a collector process spends per sample ingesting these nodes' batches (after
    each node's first batch, which defines its series)."""
    wire = {n.name: wire_batches(n, batches + 1) for n in nodes}
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "no-rules.yml"
        empty.write_text("groups: []\n")
        col = CollectorProc(Path(tmp), rules=[empty], extra={"log_level": "warning"}).start()
        try:
            proc = psutil.Process(col.proc.pid)  # type: ignore[union-attr]

            async def main() -> tuple[float, float]:
                defined: asyncio.Queue[str] = asyncio.Queue()
                go = asyncio.Event()
                tasks = [asyncio.create_task(_stream(col.addr, name, b, defined, go)) for name, b in wire.items()]
                for _ in wire:
                    await defined.get()
                before = proc.cpu_times()
                go.set()
                await asyncio.gather(*tasks)
                after = proc.cpu_times()
                return (after.user - before.user) + (after.system - before.system), 0.0

            cpu, _ = asyncio.run(main())
        finally:
            col.stop()
    return cpu / (len(nodes) * batches * len(nodes[0].metrics))


def run(n_series: int, seconds: int, warm_min: float, rule_dir: Path, *, storm: float, rng: random.Random,
        ingest_us: float) -> dict[str, float]:
    engine = AlertEngine(load_files(sorted(rule_dir.glob("*.yml"))))
    n_nodes = max(1, n_series // SERIES_PER_NODE)
    t_setup = time.process_time()
    nodes = [Node(i, engine, rng) for i in range(n_nodes)]
    setup_s = time.process_time() - t_setup
    t0 = 1_700_000_000
    warm_s = int(warm_min * 60)

    def send(node: Node, now: int) -> tuple[float, int]:
        values = node.values()
        wanted = [values[i] for i in node.engine_idx]  # the collector's decode picks these out
        c0 = time.process_time()
        engine.append_block(node.engine_refs, now * 1000, wanted)
        return time.process_time() - c0, len(values)

    for s in range(warm_s):  # fill the windows; evaluate now and then as the collector would
        now = t0 + s
        for node in nodes:
            if s % INTERVAL_S == node.phase:
                send(node, now)
        if s % 60 == 0 or s >= warm_s - INTERVAL_S:
            engine.evaluate(now + 0.5)
    if storm:
        for node in nodes:
            gpu_temps = [i for i, m in enumerate(node.metrics) if m.name == "gpu_temperature_celsius"]
            node.hot = {i for i in gpu_temps if rng.random() < storm}
    append_cpu = 0.0
    samples = 0
    evals: list[float] = []
    def counts() -> dict[str, int]:
        runners = engine._runners
        return {k: sum(getattr(r, "stats", {}).get(k, 0) for r in runners) for k in ("full", "partial", "skipped")}

    stats0 = counts()
    for s in range(warm_s, warm_s + seconds):
        now = t0 + s
        for node in nodes:
            if s % INTERVAL_S == node.phase:
                a, n = send(node, now)
                append_cpu += a
                samples += n
        c = time.process_time()
        engine.evaluate(now + 0.5)
        evals.append(time.process_time() - c)
    stats = {k: v - stats0[k] for k, v in counts().items()}
    live = list(engine.windows.live_series())
    window_bytes = sum(sys.getsizeof(x.ts) + sys.getsizeof(x.vals) + sys.getsizeof(x) + sys.getsizeof(x.labels)
                       for x in live)
    rule_cpu = append_cpu + sum(evals)
    ingest_cpu = ingest_us / 1e6 * samples
    return {
        "fleet": float(n_nodes * len(nodes[0].metrics)), "engine": float(engine.windows.series_count()),
        "samples_s": samples / seconds, "eval_ms": statistics.mean(evals) * 1000,
        "eval_max_ms": max(evals) * 1000, "append_us": append_cpu / max(1, samples) * 1e6,
        "ingest_us": ingest_us, "rule_ms_s": rule_cpu / seconds * 1000,
        "ingest_ms_s": ingest_cpu / seconds * 1000, "ratio": rule_cpu / ingest_cpu if ingest_cpu else float("nan"),
        "alerts": float(len(engine.active())), "setup_s": setup_s,
        "skipped": stats["skipped"] / max(1, sum(stats.values())),
        "kib_series": window_bytes / max(1, len(live)) / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", default="1000,10000,100000,1000000", help="fleet sizes in series (1,000 a node)")
    ap.add_argument("--seconds", type=int, default=20, help="measured simulated seconds per size")
    ap.add_argument("--warm-min", type=float, default=11.0, help="simulated minutes of history before measuring")
    ap.add_argument("--rules", type=Path, default=Path(__file__).resolve().parents[1] / "alerts" / "rules")
    ap.add_argument("--storm", type=float, default=0.0, help="fraction of GPUs running hot while measured")
    ap.add_argument("--ingest-nodes", type=int, default=40, help="nodes the ingest baseline sends")
    ap.add_argument("--ingest-batches", type=int, default=6, help="batches per node in the ingest baseline")
    args = ap.parse_args()
    rng = random.Random(7)
    probe = AlertEngine([])
    ingest_us = collector_ingest_cpu([Node(i, probe, rng) for i in range(args.ingest_nodes)], args.ingest_batches) * 1e6
    print(f"ingest baseline: a collector process (no rules) took {ingest_us:.2f} µs of CPU per sample "
          f"({args.ingest_nodes} nodes x {args.ingest_batches} batches x ~1,050 samples over gRPC)")
    print(f"{'fleet series':>12} {'engine series':>13} {'samples/s':>9} {'eval ms':>8} {'max ms':>7} "
          f"{'append µs':>9} {'ingest µs':>9} {'rules ms/s':>10} {'ingest ms/s':>11} {'rules/ingest':>12} "
          f"{'skipped':>7} {'alerts':>6} {'KiB/series':>10}")
    for n in (int(x) for x in args.series.split(",")):
        r = run(n, args.seconds, args.warm_min, args.rules, storm=args.storm, rng=rng, ingest_us=ingest_us)
        print(f"{int(r['fleet']):>12} {int(r['engine']):>13} {r['samples_s']:>9.0f} {r['eval_ms']:>8.2f} "
              f"{r['eval_max_ms']:>7.1f} {r['append_us']:>9.2f} {r['ingest_us']:>9.2f} {r['rule_ms_s']:>10.1f} "
              f"{r['ingest_ms_s']:>11.1f} {r['ratio']:>12.2f} {r['skipped']:>7.0%} {int(r['alerts']):>6} "
              f"{r['kib_series']:>10.2f}", flush=True)
    print("CPU per simulated second; one batch per node every 10 s, staggered; evaluation every second.")
    print("rules = append_block + evaluate (process_time); ingest = the baseline's CPU per sample x the samples")
    print("of that second. skipped = rule evaluations with nothing to do (the others covered only the nodes")
    print("that changed, or everything). KiB/series: a stored series' arrays, object and label tuple (label")
    print("pairs and strings are shared). The noise of a shared machine moves both sides: compare the ratio.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
