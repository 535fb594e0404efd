"""The rule engine inside the collector: a batch carrying a hardware event is evaluated as it
lands (not at the next tick), an agent sends such a batch at once, and ``$externalLabels`` in an
annotation is filled in what Alertmanager receives (issue 19: it used to come out empty)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.codec import pack_values
from agent.transport import METHOD
from collector.app import Collector
from collector.config import CollectorConfig
from proto import telemetry_pb2 as pb
from tests.fleet import AgentProc, CollectorProc
from tests.services import free_port, wait_until
from tests.test_notifiers_alertmanager import start_alertmanager

XID_RULES = """groups:
  - name: xid
    rules:
      - alert: GPUXid
        expr: increase(gpu_xid_errors_total[10m]) > 0
        labels: {severity: critical}
        annotations:
          summary: "XID {{ $labels.xid }} on GPU {{ $labels.gpu }} of {{ $labels.node }}
            in {{ $externalLabels.region }}"
"""


def _xid_batch(seq: int, t_ms: int, value: float, with_event: bool) -> bytes:
    b = pb.Batch(sequence=seq)
    if seq == 1:
        b.series.add(id=1, measurement="gpu", field="xid_errors_total", labels={"gpu": "3", "xid": "79"},
                     type=pb.COUNTER)
    b.blocks.add(timestamp_ms=t_ms, series_ids=[1], values=pack_values([value]))
    if with_event:
        b.events.add(kind="gpu.xid", timestamp_ms=t_ms, message="XID 79 on GPU 3", labels={"gpu": "3", "xid": "79"},
                     severity=pb.SEVERITY_CRITICAL, action="drain the node")
    return pb.AgentMessage(batch=b).SerializeToString()


def test_event_batch_is_evaluated_as_it_lands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "xid.yml"
    rules.write_text(XID_RULES)
    cfg = CollectorConfig(listen="127.0.0.1:0", http="", data_dir=tmp_path / "data")
    cfg.alerting.rules = [rules]
    cfg.alerting.notifiers = {}
    cfg.alerting.external_labels = {"region": "eu-7"}
    cfg.alerting.process = False  # the engine in the collector's process: its event hook is tested here
    ticks: list[float] = []

    async def no_ticks(self: Collector) -> None:  # the periodic evaluation never runs in this test
        ticks.append(time.time())

    monkeypatch.setattr(Collector, "_evaluate_loop", no_ticks)

    async def main() -> None:
        c = Collector(cfg)
        await c.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{c.grpc_port}") as ch:
                call: Any = ch.stream_stream(METHOD, request_serializer=lambda b: b,
                                             response_deserializer=pb.CollectorMessage.FromString)()
                await call.write(pb.AgentMessage(hello=pb.Hello(node="n1", wal_id="w")).SerializeToString())
                await call.read()
                now = int(time.time() * 1000)
                await call.write(_xid_batch(1, now - 2000, 0.0, with_event=False))
                assert (await call.read()).ack.sequence == 1
                assert c.engine is not None and c.engine.active() == []  # samples alone wait for the tick
                await call.write(_xid_batch(2, now - 1000, 1.0, with_event=True))
                assert (await call.read()).ack.sequence == 2
                (alert,) = c.engine.active()
                assert alert.name == "GPUXid" and alert.labels["node"] == "n1" and alert.labels["region"] == "eu-7"
                assert alert.annotations["summary"] == "XID 79 on GPU 3 of n1 in eu-7"
                await call.done_writing()
        finally:
            await c.stop(grace=1)

    asyncio.run(main())
    assert len(ticks) == 1  # the loop was replaced: only the urgent path evaluated


def _am_alerts(url: str, name: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true", timeout=5) as resp:
        return [a for a in json.loads(resp.read()) if a["labels"].get("alertname") == name]


@pytest.mark.services
def test_external_labels_reach_alertmanager_and_events_leave_the_agent_at_once(tmp_path: Path) -> None:
    """One running collector and agent: the XID alert's annotation shows the external label in
    Alertmanager, and it arrives well before the agent's next regular batch (30 s away), so the
    agent sent the event's batch at once."""
    am_port = free_port()
    am = start_alertmanager(tmp_path / "am", am_port)
    am_url = f"http://127.0.0.1:{am_port}"
    rules = tmp_path / "xid.yml"
    rules.write_text(XID_RULES)
    col = CollectorProc(tmp_path, rules=[rules], extra={"alerting": {
        "notifiers": {"alertmanager": {"urls": [am_url]}}, "external_labels": {"region": "eu-7"}}}).start()
    faults = [{"at": "2s", "kind": "xid", "gpu": 1, "xid": 31}]
    agent = AgentProc(tmp_path, "n9", [col.addr], plugins={"simulated": {"interval": 0.5, "gpus": 2, "faults": faults}},
                      extra={"batch_interval": 30})
    try:
        agent.start()
        (alert,) = wait_until(lambda: _am_alerts(am_url, "GPUXid"), 20, "the XID alert in Alertmanager")
        assert alert["labels"]["region"] == "eu-7" and alert["labels"]["node"] == "n9"
        assert alert["annotations"]["summary"] == "XID 31 on GPU 1 of n9 in eu-7"
    finally:
        agent.stop()
        col.stop()
        am.stop()
