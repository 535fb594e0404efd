"""MQTT notifier against a real Debian ``mosquitto`` broker (anonymous, password file, TLS)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from alerts.errors import NotifierError
from alerts.model import Alert, AlertState, EventNotice, NodeStatus
from alerts.notifiers import MqttConfig, MqttNotifier, build_notifiers, topic_segment
from alerts.notifiers.base import Backoff
from tests.services import Process, free_port, require_binary, wait_for_port

pytestmark = pytest.mark.services


def start_mosquitto(tmp: Path, port: int, extra: str = "allow_anonymous true\n", listener: bool = True) -> Process:
    """Mosquitto with ``extra`` config lines; ``listener=False`` when ``extra`` opens ``port`` itself."""
    binary = require_binary("mosquitto", "/usr/sbin/mosquitto")
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "mosquitto.conf"
    # ``user root``: the broker would otherwise drop to the mosquitto user, which cannot read
    # the test's private tmp dir (password file, certificates).
    head = "user root\nlog_dest stderr\n"
    if listener:
        head += f"persistence false\nlistener {port} 127.0.0.1\n"
    conf.write_text(head + extra)
    proc = Process([binary, "-c", str(conf)], tmp / "mosquitto.log")
    try:
        wait_for_port(port, proc=proc.proc)
    except Exception:
        print(proc.log_text())
        proc.stop()
        raise
    return proc


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    proc = start_mosquitto(tmp_path, port)
    try:
        yield port
    finally:
        proc.stop()


class Subscriber:
    """Collects every message under a filter (retained flag included) in the background."""

    def __init__(self, port: int, topic: str = "fleetmon/#", **kw: Any) -> None:
        self.client = aiomqtt.Client("127.0.0.1", port, **kw)
        self.topic = topic
        self.messages: list[tuple[str, dict[str, Any] | None, bool]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        await self.client.__aenter__()
        await self.client.subscribe(self.topic, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def _collect(self) -> None:
        async for msg in self.client.messages:
            raw = msg.payload if isinstance(msg.payload, bytes) else b""
            self.messages.append((str(msg.topic), json.loads(raw) if raw else None, bool(msg.retain)))

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.client.__aexit__(None, None, None)

    def on(self, topic: str) -> list[tuple[dict[str, Any] | None, bool]]:
        return [(p, r) for t, p, r in self.messages if t == topic]

    async def wait_for(self, topic: str, pred: Any = lambda p: True, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for payload, _ in self.on(topic):
                if payload is not None and pred(payload):
                    return payload
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching message on {topic} within {timeout}s: {self.on(topic)}")


def alert(state: AlertState, gpu: str, resolved_at: float | None = None) -> Alert:
    t0 = 1_764_370_000.0
    return Alert(
        labels={"alertname": "GPUOverTemperature", "node": "gpu-a-001", "gpu": gpu, "severity": "critical"},
        annotations={"summary": f"GPU {gpu} hot"}, state=state, active_at=t0, value=91.0,
        fired_at=t0 + 60, resolved_at=resolved_at,
    )


def test_topic_segments_are_escaped() -> None:
    assert topic_segment("gpu-a-001") == "gpu-a-001"
    assert topic_segment("rack/7+#%") == "rack%2F7%2B%23%25"
    assert topic_segment("") == "_"
    n = MqttNotifier(MqttConfig(host="127.0.0.1", topic_prefix="site/fleetmon/v1/"))
    assert n.alert_topic("a/b", "X#") == "site/fleetmon/v1/alerts/a%2Fb/X%23"


def test_alert_state_is_retained_and_shows_the_resolve(broker: int) -> None:
    topic = "fleetmon/v1/alerts/gpu-a-001/GPUOverTemperature"

    async def scenario() -> None:
        notifier = MqttNotifier(MqttConfig(host="127.0.0.1", port=broker, client_id="col-1"))
        await notifier.start()
        notifier.send_alerts([alert(AlertState.FIRING, "3"), alert(AlertState.FIRING, "5")])
        notifier.send_node_status(NodeStatus(node="gpu-a-001", online=True, ts=1_764_370_001.0))
        # The subscriber connects after the publish: it gets the state from the retained message.
        await _wait_sent(notifier, 2)
        async with Subscriber(broker) as late:
            got = await late.wait_for(topic)
            assert late.on(topic)[0][1] is True  # delivered as a retained message
            assert got["state"] == "firing" and got["firing"] == 2
            assert sorted(a["labels"]["gpu"] for a in got["alerts"]) == ["3", "5"]
            assert got["alerts"][0]["firedAt"] == "2025-11-28T22:47:40.000Z"
            status = await late.wait_for("fleetmon/v1/nodes/gpu-a-001/status")
            assert (status["status"], status["online"]) == ("online", True)
            collector = await late.wait_for("fleetmon/v1/collectors/col-1/status")
            assert collector == {"status": "online"}

            # A re-send of an unchanged firing alert does not rewrite the retained message.
            notifier.send_alerts([alert(AlertState.FIRING, "3")])
            # Events are not retained; they go to .../events/<node>/<kind>.
            notifier.send_event(EventNotice(node="gpu-a-001", kind="gpu.xid", severity="critical",
                                            message="XID 79 GPU has fallen off the bus", ts=1_764_370_002.0,
                                            labels={"xid": "79", "gpu": "3"}, action="reboot_then_inspect"))
            event = await late.wait_for("fleetmon/v1/events/gpu-a-001/gpu.xid")
            assert (event["labels"]["xid"], event["severity"]) == ("79", "critical")
            assert late.on("fleetmon/v1/events/gpu-a-001/gpu.xid")[0][1] is False
            assert len(late.on(topic)) == 1

            now = time.time()
            notifier.send_alerts([alert(AlertState.RESOLVED, "3", now), alert(AlertState.RESOLVED, "5", now)])
            resolved = await late.wait_for(topic, lambda p: p["state"] == "resolved")
            assert resolved["firing"] == 0
            assert {a["state"] for a in resolved["alerts"]} == {"resolved"}

        async with Subscriber(broker) as later:
            # The topic keeps the resolved state (it is never cleared), so a newcomer sees the resolve.
            again = await later.wait_for(topic)
            assert again["state"] == "resolved"
            assert later.on(topic)[0][1] is True
            assert later.on("fleetmon/v1/events/gpu-a-001/gpu.xid") == []  # events are not retained
            await notifier.aclose()
            # A clean shutdown says offline itself (the will is for crashes).
            await later.wait_for("fleetmon/v1/collectors/col-1/status", lambda p: p["status"] == "offline")
        (h,) = notifier.health()
        assert (h.sent, h.failed, h.dropped) == (4, 0, 0)

    asyncio.run(scenario())


async def _wait_sent(notifier: MqttNotifier, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while notifier.health()[0].sent < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {notifier.health()} within {timeout}s")
        await asyncio.sleep(0.02)


def test_last_will_and_reconnect(broker: int) -> None:
    async def scenario() -> None:
        notifier = MqttNotifier(MqttConfig(host="127.0.0.1", port=broker, client_id="col-2", keepalive=5))
        notifier.broker.backoff = Backoff(initial=0.05, maximum=0.2)
        await notifier.start()
        async with Subscriber(broker, "fleetmon/v1/collectors/#") as sub:
            notifier.send_node_status(NodeStatus(node="n1", online=False, ts=1.0))
            await sub.wait_for("fleetmon/v1/collectors/col-2/status", lambda p: p["status"] == "online")
            # Sever the TCP connection without an MQTT DISCONNECT, as a crash or a cable pull
            # would: the broker publishes the will.
            client = notifier.broker._client
            assert client is not None
            sock = client._client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)
            await sub.wait_for("fleetmon/v1/collectors/col-2/status", lambda p: p["status"] == "offline")
            # The next publish notices, reconnects with back-off and goes online again.
            sub.messages.clear()
            notifier.send_node_status(NodeStatus(node="n1", online=True, ts=2.0))
            await sub.wait_for("fleetmon/v1/collectors/col-2/status", lambda p: p["status"] == "online")
            await _wait_sent(notifier, 2)
        await notifier.aclose()

    asyncio.run(scenario())


def test_password_file(tmp_path: Path) -> None:
    passwd = require_binary("mosquitto_passwd")
    pwfile = tmp_path / "passwd"
    subprocess.run([passwd, "-c", "-b", str(pwfile), "fleetmon", "s3cret"], check=True)
    port = free_port()
    proc = start_mosquitto(tmp_path / "broker", port, f"allow_anonymous false\npassword_file {pwfile}\n")

    async def scenario() -> None:
        wrong = MqttNotifier(MqttConfig(host="127.0.0.1", port=port, username="fleetmon", password="nope",
                                        client_id="col-wrong"))
        wrong.broker.backoff = Backoff(initial=0.05, maximum=0.1)
        await wrong.start()
        wrong.send_node_status(NodeStatus(node="n1", online=True, ts=1.0))
        deadline = time.monotonic() + 30
        while wrong.health()[0].retries < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # refused, then tried again with back-off
        (h,) = wrong.health()
        assert h.sent == 0 and h.retries >= 1 and not h.connected
        assert "connect to 127.0.0.1" in h.last_error
        await wrong.aclose()

        (right,) = build_notifiers({"mqtt": {"host": "127.0.0.1", "port": port, "username": "fleetmon",
                                             "password": "s3cret", "client_id": "col-ok"}}, "test.yml: notifiers")
        assert isinstance(right, MqttNotifier)
        await right.start()
        async with Subscriber(port, username="fleetmon", password="s3cret") as sub:
            right.send_node_status(NodeStatus(node="n1", online=True, ts=1.0))
            got = await sub.wait_for("fleetmon/v1/nodes/n1/status")
            assert got["status"] == "online"
        await right.aclose()

    try:
        asyncio.run(scenario())
    finally:
        proc.stop()


def make_pki(d: Path) -> Path:
    """A throw-away CA and a server certificate for 127.0.0.1 (EC keys: fast to make)."""
    openssl = require_binary("openssl")
    d.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=fleetmon test CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.ext")
    return d


def test_tls_with_ca_file(tmp_path: Path) -> None:
    d = make_pki(tmp_path / "pki")
    port = free_port()
    proc = start_mosquitto(tmp_path / "broker", port, (
        f"allow_anonymous true\ncafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"))

    async def scenario() -> None:
        notifier = MqttNotifier(MqttConfig(host="127.0.0.1", port=port, tls=True, ca_file=str(d / "ca.crt"),
                                           client_id="col-tls"))
        await notifier.start()
        notifier.send_alerts([alert(AlertState.FIRING, "0")])
        await _wait_sent(notifier, 1)
        (h,) = notifier.health()
        assert h.connected and h.last_error == ""
        await notifier.aclose()

    try:
        asyncio.run(scenario())
    finally:
        proc.stop()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(NotifierError, match=r"^c.yml: notifiers.mqtt.port: expected an integer, got 'x'$"):
        build_notifiers({"mqtt": {"host": "h", "port": "x"}}, "c.yml: notifiers")
    with pytest.raises(NotifierError, match=r"notifiers.mqtt: unknown key 'hots'; did you mean 'host'\?"):
        build_notifiers({"mqtt": {"hots": "h"}}, "c.yml: notifiers")
    with pytest.raises(NotifierError, match=r"notifiers.mqtt.host: the MQTT broker's host name is required"):
        build_notifiers({"mqtt": {}}, "c.yml: notifiers")
    with pytest.raises(NotifierError, match=r"notifiers.mqtt.ca_file: .*missing.pem does not exist"):
        build_notifiers({"mqtt": {"host": "h", "tls": True, "ca_file": str(tmp_path / "missing.pem")}},
                        "c.yml: notifiers")
    with pytest.raises(NotifierError, match=r"notifiers.alertmanager.urls\[1\]: 'ftp://x' is not an http"):
        build_notifiers({"alertmanager": {"urls": ["http://a:9093", "ftp://x"]}}, "c.yml: notifiers")
    with pytest.raises(NotifierError, match=r"notifiers.pager: unknown notifier"):
        build_notifiers({"pager": {}}, "c.yml: notifiers")
    with pytest.raises(NotifierError, match=r"notifiers.webhook.retries: expected an integer, got True"):
        build_notifiers({"webhook": {"url": "http://h/x", "retries": True}}, "c.yml: notifiers")
    built = build_notifiers({"log": {}, "alertmanager": {"urls": ["http://127.0.0.1:9093"]},
                             "mqtt": {"host": "127.0.0.1"}, "webhook": {"url": "http://127.0.0.1:8080/hook"}},
                            "c.yml: notifiers")
    assert [n.name for n in built] == ["log", "alertmanager", "mqtt", "webhook"]


def test_example_broker_config(tmp_path: Path, repo_root: Path) -> None:
    """deploy/mosquitto/: TLS for the collector, accounts, the ACL (consumers read, never write)."""
    passwd = require_binary("mosquitto_passwd")
    pki = make_pki(tmp_path / "pki")
    pwfile = tmp_path / "passwd"
    subprocess.run([passwd, "-c", "-b", str(pwfile), "fleetmon-collector-a", "c-secret"], check=True)
    subprocess.run([passwd, "-b", str(pwfile), "fleetmon-dashboard", "d-secret"], check=True)
    tls_port, plain_port = free_port(), free_port()
    conf = (repo_root / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for old, new in {
        "listener 8883\n": f"listener {tls_port} 127.0.0.1\n",
        "listener 1883 127.0.0.1\n": f"listener {plain_port} 127.0.0.1\n",
        "/etc/mosquitto/certs/": f"{pki}/",
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "/etc/mosquitto/passwd": str(pwfile),
        "/etc/mosquitto/fleetmon.acl": str(repo_root / "deploy" / "mosquitto" / "fleetmon.acl"),
    }.items():
        assert old in conf, old
        conf = conf.replace(old, new)
    proc = start_mosquitto(tmp_path / "broker", plain_port, conf, listener=False)
    topic = "fleetmon/v1/alerts/gpu-a-001/GPUOverTemperature"

    async def scenario() -> None:
        collector = MqttNotifier(MqttConfig(host="127.0.0.1", port=tls_port, tls=True, ca_file=str(pki / "ca.crt"),
                                            username="fleetmon-collector-a", password="c-secret",
                                            client_id="fleetmon-collector-a"))
        await collector.start()
        collector.send_alerts([alert(AlertState.FIRING, "3")])
        await _wait_sent(collector, 1)
        # A consumer may read, but its publish on fleetmon's topics is dropped by the ACL.
        async with aiomqtt.Client("127.0.0.1", plain_port, username="fleetmon-dashboard",
                                  password="d-secret") as dashboard:
            await dashboard.publish(topic, b'{"state": "resolved"}', qos=1, retain=True)
        async with Subscriber(plain_port, username="fleetmon-dashboard", password="d-secret") as sub:
            got = await sub.wait_for(topic)
            assert got["state"] == "firing"
            await sub.wait_for("fleetmon/v1/collectors/fleetmon-collector-a/status",
                               lambda p: p["status"] == "online")
            # The dashboard's publish was answered (PUBACK) before this subscriber connected, so
            # had the broker taken it, it would be the retained message received above.
            assert [p["state"] for p, _ in sub.on(topic) if p is not None] == ["firing"]
        # No anonymous access.
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", plain_port):
                pass
        await collector.aclose()

    try:
        asyncio.run(scenario())
    finally:
        proc.stop()
