"""Evaluation of one rule group at one instant: recording rules write into the windows, alerting
rules run the Prometheus 2.42 alert state machine (``rules/alerting.go``): a new result is
pending, fires once it has been active for ``for``, keeps firing for ``keep_firing_for`` after
the condition clears, and a resolved alert is kept ``resolved_retention`` for re-sending.

A rule is re-evaluated only for the nodes whose inputs changed or whose result may change with
the clock (``alerts/schedule.py``); the results of the other nodes stand, and everything that
Prometheus does every tick regardless (writing recording rule outputs and ALERTS series,
advancing ``for`` and ``keep_firing_for`` timers) still happens every tick.

Shared by the live ``AlertEngine`` and by ``fleetmon rules test``, so the promtool suite
exercises the same code the collector runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field

from alerts.errors import AlertsError, EvalError
from alerts.model import Alert, AlertState
from alerts.promql.evaluator import Evaluator
from alerts.promql.labels import NAME, Labels, drop_name, from_pairs
from alerts.promql.values import Vector
from alerts.restore import ForState, restored_active_at
from alerts.rulefile import AlertingRule, RecordingRule, Rule, RuleGroup
from alerts.schedule import EVERYTHING, RuleSchedule, Scheduler, needs, selects_name
from alerts.templates import Template
from alerts.windows import Windows

log = logging.getLogger("fleetmon.alerts")


@dataclass
class _Active:
    alert: Alert
    active_at_ms: int
    part: str
    resolved_at_ms: int | None = None
    keep_firing_since_ms: int | None = None


@dataclass(frozen=True)
class ActiveState:
    """A pending or firing alert as ``ALERTS_FOR_STATE`` / ``ALERTS`` carry it: its labels
    (``alertname`` included, external labels not), its node, active time and state."""

    labels: Labels
    part: str
    active_at_ms: int
    state: AlertState


@dataclass
class _Result:
    """One alerting-rule output: its alert labels, expanded annotations, value, source labels."""

    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    source: Labels


@dataclass
class RuleState:
    rule: Rule
    schedule: RuleSchedule
    last_error: str = ""
    #: alerting rules: label fingerprint -> active alert (pending, firing, or resolved within retention)
    active: dict[Labels, _Active] = field(default_factory=dict)
    #: the standing result, per part: alerting rules' outputs by alert labels
    results: dict[str, dict[Labels, _Result]] = field(default_factory=dict)
    #: recording rules' outputs per part (written again every tick, as Prometheus does)
    outputs: dict[str, list[tuple[Labels, float]]] = field(default_factory=dict)
    #: (name, labels) of the series the rule wrote in the previous evaluation (for stale markers)
    previous: set[tuple[str, Labels]] = field(default_factory=set)


class GroupRunner:
    def __init__(self, group: RuleGroup, windows: Windows, *, scheduler: Scheduler | None = None,
                 external_labels: Mapping[str, str] | None = None, external_url: str = "",
                 resolved_retention_ms: int = 900_000, log_errors: bool = True,
                 default_step_ms: int = 60_000, restoring: Collection[str] = (), grace_ms: int = 0) -> None:
        self.group = group
        self.windows = windows
        self.scheduler = scheduler or Scheduler(windows)
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.resolved_retention_ms = resolved_retention_ms
        self.log_errors = log_errors
        self.default_step_ms = default_step_ms
        #: Nodes whose alerts wait for their ``for`` state (alerts/restore.py): the engine's set, shared.
        self.restoring = restoring
        self.grace_ms = grace_ms
        self.last_t = -(2**62)
        #: rule evaluations by kind: over everything, over the changed nodes, or none needed
        self.stats = {"full": 0, "partial": 0, "skipped": 0}
        self.states: list[RuleState] = []
        for r in group.rules:
            for sel, need in needs(r.expr):
                windows.register(sel, need)
            st = RuleState(r, RuleSchedule(r, windows.shard_label))
            self.scheduler.add(st.schedule)
            self.states.append(st)
        # Write ALERTS series only when some rule reads them (their memory is not free).
        self.alerts_series = windows.wants("ALERTS") or windows.wants("ALERTS_FOR_STATE")

    def reads(self, names: Collection[str]) -> bool:
        """Whether a rule of this group selects any of ``names``."""
        return any(selects_name(sel, n) for n in names for st in self.states for sel in st.schedule.selectors)

    def eval(self, t_ms: int) -> list[Alert]:
        """Evaluate every rule in order at ``t_ms``; returns alerts whose state changed."""
        changed: list[Alert] = []
        self.last_t = t_ms
        for st in self.states:
            self.scheduler.sync()  # the samples earlier rules of this tick wrote count too
            parts = st.schedule.due(t_ms, self.windows)
            self.stats["full" if parts is EVERYTHING else "partial" if parts else "skipped"] += 1
            current: set[tuple[str, Labels]] = set()
            try:
                fresh = None if parts is not EVERYTHING and not parts else self._evaluate(st, parts, t_ms)
                if isinstance(st.rule, RecordingRule):
                    self._record(st, st.rule, parts, fresh=fresh, t_ms=t_ms, current=current)
                else:
                    assert isinstance(st.rule, AlertingRule)
                    changed.extend(self._alert(st, st.rule, parts, fresh=fresh, t_ms=t_ms, current=current))
                st.last_error = ""
            except AlertsError as err:
                st.schedule.failed()
                if self.log_errors and st.last_error != str(err):
                    log.warning("rule %s (group %s, %s:%d) failed: %s", st.rule.name, self.group.name,
                                st.rule.file, st.rule.line, err)
                st.last_error = str(err)
                continue  # as Prometheus: no output, no stale markers for this evaluation
            except Exception as err:  # supervision boundary: a bug in one rule must not stop alerting
                st.schedule.failed()
                if self.log_errors and st.last_error != repr(err):
                    log.exception("rule %s (group %s, %s:%d) crashed", st.rule.name, self.group.name,
                                  st.rule.file, st.rule.line)
                st.last_error = repr(err)
                continue
            # A series the rule no longer writes gets a stale marker, as Prometheus's rule group
            # does, so it vanishes at once instead of lingering for the 5-minute lookback.
            for name, lb in st.previous - current:
                self.windows.append(name, lb, t_ms, None)
            st.previous = current
        return changed

    def _evaluate(self, st: RuleState, parts: Collection[str] | None, t_ms: int) -> dict[str, Vector]:
        """The rule's output for ``parts`` (None: all), grouped by part."""
        sched = st.schedule
        ev = Evaluator(self.windows, t_ms, parts=parts, track=True, by_part=sched.partitioned,
                       default_step_ms=self.default_step_ms, shard_label=self.windows.shard_label)
        try:
            vec = ev.eval_vector(st.rule.expr)
        except AlertsError:
            if parts is not None:
                # Prometheus evaluates the whole rule: report the error it would meet first.
                Evaluator(self.windows, t_ms, default_step_ms=self.default_step_ms).eval_vector(st.rule.expr)
            raise
        sched.evaluated(parts, ev)
        shard = self.windows.shard_label
        out: dict[str, Vector] = {}
        for sample in vec:
            part = ""
            for k, v in sample[0]:
                if k == shard:
                    part = v
                    break
            got = out.get(part)
            if got is None:
                out[part] = [sample]
            else:
                got.append(sample)
        return out

    # -- recording rules --------------------------------------------------------------------
    def _record(self, st: RuleState, rule: RecordingRule, parts: Collection[str] | None, *,
                fresh: dict[str, Vector] | None, t_ms: int, current: set[tuple[str, Labels]]) -> None:
        if fresh is not None:
            extra = {k: t.text for k, t in rule.labels.items()}
            new: dict[str, list[tuple[Labels, float]]] = {}
            for part, vec in fresh.items():
                rows = new[part] = []
                for lb, v in vec:
                    d = dict(lb)
                    d[NAME] = rule.name
                    d.update(extra)
                    rows.append((from_pairs(d.items()), v))
            seen: set[Labels] = set()
            for rows in new.values():
                for lb, _ in rows:
                    if lb in seen:
                        raise EvalError("vector contains metrics with the same labelset after applying rule labels")
                    seen.add(lb)
            _replace(st.outputs, new, parts)
        limit = self.group.limit
        total = sum(len(rows) for rows in st.outputs.values())
        if limit and total > limit:
            st.schedule.failed()
            raise EvalError(f"exceeded limit of {limit} with {total} series")
        keep = self.windows.wants(rule.name)
        for rows in st.outputs.values():
            for lb, v in rows:
                current.add((rule.name, lb))
                if keep:
                    self.windows.append(rule.name, lb, t_ms, v)

    # -- alerting rules ---------------------------------------------------------------------
    def _alert(self, st: RuleState, rule: AlertingRule, parts: Collection[str] | None, *,
               fresh: dict[str, Vector] | None, t_ms: int, current: set[tuple[str, Labels]]) -> list[Alert]:
        t_s = t_ms / 1000
        new: dict[str, dict[Labels, _Result]] = {}
        if fresh is not None:
            seen: set[Labels] = set()
            for part, vec in fresh.items():
                results = new[part] = {}
                for lb, v in vec:
                    res = self._expand(rule, lb, v)
                    key = from_pairs(res.labels.items())
                    if key in seen:
                        raise EvalError("vector contains metrics with the same labelset after applying alert labels")
                    seen.add(key)
                    res.labels = dict(key)
                    results[key] = res
            _replace(st.results, new, parts)

        changed: list[Alert] = []
        sources: dict[str, _SourceIndex] = {}

        def newest(key: Labels, part: str) -> float | None:
            # Only needed when an alert starts or fires; the index is built on first use.
            index = sources.get(part)
            if index is None:
                scope = part if st.schedule.partitioned else None
                index = sources[part] = _SourceIndex(self.windows, rule, t_ms, scope)
            res = st.results.get(part, {}).get(key)
            return index.newest(res.source if res else None)

        for part, results in new.items():
            for key, res in results.items():
                a = st.active.get(key)
                if a is not None and a.alert.state != AlertState.RESOLVED:
                    a.alert.value = res.value
                    a.alert.annotations = res.annotations
                    continue
                alert = Alert(labels=res.labels, annotations=res.annotations, state=AlertState.PENDING,
                              active_at=t_s, value=res.value, source_ts=newest(key, part))
                st.active[key] = _Active(alert, t_ms, part)
                changed.append(alert)

        active_pending = 0
        for key in list(st.active):
            a = st.active[key]
            alert = a.alert
            if key not in st.results.get(a.part, {}):
                keep_firing = False
                if alert.state == AlertState.FIRING and rule.keep_firing_for_ms > 0:
                    if a.keep_firing_since_ms is None:
                        a.keep_firing_since_ms = t_ms
                    if t_ms - a.keep_firing_since_ms < rule.keep_firing_for_ms:
                        keep_firing = True
                if alert.state == AlertState.PENDING or (
                        a.resolved_at_ms is not None and t_ms - a.resolved_at_ms > self.resolved_retention_ms):
                    del st.active[key]
                if alert.state != AlertState.RESOLVED and not keep_firing:
                    alert.state = AlertState.RESOLVED
                    alert.resolved_at = t_s
                    a.resolved_at_ms = t_ms
                    changed.append(alert)
                if not keep_firing:
                    continue
            else:
                a.keep_firing_since_ms = None
            active_pending += 1
            waits = a.part in self.restoring and self.restorable(rule)  # no ALERTS_FOR_STATE until restored
            if alert.state == AlertState.PENDING and t_ms - a.active_at_ms >= rule.for_ms and not waits:
                alert.state = AlertState.FIRING
                alert.fired_at = t_s
                alert.source_ts = newest(key, a.part)
                if not any(c is alert for c in changed):
                    changed.append(alert)
            if self.alerts_series and not waits:
                # The ALERTS / ALERTS_FOR_STATE series Prometheus writes for every pending or
                # firing alert, so rules and unit tests can query them.
                with_state = dict(key)
                with_state["alertstate"] = alert.state.value
                self._write_series(current, "ALERTS", from_pairs(with_state.items()), t_ms, 1.0)
                # Prometheus stores the active time in whole seconds (ActiveAt.Unix()).
                self._write_series(current, "ALERTS_FOR_STATE", key, t_ms, float(a.active_at_ms // 1000))
        limit = self.group.limit
        if limit and active_pending > limit:
            st.active.clear()
            st.schedule.failed()  # the alerts are gone: evaluate everything afresh next time
            raise EvalError(f"exceeded limit of {limit} with {active_pending} alerts")
        return changed

    def _expand(self, rule: AlertingRule, lb: Labels, v: float) -> _Result:
        tmpl_labels = dict(lb)

        def expand(tmpl: Template) -> str:
            try:
                return tmpl.expand(tmpl_labels, v, self.external_labels, self.external_url)
            except AlertsError as err:
                return f"<error expanding template: {err}>"

        d = {k: val for k, val in lb if k != NAME}
        for name, tmpl in rule.labels.items():
            d[name] = expand(tmpl)
        d["alertname"] = rule.name
        annotations = {name: expand(tmpl) for name, tmpl in rule.annotations.items()}
        return _Result(d, annotations, v, lb)

    def _write_series(self, current: set[tuple[str, Labels]], name: str, labels: Labels, t_ms: int,
                      value: float) -> None:
        if self.windows.wants(name):
            current.add((name, labels))
            self.windows.append(name, labels, t_ms, value)

    # -- alert state across collectors (alerts/restore.py) -------------------------------------
    def restorable(self, rule: AlertingRule) -> bool:
        """Whether the rule's alerts get their ``for`` state back: as Prometheus, not when its
        ``for`` is below the grace period (nor 0: such an alert fires at once anyway)."""
        return rule.for_ms > 0 and rule.for_ms >= self.grace_ms

    def restore_part(self, part: str, records: MutableMapping[Labels, ForState], t_ms: int) -> int:
        """Give the active alerts of ``part`` their active time back from ``records`` (keyed by
        alert labels); the records used are removed. Returns how many alerts were restored."""
        n = 0
        for st in self.states:
            rule = st.rule
            if not isinstance(rule, AlertingRule):
                continue
            for key, a in st.active.items():
                if a.part != part or a.alert.state == AlertState.RESOLVED:
                    continue
                record = records.pop(key, None)
                if record is None or record.stale or not self.restorable(rule):
                    continue
                a.active_at_ms = restored_active_at(record, rule.for_ms, t_ms, self.grace_ms)
                a.alert.active_at = a.active_at_ms / 1000
                n += 1
        return n

    def take_over(self, record: ForState, part: str, t_ms: int) -> Alert | None:
        """An alert the node's previous collector had active and that is not active here: it is
        over, and this collector, now the node's owner, resolves it (Alertmanager would otherwise
        keep it until its ``endsAt``). Its annotations are expanded from the labels alone (the
        value is not known: NaN)."""
        labels = dict(record.labels)
        for st in self.states:
            rule = st.rule
            if not isinstance(rule, AlertingRule) or rule.name != labels.get("alertname"):
                continue
            if record.labels in st.active:
                return None
            res = self._expand(rule, record.labels, math.nan)
            if from_pairs(res.labels.items()) != record.labels:
                continue  # another rule of that name (other static labels)
            active_ms = int(record.active_at) * 1000
            alert = Alert(labels=dict(record.labels), annotations=res.annotations, state=AlertState.RESOLVED,
                          active_at=active_ms / 1000, value=math.nan, fired_at=(active_ms + rule.for_ms) / 1000,
                          resolved_at=t_ms / 1000)
            st.active[record.labels] = _Active(alert, active_ms, part, resolved_at_ms=t_ms)
            return alert
        return None

    def release_part(self, part: str) -> int:
        """The node moved to another collector, which now owns its alerts: forget them here
        without resolving them, and the standing results they came from. Returns how many."""
        n = 0
        for st in self.states:
            for key in [k for k, a in st.active.items() if a.part == part]:
                del st.active[key]
                n += 1
            st.results.pop(part, None)
            st.outputs.pop(part, None)
        return n

    def active_states(self) -> Iterator[ActiveState]:
        """Every pending or firing alert whose state is its own (not waiting to be restored):
        what ``ALERTS_FOR_STATE`` holds now."""
        for st in self.states:
            rule = st.rule
            if not isinstance(rule, AlertingRule):
                continue
            for key, a in st.active.items():
                state = a.alert.state
                if state == AlertState.RESOLVED or (a.part in self.restoring and self.restorable(rule)):
                    continue
                yield ActiveState(key, a.part, a.active_at_ms, state)

    def alerts(self) -> list[tuple[AlertingRule, Alert]]:
        out: list[tuple[AlertingRule, Alert]] = []
        for st in self.states:
            if isinstance(st.rule, AlertingRule):
                out.extend((st.rule, a.alert) for a in st.active.values())
        return out

    def shown_alerts(self, restoring: bool = True) -> list[Alert]:
        """Pending and firing alerts; with ``restoring=False``, without those of a node being
        restored (an adopted node's alert of a restorable rule has a provisional timer until its
        state comes back)."""
        out: list[Alert] = []
        for st in self.states:
            rule = st.rule
            if not isinstance(rule, AlertingRule):
                continue
            hide = not restoring and self.restoring and self.restorable(rule)
            out.extend(a.alert for a in st.active.values()
                       if a.alert.state in (AlertState.PENDING, AlertState.FIRING)
                       and not (hide and a.part in self.restoring))
        return out


def _replace(standing: dict[str, dict[Labels, _Result]] | dict[str, list[tuple[Labels, float]]],
             new: Mapping[str, object], parts: Collection[str] | None) -> None:
    """Put ``new`` in place of the standing results of ``parts`` (None: of all parts)."""
    if parts is None:
        standing.clear()
        standing.update(new)  # type: ignore[arg-type]
        return
    for part in parts:
        got = new.get(part)
        if got:
            standing[part] = got  # type: ignore[assignment]
        else:
            standing.pop(part, None)
    for part, got in new.items():  # outputs outside ``parts``: data-free ones (vector(1) ...)
        if part not in parts:
            standing[part] = got  # type: ignore[assignment]


class _SourceIndex:
    """Finds, for an alert's output sample, the newest input sample that produced it (for
    ``Alert.source_ts``): an exact match on the labels without the metric name first (plain
    selectors, functions, comparisons), else the newest series carrying all the output's labels
    (aggregations, group_left). Only the alert's own part is read; the subset scan is bounded
    per evaluation so an alert storm stays linear; past the budget the part's newest sample
    stands in."""

    SCAN_BUDGET = 20_000  # series compared per rule evaluation

    def __init__(self, windows: Windows, rule: Rule, t_ms: int, part: str | None) -> None:
        self.by_labels: dict[Labels, int] = {}
        self.series: list[tuple[dict[str, str], int]] = []
        self.newest_any = -1
        self.budget = self.SCAN_BUDGET
        seen: set[int] = set()
        for sel in rule.selectors:
            for s in windows.select(sel, None if part is None else (part,)):
                if s.ref in seen or not s.ts:
                    continue
                seen.add(s.ref)
                last = s.ts[-1]
                if last > t_ms:
                    continue
                key = drop_name(s.labels)
                if last > self.by_labels.get(key, -1):
                    self.by_labels[key] = last
                self.series.append((dict(s.labels), last))
                self.newest_any = max(self.newest_any, last)

    def newest(self, match: Labels | None) -> float | None:
        best = -1
        if match:
            key = drop_name(match)
            best = self.by_labels.get(key, -1)
            if best < 0 and self.budget > 0:
                self.budget -= len(self.series)
                for d, last in self.series:
                    if last > best and all(d.get(k) == v for k, v in key):
                        best = last
        if best < 0:
            best = self.newest_any
        return best / 1000 if best >= 0 else None
