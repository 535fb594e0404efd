"""Alert latency: from the moment on the node to the alert's arrival at Alertmanager and at an
MQTT subscriber, p50/p99, for two kinds of alert, with the default settings (1 s sampling, 1 s
batches, 1 s evaluation). Real processes and servers on loopback.

* sampled: one simulated node with 8 GPUs; each GPU heats past the rule's threshold 13 times
  (2 s each, staggered): 104 alerts, measured from the agent's own timestamp of the first hot
  sample (its audit log);
* event: then the same node raises 104 XIDs (13 kinds on each of the 8 GPUs, one every 0.5 s),
  each an event plus an increment of ``gpu_xid_errors_total``, measured from the XID's time on
  the node (the counter sample it came with).

Arrival at Alertmanager is when a poll (every 25 ms) first shows the alert; arrival at MQTT is
when the subscriber receives the retained firing update.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt

from tests.fleet import AgentProc, CollectorProc
from tests.services import free_port, wait_until
from tests.test_notifiers_alertmanager import start_alertmanager
from tests.test_notifiers_mqtt import start_mosquitto

GPUS, ROUNDS, PERIOD, HOT = 8, 13, 4.0, 2.0
XIDS = [13, 31, 43, 45, 61, 62, 63, 64, 74, 92, 94, 95, 119]
RULE = """groups:
  - name: latency
    rules:
      - alert: GPUHotLatency
        expr: gpu_temperature_celsius > 85
        labels: {severity: critical}
        annotations: {summary: "GPU {{ $labels.gpu }} hot"}
      - alert: GPUXidLatency
        expr: increase(gpu_xid_errors_total[1m]) > 0
        labels: {severity: critical}
        annotations: {summary: "XID {{ $labels.xid }} on GPU {{ $labels.gpu }}"}
"""

Key = tuple[str, str, str]  # alertname, gpu, xid ("" for the temperature alert)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def faults() -> list[dict[str, object]]:
    hot = [{"at": f"{5 + r * PERIOD + g * PERIOD / GPUS:.2f}s", "for": f"{HOT}s", "kind": "gpu_temperature",
            "gpu": g, "value": 92} for r in range(ROUNDS) for g in range(GPUS)]
    # After the heat rounds, so that no sampled alert rides along with an event's early batch.
    start = 10 + ROUNDS * PERIOD
    xids = [{"at": f"{start + 0.25 + k * 0.5:.2f}s", "kind": "xid", "gpu": k % GPUS, "xid": XIDS[k // GPUS]}
            for k in range(GPUS * len(XIDS))]
    return hot + xids


def node_times(rows: list[dict[str, object]]) -> tuple[dict[str, list[float]], dict[tuple[str, str], float]]:
    """First hot sample of each episode per GPU; time of each (gpu, xid)'s first increment."""
    hot: dict[str, list[float]] = {str(g): [] for g in range(GPUS)}
    last: dict[str, float] = {}
    xid: dict[tuple[str, str], float] = {}
    for row in rows:
        labels = row["labels"]
        assert isinstance(labels, dict)
        ts = float(row["ts_ms"]) / 1000  # type: ignore[arg-type]
        value = float(row["value"])  # type: ignore[arg-type]
        if row["name"] == "gpu_temperature_celsius":
            g = labels["gpu"]
            if value > 85 and (g not in last or ts - last[g] > 1.5):
                hot[g].append(ts)
            if value > 85:
                last[g] = ts
        elif row["name"] == "gpu_xid_errors_total" and value >= 1:
            xid.setdefault((labels["gpu"], labels["xid"]), ts)
    return hot, xid


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
        agent = AgentProc(t, "lat", [col.addr], plugins={"simulated": {"interval": 1, "gpus": GPUS,
                                                                          "faults": faults()}},
                          extra={"batch_interval": 1, "log_level": "warning"})
        am_seen: dict[tuple[Key, str], float] = {}
        mqtt_seen: dict[tuple[Key, str], float] = {}
        stop = threading.Event()

        def key(labels: dict[str, str]) -> Key:
            return labels.get("alertname", ""), labels.get("gpu", ""), labels.get("xid", "")

        def poll_am() -> None:
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(f"{am_url}/api/v2/alerts?active=true", timeout=2) as resp:
                        now = time.time()
                        for a in json.loads(resp.read()):
                            am_seen.setdefault((key(a["labels"]), a["startsAt"]), now)
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
                            mqtt_seen.setdefault((key(a["labels"]), a["firedAt"]), now)

        loop = asyncio.new_event_loop()
        listener = loop.create_task(listen())

        def run_listener() -> None:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                loop.run_until_complete(listener)

        mqtt_thread = threading.Thread(target=run_listener, daemon=True)
        mqtt_thread.start()
        am_thread = threading.Thread(target=poll_am, daemon=True)
        am_thread.start()
        expected = 2 * GPUS * ROUNDS
        try:
            agent.start()
            total = 10 + ROUNDS * PERIOD + GPUS * len(XIDS) * 0.5 + 6
            try:
                wait_until(lambda: len(am_seen) >= expected and len(mqtt_seen) >= expected, total + 30,
                           "all alerts to arrive", interval=0.5)
            except TimeoutError:
                for where, seen in (("Alertmanager", am_seen), ("MQTT", mqtt_seen)):
                    names = [k[0][0] for k in seen]
                    print(f"{where} got {len(seen)} of {expected}: "
                          f"{ {n: names.count(n) for n in set(names)} }", file=sys.stderr)
                print(col.log.read_text()[-3000:], file=sys.stderr)
                raise
        finally:
            stop.set()
            loop.call_soon_threadsafe(listener.cancel)
            agent.stop()
            col.stop()
            am.stop()
            broker.stop()
        hot, xid = node_times(agent.audit_rows())

    def latencies(seen: dict[tuple[Key, str], float]) -> tuple[list[float], list[float]]:
        sampled: list[float] = []
        for g, starts in hot.items():
            arrivals = sorted(v for ((name, gg, _x), _s), v in seen.items() if name == "GPUHotLatency" and gg == g)
            sampled.extend(a - s for s, a in zip(starts, arrivals, strict=False))
        events = [min(v for ((name, gg, xx), _s), v in seen.items() if name == "GPUXidLatency" and (gg, xx) == k) - ts
                  for k, ts in xid.items()
                  if any(name == "GPUXidLatency" and (gg, xx) == k for ((name, gg, xx), _s) in seen)]
        return sampled, events

    for name, seen in (("Alertmanager", am_seen), ("MQTT subscriber", mqtt_seen)):
        for kind, lat in zip(("sampled (1 Hz)", "event (XID)"), latencies(seen), strict=True):
            print(f"{name:>16} {kind:>15}: {len(lat)} alerts, latency from the node's time p50 {pct(lat, 0.5):.3f} s, "
                  f"p99 {pct(lat, 0.99):.3f} s, max {max(lat):.3f} s, mean {statistics.mean(lat):.3f} s")


if __name__ == "__main__":
    main()
