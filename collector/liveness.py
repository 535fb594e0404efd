"""Nodes counted down while their stream stayed open: a ``node_timeout`` shorter than the
agents' batch interval.

A node is down when no batch came within ``node_timeout`` (its series get stale markers,
``fleetmon_node_up`` drops to 0). If the next batch then arrives on the same stream, the agent
was alive all along. Once is a stall; again and again, cycle after cycle, is a configuration
that counts every node down between two batches. The collector cannot read the agents'
``batch_interval``, so it says what it sees, once, with the figures to act on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from alerts.engine import AlertEngine
    from collector.handover import Handover

log = logging.getLogger("fleetmon.collector.liveness")

#: Downs in a row on one open stream before the warning.
STREAK = 3


class QuietStreams:
    def __init__(self, node_timeout: float) -> None:
        self.node_timeout = node_timeout
        self._down: dict[str, tuple[float, float]] = {}  # node -> (stream connected at, last batch at)
        self._streak: dict[str, int] = {}
        self.warned = False

    def went_down(self, node: str, connected: bool, connected_at: float, last_batch_at: float) -> None:
        if connected:
            self._down[node] = (connected_at, last_batch_at)
        else:
            self._down.pop(node, None)
            self._streak.pop(node, None)  # the stream ended: a real outage, not a slow cadence

    def came_back(self, node: str, connected_at: float, last_batch_at: float) -> None:
        was = self._down.pop(node, None)
        if was is None or was[0] != connected_at:
            self._streak.pop(node, None)  # it reconnected: the agent restarted or moved
            return
        streak = self._streak[node] = self._streak.get(node, 0) + 1
        if streak >= STREAK and not self.warned:
            self.warned = True
            log.warning("node %s: counted down %d times in a row while its stream stayed open (%.1fs between "
                        "its last two batches, node_timeout %gs): if the agents' batch_interval is longer than "
                        "node_timeout, raise node_timeout above it; until then every such node goes down between "
                        "batches (its series marked stale, fleetmon_node_up 0). Said once for all nodes.",
                        node, streak, last_batch_at - was[1], self.node_timeout)


class LiveNode(Protocol):
    """What the liveness check reads of a node (the ingest's ``NodeInfo``, the rules process's)."""

    labels: dict[str, str]
    connected: bool
    connected_at: float
    last_batch_at: float
    clock_skew: float


class NodeLiveness:
    """Node up/down for the rule engine, before each evaluation (in the collector's process or in
    the rules process): a node is up while it streams and sent a batch within ``node_timeout``
    (or connected just now). One that goes down gets stale markers on its series, as Prometheus
    marks a vanished target's, unless the hand-over holds it (its stream ended moments ago);
    ``fleetmon_node_up`` and the clock skew go to the rules that read them."""

    def __init__(self, node_timeout: float) -> None:
        self.node_timeout = node_timeout
        self.down: set[str] = set()
        self.quiet = QuietStreams(node_timeout)

    def is_up(self, info: LiveNode, now: float) -> bool:
        return info.connected and now - max(info.last_batch_at, info.connected_at) < self.node_timeout

    def feed(self, engine: AlertEngine, nodes: Mapping[str, LiveNode], handover: Handover | None,
             now: float) -> None:
        wants_up = engine.wants("fleetmon_node_up")
        wants_skew = engine.wants("fleetmon_node_clock_skew_seconds")
        for node, info in nodes.items():
            if handover is not None and node in handover.released:
                continue  # it streams to another collector, which owns its alerts
            up = self.is_up(info, now)
            if not up and node not in self.down and not (handover is not None and handover.holds(node, now)):
                engine.mark_stale({"node": node}, now)  # device rules stop; NodeAgentSilent covers it
                self.down.add(node)
                self.quiet.went_down(node, info.connected, info.connected_at, info.last_batch_at)
            elif up and node in self.down:
                self.down.discard(node)
                self.quiet.came_back(node, info.connected_at, info.last_batch_at)
            labels = {**info.labels, "node": node}
            if wants_up:
                engine.ingest("fleetmon_node_up", labels, now, 1.0 if up else 0.0)
            if wants_skew and info.connected:
                engine.ingest("fleetmon_node_clock_skew_seconds", labels, now, info.clock_skew)
