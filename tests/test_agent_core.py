"""Agent core: config validation, registry, scheduler deadlines, output formats."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import registry
from agent.config import PluginSection, load_config
from agent.errors import ConfigError, PluginError, PluginUnavailable
from agent.model import Collection, Event, Severity, counter, gauge
from agent.output import to_influx, to_json, to_prom
from agent.plugin import AsyncPlugin, NodeDirectory, Plugin, PluginContext
from agent.scheduler import EventBuffer, Lane, PluginRunner, RunResult, Scheduler, collect_once, collect_together
from tests.services import require_binary

TEMP = gauge("gpu_temperature_celsius", "GPU temperature", "celsius")
XID = counter("gpu_xid_errors_total", "XIDs")


def write(tmp: Path, text: str) -> Path:
    p = tmp / "agent.yml"
    p.write_text(text)
    return p


# --- config ------------------------------------------------------------------------------
def test_config_unknown_key_names_key_and_suggests_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "nodee: x\n"))
    assert str(tmp_path / "agent.yml") in str(err.value)
    assert "unknown key 'nodee'" in str(err.value)
    assert "did you mean 'node'" in str(err.value)


def test_config_bad_type_names_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent.yml: batch_interval: 'soon' is neither a number nor a duration; "):
        load_config(write(tmp_path, "batch_interval: soon\n"))


def test_config_durations_sizes_and_labels(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "node: n1\nbatch_interval: 500ms\nwal: {max_bytes: 64MiB}\n"
                                      "labels: {cluster: c1, rack: r7}\n"))
    assert cfg.batch_interval == 0.5
    assert cfg.wal.max_bytes == 64 << 20
    assert cfg.labels == {"cluster": "c1", "rack": "r7"}
    with pytest.raises(ConfigError, match="'node' is set by the top-level 'node' key"):
        load_config(write(tmp_path, "labels: {node: x}\n"))
    with pytest.raises(ConfigError, match="not a valid label name"):
        load_config(write(tmp_path, "labels: {rack-1: x}\n"))


def test_config_yaml_error_has_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 2 column \d+"):
        load_config(write(tmp_path, "node: a\nlabels: {a: [}\n"))


def test_plugin_section_errors(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "plugins: {simulated: {interval: -1}}\n"))
    with pytest.raises(ConfigError, match=r"agent.yml: plugins.simulated.interval: must be positive; write e.g. 10s$"):
        cfg.plugin_sections({})


# --- registry -----------------------------------------------------------------------------
def test_registry_names_are_unique_and_load() -> None:
    names = registry.builtin_names()
    assert len(names) == len(set(names))
    for name in names:
        cls = registry.load(name)
        assert cls.name == name


def test_registry_unknown_plugin_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"unknown plugin 'nvidai'; available: .*nvidia"):
        registry.load("nvidai")


# --- scheduler ------------------------------------------------------------------------------
@dataclass
class _Cfg:
    pass


class _Fast(Plugin):
    name = "fast"

    def collect(self) -> Collection:
        col = Collection()
        col.add(TEMP, 50.0, {"gpu": "0"})
        return col


class _Hung(Plugin):
    name = "hung"

    def __init__(self, ctx: PluginContext, config: object) -> None:
        super().__init__(ctx, config)
        self.release = threading.Event()
        self.calls = 0
        self.returned = 0

    def collect(self) -> Collection:
        self.calls += 1
        self.release.wait(60)
        self.returned += 1
        return Collection()


class _Broken(Plugin):
    name = "broken"

    def discover(self) -> None:
        raise PluginUnavailable("no such hardware on this node")

    def collect(self) -> Collection:  # never reached: discover refuses
        return Collection()


class _Failing(Plugin):
    name = "failing"

    def collect(self) -> Collection:
        raise PluginError("sensor read failed")


class _Threads(Plugin):
    """Records where discover and collect ran."""

    name = "threads"

    def __init__(self, ctx: PluginContext, config: object) -> None:
        super().__init__(ctx, config)
        self.where: dict[str, int] = {}

    def discover(self) -> None:
        self.where["discover"] = threading.get_ident()

    def collect(self) -> Collection:
        self.where["collect"] = threading.get_ident()
        return Collection()


class _AsyncThreads(AsyncPlugin):
    name = "async_threads"

    def __init__(self, ctx: PluginContext, config: object) -> None:
        super().__init__(ctx, config)
        self.where: dict[str, int] = {}
        self.discovered = 0

    def discover(self) -> None:
        self.where["discover"] = threading.get_ident()
        self.discovered += 1

    async def collect(self) -> Collection:
        self.where["collect"] = threading.get_ident()
        await asyncio.sleep(0)
        col = Collection()
        col.add(TEMP, 40.0, {"gpu": "1"})
        return col


class _AsyncSlow(AsyncPlugin):
    name = "async_slow"

    async def collect(self) -> Collection:
        await asyncio.sleep(10)
        return Collection()


def test_scheduler_dispatches_on_the_plugin_type() -> None:
    """A Plugin collects in its worker thread; an AsyncPlugin is awaited on the loop; both discover
    off the loop, once."""
    sync, aio, slow = _runner(_Threads), _runner(_AsyncThreads), _runner(_AsyncSlow)

    async def main() -> tuple[int, list[tuple[Collection, bool, float]]]:
        loop_thread = threading.get_ident()
        for r in (sync, aio, slow):
            assert await r.discover()
        results = [await r.collect() for r in (sync, aio, aio, slow)]
        return loop_thread, results

    loop_thread, results = asyncio.run(main())
    assert isinstance(sync.plugin, _Threads) and isinstance(aio.plugin, _AsyncThreads)
    assert sync.plugin.where["collect"] not in (loop_thread, threading.get_ident())
    assert aio.plugin.where["collect"] == loop_thread
    assert aio.plugin.where["discover"] != loop_thread
    assert aio.plugin.discovered == 1  # collecting twice did not discover again
    assert [ok for _col, ok, _secs in results] == [True, True, True, False]  # the slow one ran past 0.15 s
    assert [s.value for s in results[1][0].samples] == [40.0]
    for r in (sync, aio, slow):
        r.close()


def _runner(cls: type[Plugin] | type[AsyncPlugin], interval: float = 0.2, timeout: float = 0.15) -> PluginRunner:
    ctx = PluginContext(node="t")
    return PluginRunner(cls(ctx, _Cfg()), PluginSection(cls.name, interval, timeout, True, {}))


def _success_while_one_hangs(runners: list[PluginRunner], hung: PluginRunner, *, fast: int,
                             misses: int) -> dict[str, list[float]]:
    """Each plugin's ``plugin_success`` values from a scheduler over ``runners``, run until the
    plugin named "fast" collected ``fast`` times and ``hung`` missed ``misses`` deadlines; the
    hung plugin's one call is still stuck when it stops (checked), and released after."""
    seen: dict[str, list[float]] = {r.name: [] for r in runners}

    async def sink(ts: float, col: Collection) -> None:
        for s in col.samples:
            if s.name == "fleetmon_agent_plugin_success":
                seen[s.labels["plugin"]].append(s.value)

    async def main() -> None:
        sched = Scheduler(runners, EventBuffer(), sink)
        await sched.start()
        deadline = time.monotonic() + 30
        while (len(seen["fast"]) < fast or len(seen[hung.name]) < misses) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await sched.stop()

    try:
        asyncio.run(main())
    finally:
        assert isinstance(hung.plugin, _Hung)
        stuck = hung.plugin.returned == 0
        hung.plugin.release.set()
    assert stuck, "the hung plugin's call returned: nothing was tested"
    return seen


