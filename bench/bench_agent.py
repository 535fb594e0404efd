"""Agent cost per collection cycle on a simulated 8-GPU node, and wire bytes per sample.

1. In-process: simulated collect + batch encoding + WAL append, CPU ms and RSS per cycle.
2. A real agent process streaming to a real collector for a while: its CPU ms per cycle and RSS
   (psutil on the process), i.e. what the node pays, scheduler and gRPC included.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.codec import SeriesTable, Stamped, build_batch
from agent.plugin import PluginContext
from agent.plugins.simulated import SimulatedPlugin
from agent.plugins.simulated.plugin import SimulatedConfig
from agent.transport import frame_batch
from agent.wal import Wal
from proto import telemetry_pb2 as pb
from tests.fleet import AgentProc, CollectorProc, wait_until


def in_process(cycles: int = 300) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plugin = SimulatedPlugin(PluginContext(node="bench"), SimulatedConfig(gpus=8))
        plugin.discover()
        wal = Wal(Path(tmp) / "wal.sqlite", 256 << 20)
        table = SeriesTable()
        first = None
        steady = None
        c0 = time.process_time()
        w0 = time.perf_counter()
        samples = 0
        for i in range(cycles):
            col = plugin.collect()
            batch, ids = build_batch(table, [Stamped(time.time(), col)], col.events)
            defs = table.take_new()
            wal.append(batch, ids, defs, len(col.samples), 0)
            samples += len(col.samples)
            body = batch.SerializeToString()
            if i == 0:
                first = len(frame_batch(body + pb.Batch(series=defs).SerializeToString())) / len(col.samples)
            elif i == 1:
                steady = len(frame_batch(body)) / len(col.samples)
        cpu = (time.process_time() - c0) / cycles
        wall = (time.perf_counter() - w0) / cycles
        rss = psutil.Process().memory_info().rss
        wal.close()
    per = samples // cycles
    print(f"in-process, simulated 8-GPU node: {per} samples/cycle")
    print(f"  collect+encode+WAL append: {cpu * 1e3:.2f} ms CPU/cycle ({wall * 1e3:.2f} ms wall), "
          f"{cpu / per * 1e6:.1f} us CPU/sample, RSS {rss / 2**20:.1f} MiB")
    print(f"  wire bytes/sample: {steady:.2f} steady state, {first:.2f} in a stream's first batch "
          f"(series definitions included)")


def real_processes(seconds: float = 20.0) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        col = CollectorProc(t).start()
        agent = AgentProc(t, "bench", [col.addr], plugins={"simulated": {"interval": 1, "gpus": 8}},
                          extra={"batch_interval": 1, "log_level": "warning", "audit_log": None}).start()
        try:
            wait_until(lambda: col.get("/api/v1/summary")["nodes_up"] == 1, 30, "agent streaming")
            assert agent.proc is not None
            p = psutil.Process(agent.proc.pid)
            time.sleep(3)  # past start-up and imports
            c0 = sum(p.cpu_times()[:2])
            t0 = time.monotonic()
            time.sleep(seconds)
            cpu = sum(p.cpu_times()[:2]) - c0
            elapsed = time.monotonic() - t0
            rss = p.memory_info().rss
        finally:
            agent.stop()
            col.stop()
    cycles = elapsed / 1.0
    print(f"agent process streaming to a collector ({elapsed:.0f}s, 1 s interval, 8 GPUs):")
    print(f"  {cpu / cycles * 1e3:.2f} ms CPU/cycle = {cpu / elapsed * 100:.2f}% of one core, "
          f"RSS {rss / 2**20:.1f} MiB")


if __name__ == "__main__":
    in_process()
    real_processes()
