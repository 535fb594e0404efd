"""The node health roll-up and the API's parameter rules, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alerts.model import Alert, AlertState
from alerts.rulefile import load_text
from collector.api import BadParameter, downsample, parse_time, rule_for
from collector.fleet import Accelerator, Accelerators, ModelCount, by_model, fleet_by_model, rollup

H100, MI300 = ("nvidia", "H100"), ("amd", "MI300X")


def _gpu(index: str, up: bool, kind: tuple[str, str] = H100) -> Accelerator:
    return Accelerator("n1", index, f"GPU-{index}", kind[0], kind[1], up, 100.0)


def _alert(name: str, state: AlertState, severity: str = "warning") -> Alert:
    return Alert({"alertname": name, "node": "n1", "severity": severity}, {}, state, active_at=1.0, value=1.0)


def test_healthy_node() -> None:
    h = rollup("n1", True, 0.5, [_gpu("0", True), _gpu("1", True)], [])
    assert (h.health, h.reasons, h.models) == ("healthy", (), (ModelCount("nvidia", "H100", 2, 2),))


def test_failed_and_degraded_reasons_worst_first() -> None:
    alerts = [_alert("Pending", AlertState.PENDING), _alert("Warm", AlertState.FIRING),
              _alert("Lost", AlertState.FIRING, "critical"), _alert("Gone", AlertState.RESOLVED, "critical")]
    h = rollup("n1", False, 42.4, [_gpu("0", True), _gpu("1", False)], alerts)
    assert h.health == "failed"
    assert h.reasons == ("agent silent for 42s", "GPU 1 down", "critical alert Lost firing",
                         "alert Pending pending", "warning alert Warm firing")
    assert (h.firing, h.pending) == (2, 1)


@pytest.mark.parametrize(("up", "accelerators", "alerts", "health"), [
    (True, [_gpu("0", False)], [], "failed"),  # a lost accelerator alone fails the node
    (False, [], [], "failed"),  # silent agent, no accelerators
    (True, [_gpu("0", True)], [_alert("Warm", AlertState.FIRING)], "degraded"),
    (True, [], [_alert("Soon", AlertState.PENDING, "critical")], "degraded"),  # pending, even critical
])
def test_health_rules(up: bool, accelerators: list[Accelerator], alerts: list[Alert], health: str) -> None:
    assert rollup("n1", up, None, accelerators, alerts).health == health


def test_fleet_by_model_counts_nodes_per_model_and_accelerators() -> None:
    a = rollup("a", True, 1, [_gpu("0", True), _gpu("1", False)], [])
    b = rollup("b", True, 1, [_gpu("0", True), _gpu("1", True, MI300)], [])
    c = rollup("c", True, 1, [], [_alert("Warm", AlertState.FIRING)])
    rows = {(m.vendor, m.model): m for m in fleet_by_model([a, b, c])}
    assert rows[H100].nodes == {"failed": 1, "degraded": 0, "healthy": 1}
    assert (rows[H100].up, rows[H100].total) == (2, 3)
    assert rows[MI300].nodes == {"failed": 0, "degraded": 0, "healthy": 1} and rows[MI300].total == 1
    assert rows["", ""].nodes == {"failed": 0, "degraded": 1, "healthy": 0} and rows["", ""].total == 0
    assert by_model([_gpu("0", True, MI300), _gpu("1", False)]) == [ModelCount("amd", "MI300X", 1, 1),
                                                                     ModelCount("nvidia", "H100", 0, 1)]


def test_accelerators_keep_the_latest_and_forget_the_silent() -> None:
    acc = Accelerators(stale_after=300)
    labels = {"gpu": "0", "uuid": "GPU-a", "vendor": "nvidia", "model": "H100"}
    acc.update("n1", labels, 100.0, 1.0)
    acc.update("n1", labels, 90.0, 0.0)  # a backfilled older sample changes nothing
    acc.update("n1", {**labels, "gpu": "10"}, 100.0, 0.0)
    acc.update("n1", {**labels, "gpu": "2"}, 100.0, 1.0)
    assert [(a.index, a.up) for a in acc.of("n1", 101.0)] == [("0", True), ("2", True), ("10", False)]
    acc.update("n1", labels, 500.0, 1.0)
    # A silent node keeps what it last said; a streaming one drops what went quiet.
    assert len(acc.of("n1", 500.0, streaming=False)) == 3
    assert [a.index for a in acc.of("n1", 500.0)] == ["0"]
    assert acc.of("nope", 1.0) == []


def test_parse_time_forms() -> None:
    now = 1_700_000_000.0
    assert parse_time("since", "1699999000.5", now) == 1699999000.5
    assert parse_time("since", "15m", now) == now - 900
    assert parse_time("since", "1h30m", now) == now - 5400
    stamp = datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    assert parse_time("since", "2024-05-01T12:00:00Z", now) == stamp
    assert parse_time("since", "2024-05-01T14:00:00+02:00", now) == stamp
    for bad in ("abc", "nan", "inf", "-1", "2024-05-01T12:00:00", "2024-02-30T00:00:00Z", "yesterday", ""):
        with pytest.raises(BadParameter) as err:
            parse_time("since", bad, now)
        assert err.value.parameter == "since"


def test_downsample_keeps_the_last_sample_of_each_step() -> None:
    values = [[10.0, 1.0], [10.5, 2.0], [11.2, 3.0], [13.9, 4.0], [14.0, 5.0]]
    assert downsample(values, 2.0) == [[11.2, 3.0], [13.9, 4.0], [14.0, 5.0]]  # slots [10,12) [12,14) [14,16)
    assert downsample(values, 10.0) == [[14.0, 5.0]]
    assert downsample([], 5.0) == []


def test_rule_for_tells_same_named_rules_apart_by_their_labels() -> None:
    groups = load_text("""
groups:
  - name: g
    rules:
      - {alert: Hot, expr: x > 80, for: 5m, labels: {severity: warning}}
      - {alert: Hot, expr: x > 90, for: 1m, labels: {severity: critical}}
      - {alert: Lost, expr: y == 0}
""")
    rules: dict[str, list] = {}
    for r in groups[0].rules:
        rules.setdefault(r.name, []).append(r)
    hot = _alert("Hot", AlertState.PENDING, "critical")
    assert rule_for(rules, hot) == 60.0
    assert rule_for(rules, _alert("Hot", AlertState.PENDING, "warning")) == 300.0
    assert rule_for(rules, _alert("Lost", AlertState.FIRING)) == 0.0
    assert rule_for(rules, _alert("Unknown", AlertState.FIRING)) is None
