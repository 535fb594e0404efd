"""The whole alert path with real processes and servers: a simulated agent's scripted fault
streams to a collector, whose rules fire into a real Alertmanager and a real Mosquitto, and
resolve there when the fault clears."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import AgentProc, CollectorProc
from tests.services import free_port, wait_until
from tests.test_notifiers_alertmanager import start_alertmanager
from tests.test_notifiers_mqtt import Subscriber, start_mosquitto

RULES = Path(__file__).parent / "data" / "e2e_rules.yml"
pytestmark = [pytest.mark.slow, pytest.mark.services]


def am_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true&silenced=false&inhibited=false",
                                timeout=5) as resp:
        return [a for a in json.loads(resp.read()) if a["labels"].get("alertname") == "GPUHotE2E"]


def test_fault_reaches_alertmanager_and_mqtt_and_resolves(tmp_path: Path) -> None:
    am_port, mqtt_port = free_port(), free_port()
    am = start_alertmanager(tmp_path / "am", am_port)
    broker = start_mosquitto(tmp_path / "mqtt", mqtt_port)
    am_url = f"http://127.0.0.1:{am_port}"
    col = CollectorProc(tmp_path, rules=[RULES], extra={"alerting": {"notifiers": {
        "alertmanager": {"urls": [am_url], "resend": 5},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": "collector-test"},
    }, "resend_delay": 5}}).start()
    faults = [{"at": "4s", "for": "8s", "kind": "gpu_temperature", "gpu": 1, "value": 96}]
    agent = AgentProc(tmp_path, "n1", [col.addr], plugins={"simulated": {
        "interval": 0.5, "gpus": 2, "ib_ports": 1, "lanes": 2, "faults": faults}})

    async def scenario() -> None:
        async with Subscriber(mqtt_port, "fleetmon/v1/#") as sub:
            agent.start()
            online = await sub.wait_for("fleetmon/v1/nodes/n1/status", lambda p: p.get("online") is True
                                        or p.get("status") == "online", timeout=30)
            assert online
            firing = await sub.wait_for("fleetmon/v1/alerts/n1/GPUHotE2E", lambda p: p["state"] == "firing",
                                        timeout=30)
            assert [(a["labels"]["gpu"], a["value"]) for a in firing["alerts"]] == [("1", 96.0)]
            found = await asyncio.to_thread(wait_until, lambda: am_alerts(am_url), 15, "alert in Alertmanager")
            assert found[0]["labels"]["node"] == "n1" and found[0]["labels"]["gpu"] == "1"
            assert found[0]["labels"]["severity"] == "critical"
            assert found[0]["annotations"]["runbook_action"] == "check cooling"
            await sub.wait_for("fleetmon/v1/alerts/n1/GPUHotE2E", lambda p: p["state"] == "resolved", timeout=30)
            await asyncio.to_thread(wait_until, lambda: not am_alerts(am_url), 30, "resolve in Alertmanager")

    try:
        asyncio.run(scenario())
    finally:
        agent.stop()
        col.stop()
        am.stop()
        broker.stop()
