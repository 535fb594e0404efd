"""``fleetmon status`` / ``fleetmon top`` against a real collector with a real agent."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from fleetmon.status import Snapshot, render
from tests.fleet import CollectorProc, lost_gpu_pair
from tests.services import free_port, wait_until

ENV = {**os.environ, "COLUMNS": "160"}


# GPULost of the shipped pack waits 30 s; the same condition without ``for`` fires at once.
RULES = """
groups:
  - name: status-test
    rules:
      - alert: GPULostNow
        expr: gpu_up == 0
        labels: {severity: critical}
        annotations: {summary: "GPU {{ $labels.gpu }} on {{ $labels.node }} is lost"}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProc]:
    """Two nodes; on n1 an XID 79 took GPU 1 off the bus."""
    tmp = tmp_path_factory.mktemp("status")
    (tmp / "rules.yml").write_text(RULES)
    collector = CollectorProc(tmp, rules=[tmp / "rules.yml"]).start()
    agents = lost_gpu_pair(tmp, collector)
    try:
        for a in agents:
            a.start()
        wait_until(lambda: any(a["labels"].get("alertname") == "GPULostNow" and a["state"] == "firing"
                               for a in collector.get("/api/v1/alerts")), 30, "the alert to fire")
        wait_until(lambda: collector.get("/api/v1/summary")["nodes_up"] == 2, 30, "both nodes up")
        # n1's XID batch leaves its agent at once, so the alert can be in before n2's first batch.
        wait_until(lambda: all(n["accelerators"] for n in collector.get("/api/v1/nodes")), 30, "both nodes' GPUs")
        yield collector
    finally:
        for a in agents:
            a.stop()
        collector.stop()


def _run(fleetmon_cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*fleetmon_cmd, *args], capture_output=True, text=True, timeout=60, env=ENV)


@pytest.mark.services
def test_status_shows_nodes_health_and_alerts(fleet: CollectorProc, fleetmon_cmd: list[str]) -> None:
    out = _run(fleetmon_cmd, "status", "--url", fleet.http)
    assert out.returncode == 1, out.stderr  # a node failed: non-zero for scripts and health checks
    lines = out.stdout.splitlines()
    assert f"fleetmon {fleet.http}  2/2 nodes up  1 failed  1 healthy" in lines[0]
    assert "1 firing" in lines[0]
    [n1] = [line for line in lines if line.startswith("n1 ")]
    [n2] = [line for line in lines if line.startswith("n2 ")]
    assert n1.split()[:2] == ["n1", "failed"] and n2.split()[:2] == ["n2", "healthy"]
    assert "cluster=test rack=r1" in n1
    # The collector's roll-up says why, and counts the accelerators by model.
    assert n1.split("  ")[-1].strip() == "GPU 1 down; critical alert GPULostNow firing"
    assert "1/2 NVIDIA H100 80GB HBM3 (simulated)" in n1 and "2/2 NVIDIA H100" in n2
    [alert] = [line for line in lines if line.startswith("firing ")]
    assert alert.split()[:5] == ["firing", "critical", "GPULostNow", "n1", "gpu=1"]
    assert alert.rstrip().endswith("GPU 1 on n1 is lost")


@pytest.mark.services
def test_status_json(fleet: CollectorProc, fleetmon_cmd: list[str]) -> None:
    out = _run(fleetmon_cmd, "status", "--url", fleet.http, "--json")
    data = json.loads(out.stdout)
    assert {n["node"]: n["health"] for n in data["nodes"]} == {"n1": "failed", "n2": "healthy"}
    [n1] = [n for n in data["nodes"] if n["node"] == "n1"]
    assert n1["reasons"] == ["GPU 1 down", "critical alert GPULostNow firing"]
    model = "NVIDIA H100 80GB HBM3 (simulated)"
    assert n1["accelerators"] == [{"vendor": "nvidia", "model": model, "up": 1, "total": 2}]
    assert data["summary"]["nodes_up"] == 2


@pytest.mark.services
def test_top_redraws_then_stops(fleet: CollectorProc, fleetmon_cmd: list[str]) -> None:
    out = _run(fleetmon_cmd, "top", "--url", fleet.http, "-n", "2", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    assert "GPULostNow" in out.stdout and "n2" in out.stdout


def test_collector_unreachable_exit_2(fleetmon_cmd: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = _run(fleetmon_cmd, "status", "--url", url)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(f"fleetmon status: {url}/api/v1/summary: ") and "--url or FLEETMON_URL" in out.stderr


def test_large_fleet_lists_only_unhealthy_nodes(tmp_path: Path) -> None:
    health = {7: "failed", 42: "degraded"}  # as the collector rolled it up
    nodes = [{"node": f"gpu-{i:04d}", "up": i != 7, "labels": {}, "samples": 10, "health": health.get(i, "healthy")}
             for i in range(500)]
    snap = Snapshot("http://c", {"nodes_up": 499, "nodes_total": 500}, nodes,
                    [{"state": "pending", "labels": {"alertname": "GPUOverTemperature", "node": "gpu-0042",
                                                     "severity": "critical", "gpu": "3"}, "active_at": None}])
    console = Console(width=120, file=(tmp_path / "out.txt").open("w"), color_system=None)
    console.print(render(snap))
    console.file.close()
    text = (tmp_path / "out.txt").read_text()
    listed = [line.split()[0] for line in text.splitlines() if line.startswith("gpu-")]
    assert listed == ["gpu-0007", "gpu-0042"]  # failed first, then degraded
    assert "498 more node(s) not listed, all healthy (--all lists them)" in text