def test_hung_plugin_never_delays_the_others() -> None:
    fast, hung = _runner(_Fast), _runner(_Hung)
    seen = _success_while_one_hangs([fast, hung], hung, fast=5, misses=2)
    # fast kept collecting, all successful, while hung's one call was still stuck
    assert len(seen["fast"]) >= 5
    assert set(seen["fast"]) == {1.0}
    # the hung plugin reported failure each cycle, and was not called again while stuck
    assert isinstance(hung.plugin, _Hung)
    assert seen["hung"] and set(seen["hung"]) == {0.0}
    assert hung.plugin.calls == 1


class _Late(Plugin):
    """Returns, but past the deadline of the runner the tests give it (0.15 s)."""

    name = "late"

    def __init__(self, ctx: PluginContext, config: object) -> None:
        super().__init__(ctx, config)
        self.where: list[threading.Thread] = []  # the objects: a thread's ident is reused after it ends

    def collect(self) -> Collection:
        self.where.append(threading.current_thread())
        time.sleep(0.3)  # the behaviour under test (a slow collection), not a synchronisation
        return Collection()


@pytest.mark.parametrize("timeout", [0.15, 0.5], ids=["deadline-within-interval", "cycles-overlap"])
def test_thread_plugins_share_one_lane_and_a_hung_one_leaves_it(timeout: float) -> None:
    """The thread plugins of a cycle run in turn on one thread. A plugin stuck on it first in
    the turn costs the ones after it nothing but a wait (half the interval, or its deadline if
    shorter): they collect within their own deadlines (counted from their turn) on a fresh
    thread, and the stuck one collects on a thread of its own from then on (skipped while its one
    call is still stuck). With a deadline longer than the interval, the next cycle still finds
    the lane free: the stuck plugin was moved off it at half the interval."""
    hung, first, second = (_runner(cls, interval=0.2, timeout=timeout) for cls in (_Hung, _Threads, _Fast))
    seen = _success_while_one_hangs([hung, first, second], hung, fast=5, misses=3)
    assert len(seen["fast"]) >= 5
    # Every collection of the other two succeeded, the first cycle's (behind the stuck one) too.
    assert set(seen["fast"]) == {1.0} and set(seen["threads"]) == {1.0}
    assert len(seen["threads"]) == len(seen["fast"])
    assert isinstance(hung.plugin, _Hung)
    assert set(seen["hung"]) == {0.0} and hung.plugin.calls == 1
    assert hung.own_thread and not first.own_thread and not second.own_thread


