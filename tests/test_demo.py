"""``fleetmon demo``: its fault script against the rule pack, its signals, its output."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import agent.plugins.simulated.plugin as sim
from agent.plugin import PluginContext
from agent.plugins.simulated.faults import Fault, load_faults
from alerts.engine import AlertEngine
from collector.demo import MAX_DEFAULT_DURATION, WIDTH, Fleet, default_faults, default_rules, fleetmon_command

NODE = {"node": "node-01", "cluster": "demo", "rack": "r1"}
T0 = 1_800_000_000.0


def _replay(faults: list[Fault], until: float, monkeypatch: pytest.MonkeyPatch, *,
            stop_at_first_fire: bool = False) -> list[tuple[float, str, dict[str, str]]]:
    """The demo's node-01 with these faults, fed through the demo's rule pack on a virtual clock
    (1 s steps while a fault is on, 10 s once all are over): [(t, firing|resolved, labels)]."""
    clock = [T0]
    monkeypatch.setattr(sim, "time", types.SimpleNamespace(time=lambda: clock[0]))
    gpus = 1 + max([f.gpu for f in faults] + [0])
    ports = 1 + max([f.port for f in faults] + [0])
    # node-01 of the demo also reports the site's battery storage (collector/demo: ``bess``)
    plugin = sim.SimulatedPlugin(PluginContext(node="node-01"),
                                 sim.SimulatedConfig(gpus=gpus, ib_ports=ports, bess=True))
    plugin.faults = list(faults)
    plugin.discover()
    engine = AlertEngine.from_files(default_rules())
    faults_over = max(f.at + (f.duration or until) for f in faults) + 10
    out: list[tuple[float, str, dict[str, str]]] = []
    t = 0.0
    while t <= until:
        now = T0 + t
        clock[0] = now
        for s in plugin.collect().samples:
            if engine.wants(s.name):
                engine.ingest(s.name, {**s.labels, **NODE}, s.ts if s.ts is not None else now, s.value)
        engine.ingest("fleetmon_node_up", NODE, now, 1.0)  # as the collector does for a streaming node
        for a in engine.evaluate(now):
            if a.state.value == "firing" or (a.state.value == "resolved" and a.fired_at is not None):
                out.append((t, a.state.value, dict(a.labels)))
        if stop_at_first_fire and out:
            break
        if t > faults_over and not engine.active():
            break
        t += 1.0 if t < faults_over else 10.0
    return out


@pytest.mark.parametrize("fault_at", [0.0, 5.0])
def test_xid_counter_steps_up_from_zero_when_collect_runs_late(monkeypatch: pytest.MonkeyPatch,
                                                                fault_at: float) -> None:
    """The scheduler stamps a collection before collect() runs; a slow collect must not put the
    counter's 0 after its 1 (a counter reset to PromQL, and the XID alert never fired)."""
    clock = [T0]
    monkeypatch.setattr(sim, "time", types.SimpleNamespace(time=lambda: clock[0]))
    plugin = sim.SimulatedPlugin(PluginContext(node="node-01"), sim.SimulatedConfig(gpus=2, ib_ports=1))
    plugin.faults = [Fault(at=fault_at, duration=None, kind="xid", gpu=1, xid=79)]
    plugin.discover()
    engine = AlertEngine.from_files(default_rules())
    points: list[tuple[float, float]] = []
    fired = set()
    for step in range(1, 10):
        stamp = T0 + step  # the collection's time, taken before collect()
        clock[0] = stamp + 0.05  # collect() runs 50 ms later
        for smp in plugin.collect().samples:
            ts = smp.ts if smp.ts is not None else stamp
            if smp.name == "gpu_xid_errors_total":
                points.append((ts, smp.value))
            if engine.wants(smp.name):
                engine.ingest(smp.name, {**smp.labels, **NODE}, ts, smp.value)
        fired |= {a.name for a in engine.evaluate(stamp + 0.5) if a.state.value == "firing"}
    points.sort()
    assert points[0][1] == 0 and points[-1][1] == 1
    assert [v for _, v in points] == sorted(v for _, v in points)  # never down: no reset
    assert "GPUXidCritical" in fired


