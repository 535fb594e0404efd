"""``AlertEngine``: the collector's entry point to rule evaluation (see the alerts contract in
``alerts/README.md``).

The collector gets a reference per series once (``series_ref``), then appends samples by
reference, a block at a time (``append_block``), and calls ``evaluate`` about once a second
from its event loop; a batch carrying hardware events also calls ``evaluate_urgent`` with the
names it touched, so the rules that read them run at once instead of at the next tick.
Everything here is synchronous. Rule groups without an ``interval`` run every second, and each
evaluation costs what changed (``alerts/schedule.py``), not what exists.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.group import GroupRunner
from alerts.model import Alert, AlertState, Notifier
from alerts.promql.labels import from_map
from alerts.promql.values import LOOKBACK_MS
from alerts.rulefile import AlertingRule, RuleGroup, load_files
from alerts.schedule import Scheduler
from alerts.windows import Windows

log = logging.getLogger("fleetmon.alerts")

#: Every series is trimmed to its retention, and unindexed once quiet, within this many seconds:
#: a slice of the index per evaluation, so a large index never pauses the collector.
GC_SWEEP_S = 60.0
#: The step of a subquery that names none (``x[5m:]``): Prometheus's default global
#: evaluation interval.
DEFAULT_SUBQUERY_STEP_MS = 60_000


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
                 external_labels: Mapping[str, str] | None = None, external_url: str = "",
                 resend_delay: float = 60.0, resolved_retention: float = 900.0) -> None:
        self.groups = groups
        self.notifiers = list(notifiers)
        self.external_labels = dict(external_labels or {})
        self.resend_delay = resend_delay
        self.resolved_retention = resolved_retention
        self.windows = Windows(retention_ms=LOOKBACK_MS)
        self.scheduler = Scheduler(self.windows)
        # External labels reach templates ($externalLabels) here, as in `fleetmon rules test`,
        # and outgoing alerts in _notify, as Prometheus's notifier adds them.
        self._runners = [GroupRunner(g, self.windows, scheduler=self.scheduler, external_labels=self.external_labels,
                                     external_url=external_url,
                                     resolved_retention_ms=int(resolved_retention * 1000),
                                     default_step_ms=DEFAULT_SUBQUERY_STEP_MS)
                         for g in groups]
        self._next_eval = [0.0] * len(groups)
        self.stats = [GroupStats() for _ in groups]
        self._next_gc = 0.0

    @classmethod
    def from_files(cls, paths: Sequence[Path], notifiers: Sequence[Notifier] = (), **kw: Any) -> AlertEngine:
        """Load rule files; raises ``alerts.errors.RuleError`` naming file:line:col."""
        return cls(load_files(paths), notifiers, **kw)

    # -- ingest ---------------------------------------------------------------------------------
    def wants(self, name: str) -> bool:
        """Whether some rule may select series of this metric name."""
        return self.windows.wants(name)

    def series_ref(self, name: str, labels: Mapping[str, str]) -> int | None:
        """A handle for the series ``name{labels}``, for ``append``/``append_block``; None when
        no loaded rule can select it (then its samples need not be passed at all). Call it once
        per series (it sorts the labels); the ref stays valid for the engine's lifetime."""
        return self.windows.ref(name, from_map(labels))

    def append(self, ref: int, ts_ms: int, value: float) -> None:
        self.windows.append_ref(ref, ts_ms, value)

    def append_block(self, refs: Sequence[int], ts_ms: int, values: Sequence[float]) -> None:
        """One block of a batch: one timestamp, many series (refs from ``series_ref``)."""
        self.windows.append_refs(refs, ts_ms, values)

    def ingest(self, name: str, labels: Mapping[str, str], ts: float, value: float) -> None:
        """One sample by name and labels (tests and small callers; the collector uses refs)."""
        self.windows.append(name, from_map(labels), round(ts * 1000), float(value))

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
            if t_ms > runner.last_t:
                started = time.perf_counter()
                changed.extend(runner.eval(t_ms))
                stats.evaluations += 1
                stats.last_duration = time.perf_counter() - started
                stats.last_evaluation = now
        self._raise_floor()
        if now >= self._next_gc:
            self.windows.gc(t_ms, share=1 / GC_SWEEP_S)
            self._next_gc = now + 1.0
        self._notify(now, changed)
        return changed

    def evaluate_urgent(self, now: float, names: Collection[str]) -> list[Alert]:
        """Evaluate at once the groups that read any of ``names`` (an event just landed), then
        notify as ``evaluate`` does. Their next scheduled evaluation stays where it was; only
        what changed since their last evaluation is computed."""
        t_ms = round(now * 1000)
        changed: list[Alert] = []
        for runner in self._runners:
            if t_ms > runner.last_t and runner.reads(names):
                changed.extend(runner.eval(t_ms))
        self._raise_floor()
        self._notify(now, changed)
        return changed

    def _raise_floor(self) -> None:
        # A group evaluates only after its last evaluation time: the windows may forget what
        # none of them can read again (the older samples of instant-only series).
        if self._runners:
            self.windows.floor = min(r.last_t for r in self._runners)

    def _with_external(self, alert: Alert) -> None:
        for k, v in self.external_labels.items():
            alert.labels.setdefault(k, v)

    def _notify(self, now: float, changed: list[Alert]) -> None:
        for a in changed:
            self._with_external(a)
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
                    self._with_external(a)
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
