"""Evaluation of one rule group at one instant: recording rules write into the windows, alerting
rules run the Prometheus 2.42 alert state machine (``rules/alerting.go``): a new result is
pending, fires once it has been active for ``for``, keeps firing for ``keep_firing_for`` after
the condition clears, and a resolved alert is kept ``resolved_retention`` for re-sending.

Shared by the live ``AlertEngine`` and by ``fleetmon rules test``, so the unit tests exercise
the same code the collector runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from alerts.errors import AlertsError, EvalError
from alerts.model import Alert, AlertState
from alerts.promql.evaluator import Evaluator
from alerts.promql.labels import NAME, Labels, drop_name, from_pairs
from alerts.promql.values import Vector
from alerts.rulefile import AlertingRule, RecordingRule, Rule, RuleGroup
from alerts.templates import Template
from alerts.windows import Windows

log = logging.getLogger("fleetmon.alerts")


@dataclass
class _Active:
    alert: Alert
    active_at_ms: int
    resolved_at_ms: int | None = None
    keep_firing_since_ms: int | None = None


@dataclass
class RuleState:
    rule: Rule
    last_error: str = ""
    #: alerting rules: label fingerprint -> active alert (pending, firing, or resolved within retention)
    active: dict[Labels, _Active] = field(default_factory=dict)
    #: (name, labels) of the series the rule wrote in the previous / current evaluation:
    #: recording outputs, and ALERTS/ALERTS_FOR_STATE of alerting rules (for stale markers)
    previous: set[tuple[str, Labels]] = field(default_factory=set)
    current_series: set[tuple[str, Labels]] = field(default_factory=set)


class GroupRunner:
    def __init__(self, group: RuleGroup, windows: Windows, *,
                 external_labels: Mapping[str, str] | None = None, external_url: str = "",
                 resolved_retention_ms: int = 900_000, log_errors: bool = True) -> None:
        self.group = group
        self.windows = windows
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.resolved_retention_ms = resolved_retention_ms
        self.states = [RuleState(r) for r in group.rules]
        self.log_errors = log_errors
        # Write ALERTS series only when some rule reads them (their memory is not free).
        self.alerts_series = windows.wants("ALERTS") or windows.wants("ALERTS_FOR_STATE")

    def eval(self, t_ms: int) -> list[Alert]:
        """Evaluate every rule in order at ``t_ms``; returns alerts whose state changed."""
        changed: list[Alert] = []
        for st in self.states:
            ev = Evaluator(self.windows, t_ms)
            st.current_series = set()
            try:
                vec = ev.eval_vector(st.rule.expr)
                if isinstance(st.rule, RecordingRule):
                    self._record(st, st.rule, vec, t_ms)
                else:
                    assert isinstance(st.rule, AlertingRule)
                    changed.extend(self._alert(st, st.rule, vec, t_ms))
                st.last_error = ""
            except AlertsError as err:
                if self.log_errors and st.last_error != str(err):
                    log.warning("rule %s (group %s, %s:%d) failed: %s", st.rule.name, self.group.name,
                                st.rule.file, st.rule.line, err)
                st.last_error = str(err)
            except Exception as err:  # supervision boundary: a bug in one rule must not stop alerting
                if self.log_errors and st.last_error != repr(err):
                    log.exception("rule %s (group %s, %s:%d) crashed", st.rule.name, self.group.name,
                                  st.rule.file, st.rule.line)
                st.last_error = repr(err)
            # A series the rule no longer writes gets a stale marker, as Prometheus's rule group
            # does, so it vanishes at once instead of lingering for the 5-minute lookback.
            for name, lb in st.previous - st.current_series:
                self.windows.append(name, lb, t_ms, None)
            st.previous = st.current_series
        return changed

    # -- recording rules --------------------------------------------------------------------
    def _record(self, st: RuleState, rule: RecordingRule, vec: Vector, t_ms: int) -> None:
        extra = {k: t.text for k, t in rule.labels.items()}
        out: list[tuple[Labels, float]] = []
        for lb, v in vec:
            d = dict(lb)
            d[NAME] = rule.name
            d.update(extra)
            out.append((from_pairs(d.items()), v))
        if len({lb for lb, _ in out}) != len(out):
            raise EvalError("vector contains metrics with the same labelset after applying rule labels")
        limit = self.group.limit
        if limit and len(out) > limit:
            raise EvalError(f"exceeded limit of {limit} with {len(out)} series")
        for lb, v in out:
            st.current_series.add((rule.name, lb))
            self.windows.append(rule.name, lb, t_ms, v)

    # -- alerting rules ---------------------------------------------------------------------
    def _alert(self, st: RuleState, rule: AlertingRule, vec: Vector, t_ms: int) -> list[Alert]:
        t_s = t_ms / 1000
        results: dict[Labels, tuple[dict[str, str], dict[str, str], float, Labels]] = {}
        for lb, v in vec:
            tmpl_labels = dict(lb)
            d = {k: val for k, val in lb if k != NAME}

            def expand(text_tmpl: object, v: float = v, tl: dict[str, str] = tmpl_labels) -> str:
                assert isinstance(text_tmpl, Template)
                try:
                    return text_tmpl.expand(tl, v, self.external_labels, self.external_url)
                except AlertsError as err:
                    return f"<error expanding template: {err}>"

            for name, tmpl in rule.labels.items():
                d[name] = expand(tmpl)
            d["alertname"] = rule.name
            key = from_pairs(d.items())
            if key in results:
                raise EvalError("vector contains metrics with the same labelset after applying alert labels")
            annotations = {name: expand(tmpl) for name, tmpl in rule.annotations.items()}
            results[key] = (dict(key), annotations, v, lb)

        changed: list[Alert] = []
        active_pending = 0

        sources: list[_SourceIndex] = []

        def newest(key: Labels) -> float | None:
            # Only needed when an alert starts or fires; the index is built on first use.
            if not sources:
                sources.append(_SourceIndex(self.windows, rule, t_ms))
            res = results.get(key)
            return sources[0].newest(res[3] if res else None)

        for key, (labels, annotations, v, _src) in results.items():
            a = st.active.get(key)
            if a is not None and a.alert.state != AlertState.RESOLVED:
                a.alert.value = v
                a.alert.annotations = annotations
                continue
            alert = Alert(labels=labels, annotations=annotations, state=AlertState.PENDING,
                          active_at=t_s, value=v, source_ts=newest(key))
            st.active[key] = _Active(alert, t_ms)
            changed.append(alert)

        for key in list(st.active):
            a = st.active[key]
            alert = a.alert
            if key not in results:
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
            if alert.state == AlertState.PENDING and t_ms - a.active_at_ms >= rule.for_ms:
                alert.state = AlertState.FIRING
                alert.fired_at = t_s
                alert.source_ts = newest(key)
                if not any(c is alert for c in changed):
                    changed.append(alert)
            if self.alerts_series:
                # The ALERTS / ALERTS_FOR_STATE series Prometheus writes for every pending or
                # firing alert, so rules and unit tests can query them.
                with_state = dict(key)
                with_state["alertstate"] = alert.state.value
                self._write_series(st, "ALERTS", from_pairs(with_state.items()), t_ms, 1.0)
                # Prometheus stores the active time in whole seconds (ActiveAt.Unix()).
                self._write_series(st, "ALERTS_FOR_STATE", key, t_ms, float(a.active_at_ms // 1000))
        limit = self.group.limit
        if limit and active_pending > limit:
            st.active.clear()
            raise EvalError(f"exceeded limit of {limit} with {active_pending} alerts")
        return changed

    def _write_series(self, st: RuleState, name: str, labels: Labels, t_ms: int, value: float) -> None:
        if self.windows.wants(name):
            key = (name, labels)
            st.current_series.add(key)
            self.windows.append(name, labels, t_ms, value)

    def alerts(self) -> list[tuple[AlertingRule, Alert]]:
        out: list[tuple[AlertingRule, Alert]] = []
        for st in self.states:
            if isinstance(st.rule, AlertingRule):
                out.extend((st.rule, a.alert) for a in st.active.values())
        return out


class _SourceIndex:
    """Finds, for an alert's output sample, the newest input sample that produced it (for
    ``Alert.source_ts``): an exact match on the labels without the metric name first (plain
    selectors, functions, comparisons), else the newest series carrying all the output's labels
    (aggregations, group_left). The subset scan is bounded per evaluation so an alert storm
    stays linear; past the budget the rule's newest sample stands in."""

    SCAN_BUDGET = 20_000  # series compared per rule evaluation

    def __init__(self, windows: Windows, rule: Rule, t_ms: int) -> None:
        self.by_labels: dict[Labels, int] = {}
        self.series: list[tuple[dict[str, str], int]] = []
        self.newest_any = -1
        self.budget = self.SCAN_BUDGET
        seen: set[int] = set()
        for sel in rule.selectors:
            for s in windows.select(sel):
                if id(s) in seen or not s.ts:
                    continue
                seen.add(id(s))
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
