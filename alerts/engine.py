"""``AlertEngine``: the collector's entry point to rule evaluation (see the alerts contract).

The collector feeds every accepted sample through ``wants``/``ingest`` and calls ``evaluate``
about once a second from its event loop; everything here is synchronous and cheap. Rule groups
without an ``interval`` run every second: fleetmon evaluates on the stream instead of after a
scrape interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.group import GroupRunner
from alerts.model import Alert, AlertState, Notifier
from alerts.promql.evaluator import LOOKBACK_MS
from alerts.rulefile import AlertingRule, RuleGroup, load_files
from alerts.windows import Windows

log = logging.getLogger("fleetmon.alerts")

#: How often (seconds) series that went quiet are dropped from the windows.
GC_INTERVAL_S = 10.0


@dataclass
class GroupStats:
    """How one rule group's evaluations went (the collector's ``/metrics``, like Prometheus's
    ``prometheus_rule_group_*``)."""

    evaluations: int = 0
    missed: int = 0  # slots skipped because the evaluation before ran late (the loop was busy)
    last_duration: float = 0.0  # seconds
    last_evaluation: float = 0.0  # unix seconds of its last evaluation


@dataclass(frozen=True)
class GroupHealth:
    name: str
    file: str
    interval: float
    rules: int
    failing: int  # rules whose last evaluation failed
    stats: GroupStats


class AlertEngine:
    def __init__(self, groups: list[RuleGroup], notifiers: Sequence[Notifier] = (), *,
                 external_labels: Mapping[str, str] | None = None,
                 resend_delay: float = 60.0, resolved_retention: float = 900.0) -> None:
        self.groups = groups
        self.notifiers = list(notifiers)
        self.external_labels = dict(external_labels or {})
        self.resend_delay = resend_delay
        self.resolved_retention = resolved_retention
        rules = [r for g in groups for r in g.rules]
        # Keep the longest range any rule reads, and at least the instant-vector lookback.
        retention = max([LOOKBACK_MS, *(r.max_range_ms for r in rules)])
        self.windows = Windows((sel for r in rules for sel in r.selectors), retention_ms=retention)
        self._runners = [GroupRunner(g, self.windows, resolved_retention_ms=int(resolved_retention * 1000))
                         for g in groups]
        self._next_eval = [0.0] * len(groups)
        self.stats = [GroupStats() for _ in groups]
        self._next_gc = 0.0
        self._keys: dict[tuple[str, int], tuple[tuple[str, str], ...]] = {}

    @classmethod
    def from_files(cls, paths: Sequence[Path], notifiers: Sequence[Notifier] = (), **kw: Any) -> AlertEngine:
        """Load rule files; raises ``alerts.errors.RuleError`` naming file:line:col."""
        return cls(load_files(paths), notifiers, **kw)

    # -- ingest ---------------------------------------------------------------------------------
    def wants(self, name: str) -> bool:
        return self.windows.wants(name)

    def ingest(self, name: str, labels: Mapping[str, str], ts: float, value: float) -> None:
        # Guard against callers that skip wants(): a series no rule reads must cost no memory.
        if not self.windows.wants(name):
            return
        self.windows.append(name, tuple(sorted(labels.items())), round(ts * 1000), float(value))

    def mark_stale(self, labels_match: Mapping[str, str], ts: float | None = None) -> None:
        """A node's stream ended: its series get a stale marker now, as Prometheus marks the
        series of a target that disappeared."""
        now = time.time() if ts is None else ts
        self.windows.mark_stale(round(now * 1000), labels_match)

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, now: float) -> list[Alert]:
        """Evaluate the groups that are due at ``now`` (unix s). Returns the alerts whose state
        changed (a pending alert that clears comes back RESOLVED with ``fired_at`` None).
        Notifiers receive, like Alertmanager from Prometheus, only firing alerts and alerts
        resolved after firing: on change, and again every ``resend_delay`` (resolved ones for
        ``resolved_retention``)."""
        t_ms = round(now * 1000)
        changed: list[Alert] = []
        for i, runner in enumerate(self._runners):
            interval = runner.group.interval_s
            # Groups run in slots aligned to their interval (like Prometheus's evaluation
            # schedule). A call a little early for its slot (the caller's timer jitters around
            # whole seconds) still counts, so a 1 s group is not skipped every other call.
            tolerance = 0.1 * interval
            if now < self._next_eval[i] - tolerance:
                continue
            stats = self.stats[i]
            if self._next_eval[i]:
                stats.missed += max(0, math.floor((now + tolerance - self._next_eval[i]) / interval))
            self._next_eval[i] = (math.floor((now + tolerance) / interval) + 1) * interval
            started = time.perf_counter()
            changed.extend(runner.eval(t_ms))
            stats.evaluations += 1
            stats.last_duration = time.perf_counter() - started
            stats.last_evaluation = now
        if now >= self._next_gc:
            self.windows.gc(t_ms)
            self._next_gc = now + GC_INTERVAL_S
        for a in changed:
            self._add_external(a)
        self._notify(now, changed)
        return changed

    def _add_external(self, alert: Alert) -> None:
        for k, v in self.external_labels.items():
            alert.labels.setdefault(k, v)

    def _notify(self, now: float, changed: list[Alert]) -> None:
        if not self.notifiers:
            return
        changed_ids = {id(a) for a in changed}
        out: list[Alert] = []
        for runner in self._runners:
            for _rule, a in runner.alerts():
                if a.state == AlertState.PENDING:
                    continue
                if a.state == AlertState.RESOLVED and a.fired_at is None:
                    continue
                due = a.last_sent_at is None or now - a.last_sent_at >= self.resend_delay
                if id(a) in changed_ids or due:
                    a.last_sent_at = now
                    out.append(a)
        # Pending alerts that were dropped are not in runner.alerts() any more; nothing to send.
        if not out:
            return
        for n in self.notifiers:
            try:
                n.send_alerts(list(out))
            except Exception:  # supervision boundary: one broken notifier must not stop the others
                log.exception("notifier %s failed to queue %d alert(s)", getattr(n, "name", n), len(out))

    def active(self) -> list[Alert]:
        """Pending and firing alerts, for the dashboard and API."""
        return [a for r in self._runners for _rule, a in r.alerts()
                if a.state in (AlertState.PENDING, AlertState.FIRING)]

    def rules(self) -> list[AlertingRule]:
        return [r for g in self.groups for r in g.rules if isinstance(r, AlertingRule)]

    def group_health(self) -> list[GroupHealth]:
        """Each group's evaluation counters and its failing rules, now."""
        return [GroupHealth(r.group.name, r.group.file, r.group.interval_s, len(r.states),
                            sum(1 for st in r.states if st.last_error), st)
                for r, st in zip(self._runners, self.stats, strict=True)]

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        for n in self.notifiers:
            await n.start()

    async def aclose(self) -> None:
        results = await asyncio.gather(*(n.aclose() for n in self.notifiers), return_exceptions=True)
        for n, res in zip(self.notifiers, results, strict=True):
            if isinstance(res, BaseException):
                log.warning("notifier %s did not close cleanly: %s", getattr(n, "name", n), res)
