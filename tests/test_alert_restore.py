"""Alert state across collectors, in the engine (alerts/restore.py): ``for`` restored from
``ALERTS_FOR_STATE`` as Prometheus's RestoreForState does, windows warmed from history, alerts
taken over (an alert the previous owner had and that is over is resolved) and handed over (a
node that left: its alerts dropped without a resolve)."""

from __future__ import annotations

import asyncio
import math
from array import array
from pathlib import Path

import pytest

from alerts import AlertEngine, AlertState
from alerts.model import Alert
from alerts.promql.labels import from_map
from alerts.restore import ForState, restored_active_at
from collector import handover
from collector.alertstate import AlertStateKeeper
from collector.errors import CollectorError
from collector.promquery import RawSeries
from tests.test_alerts_engine import Recorder as EngineRecorder

RULES = """\
groups:
  - name: gpu
    rules:
      - alert: GpuHot
        expr: gpu_temperature_celsius > 80
        for: 20s
        labels: {severity: critical}
        annotations:
          summary: "GPU {{ $labels.gpu }} on {{ $labels.node }} at {{ $value }} C"
      - alert: GpuWarm
        expr: gpu_temperature_celsius > 70
        for: 2s
      - alert: XidSeen
        expr: increase(gpu_xid_errors_total[10m]) > 0
"""

T0 = 1_800_000_000.0
HOT = {"node": "n1", "gpu": "0"}


