"""Webhook notifier: one JSON ``POST`` per alert batch, event or node status, with retries.

Body shapes (``version`` lets receivers evolve with us)::

    {"version": "1", "kind": "alerts", "alerts": [<alert>, ...]}
    {"version": "1", "kind": "event", "event": {...}}
    {"version": "1", "kind": "node_status", "status": {...}}

``<alert>`` is the shape of ``alerts.notifiers.base.alert_json`` (labels, annotations, state,
activeAt, firedAt, resolvedAt, value, generatorURL). A connection error, a 5xx, 408 or 429 is
retried ``retries`` times with exponential back-off and jitter; any other 4xx is final. Either
way the entry is then counted ``failed`` and the worker moves on.
"""

from __future__ import annotations

from typing import Any

import httpx

from alerts.model import Alert, AlertState, EventNotice, NodeStatus
from alerts.notifiers.base import (
    Backoff,
    DeliveryError,
    NotifierBase,
    QueueWorker,
    alert_json,
    event_json,
    node_status_json,
)
from alerts.notifiers.config import WebhookConfig
from fleetmon_common.secrets import redact_url

_RETRYABLE_4XX = (408, 429)


class _Endpoint(QueueWorker[dict[str, Any]]):
    def __init__(self, cfg: WebhookConfig) -> None:
        # Logs and metrics name the target without its path or credentials (often the secret).
        super().__init__("webhook", redact_url(cfg.endpoint, keep_path=False), capacity=cfg.queue_size, max_batch=1,
                         max_attempts=cfg.retries + 1, backoff=Backoff(initial=cfg.backoff))
        self.cfg = cfg
        self._client: httpx.AsyncClient | None = None

    async def deliver(self, batch: list[dict[str, Any]]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.cfg.timeout, headers=self.cfg.headers)
        (body,) = batch
        try:
            resp = await self._client.post(self.cfg.endpoint, json=body)
        except httpx.HTTPError as err:
            self.connected = False
            raise DeliveryError(f"POST {self.target}: {type(err).__name__}") from err
        self.connected = True
        if resp.status_code >= 400:
            retryable = resp.status_code >= 500 or resp.status_code in _RETRYABLE_4XX
            raise DeliveryError(f"POST {self.target}: HTTP {resp.status_code}", retryable=retryable)

    async def on_close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class WebhookNotifier(NotifierBase):
    name = "webhook"

    def __init__(self, cfg: WebhookConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.endpoint = _Endpoint(cfg)
        self.workers = [self.endpoint]

    def send_alerts(self, alerts: list[Alert]) -> None:
        body = [alert_json(a) for a in alerts if a.state is not AlertState.PENDING]
        if body:
            self.endpoint.put({"version": "1", "kind": "alerts", "alerts": body})

    def send_event(self, event: EventNotice) -> None:
        self.endpoint.put({"version": "1", "kind": "event", "event": event_json(event)})

    def send_node_status(self, status: NodeStatus) -> None:
        self.endpoint.put({"version": "1", "kind": "node_status", "status": node_status_json(status)})
