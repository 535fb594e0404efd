"""Issue 14's end-to-end test: one fleet across three collectors.

Three collectors (mutual TLS, node rules, a remote-write sink and the query API of one
VictoriaMetrics, one Alertmanager), vmalert running a shipped fleet rule over VictoriaMetrics
into the same Alertmanager, and 20 agents (real agents, co-hosted in one process:
tests/agent_pack.py). A GPU of one node is hot and ``GPUOverTemperature`` fires; its collector
is killed with SIGKILL:

- the node's agent fails over, the collector it reaches adopts the node (its windows and alert
  state from VictoriaMetrics) and fires the alert on, under the same labels: Alertmanager, read
  every 0.2 s all along, holds it firing throughout, and its receiver gets one firing
  notification, no resolve, no second firing;
- a fleet rule (ClusterGPUsLost, over a node whose GPU falls off the bus for a while) fires and
  resolves through vmalert;
- the killed collector restarts and every agent that prefers it comes back to it; the collector
  they leave hands the hot node's alert over without a resolve, and no ``NodeAgentSilent``
  starts for the nodes that moved;
- the hot node's history, read back through the query API, is whole: every sample its agent
  wrote, once (VictoriaMetrics runs with ``-dedup.minScrapeInterval=1ms``, so a batch stored by
  the dead collector and replayed to the next one is kept once).

Rules have short ``for`` durations to keep it lean. Timings are ``bench/bench_failover.py``'s.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.transport import rendezvous_order
from alerts.rules.fleet import fleet_rule_files
from collector.promquery import PromQueryClient, QueryConfig
from tests.agent_pack import AgentPack
from tests.alert_tier import AlertTier, alert_tier, node_rules, watching
from tests.fleet import AgentProc, CollectorProc
from tests.influx_servers import start_victoria_metrics, start_vmalert
from tests.services import REPO, Process, wait_until

pytestmark = pytest.mark.services

HOT, LOST = "n00", "n01"
NODES = [f"n{i:02d}" for i in range(20)]
SIM = {"interval": 0.5, "gpus": 1, "ib_ports": 0, "psus": 0}
FAILBACK = {"check_interval": 0.5, "healthy_checks": 2, "spread": 2.0}


def plugins(node: str) -> dict[str, Any]:
    if node == HOT:
        return {"simulated": {**SIM, "faults": [{"at": "0s", "kind": "gpu_temperature", "gpu": 0, "value": 92}]}}
    if node == LOST:  # two GPUs, one off the bus from 4 s to 12 s after start: half of cluster c9 lost
        return {"simulated": {**SIM, "gpus": 2, "faults": [{"at": "4s", "for": "8s", "kind": "xid", "gpu": 1,
                                                             "xid": 79}]}}
    return {"simulated": SIM}


def connected(col: CollectorProc) -> set[str]:
    try:
        return {n["node"] for n in col.get("/api/v1/nodes") if n["connected"]}
    except OSError:
        return set()


def hot_alert(col: CollectorProc, state: str | None = None) -> dict[str, Any]:
    """The collector's GPUOverTemperature of the hot node (in ``state`` when given); {} when none."""
    try:
        got = [a for a in col.get("/api/v1/alerts") if a["labels"].get("alertname") == "GPUOverTemperature"
               and a["labels"].get("node") == HOT and (state is None or a["state"] == state)]
    except OSError:
        return {}
    return dict(got[0]) if got else {}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, Any]]:
    procs: list[Process] = []
    collectors: list[CollectorProc] = []
    pack: AgentPack | None = None
    with alert_tier(tmp_path) as tier:
        try:
            vm_proc, vm = start_victoria_metrics(tmp_path, extra=["-dedup.minScrapeInterval=1ms"])
            procs.append(vm_proc)
            fleet_rules = tmp_path / "fleet-rules.yml"
            doc = yaml.safe_load(fleet_rule_files()[0].read_text())
            rule = next(r for g in doc["groups"] for r in g["rules"] if r.get("alert") == "ClusterGPUsLost")
            group = {"name": "fleet-gpus", "rules": [{**rule, "for": "0s"}]}
            fleet_rules.write_text(yaml.safe_dump({"groups": [group]}))
            procs.append(start_vmalert(tmp_path, [fleet_rules], vm, [tier.url], remote_write=vm, remote_read=vm)[0])
            rules = tmp_path / "node-rules.yml"
            rules.write_text(node_rules("4s", silent_for="15s"))
            extra = {"sinks": {"vm": {"type": "remote_write", "url": f"{vm}/api/v1/write"}}, "query": {"url": vm},
                     "node_timeout": 8, "alerting": {"notifiers": {"alertmanager": {"urls": [tier.url]}},
                                                     "for_grace_period": "1s"}}
            collectors = [CollectorProc(tmp_path, rules=[rules], extra=extra, name=f"c{i}") for i in range(3)]
            addrs = [c.addr for c in collectors]
            agents = [AgentProc(tmp_path, node, addrs, plugins=plugins(node),
                                extra={"failback": FAILBACK, "log_level": "warning",
                                       **({"labels": {"cluster": "c9", "rack": "r9"}} if node == LOST else {})})
                      for node in NODES]
            for c in collectors:
                c.start()
            pack = AgentPack(tmp_path, agents).start()
            yield {"tier": tier, "vm": vm, "collectors": collectors, "agents": agents, "pack": pack, "tmp": tmp_path}
        finally:
            if pack is not None:
                pack.stop()
            for c in collectors:
                c.stop()
            for p in reversed(procs):
                p.stop()


