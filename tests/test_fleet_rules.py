"""Fleet-wide rules (alerts/rules/fleet/): kept out of the collectors' pack, checked and unit-tested
under Debian's promtool, accepted by vmalert, and one of them firing and resolving for real:
vmalert over VictoriaMetrics (fed by fleetmon's remote-write sink) into Alertmanager."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.rules import default_rule_files
from alerts.rules.fleet import fleet_rule_files
from collector.alerting_config import expand_rule_paths
from collector.storage.base import Point
from fleetmon_common.settings import Problems
from tests.influx_servers import remote_write, start_victoria_metrics, start_vmalert
from tests.services import REPO, free_port, require_binary, wait_until
from tests.test_notifiers_alertmanager import start_alertmanager

FLEET_TESTS = REPO / "tests" / "rulepack" / "fleet" / "fleet_test.yml"


def _rules() -> list[dict[str, Any]]:
    return [rule for path in fleet_rule_files() for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def test_fleet_rules_are_not_in_the_collectors_pack() -> None:
    assert [p.name for p in fleet_rule_files()] == ["fleet.yml"]
    assert not set(fleet_rule_files()) & set(default_rule_files())
    problems = Problems()
    pack = expand_rule_paths([Path("builtin:*.yml")], REPO, problems)  # what a collector config loads
    assert pack and not problems.lines
    assert not {p.resolve() for p in pack} & {p.resolve() for p in fleet_rule_files()}
    fleet_names = {rule["alert"] for rule in _rules()}
    pack_names = {rule.get("alert") for path in default_rule_files()
                  for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]}
    assert not fleet_names & pack_names


def test_every_fleet_alert_is_documented_and_unit_tested() -> None:
    rules = _rules()
    assert {rule["alert"] for rule in rules} == {
        "ClusterGPUsLost", "GPUModelXidRateOutlier", "IBFabricErrorsWidespread", "IBFabricLinkFlapStorm",
        "RackPowerOverBudget", "RackPowerNearBudget"}
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        for key in ("summary", "description", "runbook_action"):
            assert len(rule["annotations"].get(key, "")) > 20, f"{rule['alert']}: {key}"
    fired = {case["alertname"] for t in yaml.safe_load(FLEET_TESTS.read_text())["tests"]
             for case in t["alert_rule_test"] if case.get("exp_alerts")}
    assert fired == {rule["alert"] for rule in rules}


@pytest.mark.services
def test_promtool_checks_and_unit_tests_pass() -> None:
    promtool = require_binary("promtool", "/usr/bin/promtool")
    check = subprocess.run([promtool, "check", "rules", *map(str, fleet_rule_files())],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([promtool, "test", "rules", FLEET_TESTS.name], cwd=FLEET_TESTS.parent,
                          capture_output=True, text=True, timeout=120)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


@pytest.mark.services
def test_vmalert_accepts_the_files() -> None:
    vmalert = require_binary("vmalert", "/usr/bin/vmalert")
    # -dryRun parses the files and validates every expression (MetricsQL) and template.
    dry = subprocess.run([vmalert, "-dryRun", *(f"-rule={p}" for p in fleet_rule_files())],
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stdout + dry.stderr


# --- for real: vmalert over VictoriaMetrics into Alertmanager --------------------------------------

@dataclass
class FleetTier:
    vm: str
    alertmanager: str
    vmalert: str


@pytest.fixture
def fleet_tier(tmp_path: Path) -> Iterator[FleetTier]:
    """VictoriaMetrics, Alertmanager and vmalert running the shipped fleet rules with every ``for``
    at 0s (the expressions, labels and annotations are the shipped ones; the waiting is what
    promtool's unit tests cover)."""
    rules = tmp_path / "fleet.yml"
    doc = yaml.safe_load(fleet_rule_files()[0].read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    rules.write_text(yaml.safe_dump(doc))
    procs = []
    try:
        vm, vm_url = start_victoria_metrics(tmp_path)
        procs.append(vm)
        am_port = free_port()
        procs.append(start_alertmanager(tmp_path / "am", am_port))
        am_url = f"http://127.0.0.1:{am_port}"
        vmalert, vmalert_url = start_vmalert(tmp_path, [rules], vm_url, [am_url], remote_write=vm_url,
                                             remote_read=vm_url)
        procs.append(vmalert)
        yield FleetTier(vm_url, am_url, vmalert_url)
    finally:
        for proc in reversed(procs):
            proc.stop()


def _am_alerts(url: str, name: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?filter=alertname%3D%22{name}%22", timeout=5) as resp:
        return list(json.loads(resp.read()))


def write_gpus(vm_url: str, cluster: str, up: list[int]) -> None:
    """One sample of gpu_up per GPU of ``cluster`` at now, through fleetmon's remote-write sink."""
    now = time.time_ns()
    remote_write(vm_url, [Point("gpu", "up", (("cluster", cluster), ("gpu", str(i % 8)), ("model", "H100"),
                                              ("node", f"{cluster}-n{i // 8}")), float(v), now)
                          for i, v in enumerate(up)])


@pytest.mark.services
def test_a_fleet_rule_fires_and_resolves_through_vmalert(fleet_tier: FleetTier) -> None:
    write_gpus(fleet_tier.vm, "c9", [1] * 13 + [0] * 3)  # 3 of 16 GPUs down
    firing = wait_until(lambda: _am_alerts(fleet_tier.alertmanager, "ClusterGPUsLost"), 30,
                        "ClusterGPUsLost in Alertmanager")
    assert len(firing) == 1
    alert = firing[0]
    assert alert["labels"]["cluster"] == "c9" and alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == "18.75% of the GPUs of cluster c9 are lost"
    assert alert["status"]["state"] == "active"
    write_gpus(fleet_tier.vm, "c9", [1] * 16)
    wait_until(lambda: not _am_alerts(fleet_tier.alertmanager, "ClusterGPUsLost"), 30, "ClusterGPUsLost to resolve")
