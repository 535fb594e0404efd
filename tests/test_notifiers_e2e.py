"""A scripted GPU fault, evaluated by the default rule pack in the AlertEngine, reaches a real
Alertmanager and a real Mosquitto through the notifiers, and resolves there when it clears."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.engine import AlertEngine
from alerts.model import AlertState
from alerts.notifiers import AlertmanagerConfig, AlertmanagerNotifier, MqttConfig, MqttNotifier
from alerts.rules import default_rule_files
from tests.services import free_port
from tests.test_notifiers_alertmanager import start_alertmanager
from tests.test_notifiers_mqtt import Subscriber, start_mosquitto

pytestmark = pytest.mark.services

GPU = {"node": "gpu-a-007", "gpu": "3", "uuid": "GPU-7c1f", "vendor": "nvidia", "cluster": "c1"}
TOPIC = "fleetmon/v1/alerts/gpu-a-007/GPUOverTemperature"


def test_scripted_overtemperature_fires_and_resolves_in_alertmanager_and_mqtt(tmp_path: Path) -> None:
    am_port, mqtt_port = free_port(), free_port()
    am = start_alertmanager(tmp_path / "am", am_port)
    broker = start_mosquitto(tmp_path / "mqtt", mqtt_port)
    am_url = f"http://127.0.0.1:{am_port}"

    async def scenario() -> None:
        notifiers: list[AlertmanagerNotifier | MqttNotifier] = [AlertmanagerNotifier(AlertmanagerConfig(urls=[am_url])),
                     MqttNotifier(MqttConfig(host="127.0.0.1", port=mqtt_port, client_id="e2e"))]
        engine = AlertEngine.from_files(default_rule_files(), notifiers)
        assert engine.wants("gpu_temperature_celsius")
        await engine.start()
        # Simulated time runs from 3 minutes ago to now, one sample and one evaluation a second:
        # 70 °C, then 92 °C from t0+10 s (the fault), back to 70 °C at t0+100 s.
        t0 = time.time() - 180
        fired_at = resolved_at = None
        for step in range(130):
            now = t0 + step
            temp = 92.0 if 10 <= step < 100 else 70.0
            engine.ingest("gpu_temperature_celsius", GPU, now, temp)
            engine.ingest("gpu_up", GPU, now, 1.0)
            for alert in engine.evaluate(now):
                assert alert.name == "GPUOverTemperature"
                if alert.state is AlertState.FIRING:
                    fired_at = now
                elif alert.state is AlertState.RESOLVED:
                    resolved_at = now
            if step == 99:
                assert fired_at is not None
                async with Subscriber(mqtt_port, "fleetmon/v1/alerts/#") as sub:
                    firing = await sub.wait_for(TOPIC, lambda p: p["state"] == "firing")
                    async with httpx.AsyncClient(timeout=5) as client:
                        deadline = time.monotonic() + 10
                        got: list[dict[str, Any]] = []
                        while not got and time.monotonic() < deadline:
                            got = (await client.get(f"{am_url}/api/v2/alerts")).json()
                            await asyncio.sleep(0.05)
                (a,) = got
                assert a["labels"] == {**GPU, "alertname": "GPUOverTemperature", "severity": "critical"}
                assert a["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": []}
                assert a["annotations"]["summary"] == "GPU 3 on gpu-a-007 is at 92 °C"
                assert firing["firing"] == 1 and firing["alerts"][0]["labels"]["uuid"] == "GPU-7c1f"
        # `for: 1m`: pending at t0+10, firing one minute later; resolved at the first 70 °C sample.
        assert fired_at == t0 + 70
        assert resolved_at == t0 + 100

        async with Subscriber(mqtt_port, "fleetmon/v1/alerts/#") as sub:
            resolved = await sub.wait_for(TOPIC, lambda p: p["state"] == "resolved")
            assert resolved["alerts"][0]["resolvedAt"].startswith(
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + 100)))
            async with httpx.AsyncClient(timeout=5) as client:
                deadline = time.monotonic() + 10
                active: list[object] = [None]
                while active and time.monotonic() < deadline:
                    active = (await client.get(f"{am_url}/api/v2/alerts?active=true")).json()
                    await asyncio.sleep(0.05)
                assert active == []
        await engine.aclose()
        for n in notifiers:
            for h in n.health():
                assert (h.failed, h.dropped) == (0, 0), h

    try:
        asyncio.run(scenario())
    finally:
        am.stop()
        broker.stop()
