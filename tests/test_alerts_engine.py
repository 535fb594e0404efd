"""AlertEngine: the API the collector uses (ingest → evaluate → notifiers), on the live windows."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts import AlertEngine, AlertState, RuleError
from alerts.model import Alert, EventNotice, NodeStatus

RULES = """\
groups:
  - name: gpu
    rules:
      - alert: GpuHot
        expr: gpu_temperature_celsius{node=~"n.*"} > 80
        for: 3s
        keep_firing_for: 2s
        labels: {severity: critical}
        annotations:
          summary: "GPU {{ $labels.gpu }} on {{ $labels.node }} at {{ $value }} C"
      - record: node:gpu_temperature_celsius:max
        expr: max by (node) (gpu_temperature_celsius)
      - alert: NodeHot
        expr: node:gpu_temperature_celsius:max > 90
"""


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, AlertState]]] = []

    async def start(self) -> None:
        return None

    def send_alerts(self, alerts: list[Alert]) -> None:
        self.batches.append([(a.name, a.state) for a in alerts])

    def send_event(self, event: EventNotice) -> None:
        return None

    def send_node_status(self, status: NodeStatus) -> None:
        return None

    async def aclose(self) -> None:
        return None


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    p = tmp_path / "rules.yml"
    p.write_text(RULES)
    return p


def test_wants_only_selected_names(rules_file: Path) -> None:
    eng = AlertEngine.from_files([rules_file])
    assert eng.wants("gpu_temperature_celsius")
    assert eng.wants("node:gpu_temperature_celsius:max")
    assert not eng.wants("gpu_power_watts")


def test_pending_firing_keep_firing_resolved_and_notify(rules_file: Path) -> None:
    rec = Recorder()
    eng = AlertEngine.from_files([rules_file], [rec], resend_delay=60.0)
    t0 = 1_700_000_000.0
    temps = [70, 85, 85, 85, 85, 70, 70, 70, 70]
    states: list[list[tuple[str, AlertState]]] = []
    for i, temp in enumerate(temps):
        eng.ingest("gpu_temperature_celsius", {"node": "n1", "gpu": "0"}, t0 + i, temp)
        eng.ingest("gpu_temperature_celsius", {"node": "x9", "gpu": "0"}, t0 + i, 99)
        states.append([(a.name, a.state) for a in eng.evaluate(t0 + i + 0.5)])
    # x9 fails the node=~"n.*" matcher; NodeHot (no "for") fires for it through the recording
    # rule in the first evaluation, reported once with its final state.
    assert states[0] == [("NodeHot", AlertState.FIRING)]
    assert states[1] == [("GpuHot", AlertState.PENDING)]
    assert states[2] == [] and states[3] == []
    assert states[4] == [("GpuHot", AlertState.FIRING)]  # active for 3 s
    # keep_firing_for 2s: still firing at i=5 and i=6, resolved at i=7.
    assert states[5] == [] and states[6] == []
    assert states[7] == [("GpuHot", AlertState.RESOLVED)]
    firing = [a for a in eng.active() if a.name == "GpuHot"]
    assert firing == []
    sent = [item for batch in rec.batches for item in batch]
    assert ("GpuHot", AlertState.FIRING) in sent and ("GpuHot", AlertState.RESOLVED) in sent
    assert ("GpuHot", AlertState.PENDING) not in sent


def test_alert_labels_and_annotations(rules_file: Path) -> None:
    eng = AlertEngine.from_files([rules_file], external_labels={"cluster": "c1"})
    t0 = 1_700_000_000.0
    for i in range(5):
        eng.ingest("gpu_temperature_celsius", {"node": "n1", "gpu": "3"}, t0 + i, 85.5)
        eng.evaluate(t0 + i)
    (alert,) = [a for a in eng.active() if a.name == "GpuHot"]
    assert alert.state == AlertState.FIRING
    assert alert.labels == {"alertname": "GpuHot", "node": "n1", "gpu": "3", "severity": "critical",
                            "cluster": "c1"}
    assert alert.annotations == {"summary": "GPU 3 on n1 at 85.5 C"}
    assert alert.active_at == t0
    assert alert.fired_at == t0 + 3
    assert alert.source_ts == t0 + 3


def test_mark_stale_ends_series(rules_file: Path) -> None:
    eng = AlertEngine.from_files([rules_file])
    t0 = 1_700_000_000.0
    eng.ingest("gpu_temperature_celsius", {"node": "n1", "gpu": "0"}, t0, 95)
    eng.evaluate(t0)
    assert {a.name for a in eng.active()} == {"GpuHot", "NodeHot"}
    eng.mark_stale({"node": "n1"}, ts=t0 + 1)
    eng.evaluate(t0 + 1.5)
    assert eng.active() == []


def test_rule_error_names_file_line_col(tmp_path: Path) -> None:
    p = tmp_path / "bad.yml"
    p.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x offset 1m) > 0\n")
    with pytest.raises(RuleError) as exc:
        AlertEngine.from_files([p])
    assert str(exc.value) == (f'{p}:5:20: group "g", rule 1, "A": expected type range vector in call to '
                              'function "rate", got instant vector')


def test_source_ts_is_the_alerts_own_sample(rules_file: Path) -> None:
    """The latency benchmark measures from source_ts: it must be the triggering series' sample,
    not a newer sample of some other node."""
    eng = AlertEngine.from_files([rules_file])
    t0 = 1_700_000_000.0
    eng.ingest("gpu_temperature_celsius", {"node": "n1", "gpu": "0"}, t0 + 1.0, 95)
    eng.ingest("gpu_temperature_celsius", {"node": "n2", "gpu": "0"}, t0 + 1.4, 50)
    (alert,) = [a for a in eng.evaluate(t0 + 1.5) if a.name == "GpuHot"]
    assert alert.state == AlertState.PENDING
    assert alert.source_ts == t0 + 1.0


def test_groups_run_once_per_interval_despite_timer_jitter(tmp_path: Path) -> None:
    p = tmp_path / "r.yml"
    p.write_text("groups:\n  - name: fast\n    rules:\n      - record: r:a\n        expr: vector(1)\n"
                 "  - name: slow\n    interval: 5s\n    rules:\n      - record: r:b\n        expr: vector(1)\n")
    eng = AlertEngine.from_files([p])
    fast, slow = eng._runners
    calls = {"fast": 0, "slow": 0}
    fast_eval, slow_eval = fast.eval, slow.eval

    def count(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapped(t_ms: int):  # type: ignore[no-untyped-def]
            calls[name] += 1
            return fn(t_ms)
        return wrapped

    fast.eval = count("fast", fast_eval)  # type: ignore[method-assign]
    slow.eval = count("slow", slow_eval)  # type: ignore[method-assign]
    t0 = 1_700_000_000.0
    jitter = [0.004, -0.003, 0.02, 0.0, -0.001, 0.03, 0.002, -0.004, 0.01, 0.0]
    for i in range(20):
        eng.evaluate(t0 + i + jitter[i % len(jitter)])
    assert calls == {"fast": 20, "slow": 4}


def test_series_ref_append_block_and_urgent_evaluation(rules_file: Path) -> None:
    """The collector's path: a ref per series, blocks of samples, urgent evaluation by name."""
    rec = Recorder()
    eng = AlertEngine.from_files([rules_file], [rec])
    assert eng.series_ref("gpu_power_watts", {"node": "n1"}) is None  # no rule reads it
    refs = [eng.series_ref("gpu_temperature_celsius", {"node": "n1", "gpu": str(g)}) for g in range(2)]
    assert None not in refs and len(set(refs)) == 2
    assert eng.series_ref("gpu_temperature_celsius", {"gpu": "0", "node": "n1"}) == refs[0]
    t0 = 1_700_000_000_000
    eng.append_block(refs, t0, [99.0, 50.0])  # type: ignore[arg-type]
    changed = eng.evaluate_urgent(t0 / 1000 + 0.1, {"gpu_temperature_celsius"})
    assert sorted((a.name, a.labels.get("gpu"), a.state) for a in changed) == [
        ("GpuHot", "0", AlertState.PENDING), ("NodeHot", None, AlertState.FIRING)]
    assert rec.batches == [[("NodeHot", AlertState.FIRING)]]
    assert eng.evaluate_urgent(t0 / 1000 + 0.2, {"gpu_power_watts"}) == []
