"""Webhook notifier against a local ``http.server`` that fails before it succeeds; log notifier."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from alerts.model import Alert, AlertState, EventNotice, NodeStatus
from alerts.notifiers import LogConfig, LogNotifier, WebhookConfig, WebhookNotifier
from alerts.notifiers.base import BoundedQueue, QueueWorker


class Hook:
    """A loopback HTTP receiver answering with the next scripted status code (then 200)."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = list(codes)
        self.bodies: list[tuple[int, dict[str, Any]]] = []  # (status answered, JSON body)
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                code = hook.codes.pop(0) if hook.codes else 200
                hook.bodies.append((code, body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the test reads bodies, not logs
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory() -> Iterator[Any]:
    hooks: list[Hook] = []

    def make(codes: list[int]) -> Hook:
        h = Hook(codes)
        hooks.append(h)
        return h

    yield make
    for h in hooks:
        h.close()


def firing(gpu: str) -> Alert:
    return Alert(labels={"alertname": "GPULost", "node": "n7", "gpu": gpu, "severity": "critical"},
                 annotations={"summary": "GPU gone"}, state=AlertState.FIRING,
                 active_at=1_764_370_000.0, value=0.0, fired_at=1_764_370_000.0)


async def wait_health(n: WebhookNotifier, done: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done(n.health()[0]):
        if time.monotonic() > deadline:
            raise AssertionError(f"{n.health()} not reached in {timeout}s")
        await asyncio.sleep(0.02)


def test_retries_until_the_receiver_accepts(hook_factory: Any) -> None:
    hook = hook_factory([500, 503])  # fails twice, then succeeds

    async def scenario() -> None:
        n = WebhookNotifier(WebhookConfig(url=hook.url, retries=3, backoff=0.05, headers={"X-Team": "sre"}))
        await n.start()
        n.send_alerts([firing("1"), Alert(labels={"alertname": "P"}, annotations={}, state=AlertState.PENDING,
                                          active_at=0.0, value=1.0)])
        await wait_health(n, lambda h: h.sent == 1)
        (h,) = n.health()
        assert (h.sent, h.failed, h.retries, h.dropped) == (1, 0, 2, 0)
        await n.aclose()

    asyncio.run(scenario())
    assert [code for code, _ in hook.bodies] == [500, 503, 200]
    body = hook.bodies[-1][1]
    assert body["version"] == "1" and body["kind"] == "alerts"
    (a,) = body["alerts"]  # the pending alert is not sent
    assert a["labels"] == {"alertname": "GPULost", "node": "n7", "gpu": "1", "severity": "critical"}
    assert (a["state"], a["firedAt"]) == ("firing", "2025-11-28T22:46:40.000Z")


def test_gives_up_after_retries_and_on_client_errors(hook_factory: Any) -> None:
    hook = hook_factory([500, 500, 500, 400])

    async def scenario() -> None:
        n = WebhookNotifier(WebhookConfig(url=hook.url, retries=2, backoff=0.02))
        await n.start()
        n.send_event(EventNotice(node="n7", kind="gpu.xid", severity="critical", message="XID 79",
                                 ts=1_764_370_000.0, labels={"xid": "79"}))
        n.send_node_status(NodeStatus(node="n7", online=False, ts=1_764_370_001.0))
        n.send_node_status(NodeStatus(node="n7", online=True, ts=1_764_370_002.0))
        await wait_health(n, lambda h: h.sent + h.failed == 3)
        (h,) = n.health()
        # event: 500, 500, 500 -> 3 attempts = 1 + retries, failed; offline: 400 -> final; online: 200.
        assert (h.sent, h.failed, h.retries) == (1, 2, 2)
        assert h.last_error.endswith("HTTP 400")
        await n.aclose()

    asyncio.run(scenario())
    kinds = [(code, b["kind"]) for code, b in hook.bodies]
    assert kinds == [(500, "event"), (500, "event"), (500, "event"), (400, "node_status"), (200, "node_status")]
    assert hook.bodies[-1][1]["status"] == {"node": "n7", "status": "online", "online": True,
                                            "ts": "2025-11-28T22:46:42.000Z", "labels": {}}


def test_queue_drops_oldest_and_counts() -> None:
    q: BoundedQueue[int] = BoundedQueue(3)
    for i in range(5):
        q.put(i)
    q.put(50, key="a")
    q.put(51, key="a")  # coalesces with the keyed entry, moves to the back
    assert q.dropped == 3
    entries = q.take(10)
    assert [v for _, v in entries] == [3, 4, 51]
    q.put(9)
    q.put_back(entries)  # failed delivery: back to the front, oldest dropped when full
    assert [v for _, v in q.take(10)] == [4, 51, 9]
    assert q.dropped == 4


def test_log_notifier_writes_one_json_line_each(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        n = LogNotifier(LogConfig(logger="fleetmon.test.alerts"))
        await n.start()
        n.send_alerts([firing("2")])
        n.send_event(EventNotice(node="n7", kind="ib.link_flap", severity="warning", message="mlx5_0/1 down",
                                 ts=1_764_370_000.0))
        await n.aclose()
        (h,) = n.health()
        assert (h.sent, h.dropped) == (2, 0)

    with caplog.at_level(logging.INFO, logger="fleetmon.test.alerts"):
        asyncio.run(scenario())
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "fleetmon.test.alerts"]
    assert [lvl for lvl, _ in records] == [logging.ERROR, logging.WARNING]  # critical firing, warning event
    tag, _, payload = records[0][1].partition(" ")
    assert tag == "alert" and "\n" not in payload
    assert json.loads(payload)["alertname"] == "GPULost"
    assert json.loads(records[1][1].partition(" ")[2])["kind"] == "ib.link_flap"


def test_worker_survives_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(QueueWorker[str]):
        def __init__(self) -> None:
            super().__init__("test", "flaky")
            self.got: list[str] = []

        async def deliver(self, batch: list[str]) -> None:
            if batch == ["boom"]:
                raise RuntimeError("a bug in a notifier")
            self.got += batch

    async def scenario() -> Flaky:
        w = Flaky()
        await w.start()
        w.put("boom")
        w.put("ok")
        await w.aclose()
        return w

    w = asyncio.run(scenario())
    assert w.got == ["ok"]
    h = w.health()
    assert (h.sent, h.failed, h.last_error) == (1, 1, "RuntimeError: a bug in a notifier")
    assert "unexpected error delivering to flaky" in caplog.text
