"""CPU cost of the optics plugin per cycle, beside prometheus-node-exporter on the same tree.

    .venv/bin/python bench/bench_optics.py [--cycles 300] [--tree h100-infiniband]

One cycle = read every IB port of the captured tree (h100-infiniband: 9 HCAs, ~50 files per
port) plus decode and emit 8 transceiver EEPROM images (4 CMIS OSFP 8-lane, 2 SFF-8636, 2
SFF-8472, built as in tests/test_optics_eeprom.py). CPU is ``time.process_time`` over
``--cycles`` cycles.

The baseline is Debian's node_exporter (``--collector.infiniband --collector.netclass`` only)
with ``--path.sysfs`` on the same tree, scraped ``--cycles`` times over loopback in the same
run; its CPU is the utime+stime delta of ``/proc/<pid>/stat``. Both are reported per cycle
and per series (node_exporter's own go_/process_/promhttp_ series excluded), and as ratios
(fleetmon / node_exporter: below 1 means cheaper).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.model import Collection
from agent.output import to_prom
from agent.plugin import PluginContext
from agent.plugins.optics import OpticsPlugin
from agent.plugins.optics.eeprom import EepromImage, decode
from agent.plugins.optics.emit import module_samples
from agent.plugins.optics.plugin import OpticsConfig
from tests.services import FIXTURES, Process, free_port, proc_cpu, wait_for_http
from tests.test_optics_eeprom import cmis_pages, sff8472_internal, sff8636_pages

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


def images() -> list[EepromImage]:
    lower, upper = cmis_pages()
    q_lower, q_upper = sff8636_pages()
    cmis = EepromImage(lower=lower, upper=upper)
    qsfp = EepromImage(lower=q_lower, upper=q_upper)
    return [cmis] * 4 + [qsfp] * 2 + [sff8472_internal()] * 2


def fleetmon_cycle(plugin: OpticsPlugin, imgs: list[EepromImage]) -> Collection:
    col = plugin.collect()
    for i, img in enumerate(imgs):
        module_samples(col, f"eth{i}", decode(img))
    return col


def bench_fleetmon(root: Path, cycles: int) -> dict[str, float]:
    plugin = OpticsPlugin(PluginContext(node="bench", sysfs_root=root), OpticsConfig(eeprom="off"))
    plugin.discover()
    imgs = images()
    col = fleetmon_cycle(plugin, imgs)  # warm caches (dynamic metric families)
    ib_series = len(plugin.collect().samples)
    total_series = len(col.samples)
    t0 = time.process_time()
    for _ in range(cycles):
        plugin.collect()
    ib_cpu = (time.process_time() - t0) / cycles
    t0 = time.process_time()
    for _ in range(cycles):
        fleetmon_cycle(plugin, imgs)
    full_cpu = (time.process_time() - t0) / cycles
    t0 = time.process_time()
    for _ in range(cycles):
        to_prom(0.0, plugin.collect(), {"node": "bench"})
    prom_cpu = (time.process_time() - t0) / cycles
    t0 = time.process_time()
    for _ in range(cycles):
        for img in imgs:
            module_samples(Collection(), "eth0", decode(img))
    eeprom_cpu = (time.process_time() - t0) / cycles
    plugin.close()
    return {"ib_cpu": ib_cpu, "ib_series": ib_series, "full_cpu": full_cpu, "full_series": total_series,
            "prom_cpu": prom_cpu, "eeprom_cpu": eeprom_cpu}


def bench_node_exporter(root: Path, cycles: int) -> dict[str, float] | None:
    if not os.access(NODE_EXPORTER, os.X_OK):
        print(f"node_exporter: {NODE_EXPORTER} not installed (Debian prometheus-node-exporter); no baseline")
        return None
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with tempfile.TemporaryDirectory() as tmp:
        proc = Process([NODE_EXPORTER, f"--path.sysfs={root}", f"--web.listen-address=127.0.0.1:{port}",
                        "--collector.disable-defaults", "--collector.infiniband", "--collector.netclass"],
                       Path(tmp) / "node_exporter.log")
        try:
            wait_for_http(url, proc=proc.proc)
            body = urllib.request.urlopen(url, timeout=10).read().decode()  # warm up
            own = ("go_", "process_", "promhttp_")
            series = sum(1 for ln in body.splitlines() if ln and not ln.startswith("#") and not ln.startswith(own))
            before = proc_cpu(proc.pid)
            for _ in range(cycles):
                urllib.request.urlopen(url, timeout=10).read()
            cpu = (proc_cpu(proc.pid) - before) / cycles
        finally:
            proc.stop()
    return {"cpu": cpu, "series": series}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--tree", default="h100-infiniband")
    args = ap.parse_args()
    root = FIXTURES / "sysfs" / args.tree / "sys"
    if not root.is_dir():
        print(f"fixture tree {root} not found", file=sys.stderr)
        return 2
    ours = bench_fleetmon(root, args.cycles)
    print(f"tree: {args.tree} ({root}), {args.cycles} cycles, python {sys.version.split()[0]}")
    print(f"fleetmon optics, IB ports only:       {ours['ib_cpu'] * 1e3:7.3f} ms CPU/cycle, "
          f"{int(ours['ib_series'])} series, {ours['ib_cpu'] / ours['ib_series'] * 1e6:6.2f} us/series")
    print(f"fleetmon optics, IB + prom text:      {ours['prom_cpu'] * 1e3:7.3f} ms CPU/cycle")
    print(f"8 EEPROM images decoded + emitted:    {ours['eeprom_cpu'] * 1e3:7.3f} ms CPU/cycle")
    print(f"fleetmon optics, IB + 8 modules:      {ours['full_cpu'] * 1e3:7.3f} ms CPU/cycle, "
          f"{int(ours['full_series'])} series, {ours['full_cpu'] / ours['full_series'] * 1e6:6.2f} us/series")
    ne = bench_node_exporter(root, args.cycles)
    if ne is None:
        return 0
    print(f"node_exporter {shutil.which(NODE_EXPORTER) or NODE_EXPORTER} (infiniband+netclass), scrape: "
          f"{ne['cpu'] * 1e3:7.3f} ms CPU/scrape, {int(ne['series'])} series, "
          f"{ne['cpu'] / ne['series'] * 1e6:6.2f} us/series")
    print(f"ratio CPU/cycle   fleetmon IB / node_exporter:         {ours['ib_cpu'] / ne['cpu']:.2f}")
    print(f"ratio CPU/cycle   fleetmon IB+prom / node_exporter:    {ours['prom_cpu'] / ne['cpu']:.2f}")
    print(f"ratio CPU/series  fleetmon IB / node_exporter:         "
          f"{(ours['ib_cpu'] / ours['ib_series']) / (ne['cpu'] / ne['series']):.2f}")
    print(f"ratio CPU/series  fleetmon IB+prom / node_exporter:    "
          f"{(ours['prom_cpu'] / ours['ib_series']) / (ne['cpu'] / ne['series']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
