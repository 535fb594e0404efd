"""Cost of one power collection on a node, beside the bare file reads it needs.

    .venv/bin/python bench/bench_power.py [--root shared/fixtures/sysfs/node-exporter/sys] [-n 300]

Runs the power plugin's kernel sources (RAPL, hwmon, power_supply) on a captured sysfs tree:

* ``baseline``: opening and reading every attribute file the sources read, in a plain loop
  (the floor: the kernel's work, no parsing, no threads);
* ``collect``: ``PowerPlugin.collect()`` awaited on one event loop (directory scans, worker
  threads per source, parsing, unit conversion, energy bookkeeping, samples).

Prints milliseconds per collection (best of 3 runs of ``-n``) and the ratio collect/baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.plugin import PluginContext
from agent.plugins.power import PowerPlugin
from agent.plugins.power.config import PowerConfig
from agent.plugins.power.sysfs import class_entries
from tests.services import FIXTURES

_FILES = re.compile(r"^(name|energy_uj|max_energy_range_uj|constraint_\d+_(name|power_limit_uw)|"
                    r"(power|energy|in|curr)\d+_(input|average|label|cap)|type|online|present|status|"
                    r"power_now|energy_now|energy_full|energy_full_design|charge_now|capacity|"
                    r"voltage_now|current_now)$")


def attribute_files(root: Path) -> list[Path]:
    files = []
    for cls in ("powercap", "hwmon", "power_supply"):
        for _, d in class_entries(root / "class" / cls):
            files += [p for p in d.iterdir() if _FILES.match(p.name) and p.is_file()]
    return files


def baseline(files: list[Path], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        for f in files:
            with open(f, "rb") as fh:
                fh.read()
    return (time.perf_counter() - start) / n


async def collect(plugin: PowerPlugin, n: int) -> float:
    await plugin.collect()  # warm: the first collection starts the energy counters
    start = time.perf_counter()
    for _ in range(n):
        await plugin.collect()
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=FIXTURES / "sysfs" / "node-exporter" / "sys")
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    cfg = PowerConfig()
    cfg.ipmi.enabled = False
    plugin = PowerPlugin(PluginContext(node="bench", sysfs_root=args.root), cfg)
    plugin.discover()
    files = attribute_files(args.root)
    base = min(baseline(files, args.n) for _ in range(3))
    col = min(asyncio.run(collect(plugin, args.n)) for _ in range(3))
    samples = len(asyncio.run(plugin.collect()).samples)
    print(f"tree: {args.root}")
    print(f"sources: {', '.join(s.name for s in plugin.sources)}; {len(files)} attribute files; {samples} samples")
    print(f"baseline (bare reads): {base * 1e3:8.3f} ms per collection")
    print(f"collect():             {col * 1e3:8.3f} ms per collection")
    print(f"ratio collect/baseline: {col / base:.1f}x")


if __name__ == "__main__":
    main()