class Recorder(EngineRecorder):
    """Keeps the alerts sent themselves (labels, annotations, times), not only their states."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Alert] = []

    def send_alerts(self, alerts: list[Alert]) -> None:
        super().send_alerts(alerts)
        self.sent.extend(alerts)

    def states(self, name: str) -> list[AlertState]:
        return [a.state for a in self.sent if a.name == name]


def engine(tmp_path: Path, grace: float = 10.0, tolerance: float = 3600.0) -> tuple[AlertEngine, Recorder]:
    path = tmp_path / "rules.yml"
    path.write_text(RULES)
    rec = Recorder()
    return AlertEngine.from_files([path], [rec], for_grace_period=grace, for_outage_tolerance=tolerance), rec


def run(e: AlertEngine, start: float, end: float, temp: float | None = 90.0, *, node: str = "n1") -> None:
    """One sample and one evaluation a second over [start, end)."""
    t = start
    while t < end:
        if temp is not None:
            e.ingest("gpu_temperature_celsius", {**HOT, "node": node}, t, temp)
        e.evaluate(t)
        t += 1


def records(e: AlertEngine, t: float) -> list[ForState]:
    """What a collector persisted as ALERTS_FOR_STATE at its last evaluation ``t``."""
    return [ForState(s.labels, round(t * 1000), float(s.active_at_ms // 1000)) for s in e.active_states()]


def state(e: AlertEngine, name: str) -> AlertState | None:
    got = [a.state for a in e.active() if a.name == name]
    return got[0] if got else None


def hot_key(name: str = "GpuHot") -> tuple[tuple[str, str], ...]:
    extra = {"severity": "critical"} if name == "GpuHot" else {}
    return from_map({**HOT, "alertname": name, **extra})


def test_the_three_cases_of_prometheus_restore_for_state() -> None:
    hold, grace, now = 600_000, 60_000, 10_000_000
    # It had been active for longer than its for: it keeps its active time (fires next evaluation).
    assert restored_active_at(ForState((), 9_000_000, 8_000.0), hold, now, grace) == 8_000_000
    # 30 s of its for left, less than the grace period: it fires one grace period from now.
    assert restored_active_at(ForState((), 9_000_000, 8_430.0), hold, now, grace) == now + grace - hold
    # 5 min left: the outage (1,000 s) does not count as time pending.
    assert restored_active_at(ForState((), 9_000_000, 8_700.0), hold, now, grace) == 8_700_000 + 1_000_000
    # Times are whole seconds, as Prometheus stores and reads them.
    assert restored_active_at(ForState((), 9_000_999, 8_000.9), hold, now, grace) == 8_000_000


def test_a_firing_alert_fires_again_at_once_after_a_restart(tmp_path: Path) -> None:
    old, _ = engine(tmp_path)
    run(old, T0, T0 + 30)
    assert state(old, "GpuHot") == AlertState.FIRING
    saved = records(old, T0 + 29)
    new, rec = engine(tmp_path)
    new.adopt("n1")
    run(new, T0 + 40, T0 + 42)
    assert state(new, "GpuHot") == AlertState.PENDING  # waits for its state, does not start over
    assert not [s for s in new.active_states() if s.part == "n1" and dict(s.labels)["alertname"] == "GpuHot"]
    assert new.evaluated_since(T0 + 41)
    restored, resolved = new.restore("n1", saved, T0 + 41.5)
    assert (restored, resolved) == (1, [])
    run(new, T0 + 42, T0 + 43)
    assert state(new, "GpuHot") == AlertState.FIRING
    hot = next(a for a in new.active() if a.name == "GpuHot")
    assert hot.active_at == T0  # the active time of the first life
    assert AlertState.RESOLVED not in rec.states("GpuHot")


def test_a_restoring_node_does_not_fire_a_restorable_rule_before_its_restore(tmp_path: Path) -> None:
    e, rec = engine(tmp_path)
    e.adopt("n1")
    run(e, T0, T0 + 30)
    assert state(e, "GpuHot") == AlertState.PENDING and "GpuHot" not in {a.name for a in rec.sent}
    # The API does not show its provisional timer; GpuWarm's for (2 s) is under the grace period:
    # never restored, so never held back.
    assert [a.name for a in e.active(restoring=False)] == ["GpuWarm"]
    assert state(e, "GpuWarm") == AlertState.FIRING
    e.restore("n1", [], T0 + 30)  # nothing to restore: the active time stands
    run(e, T0 + 30, T0 + 31)
    assert state(e, "GpuHot") == AlertState.FIRING
    assert {a.name for a in e.active(restoring=False)} == {"GpuHot", "GpuWarm"}


def test_pending_time_left_and_grace_period(tmp_path: Path) -> None:
    old, _ = engine(tmp_path, grace=5)
    run(old, T0, T0 + 8)  # 8 of 20 s pending
    saved = records(old, T0 + 7)
    new, _ = engine(tmp_path, grace=5)
    new.adopt("n1")
    run(new, T0 + 100, T0 + 102)
    new.restore("n1", saved, T0 + 102)
    hot = next(a for a in new.active() if a.name == "GpuHot")
    assert hot.active_at == T0 + (T0 + 102 - (T0 + 7))  # shifted by the outage: 13 s still to wait
    run(new, T0 + 102, T0 + 114)
    assert state(new, "GpuHot") == AlertState.PENDING
    run(new, T0 + 114, T0 + 116)
    assert state(new, "GpuHot") == AlertState.FIRING


def test_stale_and_too_old_records_are_not_restored(tmp_path: Path) -> None:
    e, _ = engine(tmp_path, tolerance=60)
    e.adopt("n1")
    run(e, T0, T0 + 2)
    stale = ForState(hot_key(), round((T0 - 5) * 1000), math.nan)
    assert e.restore("n1", [stale], T0 + 2) == (0, [])
    e2, _ = engine(tmp_path, tolerance=60)
    e2.adopt("n1")
    run(e2, T0, T0 + 2)
    old = ForState(hot_key(), round((T0 - 120) * 1000), T0 - 500)
    assert e2.restore("n1", [old], T0 + 2) == (0, [])
    assert next(a for a in e2.active() if a.name == "GpuHot").active_at == T0


def test_an_alert_that_ended_during_the_move_is_resolved_by_the_new_owner(tmp_path: Path) -> None:
    e, rec = engine(tmp_path)
    e.adopt("n1")
    run(e, T0, T0 + 2, temp=50.0)  # cool now: nothing active here
    record = ForState(hot_key(), round((T0 - 1) * 1000), T0 - 100)
    restored, resolved = e.restore("n1", [record], T0 + 2)
    assert restored == 0 and [a.name for a in resolved] == ["GpuHot"]
    sent = [a for a in rec.sent if a.name == "GpuHot"]
    assert [a.state for a in sent] == [AlertState.RESOLVED]
    assert sent[0].labels == dict(hot_key()) and sent[0].resolved_at == T0 + 2
    assert sent[0].annotations["summary"] == "GPU 0 on n1 at NaN C"
    run(e, T0 + 2, T0 + 4, temp=90.0)  # hot again later: a new alert, pending from now
    assert state(e, "GpuHot") == AlertState.PENDING


def test_a_node_that_moved_away_is_released_without_a_resolve(tmp_path: Path) -> None:
    e, rec = engine(tmp_path)
    run(e, T0, T0 + 30)
    assert state(e, "GpuHot") == AlertState.FIRING
    before = len(rec.sent)
    assert e.release("n1", T0 + 30) == 2
    run(e, T0 + 31, T0 + 40, temp=None)
    assert e.active() == []
    assert rec.sent[before:] == []  # no resolve: the node's new collector sends its alerts


def test_windows_of_an_adopted_node_are_warmed_from_history(tmp_path: Path) -> None:
    e, rec = engine(tmp_path)
    plan = e.warm_plan()
    assert plan["gpu_xid_errors_total"] == 600_000 and plan["gpu_temperature_celsius"] == 300_000
    assert "ALERTS_FOR_STATE" not in plan
    labels = {"node": "n1", "gpu": "0", "xid": "79"}
    # Live samples arrive first (the counter stands at 1); history shows it rising from 0.
    e.ingest("gpu_xid_errors_total", labels, T0, 1.0)
    e.evaluate(T0)
    assert state(e, "XidSeen") is None
    hist = [round((T0 - 300 + i * 10) * 1000) for i in range(30)]
    added = e.backfill("gpu_xid_errors_total", labels, [*hist, round(T0 * 1000)], [0.0] * 20 + [1.0] * 11)
    assert added == 30  # the sample at T0 is held already: live wins
    e.evaluate(T0 + 1)
    assert state(e, "XidSeen") == AlertState.FIRING
    assert [a.state for a in rec.sent if a.name == "XidSeen"] == [AlertState.FIRING]


def test_backfill_keeps_live_samples_and_marks_stale(tmp_path: Path) -> None:
    e, _ = engine(tmp_path)
    e.ingest("gpu_temperature_celsius", HOT, T0, 90.0)
    ms = round(T0 * 1000)
    assert e.backfill("gpu_temperature_celsius", HOT, [ms - 2000, ms - 1000, ms], [85.0, math.nan, 10.0]) == 2
    e.evaluate(T0)
    hot = next(a for a in e.active() if a.name == "GpuHot")
    assert hot.value == 90.0


def test_backfill_of_a_series_read_only_by_instant_selectors_then_blocks(tmp_path: Path) -> None:
    """The rules process's path: blocks by ref, a backfill of the adopted node, blocks again (a
    series only instant selectors read keeps tuples, which blocks share between series)."""
    e, _ = engine(tmp_path)
    ref = e.series_ref("gpu_temperature_celsius", HOT)
    other = e.series_ref("gpu_temperature_celsius", {**HOT, "gpu": "1"})
    assert ref is not None and other is not None
    ms = round(T0 * 1000)
    e.append_block(array("q", [ref, other]), ms, [90.0, 40.0])
    e.evaluate(T0)
    assert e.backfill("gpu_temperature_celsius", HOT, [ms - 20_000, ms - 10_000], [85.0, 88.0]) == 2
    for i in range(1, 4):
        e.append_block(array("q", [ref, other]), ms + i * 10_000, [90.0 + i, 40.0])
        e.evaluate(T0 + i * 10)
    hot = next(a for a in e.active() if a.name == "GpuHot")
    assert hot.value == 93.0 and hot.state == AlertState.FIRING


@pytest.mark.parametrize("grace", [0.0, 10.0])
def test_a_move_keeps_one_alert_with_its_active_time(tmp_path: Path, grace: float) -> None:
    """The whole path as a collector drives it: the old owner's for state, the new owner's warm
    windows, adopt → evaluate → restore → the alert fires with the first owner's active time."""
    old, _ = engine(tmp_path, grace=grace)
    run(old, T0, T0 + 25)
    saved = records(old, T0 + 24)
    new, rec = engine(tmp_path, grace=grace)
    new.adopt("n1")
    ms = round(T0 * 1000)
    new.backfill("gpu_temperature_celsius", HOT, [ms + i * 1000 for i in range(25)], [90.0] * 25)
    run(new, T0 + 26, T0 + 27)
    new.restore("n1", saved, T0 + 26.5)
    run(new, T0 + 27, T0 + 28)
    hot = next(a for a in new.active() if a.name == "GpuHot")
    assert hot.state == AlertState.FIRING and hot.active_at == T0
    assert [a.state for a in rec.sent if a.name == "GpuHot"] == [AlertState.FIRING]


