"""Power plugin cost per collection and per series, beside the bare file reads and node_exporter.

    .venv/bin/python bench/bench_power.py [--tree node-exporter --tree procfs] [-n 300]

On each captured sysfs tree, the power plugin's kernel sources (RAPL, hwmon, power_supply, ACPI):

* ``bare reads``: opening and reading every attribute file the sources know of, in a plain loop
  (the kernel's work, no parsing, no threads);
* ``collect``: a collection as the agent's scheduler runs it (:func:`collect_as_the_agent`: with
  kernel sources only, the plugin's blocking call, as on the scheduler's lane; one pass, parsing,
  unit conversion, energy bookkeeping), plus encoding the result into a wire batch the way the
  agent does (``build_batch``): what the node pays up to the WAL;
* node_exporter (Debian's ``prometheus-node-exporter``, ``--collector.disable-defaults
  --collector.rapl --collector.powersupplyclass --collector.hwmon``, ``--path.sysfs`` on the same
  tree) scraped ``-n`` times over loopback in the same run; its CPU is the utime+stime delta of
  ``/proc/<pid>/stat``, its series every line but its own ``go_``/``process_``/``promhttp_`` ones.

CPU is ``time.process_time`` (all threads); figures are best of three runs (the machine is
shared). Ratios below 1 mean fleetmon is cheaper.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.codec import SeriesTable, Stamped, build_batch
from agent.model import Collection
from agent.plugin import PluginContext
from agent.plugins.power import PowerPlugin
from agent.plugins.power.config import PowerConfig
from agent.plugins.power.sysfs import class_entries
from tests.services import FIXTURES, Process, free_port, proc_cpu, wait_for_http

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
_FILES = re.compile(r"^(name|energy_uj|max_energy_range_uj|constraint_\d+_(name|power_limit_uw)|"
                    r"(power|energy|in|curr)\d+_(input|average|label|cap)|type|online|present|status|"
                    r"power_now|energy_now|energy_full|energy_full_design|charge_now|capacity|"
                    r"voltage_now|current_now)$")


@dataclass
class Figures:
    cpu: float  # seconds per collection (or scrape)
    wall: float
    series: int

    @property
    def per_series(self) -> float:
        return self.cpu / self.series


def attribute_files(root: Path) -> list[Path]:
    files = []
    for cls in ("powercap", "hwmon", "power_supply"):
        for _, d in class_entries(root / "class" / cls):
            files += [p for p in d.iterdir() if _FILES.match(p.name) and p.is_file()]
    return files


def bare_reads(files: list[Path], n: int) -> Figures:
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        for f in files:
            with open(f, "rb") as fh:
                fh.read()
    return Figures((time.process_time() - c0) / n, (time.perf_counter() - w0) / n, len(files))


def plugin_for(root: Path) -> PowerPlugin:
    cfg = PowerConfig()
    cfg.ipmi.enabled = False
    plugin = PowerPlugin(PluginContext(node="bench", sysfs_root=root), cfg)
    plugin.discover()
    return plugin


async def collect_as_the_agent(plugin: PowerPlugin) -> Collection:
    """One collection the way the agent's scheduler makes it: the plugin's blocking call when it
    offers one (kernel sources only: run on the lane), else its coroutine."""
    call = plugin.blocking_collect()
    return call() if call is not None else await plugin.collect()


def fleetmon(plugin: PowerPlugin, n: int) -> Figures:
    async def run() -> Figures:
        table = SeriesTable()
        col = await collect_as_the_agent(plugin)  # warm: the first collection starts the energy counters
        build_batch(table, [Stamped(time.time(), col)], col.events)
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            col = await collect_as_the_agent(plugin)
            build_batch(table, [Stamped(time.time(), col)], col.events)
        return Figures((time.process_time() - c0) / n, (time.perf_counter() - w0) / n, len(col))

    return asyncio.run(run())


def node_exporter(root: Path, n: int) -> Figures | None:
    if not os.access(NODE_EXPORTER, os.X_OK):
        return None
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with tempfile.TemporaryDirectory() as tmp:
        proc = Process([NODE_EXPORTER, f"--path.sysfs={root}", f"--web.listen-address=127.0.0.1:{port}",
                        "--collector.disable-defaults", "--collector.rapl", "--collector.powersupplyclass",
                        "--collector.hwmon"], Path(tmp) / "node_exporter.log")
        try:
            wait_for_http(url, proc=proc.proc)
            body = urllib.request.urlopen(url, timeout=10).read().decode()  # warm up
            own = ("go_", "process_", "promhttp_")
            series = sum(1 for ln in body.splitlines() if ln and not ln.startswith("#") and not ln.startswith(own))
            c0, w0 = proc_cpu(proc.pid), time.perf_counter()
            for _ in range(n):
                urllib.request.urlopen(url, timeout=10).read()
            return Figures((proc_cpu(proc.pid) - c0) / n, (time.perf_counter() - w0) / n, series)
        finally:
            proc.stop()


def compare(root: Path, n: int) -> dict[str, Figures | None]:
    """One tree: bare reads, fleetmon and node_exporter, best of three each (by CPU)."""
    plugin = plugin_for(root)
    try:
        files = attribute_files(root)
        base = min((bare_reads(files, n) for _ in range(3)), key=lambda f: f.cpu)
        ours = min((fleetmon(plugin, n) for _ in range(3)), key=lambda f: f.cpu)
    finally:
        plugin.close()
    runs = [node_exporter(root, n) for _ in range(3)]
    theirs = min((r for r in runs if r is not None), key=lambda f: f.cpu, default=None)
    return {"bare": base, "fleetmon": ours, "node_exporter": theirs}


def report(tree: str, root: Path, figures: dict[str, Figures | None]) -> None:
    base, ours, theirs = figures["bare"], figures["fleetmon"], figures["node_exporter"]
    assert base is not None and ours is not None
    print(f"tree {tree}: {base.series} attribute files; fleetmon {ours.series} series (power_source_up and all)")
    print(f"  bare reads of every file:  {base.cpu * 1e3:7.3f} ms CPU  {base.wall * 1e3:7.3f} ms wall per pass")
    print(f"  fleetmon collect+encode:   {ours.cpu * 1e3:7.3f} ms CPU  {ours.wall * 1e3:7.3f} ms wall per collection"
          f"  = {ours.per_series * 1e6:6.1f} us CPU/series  ({ours.cpu / base.cpu:.2f}x the bare reads)")
    if theirs is None:
        print(f"  node_exporter: {NODE_EXPORTER} not installed (Debian prometheus-node-exporter); no baseline")
        return
    print(f"  node_exporter scrape:      {theirs.cpu * 1e3:7.3f} ms CPU  {theirs.wall * 1e3:7.3f} ms wall per scrape"
          f"  = {theirs.per_series * 1e6:6.1f} us CPU/series ({theirs.series} series)")
    print(f"  ratio CPU/series fleetmon/node_exporter: {ours.per_series / theirs.per_series:.2f}"
          f"   CPU/cycle: {ours.cpu / theirs.cpu:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", help="captured tree under shared/fixtures/sysfs (repeatable)")
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    for tree in args.tree or ["node-exporter", "procfs"]:
        root = FIXTURES / "sysfs" / tree / "sys"
        report(tree, root, compare(root, args.n))


if __name__ == "__main__":
    main()
