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
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.group import ActiveState, GroupRunner
from alerts.model import Alert, AlertState, Notifier
from alerts.promql.labels import from_map
from alerts.promql.values import LOOKBACK_MS
from alerts.restore import PROMETHEUS_GRACE_PERIOD_S, PROMETHEUS_OUTAGE_TOLERANCE_S, ForState
from alerts.rulefile import AlertingRule, RecordingRule, RuleGroup, load_files
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
                 resend_delay: float = 60.0, resolved_retention: float = 900.0,
                 for_grace_period: float = PROMETHEUS_GRACE_PERIOD_S,
                 for_outage_tolerance: float = PROMETHEUS_OUTAGE_TOLERANCE_S) -> None:
        self.groups = groups
        self.notifiers = list(notifiers)
        self.external_labels = dict(external_labels or {})
        self.resend_delay = resend_delay
        self.resolved_retention = resolved_retention
        self.windows = Windows(retention_ms=LOOKBACK_MS)
        self.scheduler = Scheduler(self.windows)
        #: Nodes adopted and not restored yet (alerts/restore.py): their alerts of restorable rules
        #: may not fire, and write no ALERTS_FOR_STATE, until :meth:`restore`.
        self.restoring: set[str] = set()
        self.grace_ms = round(for_grace_period * 1000)
        self.tolerance_ms = round(for_outage_tolerance * 1000)
        # External labels reach templates ($externalLabels) here, as in `fleetmon rules test`,
        # and outgoing alerts in _notify, as Prometheus's notifier adds them.
        self._runners = [GroupRunner(g, self.windows, scheduler=self.scheduler, external_labels=self.external_labels,
                                     external_url=external_url,
                                     resolved_retention_ms=int(resolved_retention * 1000),
                                     default_step_ms=DEFAULT_SUBQUERY_STEP_MS, restoring=self.restoring,
                                     grace_ms=self.grace_ms)
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

    # -- alert state across collectors (alerts/restore.py) --------------------------------------
    def adopt(self, node: str) -> None:
        """This collector takes the node on (it connected after a restart, or failed over from
        another collector): until :meth:`restore`, its alerts of rules whose ``for`` is restorable
        stay pending and write no ``ALERTS_FOR_STATE`` (Prometheus, before it restored a rule)."""
        self.restoring.add(node)

    def evaluated_since(self, t: float) -> bool:
        """Whether every group has evaluated at or after ``t`` (unix s): an adopted node's
        restore waits for an evaluation over its warmed windows, as Prometheus's for the
        evaluations after its start."""
        t_ms = round(t * 1000)
        return all(r.last_t >= t_ms for r in self._runners)

    def restore(self, node: str, records: Iterable[ForState], now: float) -> tuple[int, list[Alert]]:
        """Restore the node's alerts from the last ``ALERTS_FOR_STATE`` samples of its previous
        life (``records``; those older than the outage tolerance are ignored), as Prometheus's
        ``RestoreForState``. Records of alerts that are not active here are alerts the previous
        collector had and that are over: they are resolved now (and notified), so none is left
        for Alertmanager to time out. Returns (alerts restored, alerts resolved)."""
        t_ms = round(now * 1000)
        self.restoring.discard(node)
        by_key = {r.labels: r for r in records if r.ts_ms >= t_ms - self.tolerance_ms}
        restored = sum(runner.restore_part(node, by_key, t_ms) for runner in self._runners)
        resolved: list[Alert] = []
        for record in by_key.values():
            if record.stale:
                continue
            for runner in self._runners:
                alert = runner.take_over(record, node, t_ms)
                if alert is not None:
                    resolved.append(alert)
                    break
        self._notify(now, resolved)
        return restored, resolved

    def release(self, node: str, now: float) -> int:
        """The node streams to another collector now, which took its alerts over: forget them
        here without resolving them, and end its series (stale markers) so nothing new starts.
        Returns how many alerts were let go."""
        self.restoring.discard(node)
        n = sum(runner.release_part(node) for runner in self._runners)
        self.windows.mark_stale(round(now * 1000), {self.windows.shard_label: node})
        return n

    def active_states(self) -> Iterator[ActiveState]:
        """The pending and firing alerts whose state is this collector's (what it writes as
        ``ALERTS_FOR_STATE``), restoring nodes excluded."""
        for runner in self._runners:
            yield from runner.active_states()

    def warm_plan(self) -> dict[str, int]:
        """Metric names the rules read, with how much history (ms) each needs: what an adopted
        node's windows are warmed with. Rule outputs (recording rules, ALERTS) are left out:
        they are computed here, not read back."""
        outputs = {r.name for g in self.groups for r in g.rules if isinstance(r, RecordingRule)}
        outputs |= {"ALERTS", "ALERTS_FOR_STATE"}
        return {name: span for name, span in self.windows.keeps().items() if span > 0 and name not in outputs}

    def backfill(self, name: str, labels: Mapping[str, str], ts_ms: Sequence[int], values: Sequence[float]) -> int:
        """Older samples of one series, from history (``warm_plan``); see ``Windows.backfill``."""
        return self.windows.backfill(name, from_map(labels), ts_ms, values)

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

    def active(self, *, restoring: bool = True) -> list[Alert]:
        """Pending and firing alerts. ``restoring=False`` (the dashboard and API) leaves out
        those of a node being restored: their timers are provisional until its state is back."""
        return [a for r in self._runners for a in r.shown_alerts(restoring)]

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