class _History:
    """A history source (collector/handover.py's ``History``) answering from a dict, which
    records what it was asked and can fail from its ``fail_at``-th samples request on."""

    def __init__(self, name: str, series: dict[str, list[float]], fail_at: int = 10**9) -> None:
        self.name = name
        self.series = series  # metric name -> values, one a second before T0
        self.fail_at = fail_at
        self.asked: list[list[str]] = []

    async def for_state(self, nodes: list[str], now: float) -> dict[str, list[ForState]]:
        return {n: [] for n in nodes}

    async def samples(self, nodes: list[str], plan: dict[str, int], now: float) -> list[RawSeries]:
        self.asked.append(sorted(plan))
        if len(self.asked) >= self.fail_at:
            raise CollectorError(f"{self.name}: connection refused")
        ms = round(T0 * 1000)
        return [RawSeries({"__name__": name, **HOT}, [ms - (len(vals) - i) * 1000 for i in range(len(vals))], vals)
                for name, vals in self.series.items() if name in plan]


def test_adoption_warms_a_few_names_at_a_time_and_falls_back_per_source(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch of adopted nodes' whole history as Python lists was the rules process's peak memory
    # at 2,500 nodes: it is read and backfilled a part of the plan at a time.
    monkeypatch.setattr(handover, "WARM_NAMES", 1)
    e, _ = engine(tmp_path)
    history = {"gpu_temperature_celsius": [85.0, 86.0], "gpu_xid_errors_total": [0.0, 1.0]}
    tsdb = _History("the shared TSDB", history, fail_at=2)  # answers the first part, then fails
    local = _History("the local store", history)
    h = handover.Handover(e, AlertStateKeeper(tmp_path, [], 3600.0), [tsdb, local], hold=30.0, tsdb=None)
    h.online("n1", T0)
    asyncio.run(h._adopt(["n1"]))
    assert tsdb.asked == [["gpu_temperature_celsius"], ["gpu_xid_errors_total"]]
    assert local.asked == [["gpu_temperature_celsius"], ["gpu_xid_errors_total"]]
    # The TSDB's first part stayed; the local store's copy of it added nothing (older only).
    assert h.stats.warmed_samples == 4 and h.stats.history_errors == 1
    assert h._adopting["n1"].source == "the local store"
    temp = e.windows.series("gpu_temperature_celsius", from_map(HOT))
    assert temp is not None and list(temp.vals) == [85.0, 86.0]
