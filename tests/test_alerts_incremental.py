"""Incremental evaluation (only the nodes whose inputs changed, plus clock wake-ups) must give,
tick for tick, exactly what evaluating every rule over everything gives: random rules of the
whole language, streaming samples at several cadences with gaps, counter resets, stale markers
and late samples."""

from __future__ import annotations

import math
import random

from alerts.engine import AlertEngine
from alerts.model import AlertState
from alerts.rulefile import load_text
from alerts.schedule import EVERYTHING
from tests.test_alerts_differential import generate

NODES = ["n1", "n2", "n3", "n4"]


def _rules(rng: random.Random, n: int) -> str:
    lines = ["groups:", "  - name: g", "    rules:"]
    exprs: list[str] = []
    while len(exprs) < n:
        e = generate(rng)
        if e not in exprs:
            exprs.append(e)
    for i, e in enumerate(exprs):
        quoted = e.replace("'", "''")
        if i % 4 == 3:
            lines += [f"      - record: rec_{i}", f"        expr: '{quoted}'"]
        else:
            lines += [f"      - alert: A{i}", f"        expr: '{quoted}'",
                      f"        for: {rng.choice(['0s', '3s', '20s'])}", "        annotations: {v: '{{ $value }}'}"]
    # Rules that read recording rule outputs, absent() and time() (not node-local).
    lines += ["      - alert: OnRecorded", "        expr: 'count by (node) ({__name__=~\"rec_.*\"}) > 0'",
              "      - alert: Absent", "        expr: 'absent(gauge{node=\"n4\"})'",
              "      - alert: Clock", "        expr: 'time() - timestamp(gauge) > 25'"]
    return "\n".join(lines) + "\n"


class _Fleet:
    """Per node: gauge, ctr_total, flag, thr, uniq, lat_bucket series at their own cadences."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.series: list[tuple[str, dict[str, str], int, int]] = []  # name, labels, period s, phase s
        for k, node in enumerate(NODES):
            period = [1, 3, 10, 7][k]
            for gpu in ("0", "1"):
                for name in ("gauge", "ctr_total", "uniq"):
                    self.series.append((name, {"node": node, "gpu": gpu}, period, k))
            self.series.append(("flag", {"node": node, "gpu": "0", "reason": "x"}, period, k))
            self.series.append(("thr", {"node": node}, 10, k))
            for le in ("0.1", "0.5", "+Inf"):
                self.series.append(("lat_bucket", {"node": node, "le": le}, period, k))
        self.counters: dict[int, float] = {}

    def value(self, i: int, name: str, labels: dict[str, str], t: int) -> float:
        rng = self.rng
        if name in ("ctr_total", "lat_bucket"):
            c = self.counters.get(i, 0.0)
            c = 0.0 if rng.random() < 0.02 else c + rng.choice([0, 0, 1, 3])  # resets now and then
            if name == "lat_bucket":
                c = c * {"0.1": 1, "0.5": 2, "+Inf": 3}[labels["le"]]
            self.counters[i] = c
            return c
        if name == "flag":
            return float(rng.random() < 0.3)
        if name == "thr":
            return 4.0
        if name == "uniq":
            return round(rng.uniform(-10, 10), 2)
        return rng.choice([0.5, 1.0, 3.0, 5.0, 7.5, float(t % 7), math.nan if rng.random() < 0.02 else 2.0])


def _snapshot(eng: AlertEngine) -> list[tuple[object, ...]]:
    out = []
    for runner in eng._runners:
        for _rule, a in runner.alerts():
            v = a.value if not math.isnan(a.value) else -1e308
            out.append((a.name, sorted(a.labels.items()), a.state.value, v, sorted(a.annotations.items())))
    return sorted(out, key=repr)


def _errors(eng: AlertEngine) -> list[str]:
    return [st.last_error for r in eng._runners for st in r.states]


def test_incremental_equals_full_evaluation() -> None:
    rng = random.Random(4242)
    text = _rules(rng, 40)
    incremental = AlertEngine(load_text(text, "gen.yml"))
    full = AlertEngine(load_text(text, "gen.yml"))
    for runner in full._runners:
        for st in runner.states:
            st.schedule.due = lambda _t, _w: EVERYTHING  # type: ignore[method-assign]
    data = random.Random(7)
    fleet = _Fleet(data)
    for t in range(0, 330):
        down = {node for k, node in enumerate(NODES) if k and 200 + 40 * k <= t < 230 + 40 * k}
        for i, (name, labels, period, phase) in enumerate(fleet.series):
            if labels["node"] in down or (t - phase) % period or data.random() < 0.05:
                continue
            ts = t * 1000 - data.choice([0, 0, 0, 400, 900])  # samples arrive up to 0.9 s late
            v = fleet.value(i, name, labels, t)
            for eng in (incremental, full):
                eng.ingest(name, labels, ts / 1000, v)
        for node in down:
            if t == 200 + 40 * NODES.index(node):
                for eng in (incremental, full):
                    eng.mark_stale({"node": node}, t + 0.1)
        a = {(x.name, tuple(sorted(x.labels.items())), x.state) for x in incremental.evaluate(t + 0.5)}
        b = {(x.name, tuple(sorted(x.labels.items())), x.state) for x in full.evaluate(t + 0.5)}
        assert a == b, f"t={t}: state changes differ: {sorted(a ^ b)}"
        assert _snapshot(incremental) == _snapshot(full), f"t={t}: active alerts differ"
        assert _errors(incremental) == _errors(full), f"t={t}"
    assert sum(1 for x in _snapshot(full) if x[2] == AlertState.FIRING.value) > 3  # the rules do fire
    stats = {k: sum(r.stats[k] for r in incremental._runners) for k in ("full", "partial", "skipped")}
    assert stats["partial"] + stats["skipped"] > stats["full"], stats  # most evaluations did less


def test_instant_only_series_keep_only_what_can_be_read() -> None:
    """Series read only by plain instant selectors keep the newest sample at or before the last
    evaluation and the ones after it: the same answers as windows that keep the whole lookback,
    with samples arriving late and ahead of the evaluation time."""
    text = """groups:
  - name: g
    rules:
      - alert: Hot
        expr: gauge > 3
        annotations: {v: '{{ $value }}'}
      - alert: Flag
        expr: flag == 1
        for: 3s
      - alert: Below
        expr: uniq < on (node) group_left thr
        annotations: {v: '{{ $value }}'}
      - alert: Few
        expr: count by (node) (gauge) < 2
      - alert: Absent
        expr: absent(gauge{node="n4"})
      - alert: Old
        expr: time() - timestamp(uniq) > 2
        annotations: {v: '{{ $value }}'}
      - record: node:gauge:sum
        expr: sum by (node) (gauge)
      - alert: Sum
        expr: node:gauge:sum > 8
        annotations: {v: '{{ $value }}'}
