"""The demo's PDU overload and battery discharge, through the simulated node and the whole rule
pack (fleetmon's engine, fake clock): the facility alerts fire and resolve on schedule."""

from __future__ import annotations

import types

import pytest
import yaml

import agent.plugins.simulated.plugin as sim
from agent.plugin import PluginContext
from alerts.engine import AlertEngine
from alerts.model import AlertState
from alerts.rules import default_rule_files
from tests.services import REPO


def test_demo_faults_fire_and_resolve_the_facility_alerts(monkeypatch: pytest.MonkeyPatch) -> None:
    script = yaml.safe_load((REPO / "collector" / "demo" / "faults.yml").read_text())["faults"]
    facility = [f for f in script if f["kind"] in ("pdu_overload", "bess_discharge")]
    assert len(facility) == 2  # the demo scripts both
    clock = [1_764_370_000.0]
    monkeypatch.setattr(sim, "time", types.SimpleNamespace(time=lambda: clock[0]))
    p = sim.SimulatedPlugin(PluginContext(node="node-01"), sim.SimulatedConfig(gpus=2, bess=True, faults=facility))
    p.discover()
    engine = AlertEngine.from_files(default_rule_files())
    t0 = clock[0]
    changes: list[tuple[int, str, AlertState, str]] = []
    for step in range(0, 181):  # the demo's cadence: a collection and an evaluation every second
        now = clock[0] = t0 + step
        for s in p.collect().samples:
            if engine.wants(s.name):
                engine.ingest(s.name, {**s.labels, "node": "node-01"}, s.ts if s.ts is not None else now, s.value)
        for a in engine.evaluate(now):
            if a.labels["alertname"].startswith(("PDU", "BESS")) and a.state is not AlertState.PENDING:
                changes.append((step, a.labels["alertname"], a.state, a.labels.get("pdu") or a.labels.get("bess", "")))
    fired = {(name, state): t for t, name, state, _ in changes}
    # Phase 2 at 90 % from 20 s to 100 s; `for: 1m`.
    assert 79 <= fired["PDUPhaseLoadHigh", AlertState.FIRING] <= 82
    assert 100 <= fired["PDUPhaseLoadHigh", AlertState.RESOLVED] <= 102
    # SoC 0.8 falls 1.5 %/s from 15 s: under 0.2 at ~55 s, `for: 30s`; recharging from 100 s.
    assert 84 <= fired["BESSStateOfChargeLow", AlertState.FIRING] <= 88
    assert 100 <= fired["BESSStateOfChargeLow", AlertState.RESOLVED] <= 110
    assert {who for _, _, _, who in changes} == {"node-01-pdu", "node-01-bess"}
    assert len(changes) == 4  # nothing else in the facility pack stirred
