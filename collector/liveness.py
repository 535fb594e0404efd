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