"""
    trimmed = AlertEngine(load_text(text, "gen.yml"))
    reference = AlertEngine(load_text(text, "gen.yml"))
    reference._raise_floor = lambda: None  # type: ignore[method-assign]  # keeps every sample of the lookback
    data = random.Random(11)
    fleet = _Fleet(data)
    for t in range(0, 200):
        for i, (name, labels, period, phase) in enumerate(fleet.series):
            if (t - phase) % period or data.random() < 0.05:
                continue
            # late, on time, and ahead of the next evaluations (agent clocks run ahead)
            ts = t * 1000 + data.choice([0, 0, -900, 300, 700, 1600, 2500])
            v = fleet.value(i, name, labels, t)
            ref = trimmed.series_ref(name, labels)  # the collector's path: blocks by ref
            if ref is not None:
                trimmed.append_block([ref], ts, [v])
            reference.ingest(name, labels, ts / 1000, v)
        if t == 150:
            for eng in (trimmed, reference):
                eng.mark_stale({"node": "n2"}, t + 0.1)
        a = {(x.name, tuple(sorted(x.labels.items())), x.state) for x in trimmed.evaluate(t + 0.5)}
        b = {(x.name, tuple(sorted(x.labels.items())), x.state) for x in reference.evaluate(t + 0.5)}
        assert a == b, f"t={t}: state changes differ: {sorted(a ^ b)}"
        assert _snapshot(trimmed) == _snapshot(reference), f"t={t}: active alerts differ"
    assert sum(1 for x in _snapshot(reference) if x[2] == AlertState.FIRING.value) > 3
    assert all(s.latest for s in trimmed.windows.live_series() if s.name in ("gauge", "flag", "uniq", "thr"))
    latest = [s for s in trimmed.windows.live_series() if s.latest]
    assert latest and max(len(s.ts) for s in latest) <= 4
    assert trimmed.windows.sample_count() < reference.windows.sample_count() / 2
