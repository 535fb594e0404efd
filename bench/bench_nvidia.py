"""NVML calls and CPU per collection cycle for the fake 8-GPU HGX node, and thread vs process isolation.

    .venv/bin/python bench/bench_nvidia.py [--cycles 100]

Prints, per mode: NVML calls per cycle (the portable figure: each real call is an ioctl into the
driver), CPU ms per cycle (all threads of this process, plus the worker's for the process mode) and
wall ms per cycle. The baseline, measured in the same run, is the one-call-per-counter collection
(``field_values: false``, what a naive exporter does). The fake answers in microseconds, so CPU
figures here are fleetmon's own Python cost, not the driver's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: Assumed time one NVML call spends in the driver (an ioctl to the GPU's resource manager);
#: the fake answers in microseconds, so this is slept to show what threads can overlap.
LATENCY_US = 100
sys.path.insert(0, str(REPO))

import tests.fakenvml as fake  # noqa: E402
from agent.plugin import PluginContext  # noqa: E402
from agent.plugins.nvidia.plugin import NvidiaConfig, NvidiaPlugin  # noqa: E402


def make(latency_s: float = 0.0, **options: Any) -> NvidiaPlugin:
    fake.reset("h100x8").latency_s = latency_s
    # PCIe throughput off: its 20 ms sampling lives in the real driver, the fake would not show it.
    cfg = NvidiaConfig(library="tests.fakenvml", events=False, pcie_throughput=False, **options)
    plugin = NvidiaPlugin(PluginContext(node="bench"), cfg)
    plugin.discover()
    plugin.collect()  # warm: per-device "not supported" answers are learnt in the first cycle
    return plugin


def measure(plugin: NvidiaPlugin, cycles: int) -> tuple[float, float, float, float, int]:
    """Best of three runs (the machine is shared): calls/cycle, CPU ms/cycle, of which inside the
    fake NVML, wall ms/cycle, samples."""
    runs = [_measure(plugin, max(1, cycles // 3)) for _ in range(3)]
    return min(runs, key=lambda r: r[1] - r[2])


def _measure(plugin: NvidiaPlugin, cycles: int) -> tuple[float, float, float, float, int]:
    assert plugin.nvml is not None
    calls0, inside0 = plugin.nvml.calls, fake.state.seconds_inside
    cpu0, wall0 = time.process_time(), time.perf_counter()
    samples = 0
    for _ in range(cycles):
        samples = len(plugin.collect().samples)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    inside = fake.state.seconds_inside - inside0
    return ((plugin.nvml.calls - calls0) / cycles, cpu / cycles * 1000, inside / cycles * 1000,
            wall / cycles * 1000, samples)


def _worker(conn: Connection) -> None:
    """Process isolation: the plugin lives in a child; each cycle is a request/response over a pipe."""
    plugin = make(isolation="none")
    conn.send("ready")
    while conn.recv() == "collect":
        cpu0 = time.process_time()
        col = plugin.collect()
        conn.send((col, time.process_time() - cpu0))
    plugin.close()


def measure_process(cycles: int) -> tuple[float, float, float, float]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    t0 = time.perf_counter()
    proc = ctx.Process(target=_worker, args=(child,), daemon=True)
    proc.start()
    assert parent.recv() == "ready"
    start_s = time.perf_counter() - t0
    cpu0, wall0, child_cpu = time.process_time(), time.perf_counter(), 0.0
    for _ in range(cycles):
        parent.send("collect")
        _col, cpu = parent.recv()
        child_cpu += cpu
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    parent.send("stop")
    proc.join(5)
    return (cpu + child_cpu) / cycles * 1000, cpu / cycles * 1000, wall / cycles * 1000, start_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=100)
    args = ap.parse_args()
    n = args.cycles
    print(f"fake HGX node: 8 GPUs x 18 NVLinks, {n} cycles per mode, {os.cpu_count()} CPUs")
    rows = []
    for label, options in (
        ("baseline: one call per counter, serial", {"field_values": False, "isolation": "none"}),
        ("field values, serial", {"isolation": "none"}),
        ("field values, chained worker (default)", {}),
        (f"serial, {LATENCY_US} µs driver time per call", {"isolation": "none", "latency_s": LATENCY_US / 1e6}),
        (f"chained worker, {LATENCY_US} µs driver time per call", {"latency_s": LATENCY_US / 1e6}),
        (f"thread per GPU, {LATENCY_US} µs driver time per call",
         {"isolation": "thread_per_gpu", "latency_s": LATENCY_US / 1e6}),
    ):
        plugin = make(**options)
        rows.append((label, *measure(plugin, n)))
        plugin.close()
    base_calls, base_own = rows[0][1], rows[0][2] - rows[0][3]
    serial_wall = rows[3][4]
    print(f"{'mode':44} {'calls/cycle':>11} {'CPU ms':>8} {'in fake':>8} {'fleetmon':>8} {'wall ms':>8} "
          f"{'samples':>8}  fleetmon vs baseline")
    for label, calls, cpu, inside, wall, samples in rows:
        own = cpu - inside
        note = f"calls x{calls / base_calls:.2f}, CPU x{own / base_own:.2f}"
        if "driver time" in label:
            note = f"wall x{wall / serial_wall:.2f} vs serial with the same driver time"
        print(f"{label:44} {calls:11.0f} {cpu:8.2f} {inside:8.2f} {own:8.2f} {wall:8.2f} {samples:8d}  {note}")
    total_cpu, parent_cpu, wall, start_s = measure_process(n)
    thread_cpu = rows[2][2]
    print(f"{'process isolation (worker + pipe, serial)':44} {rows[1][1]:11.0f} {total_cpu:8.2f} {'':8} {'':8} "
          f"{wall:8.2f} {'':8}  CPU x{total_cpu / thread_cpu:.2f} vs the chained worker "
          f"(parent {parent_cpu:.2f} ms receiving); worker start {start_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