def test_lane_runs_the_thread_plugins_on_one_thread_and_loses_a_late_one() -> None:
    one, two, late = _runner(_Threads), _runner(_Threads), _runner(_Late)

    async def main() -> list[list[bool]]:
        lane = Lane()
        out = []
        try:
            for _ in range(2):
                out.append([ok for _col, ok, _secs in await collect_together([one, late, two], lane)])
                # The next cycle once the late call has returned (else it is skipped as still running).
                deadline = time.monotonic() + 30
                while late._busy is not None and not late._busy.done() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            return out
        finally:
            lane.close()

    first, second = asyncio.run(main())
    assert isinstance(one.plugin, _Threads) and isinstance(two.plugin, _Threads) and isinstance(late.plugin, _Late)
    # The late one returned past its deadline: counted as failed, both times; the ones after it
    # in the turn were not.
    assert first == second == [True, False, True]
    # In the second cycle one thread ran both of the others (the lane), and the late one ran on
    # a thread of its own: not the lane's, not the one it overran on.
    lane_thread = one.plugin.where["collect"]
    assert two.plugin.where["collect"] == lane_thread
    assert late.own_thread and not one.own_thread and not two.own_thread
    overran_on, own = late.plugin.where
    assert own is not overran_on and own.ident != lane_thread and own.name.startswith("fleetmon-late")
    for r in (one, two, late):
        r.close()


def test_a_slow_plugin_leaves_the_lane_and_still_counts_within_its_deadline() -> None:
    """0.3 s a collection at a 0.2 s interval with a 1 s deadline: it holds the lane past half
    its interval, so it moves to a thread of its own (the plugin after it does not wait for it),
    and its collection counts: it ended within its deadline."""
    slow = _runner(_Late, interval=0.2, timeout=1.0)
    after = _runner(_Threads, interval=0.2, timeout=1.0)

    async def main() -> list[RunResult]:
        lane = Lane()
        try:
            return await collect_together([slow, after], lane)
        finally:
            lane.close()

    (_c1, slow_ok, slow_secs), (_c2, after_ok, after_secs) = asyncio.run(main())
    assert slow_ok and slow_secs >= 0.3 and slow.own_thread
    assert after_ok and not after.own_thread
    assert after_secs < slow_secs  # it ran beside the slow one, not after it
    for r in (slow, after):
        r.close()


