"""Alert state that outlives a collector: ``for`` timers restored from ``ALERTS_FOR_STATE`` as
Prometheus restores them (``rules/group.go`` ``RestoreForState``), per node.

Prometheus writes ``ALERTS_FOR_STATE{<alert labels>}`` = the alert's active time (unix seconds)
at every evaluation of a pending or firing alert, and restores once after a restart, after its
second evaluation: for every alert that is active again, the last sample of its series within
``--rules.alert.for-outage-tolerance`` (default 1 h) gives when it became active (the value) and
when the old process last saw it (the sample's time, "down at"):

- the alert had been active for its ``for`` already: it keeps its active time, and fires at the
  next evaluation;
- less than ``--rules.alert.for-grace-period`` (default 10 m) of its ``for`` was left: it fires
  one grace period from now;
- otherwise its active time moves later by the outage, so it still waits out the rest of its ``for``.

Rules whose ``for`` is shorter than the grace period are not restored at all (they wait their
``for`` again), and a series whose last sample is a stale marker is an alert that had resolved.
No ``ALERTS_FOR_STATE`` is written for an alert until its rule is restored.

fleetmon restores per node, when a collector *adopts* it: at start, after a restart (history in
the local store), and when an agent fails over from another collector (history in the shared
TSDB). The collector decides when (``collector/handover.py``); the engine applies the rules
above (:meth:`alerts.engine.AlertEngine.restore`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alerts.promql.labels import Labels

#: Prometheus's defaults (``--rules.alert.for-grace-period``, ``--rules.alert.for-outage-tolerance``).
PROMETHEUS_GRACE_PERIOD_S = 600.0
PROMETHEUS_OUTAGE_TOLERANCE_S = 3600.0


@dataclass(frozen=True)
class ForState:
    """The last sample of one ``ALERTS_FOR_STATE`` series: the alert's labels (``alertname``
    included, ``__name__`` not), the sample's time (ms) and value (the active time, unix
    seconds; NaN for a stale marker: the alert had resolved)."""

    labels: Labels
    ts_ms: int
    active_at: float

    @property
    def stale(self) -> bool:
        return math.isnan(self.active_at)


def restored_active_at(record: ForState, hold_ms: int, now_ms: int, grace_ms: int) -> int:
    """The active time (ms) an alert of a rule with ``for`` = ``hold_ms`` gets back from its
    last ``ALERTS_FOR_STATE`` sample, restored at ``now_ms`` (``RestoreForState``'s three cases;
    both times in whole seconds, as Prometheus stores and reads them)."""
    down_at = record.ts_ms // 1000 * 1000
    active_at = int(record.active_at) * 1000
    remaining = hold_ms - (down_at - active_at)
    if remaining <= 0:
        return active_at  # it was firing: it fires again at the next evaluation
    if remaining < grace_ms:
        return now_ms + grace_ms - hold_ms  # it fires one grace period from now
    return active_at + (now_ms - down_at)  # the outage does not count as time pending
