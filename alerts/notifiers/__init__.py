"""Notifiers: where firing and resolved alerts, hardware events and node liveness go.

Each notifier implements ``alerts.model.Notifier``: ``send_*`` enqueue into a bounded queue and
return at once (a receiver that is down never blocks rule evaluation; when the queue is full the
oldest entry is dropped and counted), a worker task per target delivers, and ``health()`` returns
one ``NotifierHealth`` per target (sent, failed, dropped, retries, queued, last error).

``build_notifiers(section, where)`` turns the collector config's ``notifiers:`` mapping into
notifiers; see ``alerts/notifiers/README.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alerts.errors import NotifierError
from alerts.model import Notifier
from alerts.notifiers.alertmanager import AlertmanagerNotifier, postable_alert
from alerts.notifiers.base import NotifierBase, NotifierHealth
from alerts.notifiers.config import (
    KINDS,
    AlertmanagerConfig,
    LogConfig,
    MqttConfig,
    WebhookConfig,
    build_config,
)
from alerts.notifiers.log import LogNotifier
from alerts.notifiers.mqtt import MqttNotifier, topic_segment
from alerts.notifiers.webhook import WebhookNotifier
from fleetmon_common.settings import Problems

__all__ = [
    "AlertmanagerConfig",
    "AlertmanagerNotifier",
    "LogConfig",
    "LogNotifier",
    "MqttConfig",
    "MqttNotifier",
    "NotifierBase",
    "NotifierHealth",
    "WebhookConfig",
    "WebhookNotifier",
    "build_notifiers",
    "postable_alert",
    "topic_segment",
]


def build_notifiers(section: Mapping[str, Any] | None, where: str) -> list[Notifier]:
    """Validate the ``notifiers:`` mapping and build one notifier per key.

    ``where`` names the config location for error messages (``collector.yml: notifiers``).
    """
    if section is None:
        return []
    if not isinstance(section, Mapping):
        raise NotifierError(f"{where}: expected a mapping of notifier kinds, got {type(section).__name__}")
    out: list[Notifier] = []
    problems = Problems()
    for kind, raw in section.items():
        if kind not in KINDS:
            problems.add(f"{where}.{kind}: unknown notifier; known: {', '.join(sorted(KINDS))}")
            continue
        key = f"{where}.{kind}"
        with problems.gather(NotifierError):
            if kind == "log":
                out.append(LogNotifier(build_config(LogConfig, raw, key)))
            elif kind == "alertmanager":
                out.append(AlertmanagerNotifier(build_config(AlertmanagerConfig, raw, key)))
            elif kind == "mqtt":
                out.append(MqttNotifier(build_config(MqttConfig, raw, key)))
            else:
                out.append(WebhookNotifier(build_config(WebhookConfig, raw, key)))
    problems.raise_if_any(NotifierError)
    return out
