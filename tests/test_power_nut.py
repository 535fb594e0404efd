"""Power plugin, NUT source: parsers on the Telegraf upsd captures, and a real upsd + dummy-ups."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.model import Collection
from agent.plugin import PluginContext
from agent.plugins.power import PowerPlugin
from agent.plugins.power.config import KernelSourceConfig, NutConfig, PowerConfig
from agent.plugins.power.nut import parse_ups, parse_vars, split_words
from tests.services import Process, free_port, require_binary, wait_for_port, wait_until

Key = tuple[str, tuple[tuple[str, str], ...]]


def key(metric: str, **labels: str) -> Key:
    return metric, tuple(sorted(labels.items()))


def dev_vars(path: Path) -> dict[str, str]:
    """A dummy-ups .dev file (upsc dump format ``name: value``)."""
    out = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            out[name.strip()] = value.strip()
    return out


def test_split_words_unquotes() -> None:
    assert split_words(r'VAR ups1 device.location "Upper \"A\" floor \\ 2"') == [
        "VAR", "ups1", "device.location", 'Upper "A" floor \\ 2']


def test_parse_vars_and_ups(fixtures_dir: Path) -> None:
    lines = ['VAR cp ups.status "OL"', 'VAR cp battery.charge "100"', 'VAR cp battery.runtime "4020"']
    assert parse_vars(lines) == {"ups.status": "OL", "battery.charge": "100", "battery.runtime": "4020"}
    r = parse_ups("cp", dev_vars(fixtures_dir / "ups" / "CyberPowerSystems_CP900EPFCLCD" / "variables.dev"))
    assert r.flags == ["OL"]
    assert (r.charge_ratio, r.runtime_s, r.battery_v, r.load_ratio) == (1.0, 4020.0, 24.0, 0.13)
    assert (r.input_v, r.output_v, r.real_power_nominal_w) == (228.0, 228.0, 540.0)
    assert r.real_power_w is None  # the CP900 reports no ups.realpower: not estimated
    f = parse_ups("fake", dev_vars(fixtures_dir / "ups" / "fake" / "variables.dev"))
    assert (f.charge_ratio, f.runtime_s, f.load_ratio, f.real_power_w) == (1.0, 600.0, 0.23, 41.0)


@dataclass
class Upsd:
    port: int
    data_file: Path
    driver: Process


def _nut_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "NUT_CONFPATH": str(tmp), "NUT_STATEPATH": str(tmp), "NUT_ALTPIDPATH": str(tmp)}


@pytest.fixture
def upsd(tmp_path: Path, fixtures_dir: Path) -> Iterator[Upsd]:
    # Debian's /usr/sbin/upsd is a wrapper that checks /etc/nut/nut.conf; run the daemon itself.
    daemon = require_binary("upsd", "/lib/nut/upsd")
    if Path("/lib/nut/upsd").exists():
        daemon = "/lib/nut/upsd"
    driver = require_binary("dummy-ups", "/lib/nut/dummy-ups")
    port = free_port()
    data = tmp_path / "ups1.dev"
    shutil.copyfile(fixtures_dir / "ups" / "fake" / "variables.dev", data)
    (tmp_path / "ups.conf").write_text(
        # pollinterval: how often the driver checks the file's timestamp (dummy-once mode re-reads
        # a .dev file when it changes, dummy-ups(8)).
        f'[ups1]\n  driver = dummy-ups\n  port = {data}\n  pollinterval = 1\n  desc = "fleetmon test"\n'
    )
    (tmp_path / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {port}\nMAXAGE 5\n")
    (tmp_path / "upsd.users").write_text("")
    for name in ("ups.conf", "upsd.conf", "upsd.users"):
        (tmp_path / name).chmod(0o600)
    env = _nut_env(tmp_path)
    user = ["-u", "root"] if os.geteuid() == 0 else []
    drv = Process([driver, "-a", "ups1", "-F", *user], tmp_path / "driver.log", env=env, cwd=tmp_path)
    srv = None
    try:
        deadline = time.monotonic() + 15
        while not any(p.name.startswith("dummy-ups-ups1") for p in tmp_path.iterdir()):
            if not drv.alive() or time.monotonic() > deadline:
                pytest.fail(f"dummy-ups did not start: {drv.log_text()}")
            time.sleep(0.05)
        srv = Process([daemon, "-F", *user], tmp_path / "upsd.log", env=env, cwd=tmp_path)
        wait_for_port(port, 15, srv.proc)
        yield Upsd(port, data, drv)
    finally:
        if srv is not None:
            srv.stop()
        drv.stop()


def nut_plugin(port: int, tmp: Path) -> PowerPlugin:
    off = KernelSourceConfig(enabled=False)
    cfg = PowerConfig(rapl=off, hwmon=off, power_supply=off, acpi=off,
                      nut=NutConfig(host="127.0.0.1", port=port), source_timeout=3.0)
    cfg.ipmi.enabled = False
    return PowerPlugin(PluginContext(node="t", sysfs_root=tmp), cfg)


def collect(plugin: PowerPlugin) -> dict[Key, float]:
    col: Collection = asyncio.run(plugin.collect())
    return {s.key(): s.value for s in col.samples}


def wait_until_up(plugin: PowerPlugin, timeout: float = 30) -> dict[Key, float]:
    got: dict[Key, float] = wait_until(
        lambda: (c := collect(plugin)).get(key("ups_up", ups="ups1")) == 1.0 and c, timeout, "ups_up 1")
    return got


@pytest.mark.services
def test_real_upsd_values_and_switch_to_battery(upsd: Upsd, tmp_path: Path) -> None:
    plugin = nut_plugin(upsd.port, tmp_path)
    plugin.discover()
    assert [s.name for s in plugin.sources] == ["nut"]
    got = wait_until_up(plugin)
    u = {"ups": "ups1"}
    # fixtures/ups/fake/variables.dev, as upsd serves it
    assert got[key("ups_up", **u)] == 1.0
    assert got[key("ups_on_battery", **u)] == 0.0
    assert got[key("ups_low_battery", **u)] == 0.0
    assert got[key("ups_battery_charge_ratio", **u)] == 1.0  # battery.charge 100.0 %
    assert got[key("ups_battery_runtime_seconds", **u)] == 600.0
    assert got[key("ups_battery_voltage_volts", **u)] == 13.4
    assert got[key("ups_load_ratio", **u)] == 0.23  # ups.load 23.0 %
    assert got[key("ups_input_voltage_volts", **u)] == 242.0
    assert got[key("ups_output_voltage_volts", **u)] == 230.0
    assert got[key("ups_real_power_watts", **u)] == 41.0
    assert got[key("ups_real_power_nominal_watts", **u)] == 700.0
    assert got[key("ups_status_flag", flag="OL", **u)] == 1.0
    assert got[key("ups_status_flag", flag="OB", **u)] == 0.0
    assert got[key("power_source_up", source="nut")] == 1.0

    # Mains fails: the data file says so; dummy-ups re-reads it when its timestamp changes
    # (checked every pollinterval = 1 s). How fast that shows is a latency (bench/), not a test.
    text = upsd.data_file.read_text().replace("ups.status: OL", "ups.status: OB DISCHRG LB")
    upsd.data_file.write_text(text)
    future = time.time() + 2
    os.utime(upsd.data_file, (future, future))  # a new mtime even within the same second
    got = wait_until(lambda: (c := collect(plugin)).get(key("ups_on_battery", **u)) == 1.0 and c, 30,
                     "ups_on_battery to turn 1", interval=0.25)
    assert got[key("ups_low_battery", **u)] == 1.0
    assert got[key("ups_status_flag", flag="DISCHRG", **u)] == 1.0
    assert got[key("ups_status_flag", flag="OL", **u)] == 0.0
    plugin.close()


@pytest.mark.services
def test_unknown_ups_and_dead_upsd_fail_cleanly(upsd: Upsd, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugin = nut_plugin(upsd.port, tmp_path)
    plugin.config.nut.ups = ["nope"]
    plugin.discover()
    got = collect(plugin)
    assert got == {key("power_source_up", source="nut"): 0.0}
    assert any("upsd 127.0.0.1" in r.getMessage() and "UNKNOWN-UPS" in r.getMessage() for r in caplog.records)

    dead = nut_plugin(free_port(), tmp_path)
    dead.discover()
    assert collect(dead) == {key("power_source_up", source="nut"): 0.0}
    assert any("cannot connect" in r.getMessage() for r in caplog.records)


@pytest.mark.services
def test_driver_gone_is_ups_down_not_source_down(
        upsd: Upsd, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugin = nut_plugin(upsd.port, tmp_path)
    plugin.discover()
    assert wait_until_up(plugin)[key("ups_up", ups="ups1")] == 1.0
    upsd.driver.stop()  # the UPS's driver dies (USB cable pulled, driver crash)
    got = wait_until(lambda: (c := collect(plugin)).get(key("ups_up", ups="ups1")) == 0.0 and c, 30,
                     "ups_up 0 after the driver died", interval=0.5)
    # upsd answers ERR DATA-STALE or DRIVER-NOT-CONNECTED: the UPS is down, upsd is fine
    assert got == {key("ups_up", ups="ups1"): 0.0, key("power_source_up", source="nut"): 1.0}
    lines = [r.getMessage() for r in caplog.records if "ERR" in r.getMessage()]
    assert len(lines) == 1 and ("DATA-STALE" in lines[0] or "DRIVER-NOT-CONNECTED" in lines[0])