class _AsyncLocal(AsyncPlugin):
    """Nothing to await (a plugin with only local files to read): it offers a blocking collection."""

    name = "async_local"

    def __init__(self, ctx: PluginContext, config: object) -> None:
        super().__init__(ctx, config)
        self.where: list[tuple[str, threading.Thread]] = []  # (how it collected, on which thread)
        self.delay = 0.0

    def blocking_collect(self) -> Callable[[], Collection]:
        return self._read

    def _read(self) -> Collection:
        self.where.append(("blocking", threading.current_thread()))
        time.sleep(self.delay)  # the behaviour under test (a slow read), not a synchronisation
        return self._result()

    async def collect(self) -> Collection:
        self.where.append(("loop", threading.current_thread()))
        return self._result()

    def _result(self) -> Collection:
        col = Collection()
        col.add(TEMP, 30.0, {"gpu": "2"})
        return col


def test_an_async_plugin_with_nothing_to_await_collects_on_the_lane() -> None:
    """An AsyncPlugin whose collection is blocking only this time (blocking_collect) runs on the
    lane in turn with the thread plugins, not on the loop; once it holds the lane past half its
    interval it leaves the lane, and collects with its coroutine on the loop from then on."""
    threads, local = _runner(_Threads, interval=0.2, timeout=1.0), _runner(_AsyncLocal, interval=0.2, timeout=1.0)
    assert isinstance(threads.plugin, _Threads) and isinstance(local.plugin, _AsyncLocal)
    plugin = local.plugin

    async def main() -> tuple[int, int, list[list[RunResult]]]:
        lane = Lane()
        try:
            first = await collect_together([threads, local], lane)
            lane_thread = threads.plugin.where["collect"]
            plugin.delay = 0.3
            rest = [await collect_together([threads, local], lane) for _ in range(2)]
            return threading.get_ident(), lane_thread, [first, *rest]
        finally:
            lane.close()

    loop_thread, lane_thread, cycles = asyncio.run(main())
    assert [[ok for _col, ok, _secs in cycle] for cycle in cycles] == [[True, True]] * 3  # the slow one within 1 s
    assert [s.value for s in cycles[0][1][0].samples] == [30.0]
    how = [h for h, _thread in plugin.where]
    assert how == ["blocking", "blocking", "loop"] and local.own_thread and not threads.own_thread
    assert plugin.where[0][1].ident == lane_thread and plugin.where[2][1].ident == loop_thread
    for r in (threads, local):
        r.close()


def test_unavailable_plugin_is_disabled_and_others_run() -> None:
    runners = [_runner(_Broken), _runner(_Fast), _runner(_Failing)]
    events = EventBuffer()
    _ts, col = asyncio.run(collect_once(runners, events))
    assert not runners[0].enabled and "no such hardware" in runners[0].detail
    names = {(s.name, s.labels.get("plugin")) for s in col.samples}
    assert ("gpu_temperature_celsius", None) in names
    success = {s.labels["plugin"]: s.value for s in col.samples if s.name == "fleetmon_agent_plugin_success"}
    assert success == {"fast": 1.0, "failing": 0.0}
    for r in runners:
        r.close()
        r.close()  # safe twice


# --- output ---------------------------------------------------------------------------------
def _collection() -> Collection:
    col = Collection()
    col.add(TEMP, 61.5, {"gpu": "0", "model": 'H100 "SXM"'})
    col.add(TEMP, None, {"gpu": "1"})  # unsupported: omitted
    col.add(XID, 2, {"gpu": "0", "xid": "79"})
    col.add(gauge("optical_rx_power_dbm", "rx", "dBm"), float("-inf"), {"interface": "eth0", "lane": "0"})
    col.events.append(Event("gpu.xid", Severity.CRITICAL, "XID 79", {"gpu": "0"}, "reset the GPU", ts=1000.5))
    return col


