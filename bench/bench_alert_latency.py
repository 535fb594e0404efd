"""Alert latency: from a sample's timestamp at the agent to its alert's arrival at Alertmanager
and at an MQTT subscriber, p50/p99 over >= 100 alerts, with the default settings (1 s sampling,
1 s batches, 1 s evaluation). Real processes and servers on loopback.

One simulated node with 8 GPUs; each GPU heats past the rule's threshold 13 times (2 s each,
staggered), so 104 alerts fire. The sample time is the agent's own timestamp of the first hot
sample (its audit log); arrival at Alertmanager is when a poll (every 25 ms) first shows the
alert with that start; arrival at MQTT is when the subscriber receives the retained update.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

import aiomqtt

from tests.fleet import AgentProc, CollectorProc
from tests.services import free_port, wait_until
from tests.test_notifiers_alertmanager import start_alertmanager
from tests.test_notifiers_mqtt import start_mosquitto

GPUS, ROUNDS, PERIOD, HOT = 8, 13, 4.0, 2.0
RULE = """groups:
  - name: latency
    rules:
      - alert: GPUHotLatency
        expr: gpu_temperature_celsius > 85
        labels: {severity: critical}
        annotations: {summary: "GPU {{ $labels.gpu }} hot"}
"""


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        rules = t / "rules.yml"
        rules.write_text(RULE)
        am_port, mqtt_port = free_port(), free_port()
        am = start_alertmanager(t / "am", am_port)
        broker = start_mosquitto(t / "mqtt", mqtt_port)
        am_url = f"http://127.0.0.1:{am_port}"
        col = CollectorProc(t, rules=[rules], extra={"log_level": "warning", "alerting": {"notifiers": {
            "alertmanager": {"urls": [am_url]}, "mqtt": {"host": "127.0.0.1", "port": mqtt_port}}}}).start()
        faults = [{"at": f"{5 + r * PERIOD + g * PERIOD / GPUS:.2f}s", "for": f"{HOT}s", "kind": "gpu_temperature",
                   "gpu": g, "value": 92} for r in range(ROUNDS) for g in range(GPUS)]
        agent = AgentProc(t, "lat", [col.addr], plugins={"simulated": {"interval": 1, "gpus": GPUS,
                                                                          "faults": faults}},
                          extra={"batch_interval": 1, "log_level": "warning"})
        am_seen: dict[tuple[str, float], float] = {}
        mqtt_seen: dict[tuple[str, float], float] = {}
        stop = threading.Event()

        def poll_am() -> None:
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(f"{am_url}/api/v2/alerts?active=true", timeout=2) as resp:
                        now = time.time()
                        for a in json.loads(resp.read()):
                            key = (a["labels"]["gpu"], _ts(a["startsAt"]))
                            am_seen.setdefault(key, now)
                except OSError:
                    pass
                time.sleep(0.025)

        async def listen() -> None:
            async with aiomqtt.Client("127.0.0.1", mqtt_port) as client:
                await client.subscribe("fleetmon/v1/alerts/lat/#", qos=1)
                async for msg in client.messages:
                    now = time.time()
                    body = json.loads(msg.payload) if isinstance(msg.payload, bytes) and msg.payload else {}
                    for a in body.get("alerts", []):
                        if a["state"] == "firing" and "firedAt" in a:
                            mqtt_seen.setdefault((a["labels"]["gpu"], _ts(a["firedAt"])), now)

        loop = asyncio.new_event_loop()
        listener = loop.create_task(listen())
        def run_listener() -> None:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                loop.run_until_complete(listener)

        mqtt_thread = threading.Thread(target=run_listener, daemon=True)
        mqtt_thread.start()
        am_thread = threading.Thread(target=poll_am, daemon=True)
        am_thread.start()
        try:
            agent.start()
            total = 5 + ROUNDS * PERIOD + 6
            wait_until(lambda: len(am_seen) >= ROUNDS * GPUS and len(mqtt_seen) >= ROUNDS * GPUS, total + 30,
                       "all alerts to arrive", interval=0.5)
        finally:
            stop.set()
            loop.call_soon_threadsafe(listener.cancel)
            agent.stop()
            col.stop()
            am.stop()
            broker.stop()
        # First hot sample of each episode, from the agent's own record of what it sent.
        hot: dict[str, list[float]] = {str(g): [] for g in range(GPUS)}
        last: dict[str, float] = {}
        for row in agent.audit_rows():
            if row["name"] != "gpu_temperature_celsius":
                continue
            g, ts = row["labels"]["gpu"], row["ts_ms"] / 1000
            if row["value"] > 85 and (g not in last or ts - last[g] > 1.5):
                hot[g].append(ts)
            if row["value"] > 85:
                last[g] = ts

    def latencies(seen: dict[tuple[str, float], float]) -> list[float]:
        out = []
        for g, starts in hot.items():
            arrivals = sorted(v for (gg, _), v in seen.items() if gg == g)
            out.extend(a - s for s, a in zip(starts, arrivals, strict=False))
        return out

    for name, seen in (("Alertmanager", am_seen), ("MQTT subscriber", mqtt_seen)):
        lat = latencies(seen)
        print(f"{name}: {len(lat)} alerts, latency from sample timestamp p50 {pct(lat, 0.5):.3f} s, "
              f"p99 {pct(lat, 0.99):.3f} s, max {max(lat):.3f} s, mean {statistics.mean(lat):.3f} s")


if __name__ == "__main__":
    main()
