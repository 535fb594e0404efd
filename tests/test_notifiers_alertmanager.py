"""Alertmanager v2 notifier against real Debian ``prometheus-alertmanager`` servers."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.model import Alert, AlertState
from alerts.notifiers import AlertmanagerConfig, AlertmanagerNotifier, postable_alert
from alerts.notifiers.base import Backoff
from tests.services import Process, free_port, require_binary, wait_for_http

pytestmark = pytest.mark.services

AM_CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1s
receivers:
  - name: blackhole
"""


def start_alertmanager(tmp: Path, port: int) -> Process:
    binary = require_binary("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", "alertmanager")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "am.yml").write_text(AM_CONFIG)
    proc = Process([
        binary, f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
    ], tmp / "am.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/-/ready", proc=proc.proc, ok=lambda c: c == 200)
    except Exception:
        print(proc.log_text())
        proc.stop()
        raise
    return proc


@pytest.fixture
def two_alertmanagers(tmp_path: Path) -> Iterator[list[str]]:
    procs = []
    try:
        for i in range(2):
            port = free_port()
            procs.append((start_alertmanager(tmp_path / f"am{i}", port), port))
        yield [f"http://127.0.0.1:{port}" for _, port in procs]
    finally:
        for p, _ in procs:
            p.stop()


def gpu_alert(state: AlertState, gpu: str = "3", resolved_at: float | None = None) -> Alert:
    t0 = time.time() - 30
    return Alert(
        labels={"alertname": "GPUOverTemperature", "node": "gpu-a-001", "gpu": gpu, "severity": "critical"},
        annotations={"summary": f"GPU {gpu} on gpu-a-001 at 91 °C", "runbook_action": "drain the node"},
        state=state, active_at=t0, value=91.0, fired_at=t0 + 1, resolved_at=resolved_at,
        generator_url="http://collector.example:9400/alerts",
    )


async def active_alerts(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    resp = await client.get(f"{url}/api/v2/alerts")
    resp.raise_for_status()
    return list(resp.json())


async def wait_until(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll ``cond`` (plain or async) on the running loop until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def test_postable_alert_shape() -> None:
    alert = gpu_alert(AlertState.FIRING)
    alert.labels["empty"] = ""
    alert.labels["bad-name"] = "x"
    body = postable_alert(alert, now=1_700_000_000.0, valid_for=240.0)
    assert body["labels"] == {"alertname": "GPUOverTemperature", "node": "gpu-a-001", "gpu": "3",
                              "severity": "critical"}
    assert body["endsAt"] == "2023-11-14T22:17:20.000Z"  # now + 4 x 60 s
    assert body["generatorURL"] == "http://collector.example:9400/alerts"
    resolved = gpu_alert(AlertState.RESOLVED, resolved_at=1_700_000_000.25)
    assert postable_alert(resolved, now=1_700_000_100.0, valid_for=240.0)["endsAt"] == "2023-11-14T22:13:20.250Z"


def test_fire_and_resolve_reach_every_replica(two_alertmanagers: list[str]) -> None:
    urls = two_alertmanagers

    async def scenario() -> None:
        notifier = AlertmanagerNotifier(AlertmanagerConfig(urls=urls, resend=60.0))
        await notifier.start()
        async with httpx.AsyncClient(timeout=5) as client:
            notifier.send_alerts([gpu_alert(AlertState.FIRING), gpu_alert(AlertState.PENDING, gpu="5")])

            async def both_active() -> bool:
                return [len(await active_alerts(client, u)) for u in urls] == [1, 1]
            await wait_until(both_active)
            for u in urls:
                (got,) = await active_alerts(client, u)
                assert got["status"]["state"] == "active"
                assert got["labels"] == {"alertname": "GPUOverTemperature", "node": "gpu-a-001", "gpu": "3",
                                         "severity": "critical"}
                assert got["annotations"]["runbook_action"] == "drain the node"
                assert got["generatorURL"] == "http://collector.example:9400/alerts"
                # endsAt is pushed ~4 resend intervals ahead so Alertmanager keeps it active.
                ends = time.mktime(time.strptime(got["endsAt"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                assert 200 < ends - time.time() < 250

            notifier.send_alerts([gpu_alert(AlertState.RESOLVED, resolved_at=time.time())])

            async def both_gone() -> bool:
                return [len(await active_alerts(client, u)) for u in urls] == [0, 0]
            await wait_until(both_gone)
        await notifier.aclose()
        (h1, h2) = notifier.health()
        assert (h1.sent, h1.failed, h1.dropped) == (2, 0, 0)
        assert (h2.sent, h2.failed, h2.dropped) == (2, 0, 0)
        assert {h1.target, h2.target} == set(urls)

    asyncio.run(scenario())


def test_outage_never_blocks_and_queue_is_bounded(tmp_path: Path) -> None:
    require_binary("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", "alertmanager")
    port = free_port()  # nothing listens here until the Alertmanager starts below
    url = f"http://127.0.0.1:{port}"

    async def scenario() -> None:
        notifier = AlertmanagerNotifier(AlertmanagerConfig(urls=[url], queue_size=5, timeout=1.0))
        notifier.replicas[0].backoff = Backoff(initial=0.05, maximum=0.2)
        await notifier.start()
        # Twenty calls with the receiver down: enqueue only, nothing tried on the caller's path
        # (sent/failed stay 0, the bounded queue drops the oldest).
        for i in range(20):
            notifier.send_alerts([gpu_alert(AlertState.FIRING, gpu=str(i))])
        await wait_until(lambda: notifier.health()[0].retries >= 1)  # the worker failed and retried
        (h,) = notifier.health()
        assert h.sent == 0 and h.failed == 0
        assert h.dropped == 15  # 20 distinct alerts into 5 slots: the 15 oldest went
        assert h.queued <= 5
        assert h.retries >= 1 and "ConnectError" in h.last_error

        # The receiver comes back: the 5 newest alerts (GPUs 15..19) arrive, nothing else.
        proc = await asyncio.to_thread(start_alertmanager, tmp_path / "late", port)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                async def five() -> bool:
                    return len(await active_alerts(client, url)) == 5
                await wait_until(five)
                gpus = sorted(int(a["labels"]["gpu"]) for a in await active_alerts(client, url))
                assert gpus == [15, 16, 17, 18, 19]
            await notifier.aclose()
            (h,) = notifier.health()
            assert (h.sent, h.dropped, h.queued) == (5, 15, 0)
        finally:
            proc.stop()

    asyncio.run(scenario())
