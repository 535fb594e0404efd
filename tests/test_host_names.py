"""Host metrics: names that never collide with node_exporter's, and no invented CPU figure."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from agent.plugin import PluginContext
from agent.plugins.host.plugin import CPU_USAGE, HostConfig, HostPlugin, cpu_busy_ratio
from tests.services import free_port, require_binary, running, wait_for_http


def test_cpu_busy_ratio_from_two_readings() -> None:
    prev = {"user": 100.0, "nice": 0.0, "system": 50.0, "idle": 800.0, "iowait": 50.0, "guest": 10.0}
    cur = {"user": 130.0, "nice": 0.0, "system": 60.0, "idle": 850.0, "iowait": 60.0, "guest": 30.0}
    # busy 40 of 100 s; guest time (already inside user) is not counted twice
    assert cpu_busy_ratio(prev, cur) == pytest.approx(0.4)


@pytest.mark.parametrize("cur", [
    {"user": 100.0, "idle": 800.0},   # no time passed
    {"user": 90.0, "idle": 700.0},    # counters went backwards (suspended VM, unplugged CPU)
])
def test_cpu_busy_ratio_unmeasurable_is_none(cur: dict[str, float]) -> None:
    assert cpu_busy_ratio({"user": 100.0, "idle": 800.0}, cur) is None


def test_first_collection_omits_cpu_utilization() -> None:
    plugin = HostPlugin(PluginContext(node="t"), HostConfig())
    plugin.discover()
    first = plugin.collect()
    assert "host_memory_total_bytes" in {s.name for s in first.samples}
    assert CPU_USAGE.name not in {s.name for s in first.samples}, "nothing measured yet: must be omitted, not 0"
    deadline = time.monotonic() + 10
    values: list[float] = []
    while not values and time.monotonic() < deadline:  # until the kernel's CPU clock ticked
        sum(i * i for i in range(20_000))
        values = [s.value for s in plugin.collect().samples if s.name == CPU_USAGE.name]
    assert values and 0.0 <= values[0] <= 1.0
    plugin.close()


def test_no_name_in_the_node_exporter_namespace() -> None:
    plugin = HostPlugin(PluginContext(node="t"), HostConfig())
    plugin.discover()
    plugin.collect()
    names = {s.name for s in plugin.collect().samples}
    assert names and not [n for n in names if n.startswith("node_")]


def _families(text: str) -> dict[str, str]:
    """metric family -> HELP text."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^# HELP (\S+) (.*)$", text, re.M)}


@pytest.mark.services
def test_once_output_in_node_exporter_textfile_dir(tmp_path: Path, fleetmon_cmd: list[str],
                                                   fixtures_dir: Path) -> None:
    exporter = require_binary("prometheus-node-exporter", "node_exporter")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    runs = {
        # the live host (the host plugin), and the captured node_exporter sysfs tree (optics, power)
        "host": ["--plugins", "host", "--node", "tf-host"],
        "fixture": ["--plugins", "optics,power", "--node", "tf-fixture",
                    "--sysfs-root", str(fixtures_dir / "sysfs" / "node-exporter" / "sys")],
    }
    ours: dict[str, str] = {}
    for name, extra in runs.items():
        out = subprocess.run([*fleetmon_cmd, "agent", "--once", "--format", "prom", *extra],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        (textfiles / f"fleetmon-{name}.prom").write_text(out.stdout)
        ours.update(_families(out.stdout))
    assert "host_load1" in ours and "rapl_energy_joules_total" in ours
    port = free_port()
    argv = [exporter, f"--web.listen-address=127.0.0.1:{port}", f"--collector.textfile.directory={textfiles}",
            "--no-collector.systemd"]  # systemd's collector needs a running systemd, not what we test
    with running(argv, tmp_path / "node_exporter.log") as proc:
        wait_for_http(f"http://127.0.0.1:{port}/metrics", proc=proc.proc, ok=lambda code: code == 200)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            body = resp.read().decode()
        log = proc.log_text()
    assert "error gathering metrics" not in log, log[-3000:]
    assert re.search(r"^node_textfile_scrape_error 0$", body, re.M), "node_exporter could not parse our output"
    scraped = _families(body)
    # every family we wrote is served with our help text: none was shadowed by node_exporter's own
    assert {name: scraped.get(name) for name in ours} == ours
    assert re.search(r'^host_memory_total_bytes\{node="tf-host"\} \d', body, re.M)