def test_every_scripted_fault_fires_and_resolves_within_the_default_duration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    faults = load_faults(default_faults())
    assert faults
    deadline = MAX_DEFAULT_DURATION - 30  # the agents start a few seconds after the demo's clock
    fired_alone: dict[int, set[str]] = {}
    for i, fault in enumerate(faults):
        fired = _replay([fault], deadline, monkeypatch, stop_at_first_fire=True)
        assert fired, f"fault {i} ({fault.kind} at {fault.at:g}s for {fault.duration}s) fires no alert"
        assert fired[0][0] >= fault.at
        fired_alone[i] = {labels["alertname"] for _t, _s, labels in fired}
    events = _replay(faults, deadline, monkeypatch)
    firing = {(e[2]["alertname"], tuple(sorted(e[2].items()))) for e in events if e[1] == "firing"}
    resolved = {(e[2]["alertname"], tuple(sorted(e[2].items()))) for e in events if e[1] == "resolved"}
    assert firing and firing == resolved, f"still firing at {deadline:g}s: {sorted(firing - resolved)}"
    names = {name for name, _labels in firing}
    for i, alone in fired_alone.items():
        assert alone <= names, f"fault {i} alone fires {alone - names}, not in the whole script"


def test_fleetmon_command_runs_as_printed() -> None:
    cmd = shlex.split(fleetmon_command())
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("fleetmon "), out.stderr


@pytest.fixture
def demo(tmp_path: Path, fleetmon_cmd: list[str]) -> Iterator[tuple[subprocess.Popen[str], list[psutil.Process]]]:
    """A small demo (2 nodes, its collector and agents as children), started and fully up."""
    proc = subprocess.Popen([*fleetmon_cmd, "demo", "--nodes", "2", "--gpus", "2", "--duration", "0",
                             "--data-dir", str(tmp_path / "demo")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(children) < 3:
            children = psutil.Process(proc.pid).children()
            time.sleep(0.1)
        assert len(children) == 3, "collector + 2 agents expected"
        # And the collector's own children (its compactor and rules processes): every one must stop.
        yield proc, psutil.Process(proc.pid).children(recursive=True)
    finally:
        for p in [*children, psutil.Process(proc.pid)] if proc.poll() is None else children:
            if p.is_running():
                p.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.services
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_stops_every_child(demo: tuple[subprocess.Popen[str], list[psutil.Process]], sig: int) -> None:
    proc, children = demo
    assert proc.stdout is not None
    for line in proc.stdout:  # the collector has answered: the demo is past its start-up
        if line.startswith("collector: gRPC"):
            break
    proc.send_signal(sig)
    assert proc.wait(30) == 0
    _gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == []
    rest = proc.stdout.read()
    assert f"stopping the fleet ({signal.Signals(sig).name})" in rest
    lines = rest.splitlines()
    assert all(len(line) <= WIDTH for line in lines), [line for line in lines if len(line) > WIDTH]
    hint = rest.split("the history stays in the data folder; for example:\n", 1)[1]
    one_line = re.sub(r" \\\n +", " ", hint)
    assert re.fullmatch(r"  \S+ query 'gpu_temperature_celsius\{node=\"node-01\"\}' --since 15m "
                        r"--data-dir \S+\n", one_line), hint
    # the closing hint runs as printed, continuation lines and all (from the folder the demo ran in)
    run = subprocess.run(["sh", "-c", hint], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    # Stopped moments after its start, the demo may have stored nothing yet; then the query says so.
    assert run.stdout.startswith("2 series of gpu_temperature_celsius{") or run.stderr.startswith("no data: "), run


def _transition(name: str, state: str, **labels: Any) -> dict[str, Any]:
    return {"time": T0, "state": state, "fired_at": T0, "labels": {"alertname": name, "severity": "critical",
                                                                   "node": "node-01", **labels},
            "annotations": {"summary": "x " * 100, "runbook_action": "y " * 150}}


def test_output_lines_fit_in_120_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:


    fleet = Fleet(types.SimpleNamespace(data_dir=str(tmp_path), log_level=None))  # type: ignore[arg-type]
    fleet.fired = fleet.resolved = 0
    firing = [_transition(f"OpticalRxPowerLowAlarm{i % 7}", "firing", interface="ibp1s0", lane=str(i))
              for i in range(12)]
    fleet._print_transition(firing[0], 100.0)
    fleet._print_summary({"nodes_up": 400, "nodes_total": 400, "samples_per_second": 123456.0,
                          "samples_total": 123456789012, "firing": firing, "pending": 3}, 100.0)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 3 and all(len(line) <= WIDTH for line in lines), lines
    assert re.search(r"\| 123.5k samples/s \| 123.5G stored \| firing 12, 3 pending: OpticalRxPowerLowAlarm0 x2, "
                     r"(.*, )?\+\d more$", lines[-1]), lines[-1]
