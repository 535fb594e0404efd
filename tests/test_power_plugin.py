"""Power plugin as the agent runs it: registry, config validation, concurrent sources, deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from agent import registry
from agent.config import PluginSection, build
from agent.errors import ConfigError
from agent.model import Metric
from agent.plugin import PluginContext
from agent.plugins.power import PowerPlugin, metrics
from agent.plugins.power.config import PowerConfig
from agent.scheduler import PluginRunner


def test_registry_and_config_sections() -> None:
    assert registry.load("power") is PowerPlugin
    cfg = build(PowerConfig, {
        "rapl": {"enabled": False},
        "nut": {"host": "127.0.0.1", "ups": ["ups1"]},
        "redfish": {"url": "https://bmc-7.example", "username": "monitor", "verify": False},
        "source_timeout": "2s",
    }, "plugins.power")
    assert cfg.rapl.enabled is False and cfg.hwmon.enabled is True
    assert cfg.nut.ups == ["ups1"] and cfg.redfish.verify is False and cfg.source_timeout == 2.0
    with pytest.raises(ConfigError, match=r"plugins.power.redfish: unknown key 'pasword'; did you mean 'password'"):
        build(PowerConfig, {"redfish": {"pasword": "x"}}, "plugins.power")
    with pytest.raises(ConfigError, match=r"redfish.url 'bmc-7' must start with https://"):
        build(PowerConfig, {"redfish": {"url": "bmc-7"}}, "plugins.power")
    with pytest.raises(ConfigError, match=r"plugins.power.redfish.auth: 'digest' is not one of 'session', 'basic'"):
        build(PowerConfig, {"redfish": {"auth": "digest"}}, "plugins.power")


def test_hung_bmc_and_upsd_cost_one_source_deadline_not_the_collection(
        fixtures_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Redfish and NUT both hang (a peer that accepts and never answers); the kernel sources still
    report, the two failures are logged once each, and the run ends at one source deadline
    (they run concurrently), inside the plugin's own deadline."""
    order: list[str] = []  # connections opened and given up, in the order the peer saw them

    async def scenario() -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], bool, float]:
        held: list[asyncio.StreamWriter] = []

        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)
            order.append("open")
            with contextlib.suppress(ConnectionError):
                await r.read()  # never answers; returns when the source hangs up at its deadline
            order.append("closed")

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cfg = build(PowerConfig, {
            "redfish": {"url": f"http://127.0.0.1:{port}", "auth": "basic", "username": "u", "chassis": ["1"]},
            "nut": {"host": "127.0.0.1", "port": port},
            "ipmi": {"enabled": False},
            "source_timeout": 1.0,
        }, "plugins.power")
        ctx = PluginContext(node="t", sysfs_root=fixtures_dir / "sysfs" / "node-exporter" / "sys")
        runner = PluginRunner(PowerPlugin(ctx, cfg), PluginSection("power", 10.0, 2.5, True, {}))
        assert await runner.discover()
        col, ok, secs = await runner.collect()
        runner.close()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
        return {s.key(): s.value for s in col.samples}, ok, secs

    with caplog.at_level(logging.WARNING):
        got, ok, _secs = asyncio.run(scenario())
    assert ok  # inside the plugin's own deadline
    # Concurrent, not one after the other: both sources were waiting before either gave up.
    assert order[:2] == ["open", "open"], order
    up = {k[1][0][1]: v for k, v in got.items() if k[0] == "power_source_up"}
    assert up == {"rapl": 1.0, "hwmon": 1.0, "power_supply": 1.0, "redfish": 0.0, "nut": 0.0}
    assert got[("rapl_energy_joules_total", (("name", "package-0"), ("zone", "intel-rapl:0")))] == 240422.366267
    lines = sorted(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert len(lines) == 2, lines
    assert lines[0].startswith("power source nut (upsd 127.0.0.1:") and "no answer within 1s" in lines[0]
    assert lines[1].startswith("power source redfish (BMC 127.0.0.1:") and "no answer within 1s" in lines[1]


def test_kernel_sources_alone_collect_as_one_blocking_call(fixtures_dir: Path) -> None:
    """Without a BMC or UPS to ask, a collection is file reads only: the plugin offers it as a
    blocking call (the scheduler runs it on its lane), with the same series as its coroutine.
    With a network source configured it has something to await, and offers none."""
    ctx = PluginContext(node="t", sysfs_root=fixtures_dir / "sysfs" / "node-exporter" / "sys")
    local = PowerPlugin(ctx, build(PowerConfig, {"ipmi": {"enabled": False}}, "plugins.power"))
    local.discover()
    on_loop = asyncio.run(local.collect())  # a first reading: rates need two
    call = local.blocking_collect()
    assert call is not None
    blocking = call()
    on_loop = asyncio.run(local.collect())
    assert sorted(s.key() for s in blocking.samples) == sorted(s.key() for s in on_loop.samples)
    up = {s.labels["source"]: s.value for s in blocking.samples if s.name == "power_source_up"}
    assert up and set(up.values()) == {1.0}
    assert any(s.name == "rapl_power_watts" for s in blocking.samples)
    local.close()
    cfg = build(PowerConfig, {"ipmi": {"enabled": False}, "nut": {"host": "127.0.0.1", "port": 9}}, "plugins.power")
    mixed = PowerPlugin(ctx, cfg)
    mixed.discover()
    assert mixed.blocking_collect() is None
    mixed.close()


def test_every_metric_is_in_the_readme(repo_root: Path) -> None:
    text = (repo_root / "agent" / "plugins" / "power" / "README.md").read_text()
    declared = [v for v in vars(metrics).values() if isinstance(v, Metric)]
    assert len(declared) > 40
    assert [d.name for d in declared if f"`{d.name}`" not in text] == []
