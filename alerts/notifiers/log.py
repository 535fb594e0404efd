"""Log notifier: one structured line per alert, event or node status (JSON after a fixed tag),
so ``journalctl -u fleetmon-collector | grep 'alert '`` and log shippers both work.

Example: ``alert {"alertname": "GPUOverTemperature", "node": "gpu-a-001", "state": "firing", ...}``
"""

from __future__ import annotations

import json
import logging
from typing import Any

from alerts.model import Alert, AlertState, EventNotice, NodeStatus
from alerts.notifiers.base import (
    NotifierBase,
    QueueWorker,
    alert_json,
    event_json,
    node_status_json,
)
from alerts.notifiers.config import LogConfig

_LEVELS = {"critical": logging.ERROR, "warning": logging.WARNING}


class _Writer(QueueWorker[tuple[int, str, dict[str, Any]]]):
    def __init__(self, cfg: LogConfig) -> None:
        super().__init__("log", cfg.logger, capacity=cfg.queue_size, max_batch=100)
        self.logger = logging.getLogger(cfg.logger)
        self.connected = True  # a logger is always there (fleetmon_notifier_connected)

    async def deliver(self, batch: list[tuple[int, str, dict[str, Any]]]) -> None:
        for level, tag, record in batch:
            self.logger.log(level, "%s %s", tag, json.dumps(record, sort_keys=True, separators=(",", ":")))


class LogNotifier(NotifierBase):
    name = "log"

    def __init__(self, cfg: LogConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LogConfig()
        self.cfg.validate()
        self.writer = _Writer(self.cfg)
        self.workers = [self.writer]

    def send_alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            if a.state is AlertState.PENDING:
                continue
            record = alert_json(a)
            record["alertname"] = a.name
            record["node"] = a.node
            level = logging.INFO
            if a.state is AlertState.FIRING:
                level = _LEVELS.get(a.labels.get("severity", ""), logging.INFO)
            self.writer.put((level, "alert", record))

    def send_event(self, event: EventNotice) -> None:
        self.writer.put((_LEVELS.get(event.severity, logging.INFO), "event", event_json(event)))

    def send_node_status(self, status: NodeStatus) -> None:
        level = logging.INFO if status.online else logging.WARNING
        self.writer.put((level, "node", node_status_json(status)))
