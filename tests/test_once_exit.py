"""``fleetmon agent --once`` with nothing usable says so and exits non-zero (never an empty 0)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from agent.config import PluginSection
from agent.errors import AgentError
from agent.main import _no_usable_plugin
from agent.model import Collection, gauge
from agent.plugin import Plugin, PluginContext
from agent.scheduler import EventBuffer, PluginRunner, collect_once

ANSWER = gauge("test_answer", "A value")


class _Broken(Plugin):
    name = "broken"

    def collect(self) -> Collection:
        raise AgentError("the device stopped answering")


class _Fine(Plugin):
    name = "fine"

    def collect(self) -> Collection:
        col = Collection()
        col.add(ANSWER, 42)
        return col


def _runner(cls: type[Plugin]) -> PluginRunner:
    return PluginRunner(cls(PluginContext(node="t"), None), PluginSection(cls.name, 10.0, 5.0, True, {}))


def _verdict(*classes: type[Plugin]) -> str:
    runners = [_runner(c) for c in classes]
    try:
        _ts, col = asyncio.run(collect_once(runners, EventBuffer()))
    finally:
        for r in runners:
            r.close()
    return _no_usable_plugin(runners, col)


def test_every_collection_failed_is_not_usable() -> None:
    assert _verdict(_Broken) == "no usable plugin: every collection failed (broken); the log above says why"


def test_one_working_plugin_is_enough() -> None:
    assert _verdict(_Broken, _Fine) == ""


def test_cli_no_hardware_exits_1_with_the_reason(fleetmon_cmd: list[str], tmp_path: Path) -> None:
    out = subprocess.run([*fleetmon_cmd, "agent", "--once", "--plugins", "optics,kmsg", "--sysfs-root", str(tmp_path),
                          "--dev-root", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("fleetmon agent: no usable plugin: optics (no InfiniBand device under ")
    assert f"kmsg ({tmp_path}/kmsg does not exist)" in last and "--plugins" in last


def test_cli_everything_disabled_exits_1(fleetmon_cmd: list[str], tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yml"
    cfg.write_text("plugins: {host: {enabled: false}}\n")
    out = subprocess.run([*fleetmon_cmd, "agent", "--once", "--config", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert (out.returncode, out.stdout) == (1, "")
    assert "every plugin in the config is disabled" in out.stderr
