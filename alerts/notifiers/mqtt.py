"""MQTT notifier (aiomqtt 2.x): retained alert state, events and node liveness for dashboards,
PLCs and anything else on the facility's broker.

Topics (``<prefix>`` is ``fleetmon/v1`` by default; every ``<segment>`` is escaped, see
``topic_segment``):

| topic | retained | payload (JSON) |
|---|---|---|
| ``<prefix>/alerts/<node>/<alertname>`` | yes | ``{"alertname", "node", "state", "firing", "updatedAt", "alerts"}`` |
| ``<prefix>/events/<node>/<kind>`` | no | one hardware event (``gpu.xid`` ...) |
| ``<prefix>/nodes/<node>/status`` | yes | ``{"node", "status": "online"/"offline", "online", "ts", "labels"}`` |
| ``<prefix>/collectors/<client_id>/status`` | yes | ``{"status": "online"/"offline"}``; ``offline`` is the last will |

One alert topic holds every instance of that rule on that node (GPU 0 and GPU 3 overheating are
two entries of ``alerts``); ``state`` is ``firing`` while any instance fires. A resolved instance
stays in the list, marked resolved, for ``resolved_retention`` seconds. The topic is never
cleared with an empty retained message: once every instance has resolved, the retained message
says ``"state": "resolved"``, so a subscriber that connects later sees the resolve and not
silence (which it could not tell from "never fired" or "broker lost its state"). The number of
such topics is bounded by nodes x rules.

Messages use QoS 1 (``publish`` returns once the broker's PUBACK arrived). A lost connection
is retried with capped exponential back-off; on every (re)connect the collector's status goes
``online`` and the current retained alert state is published again, in case the broker
restarted without persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt

from alerts.model import Alert, AlertState, EventNotice, NodeStatus
from alerts.notifiers.base import (
    DeliveryError,
    NotifierBase,
    QueueWorker,
    alert_json,
    event_json,
    node_status_json,
    rfc3339,
)
from alerts.notifiers.config import MqttConfig
from fleetmon_common.secrets import reveal

_ESCAPES = {"%": "%25", "/": "%2F", "+": "%2B", "#": "%23", "\0": "%00"}


def topic_segment(value: str) -> str:
    """One topic level: ``/`` would add a level and ``+``/``#`` are wildcards (MQTT 3.1.1 §4.7),
    so they are percent-escaped (``%`` too, to stay reversible). An empty value becomes ``_``."""
    if not value:
        return "_"
    return "".join(_ESCAPES.get(c, c) for c in value)


@dataclass
class _Msg:
    topic: str
    payload: bytes
    retain: bool


class _Broker(QueueWorker[_Msg]):
    def __init__(self, owner: MqttNotifier, cfg: MqttConfig) -> None:
        super().__init__("mqtt", f"{cfg.host}:{cfg.port}", capacity=cfg.queue_size, max_batch=100)
        self.owner = owner
        self.cfg = cfg
        self._client: aiomqtt.Client | None = None

    def _make_client(self) -> aiomqtt.Client:
        cfg = self.cfg
        tls_params = None
        if cfg.tls:
            tls_params = aiomqtt.TLSParameters(ca_certs=cfg.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        will = aiomqtt.Will(self.owner.collector_topic, json.dumps({"status": "offline"}).encode(),
                            qos=cfg.qos, retain=True)
        return aiomqtt.Client(
            cfg.host, cfg.port, username=cfg.username, password=reveal(cfg.password),
            identifier=self.owner.client_id, will=will, tls_params=tls_params,
            keepalive=max(1, round(cfg.keepalive)), timeout=10.0,
        )

    async def _connect(self) -> aiomqtt.Client:
        client = self._make_client()
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as err:
            raise DeliveryError(f"connect to {self.target}: {err}") from err
        self._client = client
        self.connected = True
        try:
            await client.publish(self.owner.collector_topic, json.dumps({"status": "online"}).encode(),
                                 qos=self.cfg.qos, retain=True)
            # The broker may have lost retained messages (restart without persistence): publish
            # the current state again; the queue's newer entries for the same topics follow.
            for msg in self.owner.retained_snapshot():
                await client.publish(msg.topic, msg.payload, qos=self.cfg.qos, retain=True)
        except aiomqtt.MqttError as err:
            await self._drop_client()
            raise DeliveryError(f"publish to {self.target}: {err}") from err
        return client

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        self.connected = False
        if client is not None:
            # Already gone: nothing left to tell the broker.
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def deliver(self, batch: list[_Msg]) -> None:
        client = self._client or await self._connect()
        # All publishes of the batch are in flight together (one PUBACK round trip, not one per
        # message); every result is collected so no failure is left unretrieved.
        results = await asyncio.gather(
            *(client.publish(m.topic, m.payload, qos=self.cfg.qos, retain=m.retain) for m in batch),
            return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for r in errors:
            if not isinstance(r, aiomqtt.MqttError):
                raise r
        if errors:
            await self._drop_client()
            # At least once: the whole batch is retried, including messages that got through.
            raise DeliveryError(f"publish to {self.target}: {errors[0]}") from errors[0]

    async def on_close(self) -> None:
        if self._client is not None:
            # A clean disconnect does not fire the will, so say "offline" ourselves.
            # On failure the broker publishes the will once it notices the connection is gone.
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.publish(self.owner.collector_topic,
                                           json.dumps({"status": "offline"}).encode(),
                                           qos=self.cfg.qos, retain=True, timeout=2.0)
        await self._drop_client()


class MqttNotifier(NotifierBase):
    name = "mqtt"

    def __init__(self, cfg: MqttConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.prefix = cfg.topic_prefix.strip("/")
        self.client_id = cfg.client_id or f"fleetmon-collector-{socket.gethostname()}"
        self.collector_topic = f"{self.prefix}/collectors/{topic_segment(self.client_id)}/status"
        # alert topic -> fingerprint -> (alert JSON, state, resolved_at)
        self._alerts: dict[str, dict[tuple[tuple[str, str], ...], tuple[dict[str, Any], str, float | None]]] = {}
        self._published: dict[str, tuple[Any, ...]] = {}
        self._retained: dict[str, _Msg] = {}
        self.broker = _Broker(self, cfg)
        self.workers = [self.broker]

    def alert_topic(self, node: str, alertname: str) -> str:
        return f"{self.prefix}/alerts/{topic_segment(node)}/{topic_segment(alertname)}"

    def retained_snapshot(self) -> list[_Msg]:
        return list(self._retained.values())

    def send_alerts(self, alerts: list[Alert]) -> None:
        now = time.time()
        touched: dict[str, tuple[str, str]] = {}
        for alert in alerts:
            if alert.state is AlertState.PENDING:
                continue
            topic = self.alert_topic(alert.node, alert.name)
            entries = self._alerts.setdefault(topic, {})
            entries[alert.fingerprint()] = (alert_json(alert), alert.state.value, alert.resolved_at)
            touched[topic] = (alert.node, alert.name)
        for topic, (node, name) in touched.items():
            self._publish_topic(topic, node, name, now)

    def _publish_topic(self, topic: str, node: str, alertname: str, now: float) -> None:
        entries = self._alerts[topic]
        horizon = now - self.cfg.resolved_retention
        for fp in [fp for fp, (_, state, resolved) in entries.items()
                   if state == "resolved" and resolved is not None and resolved < horizon]:
            del entries[fp]
        # Publish on state changes only: a re-send of an unchanged firing alert (every
        # resend_delay) would only rewrite the same retained message.
        signature = tuple(sorted((fp, state) for fp, (_, state, _) in entries.items()))
        if self._published.get(topic) == signature:
            return
        self._published[topic] = signature
        alerts = [a for a, _, _ in entries.values()]
        firing = sum(1 for _, state, _ in entries.values() if state == "firing")
        if not entries:
            # Every instance aged out: keep the last message (it already says resolved).
            return
        payload = {
            "alertname": alertname, "node": node,
            "state": "firing" if firing else "resolved", "firing": firing,
            "updatedAt": rfc3339(now), "alerts": alerts,
        }
        msg = _Msg(topic, json.dumps(payload, sort_keys=True).encode(), retain=True)
        self._retained[topic] = msg
        self.broker.put(msg, key=topic)

    def send_event(self, event: EventNotice) -> None:
        topic = f"{self.prefix}/events/{topic_segment(event.node)}/{topic_segment(event.kind)}"
        self.broker.put(_Msg(topic, json.dumps(event_json(event), sort_keys=True).encode(), retain=False))

    def send_node_status(self, status: NodeStatus) -> None:
        topic = f"{self.prefix}/nodes/{topic_segment(status.node)}/status"
        msg = _Msg(topic, json.dumps(node_status_json(status), sort_keys=True).encode(), retain=True)
        self._retained[topic] = msg
        self.broker.put(msg, key=topic)
