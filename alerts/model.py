"""Alert and notice types shared by the rule engine, the notifiers and the collector.

The collector never hands untyped dicts to the notifiers (STYLE, "avoid"): everything that
crosses from rule evaluation or ingest into ``alerts/notifiers/`` is one of these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class AlertState(enum.Enum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass
class Alert:
    """One alert instance: a rule's output series with its state.

    ``labels`` include ``alertname`` and the rule's extra labels (and, like Prometheus, every
    label of the output series); ``annotations`` are already expanded from their templates.
    Times are unix seconds. ``ends_at`` is set once the alert is resolved.
    """

    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    active_at: float
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    last_sent_at: float | None = None
    generator_url: str = ""
    #: Unix time (seconds) of the newest sample that made the rule true; the latency
    #: benchmark measures from here.
    source_ts: float | None = None

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def node(self) -> str:
        return self.labels.get("node", "")

    def fingerprint(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.labels.items()))


@dataclass
class EventNotice:
    """A hardware event as received from an agent (``gpu.xid``, ``ib.link_flap``, ...)."""

    node: str
    kind: str
    severity: str  # "info" | "warning" | "critical"
    message: str
    ts: float
    labels: dict[str, str] = field(default_factory=dict)
    action: str = ""


@dataclass
class NodeStatus:
    """An agent's liveness as the collector sees its stream."""

    node: str
    online: bool
    ts: float
    labels: dict[str, str] = field(default_factory=dict)


class Notifier(Protocol):
    """What the engine and the collector call. Implementations queue and return at once:
    a slow or absent receiver never blocks rule evaluation (bounded queue, drop oldest, counted).
    """

    name: str

    async def start(self) -> None: ...

    def send_alerts(self, alerts: list[Alert]) -> None:
        """Alerts whose state changed, or that are due to be re-sent (firing or recently resolved)."""

    def send_event(self, event: EventNotice) -> None: ...

    def send_node_status(self, status: NodeStatus) -> None: ...

    async def aclose(self) -> None:
        """Flush what can be flushed within a short deadline, then stop."""
