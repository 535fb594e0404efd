"""Alertmanager v2 notifier: ``POST /api/v2/alerts`` to every configured replica.

Protocol, as Prometheus speaks it (prometheus/rules/alerting.go ``sendAlerts``, Alertmanager
``api/v2/openapi.yaml`` ``postableAlerts``):

- a firing alert is posted with ``startsAt`` = when it fired and ``endsAt`` = now + a few resend
  intervals. The engine re-sends firing alerts every ``resend_delay``; each post pushes ``endsAt``
  forward, so Alertmanager keeps the alert active while the collector lives, and resolves it by
  itself (at ``endsAt``) if the collector dies;
- a resolved alert is posted with ``endsAt`` = the resolve time (explicit resolve), and the engine
  keeps re-sending it for ``resolved_retention`` (15 min) so a replica that was down or
  restarting at the moment of the resolve still learns about it;
- pending alerts are not sent (Prometheus does not either).

Each replica has its own worker and queue, so one replica down never delays the others; the
queue coalesces by alert fingerprint, so after an outage a replica receives the latest state of
each alert once. Events and node status are not Alertmanager's business and are ignored here.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from alerts.model import Alert, AlertState, EventNotice, NodeStatus
from alerts.notifiers.base import DeliveryError, NotifierBase, QueueWorker, log, rfc3339
from alerts.notifiers.config import AlertmanagerConfig
from fleetmon_common.secrets import redact_url

# Prometheus label names (model.LabelNameRE); Alertmanager rejects the whole batch with 400 when
# one alert carries another, so such labels are dropped here (and logged) instead.
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def postable_alert(alert: Alert, now: float, valid_for: float, external_url: str = "") -> dict[str, Any]:
    """One alert in the ``postableAlert`` shape of Alertmanager's v2 API."""
    labels = {}
    for k, v in alert.labels.items():
        if not _LABEL_NAME.match(k):
            log.warning("alertmanager: dropping label %r of alert %s: not a valid label name", k, alert.name)
            continue
        if v == "":
            continue  # an empty label value means "no such label" in Prometheus
        labels[k] = str(v)
    starts = alert.fired_at if alert.fired_at is not None else alert.active_at
    if alert.state is AlertState.RESOLVED:
        ends = alert.resolved_at if alert.resolved_at is not None else now
    else:
        ends = now + valid_for
    out: dict[str, Any] = {
        "labels": labels,
        "annotations": {k: str(v) for k, v in alert.annotations.items()},
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
    }
    url = alert.generator_url or (external_url.rstrip("/") + "/alerts" if external_url else "")
    if url:
        out["generatorURL"] = url
    return out


class _Replica(QueueWorker[dict[str, Any]]):
    def __init__(self, base_url: str, cfg: AlertmanagerConfig) -> None:
        super().__init__("alertmanager", redact_url(base_url), capacity=cfg.queue_size, max_batch=cfg.max_batch)
        self.endpoint = base_url.rstrip("/") + "/api/v2/alerts"
        self.cfg = cfg
        self._client: httpx.AsyncClient | None = None

    async def deliver(self, batch: list[dict[str, Any]]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.cfg.timeout, headers=self.cfg.headers)
        try:
            resp = await self._client.post(self.endpoint, json=batch)
        except httpx.HTTPError as err:
            self.connected = False
            raise DeliveryError(f"POST {self.target}/api/v2/alerts: {type(err).__name__}: {err}") from err
        self.connected = True
        if resp.status_code >= 500 or resp.status_code == 429:
            raise DeliveryError(f"POST {self.target}/api/v2/alerts: HTTP {resp.status_code}: {resp.text[:200]}")
        if resp.status_code >= 400:
            # Alertmanager explains a rejected alert in the body ("start time must be before end time").
            raise DeliveryError(f"POST {self.target}/api/v2/alerts: HTTP {resp.status_code}: {resp.text[:200]}",
                                retryable=False)

    async def on_close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class AlertmanagerNotifier(NotifierBase):
    name = "alertmanager"

    def __init__(self, cfg: AlertmanagerConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.replicas = [_Replica(url, cfg) for url in cfg.urls]
        self.workers = list(self.replicas)

    def send_alerts(self, alerts: list[Alert]) -> None:
        now = time.time()
        valid_for = self.cfg.resend * self.cfg.resend_factor
        for alert in alerts:
            if alert.state is AlertState.PENDING:
                continue
            payload = postable_alert(alert, now, valid_for, self.cfg.external_url)
            key = alert.fingerprint()
            for r in self.replicas:
                r.put(payload, key)

    def send_event(self, event: EventNotice) -> None:
        """Events reach Alertmanager only through rules (``gpu_xid_errors_total`` increases)."""

    def send_node_status(self, status: NodeStatus) -> None:
        """Node liveness reaches Alertmanager through the ``NodeAgentSilent`` rule."""
