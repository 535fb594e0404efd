"""Node health as the collector sees it: the accelerators each node reports, and a roll-up of
a node's state into healthy / degraded / failed, with the reasons.

The roll-up is the one place these rules live; the API, the dashboard and ``fleetmon status``
show what it says:

- **failed**: the agent is silent (no batch within ``node_timeout``), an accelerator is down
  (``gpu_up == 0``: off the bus, hung, driver gone; the node cannot run a full-node job), or a
  critical alert fires on the node;
- **degraded**: any other alert fires on it, or an alert is pending on it;
- **healthy**: none of these.

Accelerators are tracked from ``gpu_up`` alone (one ``gpu_*`` vocabulary for every vendor, with
``vendor`` and ``model`` labels; DESIGN.md, "Metrics"), the latest sample of each, fed by the
collector as batches land: no store query per request. An accelerator that stopped reporting
while its node streams on is forgotten after :data:`STALE_AFTER_S`, as Prometheus drops a series
after its lookback (the ``GPUCountBelowExpected`` rule covers a GPU that vanished).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alerts.model import Alert, AlertState

if TYPE_CHECKING:  # the view imports this module's types
    from collector.view import CollectorView, NodeRow

#: The series the tracker keeps (the collector routes these to :meth:`Accelerators.update`).
ACCELERATOR_UP = "gpu_up"
#: Seconds after which an accelerator that stopped reporting is dropped (Prometheus' lookback).
STALE_AFTER_S = 300.0

HEALTHY, DEGRADED, FAILED = "healthy", "degraded", "failed"
#: Worst first.
HEALTH_STATES = (FAILED, DEGRADED, HEALTHY)


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One accelerator's latest ``gpu_up`` sample."""

    node: str
    index: str  # the ``gpu`` label (or the uuid when a plugin gives no index)
    uuid: str
    vendor: str
    model: str
    up: bool
    ts: float  # unix seconds of the sample


class Accelerators:
    """The latest ``gpu_up`` of every accelerator, per node. Written from the event loop only."""

    def __init__(self, stale_after: float = STALE_AFTER_S) -> None:
        self.stale_after = stale_after
        self._nodes: dict[str, dict[str, Accelerator]] = {}

    @staticmethod
    def wants(name: str) -> bool:
        return name == ACCELERATOR_UP

    def update(self, node: str, labels: Mapping[str, str], ts: float, value: float) -> None:
        index = labels.get("gpu") or labels.get("uuid") or labels.get("device", "")
        devices = self._nodes.setdefault(node, {})
        old = devices.get(index)
        if old is not None and old.ts > ts:  # a backfilled sample older than what we hold
            return
        devices[index] = Accelerator(node, index, labels.get("uuid", ""), labels.get("vendor", ""),
                                     labels.get("model", ""), value >= 1.0, ts)

    def of(self, node: str, now: float, *, streaming: bool = True) -> list[Accelerator]:
        """The node's accelerators by index. While the node streams, ones silent for longer than
        ``stale_after`` are dropped; a silent node keeps its last known state."""
        devices = self._nodes.get(node)
        if not devices:
            return []
        if streaming:
            for key in [k for k, a in devices.items() if now - a.ts > self.stale_after]:
                del devices[key]
        return sorted(devices.values(), key=lambda a: (len(a.index), a.index))

    def forget(self, node: str) -> None:
        self._nodes.pop(node, None)


@dataclass(frozen=True, slots=True)
class ModelCount:
    """Accelerators of one vendor and model on one node (or in the fleet)."""

    vendor: str
    model: str
    up: int
    total: int


def by_model(accelerators: Iterable[Accelerator]) -> list[ModelCount]:
    up: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    for a in accelerators:
        total[a.vendor, a.model] += 1
        up[a.vendor, a.model] += a.up
    return [ModelCount(v, m, up[v, m], n) for (v, m), n in sorted(total.items())]


@dataclass(frozen=True, slots=True)
class NodeHealth:
    node: str
    health: str  # healthy | degraded | failed
    reasons: tuple[str, ...]  # worst first; empty when healthy
    models: tuple[ModelCount, ...]
    firing: int
    pending: int


def rollup(node: str, up: bool, silent_for: float | None, accelerators: Sequence[Accelerator],
           alerts: Iterable[Alert]) -> NodeHealth:
    """One node's health from its stream state, its accelerators and the alerts on it.

    ``silent_for``: seconds since its last batch (None: none yet)."""
    failed: list[str] = []
    degraded: list[str] = []
    if not up:
        failed.append("agent silent" if silent_for is None else f"agent silent for {silent_for:.0f}s")
    failed.extend(f"GPU {a.index} down" for a in accelerators if not a.up)
    firing = pending = 0
    for a in sorted(alerts, key=lambda a: a.name):
        if a.state == AlertState.FIRING:
            firing += 1
            severity = a.labels.get("severity", "")
            (failed if severity == "critical" else degraded).append(
                f"{severity or 'unlabelled'} alert {a.name} firing")
        elif a.state == AlertState.PENDING:
            pending += 1
            degraded.append(f"alert {a.name} pending")
    health = FAILED if failed else DEGRADED if degraded else HEALTHY
    return NodeHealth(node, health, tuple(failed + degraded), tuple(by_model(accelerators)), firing, pending)


@dataclass(frozen=True, slots=True)
class ModelHealth:
    """Fleet roll-up for one vendor and model: its nodes by health, its accelerators up/total."""

    vendor: str
    model: str
    nodes: Mapping[str, int]  # health -> nodes
    up: int
    total: int


def fleet_by_model(nodes: Iterable[NodeHealth]) -> list[ModelHealth]:
    """Nodes by health for each vendor and model they carry (a node with two models counts in
    both); nodes without accelerators under vendor and model ``""``."""
    health: dict[tuple[str, str], Counter[str]] = {}
    up: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    for n in nodes:
        keys = [(m.vendor, m.model) for m in n.models] or [("", "")]
        for m in n.models:
            up[m.vendor, m.model] += m.up
            total[m.vendor, m.model] += m.total
        for key in keys:
            health.setdefault(key, Counter())[n.health] += 1
    return [ModelHealth(v, m, {h: c[h] for h in HEALTH_STATES}, up[v, m], total[v, m])
            for (v, m), c in sorted(health.items())]


def node_health(view: CollectorView, now: float) -> list[tuple[NodeRow, NodeHealth]]:
    """Every node the collector knows with its roll-up, sorted by name."""
    by_node: dict[str, list[Alert]] = {}
    for a in view.active_alerts():
        by_node.setdefault(a.node, []).append(a)
    out = []
    for n in sorted(view.nodes(now), key=lambda n: n.node):
        silent = now - n.last_batch_at if n.last_batch_at else None
        acc = view.accelerators(n.node, now, streaming=n.up)
        out.append((n, rollup(n.node, n.up, silent, acc, by_node.get(n.node, ()))))
    return out