def test_one_fleet_across_three_collectors(fleet: dict[str, Any]) -> None:
    tier: AlertTier = fleet["tier"]
    collectors: list[CollectorProc] = fleet["collectors"]
    by_addr = {c.addr: c for c in collectors}
    preferred = {n: by_addr[rendezvous_order(n, list(by_addr))[0]] for n in NODES}
    dead = preferred[HOT]
    dead_nodes = {n for n, c in preferred.items() if c is dead}
    others = [c for c in collectors if c is not dead]

    def on_preferred() -> bool:
        return all(connected(c) >= {n for n, p in preferred.items() if p is c} for c in collectors)

    wait_until(on_preferred, 60, "every agent to stream to its preferred collector")
    before = wait_until(lambda: hot_alert(dead, "firing"), 60, "GPUOverTemperature to fire on the hot node")
    wait_until(lambda: tier.alerts("GPUOverTemperature"), 30, "the alert in Alertmanager")
    # Its collector's record of it firing is in the shared TSDB (ALERTS, written at every
    # evaluation): the next collector restores it from there.
    wait_until(lambda: raw(fleet["vm"], f'ALERTS{{alertstate="firing", node="{HOT}"}}', 60), 30,
               "the firing alert's state in VictoriaMetrics")

    with watching(tier, "GPUOverTemperature", {"node": HOT, "gpu": "0"}) as watch:
        dead.kill()
        # The hot node fails over and its new collector takes the alert over, restored.
        adopter = wait_until(lambda: [c for c in others if HOT in connected(c)], 30,
                             "the hot node to reach another collector")[0]
        taken = wait_until(lambda: hot_alert(adopter, "firing"), 30, "the new collector to fire the alert on")
        assert taken["active_at"] == int(before["active_at"]), "the alert's timer started over"
        assert taken["labels"] == before["labels"]

        # The killed collector comes back; its agents return to it, and the hot node's alert
        # with them: handed over by the collector they leave, restored by this one.
        dead.start()
        wait_until(lambda: connected(dead) >= dead_nodes and not any(connected(c) & dead_nodes for c in others),
                   60, "the agents to return to their preferred collector")
        back = wait_until(lambda: hot_alert(dead, "firing"), 30, "the restarted collector to fire the alert on")
        assert back["active_at"] == int(before["active_at"])
        wait_until(lambda: not hot_alert(adopter), 30, "the collector the node left to hand its alert over")
        assert HOT not in {n["node"] for n in adopter.get("/api/v1/nodes")}

        # A fleet rule fired and resolves through vmalert (the lost GPU is back 12 s in).
        wait_until(lambda: [s for s, _ in tier.notifications("ClusterGPUsLost")][:1] == ["firing"], 60,
                   "ClusterGPUsLost to fire through vmalert")
        wait_until(lambda: "resolved" in [s for s, _ in tier.notifications("ClusterGPUsLost")], 60,
                   "ClusterGPUsLost to resolve")

    assert watch.readings and not watch.errors
    assert not watch.gaps(), f"Alertmanager did not hold the alert firing throughout: {watch.gaps()[:5]}"
    hot = [s for s, labels in tier.notifications("GPUOverTemperature") if labels.get("node") == HOT]
    assert hot == ["firing"], f"notifications for the hot node's alert: {hot}"
    assert tier.notifications("NodeAgentSilent") == []

    # The hot node's history through the query API: every sample its agent wrote, once.
    agent = next(a for a in fleet["agents"] if a.node == HOT)
    rows = [r for r in agent.audit_rows() if r["name"] == "gpu_temperature_celsius"]
    sent = sorted(r["ts_ms"] for r in rows)
    span = time.time() - sent[0] / 1000 + 60

    def whole() -> list[int]:  # read through a collector the node never streamed to
        got = query_history(next(c for c in others if c is not adopter), span)
        return got if set(got) >= set(sent) else []

    history = wait_until(whole, 60, "the hot node's whole history in VictoriaMetrics")
    assert len(history) == len(set(history)), "a sample is there twice"
    assert sorted(set(history) & set(sent)) == sent


def raw(vm: str, selector: str, since: float) -> list[int]:
    """The sample times (ms) of ``selector`` over the last ``since`` seconds, through the query API."""
    async def read() -> list[int]:
        client = PromQueryClient(QueryConfig(url=vm))
        try:
            got = await client.raw(selector, since, time.time())
        finally:
            await client.aclose()
        return [t for s in got for t in s.ts_ms]

    return asyncio.run(read())


def query_history(col: CollectorProc, since: float) -> list[int]:
    """The hot GPU's stored temperature samples (ms), as ``fleetmon query`` reads them through a
    collector (which reads VictoriaMetrics' query API)."""
    out = subprocess.run([sys.executable, "-m", "fleetmon", "query", "--url", col.http, "--format", "json",
                          f'gpu_temperature_celsius{{node="{HOT}", gpu="0"}}[{since:.0f}s]'],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return [round(float(t) * 1000) for line in out.stdout.splitlines() for t, _v in json.loads(line)["values"]]
