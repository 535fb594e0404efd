"""Device check for the nvidia plugin on a machine with NVIDIA GPUs (no network needed).

    python bench/gpu_check.py [--cycles 100] [--save DIR]

1. Runs ``fleetmon agent --once --format json --plugins nvidia`` and compares it with
   ``nvidia-smi --query-gpu=uuid,temperature.gpu,power.draw,memory.total,clocks.sm --format=csv``
   (read before and after the agent, since temperature and power move): uuid and memory total
   equal, temperature within ±2 °C, power within ±10 %; the SM clock is printed, not compared
   (it follows load from one millisecond to the next).
2. Times ``--cycles`` collections in this process with the real pynvml: wall p50/p95/max, CPU ms
   and NVML calls per cycle, and how long close() takes (the XID event thread must stop).

Exit status: 0 all checks passed, 1 a comparison failed, 2 the check could not run (no
nvidia-smi, no GPU, the agent failed). ``--save DIR`` writes the raw outputs there
(``nvidia-smi -q -x`` too) for a later fixture.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.plugin import PluginContext  # noqa: E402 - after the path set-up above
from agent.plugins.nvidia.plugin import NvidiaConfig, NvidiaPlugin  # noqa: E402

QUERY = "uuid,temperature.gpu,power.draw,memory.total,clocks.sm"
TEMP_TOLERANCE_C = 2.0
POWER_TOLERANCE = 0.10
MIB = 1024 * 1024


@dataclass
class SmiGpu:
    uuid: str
    temperature: float | None
    power: float | None
    memory_total_mib: float | None
    sm_clock_mhz: float | None


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO,
                          env=env)


def _number(text: str) -> float | None:
    """``67.03 W`` / ``81920 MiB`` / ``[N/A]`` / ``[Not Supported]`` → number or None."""
    head = text.strip().split(" ")[0]
    try:
        return float(head)
    except ValueError:
        return None


def parse_smi_csv(text: str) -> list[SmiGpu]:
    rows = list(csv.reader(io.StringIO(text.strip()), skipinitialspace=True))
    if not rows or not rows[0] or not rows[0][0].startswith("uuid"):
        raise ValueError(f"unexpected nvidia-smi output: {text[:200]!r}")
    return [SmiGpu(r[0].strip(), _number(r[1]), _number(r[2]), _number(r[3]), _number(r[4]))
            for r in rows[1:] if len(r) >= 5]


def query_smi(smi: str) -> list[SmiGpu]:
    out = run([smi, f"--query-gpu={QUERY}", "--format=csv"], 60)
    if out.returncode != 0:
        raise RuntimeError(f"nvidia-smi failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return parse_smi_csv(out.stdout)


def agent_once() -> tuple[list[dict[str, Any]], float, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    out = run([sys.executable, "-m", "fleetmon", "agent", "--once", "--format", "json", "--plugins", "nvidia"],
              120, env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"fleetmon agent --once exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return rows, wall, out.stderr


def by_uuid(rows: list[dict[str, Any]], name: str) -> dict[str, float]:
    return {r["labels"]["uuid"]: float(r["value"]) for r in rows
            if r.get("name") == name and "uuid" in r.get("labels", {})}


def within(value: float | None, refs: list[float | None], tolerance: float, relative: bool) -> bool:
    for ref in refs:
        if ref is None or value is None:
            continue
        allowed = abs(ref) * tolerance if relative else tolerance
        if abs(value - ref) <= allowed:
            return True
    return False


def compare(rows: list[dict[str, Any]], before: list[SmiGpu], after: list[SmiGpu]) -> list[str]:
    """Human lines; those starting with FAIL are failures."""
    lines = []
    temps, powers, mems = (by_uuid(rows, n) for n in
                           ("gpu_temperature_celsius", "gpu_power_watts", "gpu_memory_total_bytes"))
    clocks, up = by_uuid(rows, "gpu_sm_clock_hertz"), by_uuid(rows, "gpu_up")
    smi_uuids = {g.uuid for g in before}
    agent_uuids = set(up)
    if smi_uuids != agent_uuids:
        lines.append(f"FAIL uuids differ: nvidia-smi {sorted(smi_uuids)} fleetmon {sorted(agent_uuids)}")
    later = {g.uuid: g for g in after}
    for g in before:
        g2 = later.get(g.uuid, g)
        tag = g.uuid
        if up.get(tag) != 1.0:
            lines.append(f"FAIL {tag}: gpu_up is {up.get(tag)}")
        mem = mems.get(tag)
        if g.memory_total_mib is None:
            lines.append(f"skip {tag}: nvidia-smi has no memory.total")
        elif mem is None or int(mem // MIB) != int(g.memory_total_mib):
            # nvidia-smi prints whole MiB, truncated; NVML answers bytes.
            lines.append(f"FAIL {tag}: memory total {mem} B != nvidia-smi {g.memory_total_mib} MiB")
        else:
            lines.append(f"ok   {tag}: memory total {g.memory_total_mib:.0f} MiB")
        temp = temps.get(tag)
        if g.temperature is None:
            lines.append(f"skip {tag}: nvidia-smi has no temperature")
        elif within(temp, [g.temperature, g2.temperature], TEMP_TOLERANCE_C, relative=False):
            lines.append(f"ok   {tag}: temperature {temp} °C (nvidia-smi {g.temperature}/{g2.temperature})")
        else:
            lines.append(f"FAIL {tag}: temperature {temp} °C vs nvidia-smi {g.temperature}/{g2.temperature} ±2")
        power = powers.get(tag)
        if g.power is None:
            seen = "fleetmon omits it too" if power is None else f"fleetmon {power} W"
            lines.append(f"skip {tag}: nvidia-smi has no power.draw ({seen})")
        elif within(power, [g.power, g2.power], POWER_TOLERANCE, relative=True):
            lines.append(f"ok   {tag}: power {power:.2f} W (nvidia-smi {g.power}/{g2.power})")
        else:
            lines.append(f"FAIL {tag}: power {power} W vs nvidia-smi {g.power}/{g2.power} ±10%")
        clock = clocks.get(tag)
        lines.append(f"info {tag}: SM clock fleetmon {clock / 1e6 if clock else None} MHz, "
                     f"nvidia-smi {g.sm_clock_mhz}/{g2.sm_clock_mhz} MHz")
    return lines


def time_cycles(cycles: int) -> dict[str, float]:
    plugin = NvidiaPlugin(PluginContext(node="gpu-check"), NvidiaConfig())
    t0 = time.perf_counter()
    plugin.discover()
    discover_s = time.perf_counter() - t0
    assert plugin.nvml is not None
    walls, samples = [], 0
    calls0, cpu0 = plugin.nvml.calls, time.process_time()
    for _ in range(cycles):
        t = time.perf_counter()
        samples = len(plugin.collect().samples)
        walls.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0
    calls = plugin.nvml.calls - calls0
    t = time.perf_counter()
    plugin.close()
    close_s = time.perf_counter() - t
    walls.sort()
    return {
        "gpus": len(plugin.gpus), "cycles": cycles, "samples_per_cycle": samples,
        "discover_ms": discover_s * 1000, "close_ms": close_s * 1000,
        "wall_ms_p50": statistics.median(walls) * 1000,
        "wall_ms_p95": walls[min(len(walls) - 1, int(len(walls) * 0.95))] * 1000,
        "wall_ms_max": walls[-1] * 1000,
        "cpu_ms_per_cycle": cpu / cycles * 1000,
        "nvml_calls_per_cycle": calls / cycles,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--save", type=Path, help="folder for the raw outputs")
    args = ap.parse_args()
    smi = shutil.which("nvidia-smi")
    if smi is None:
        print("CANNOT RUN: nvidia-smi not found on PATH")
        return 2
    try:
        before = query_smi(smi)
        rows, once_s, stderr = agent_once()
        after = query_smi(smi)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as err:
        print(f"CANNOT RUN: {err}")
        return 2
    if not before:
        print("CANNOT RUN: nvidia-smi lists no GPU")
        return 2
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / "fleetmon-once.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (args.save / "fleetmon-once.stderr").write_text(stderr)
        xml = run([smi, "-q", "-x"], 60)
        (args.save / "nvidia-smi-q-x.xml").write_text(xml.stdout)
    print(f"fleetmon agent --once: {len(rows)} lines in {once_s:.2f} s; "
          f"families: {len({r['name'] for r in rows if 'name' in r})}")
    lines = compare(rows, before, after)
    for line in lines:
        print(line)
    failed = [line for line in lines if line.startswith("FAIL")]
    try:
        timing = time_cycles(args.cycles)
    except Exception as err:  # report, do not hide, whatever the real driver throws at us
        print(f"FAIL timing {args.cycles} cycles: {type(err).__name__}: {err}")
        return 1
    print("timing: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in timing.items()))
    summary = {"passed": not failed, "failures": failed, "timing": timing}
    print(json.dumps(summary))
    if args.save:
        (args.save / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