def test_json_output() -> None:
    lines = [json.loads(x) for x in to_json(1000.0, _collection(), {"node": "n1"}).splitlines()]
    assert lines[0] == {"name": "gpu_temperature_celsius", "labels": {"gpu": "0", "model": 'H100 "SXM"', "node": "n1"},
                        "value": 61.5, "time": 1000.0}
    assert len([x for x in lines if "name" in x]) == 3
    assert lines[2]["value"] == "-Inf"
    assert lines[3] == {"event": "gpu.xid", "severity": "critical", "message": "XID 79", "action": "reset the GPU",
                        "labels": {"gpu": "0", "node": "n1"}, "time": 1000.5}


def test_prom_output_passes_promtool() -> None:
    promtool = require_binary("promtool")
    text = to_prom(1000.0, _collection(), {"node": "n1"})
    assert 'gpu_temperature_celsius{gpu="0",model="H100 \\"SXM\\"",node="n1"} 61.5' in text
    assert 'optical_rx_power_dbm{interface="eth0",lane="0",node="n1"} -Inf' in text
    assert "# TYPE gpu_xid_errors_total counter" in text
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_influx_output_groups_fields_and_omits_inf() -> None:
    text = to_influx(1000.0, _collection(), {"node": "n1"})
    lines = text.splitlines()
    assert 'gpu,gpu=0,model=H100\\ "SXM",node=n1 temperature_celsius=61.5 1000000000000' in lines
    assert "gpu,gpu=0,node=n1,xid=79 xid_errors_total=2.0 1000000000000" in lines
    assert not any(line.startswith("optical") for line in lines)  # -inf dBm has no line-protocol form
    assert any(line.startswith("event,") and 'message="XID 79"' in line for line in lines)


def test_node_directory_dedupes_within_a_second() -> None:
    d = NodeDirectory()
    d.register_gpu("00000000:3B:00.0", __import__("agent.plugin", fromlist=["GpuRef"]).GpuRef("3", "GPU-x"))
    assert d.gpu_by_pci("0000:3b:00.0").index == "3"  # type: ignore[union-attr]
    assert d.first_sighting(("xid", "GPU-x", "79"), 100.0)
    assert not d.first_sighting(("xid", "GPU-x", "79"), 100.6)
    assert d.first_sighting(("xid", "GPU-x", "79"), 102.0)


def test_once_cli_prom_passes_promtool(fleetmon_cmd: list[str]) -> None:
    promtool = require_binary("promtool")
    out = subprocess.run([*fleetmon_cmd, "agent", "--once", "--format", "prom", "--plugins", "host,simulated"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "gpu_temperature_celsius{" in out.stdout and "host_memory_total_bytes{" in out.stdout
    res = subprocess.run([promtool, "check", "metrics"], input=out.stdout, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stdout + res.stderr


def test_once_cli_config_error_exit_2(fleetmon_cmd: list[str], tmp_path: Path) -> None:
    cfg = write(tmp_path, "plugins: {simulated: {gpuz: 3}}\n")
    out = subprocess.run([*fleetmon_cmd, "agent", "--once", "--config", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "plugins.simulated: unknown key 'gpuz'; did you mean 'gpus'?" in out.stderr


def test_set_override_and_time(fleetmon_cmd: list[str]) -> None:
    t0 = time.time()
    out = subprocess.run([*fleetmon_cmd, "agent", "--once", "--format", "json", "--plugins", "simulated",
                          "--set", "simulated.gpus=3", "--node", "n9"], capture_output=True, text=True, timeout=60)
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    gpus = {r["labels"]["gpu"] for r in rows if r.get("name") == "gpu_up"}
    assert gpus == {"0", "1", "2"}
    assert all(r["labels"]["node"] == "n9" for r in rows if "name" in r)
    assert all(abs(r["time"] - t0) < 30 for r in rows if "name" in r)
