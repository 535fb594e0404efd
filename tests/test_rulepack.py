"""The default rule pack (alerts/rules/): its shape, its XID rules against the catalog, its
promtool-format unit tests (tests/rulepack/) under Debian's promtool and under `fleetmon rules
test`, and the example Alertmanager config's inhibition against a real Alertmanager."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import agent.plugins.simulated.plugin as sim
from agent.plugin import PluginContext
from alerts.engine import AlertEngine
from alerts.model import Alert, AlertState
from alerts.notifiers import AlertmanagerConfig, AlertmanagerNotifier
from alerts.rules import default_rule_files
from alerts.rules.xid import render
from tests.services import REPO, SHARED, Process, free_port, require_binary, wait_for_http

RULEPACK_TESTS = sorted((REPO / "tests" / "rulepack").glob("*.yml"))
SEVERITIES = {"critical", "warning", "info"}


def load_rules() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in default_rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append((path, rule))
    return out


def test_pack_files() -> None:
    assert [p.name for p in default_rule_files()] == ["facility.yml", "gpu.yml", "gpu_xid.yml", "node.yml",
                                                      "optics.yml", "power.yml"]


def test_every_alert_has_severity_summary_description_and_runbook_action() -> None:
    rules = load_rules()
    recording = [rule for _, rule in rules if "record" in rule]
    # Recording rules only in facility.yml (rack/IT power, PUE): level:metric:operation names.
    assert [r["record"] for r in recording] == ["cluster_rack:pdu_power_watts:sum", "cluster:it_power_watts:sum",
                                                "cluster:pue:ratio"]
    rules = [(path, rule) for path, rule in rules if "record" not in rule]
    assert len(rules) == 74
    for path, rule in rules:
        where = f"{path.name}: {rule.get('alert')}"
        assert "alert" in rule, where
        assert rule["labels"]["severity"] in SEVERITIES, where
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook_action"):
            assert len(annotations.get(key, "")) > 20, f"{where}: {key}"
        assert "interval" not in rule, where


def test_xid_rules_are_generated_from_the_catalog() -> None:
    catalog = (SHARED / "xid-catalog.csv").read_text()
    generated = render(catalog)
    assert (REPO / "alerts" / "rules" / "gpu_xid.yml").read_text() == generated, (
        "alerts/rules/gpu_xid.yml is stale: run python -m alerts.rules.xid ../shared/xid-catalog.csv")
    rules = yaml.safe_load(generated)["groups"][0]["rules"]
    by_xid = {r["expr"].split('"')[1]: r for r in rules if r["alert"] != "GPUXidUncatalogued"}
    assert len(by_xid) == 27
    assert by_xid["79"]["alert"] == "GPUXidCritical"
    assert by_xid["79"]["labels"] == {"severity": "critical", "xid_name": "GPU has fallen off the bus",
                                      "xid_action": "reboot_then_inspect"}
    assert by_xid["13"]["alert"] == "GPUXidWarning"
    assert by_xid["45"]["alert"] == "GPUXidInfo"
    assert by_xid["154"]["labels"]["severity"] == "info"
    assert sum(1 for r in by_xid.values() if r["alert"] == "GPUXidCritical") == 10


def test_every_alert_is_unit_tested() -> None:
    tested = set()
    for path in RULEPACK_TESTS:
        for t in yaml.safe_load(path.read_text())["tests"]:
            for case in t.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    tested.add(case["alertname"])
    names = {rule["alert"] for _, rule in load_rules() if "alert" in rule}
    assert names - tested == set()


@pytest.mark.services
def test_promtool_checks_the_pack() -> None:
    promtool = require_binary("promtool")
    proc = subprocess.run([promtool, "check", "rules", *map(str, default_rule_files())],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.services
def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    proc = subprocess.run([promtool, "test", "rules", *map(str, RULEPACK_TESTS)],
                          capture_output=True, text=True, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULEPACK_TESTS) == 6


def test_fleetmon_rules_test_passes() -> None:
    if importlib.util.find_spec("alerts.cli") is None or importlib.util.find_spec("alerts.unittest") is None:
        pytest.fail("`fleetmon rules test` is not available yet (alerts/cli.py, alerts/unittest.py missing): "
                    "the rule pack's unit tests could not run under fleetmon's own engine")
    proc = subprocess.run([sys.executable, "-m", "fleetmon", "rules", "test", *map(str, RULEPACK_TESTS)],
                          capture_output=True, text=True, check=False, cwd=REPO, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULEPACK_TESTS)
    check = subprocess.run([sys.executable, "-m", "fleetmon", "rules", "check", *map(str, default_rule_files())],
                           capture_output=True, text=True, check=False, cwd=REPO, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("SUCCESS") == len(default_rule_files())


@pytest.mark.services
def test_example_alertmanager_config_inhibits_a_silent_nodes_device_alerts(tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    config = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
    check = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    binary = require_binary("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", "alertmanager")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = Process([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], tmp_path / "am.log")

    def alert(name: str, node: str, severity: str, **labels: str) -> Alert:
        return Alert(labels={"alertname": name, "node": node, "severity": severity, **labels},
                     annotations={"summary": name}, state=AlertState.FIRING, active_at=time.time() - 60,
                     value=1.0, fired_at=time.time() - 60)

    async def scenario() -> dict[tuple[str, str], str]:
        notifier = AlertmanagerNotifier(AlertmanagerConfig(urls=[url]))
        await notifier.start()
        notifier.send_alerts([
            alert("NodeAgentSilent", "n1", "critical"),
            alert("GPUOverTemperature", "n1", "critical", gpu="0"),
            alert("OpticalRxPowerLow", "n1", "warning", interface="eth0", lane="1"),
            alert("GPUXidInfo", "n1", "info", gpu="0", xid="154"),
            alert("GPUOverTemperature", "n2", "critical", gpu="0"),
        ])
        states: dict[tuple[str, str], str] = {}
        async with httpx.AsyncClient(timeout=5) as client:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                got = (await client.get(f"{url}/api/v2/alerts")).json()
                states = {(a["labels"]["alertname"], a["labels"]["node"]): a["status"]["state"] for a in got}
                if len(states) == 5 and "unprocessed" not in states.values():
                    break
                await asyncio.sleep(0.1)
        await notifier.aclose()
        return states

    try:
        wait_for_http(f"{url}/-/ready", proc=proc.proc, ok=lambda c: c == 200)
        states = asyncio.run(scenario())
    finally:
        proc.stop()
    assert states == {
        ("NodeAgentSilent", "n1"): "active",
        ("GPUOverTemperature", "n1"): "suppressed",  # inhibited: its node is silent
        ("OpticalRxPowerLow", "n1"): "suppressed",
        ("GPUXidInfo", "n1"): "active",  # info is not inhibited
        ("GPUOverTemperature", "n2"): "active",  # another node
    }


def run_simulated_fleet(monkeypatch: pytest.MonkeyPatch, n_nodes: int, seconds: int,
                        faults: dict[int, list[dict[str, Any]]] | None = None, every: int = 10,
                        ) -> tuple[list[tuple[float, AlertState, dict[str, str]]], int, Any]:
    """Feed ``n_nodes`` simulated nodes (agent/plugins/simulated, on a fake clock, one collection
    every ``every`` seconds) into an AlertEngine with the whole pack; return every state change as
    (seconds since start, new state, labels), snapshotted when it happened (the engine updates
    its Alert objects in place)."""
    clock = [1_764_370_000.0]
    monkeypatch.setattr(sim, "time", types.SimpleNamespace(time=lambda: clock[0]))
    plugins = []
    for i in range(n_nodes):
        node = f"gpu-b-{i:03d}"
        p = sim.SimulatedPlugin(PluginContext(node=node), sim.SimulatedConfig(faults=(faults or {}).get(i, [])))
        p.discover()
        plugins.append((node, p))
    engine = AlertEngine.from_files(default_rule_files())
    t0 = clock[0]
    changed: list[tuple[float, AlertState, dict[str, str]]] = []
    ingested = 0
    for step in range(0, seconds + 1, every):
        now = clock[0] = t0 + step
        for node, p in plugins:
            engine.ingest("fleetmon_node_up", {"node": node}, now, 1.0)
            engine.ingest("fleetmon_node_clock_skew_seconds", {"node": node}, now, 0.01)
            for s in p.collect().samples:
                if engine.wants(s.name):
                    engine.ingest(s.name, {**s.labels, "node": node}, s.ts if s.ts is not None else now, s.value)
                    ingested += 1
        changed += [(step, a.state, dict(a.labels)) for a in engine.evaluate(now)]
    return changed, ingested, engine


@pytest.mark.slow
def test_healthy_simulated_fleet_raises_no_alert(monkeypatch: pytest.MonkeyPatch) -> None:
    """20 healthy simulated nodes, 10 simulated minutes, the whole pack: not even a pending alert."""
    changed, ingested, engine = run_simulated_fleet(monkeypatch, 20, 600, every=15)
    assert ingested > 40_000  # the fleet really fed the rules (GPU, IB, optics, PSU, UPS series)
    assert changed == [] and engine.active() == []


@pytest.mark.slow
def test_each_scripted_fault_raises_its_alert(monkeypatch: pytest.MonkeyPatch) -> None:
    faults: dict[int, list[dict[str, Any]]] = {
        1: [{"at": "60s", "for": "4m", "kind": "gpu_temperature", "gpu": 3, "value": 92}],
        2: [{"at": "60s", "for": "2m", "kind": "xid", "gpu": 5, "xid": 79}],
        3: [{"at": "60s", "kind": "psu_fail", "psu": 1}],
        4: [{"at": "60s", "kind": "rx_power", "port": 1, "lane": 2, "value": -13.5}],
        5: [{"at": "60s", "kind": "link_down", "port": 0}],
        6: [{"at": "60s", "kind": "ecc_uncorrectable", "gpu": 1}],
        7: [{"at": "60s", "kind": "ups_on_battery"}],
    }
    changed, _, _ = run_simulated_fleet(monkeypatch, 8, 420, faults)
    fired = [(t, labels["alertname"], labels["node"], labels.get("gpu") or labels.get("psu")
              or labels.get("interface") or labels.get("device") or "")
             for t, state, labels in changed if state is AlertState.FIRING]
    # `for: 30s` fires at the third evaluation past the fault (10 s cadence), `for: 1m` at the
    # seventh; rules without `for` at once. Every fault kind raises its alert, on its node only.
    assert fired == [
        (60, "GPUUncorrectableECC", "gpu-b-006", "1"),
        (60, "GPUXidCritical", "gpu-b-002", "5"),
        (60, "IBLinkDowned", "gpu-b-005", "mlx5_0"),
        (90, "GPULost", "gpu-b-002", "5"),
        *[(90, "OpticalRxLossOfSignal", "gpu-b-005", "ibp0s0")] * 4,  # all four lanes dark
        (90, "UPSOnBattery", "gpu-b-007", ""),
        (120, "GPUOverTemperature", "gpu-b-001", "3"),
        (120, "GPUMemoryOverTemperature", "gpu-b-001", "3"),
        (120, "GPUThermalSlowdown", "gpu-b-001", "3"),
        (120, "OpticalRxPowerLowAlarm", "gpu-b-004", "ibp1s0"),  # -13.5 dBm on lane 2
        (120, "PSUDown", "gpu-b-003", "1"),
        (120, "PSURedundancyLost", "gpu-b-003", ""),
    ]
    resolved = [(t, labels["alertname"]) for t, state, labels in changed if state is AlertState.RESOLVED]
    # GPU 5 is back at 180 s; the 4-minute heat ends at 300 s.
    assert resolved == [(180, "GPULost"), (300, "GPUOverTemperature"), (300, "GPUMemoryOverTemperature"),
                        (300, "GPUThermalSlowdown")]
