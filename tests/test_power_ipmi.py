"""Power plugin, IPMI source: parsers on captured ipmitool output, and real ipmitool over lanplus
to OpenIPMI's ``ipmi_sim`` on loopback, emulating a BMC with a PSU power sensor and two PSU
status sensors (one failed).

``ipmi_sim`` does not implement DCMI (it answers "Invalid command", completion code C1h), so
``dcmi power reading`` is tested on the captured ipmitool output only; against the simulator
the test checks that the source notices, says so once and stops asking.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.model import Collection
from agent.plugin import PluginContext
from agent.plugins.power import PowerPlugin
from agent.plugins.power.config import IpmiConfig, KernelSourceConfig, PowerConfig
from agent.plugins.power.ipmi import IpmiSource, PsuStatus, parse_dcmi_power_reading, parse_sdr, psu_statuses
from tests.services import Process, free_port, require_binary

Key = tuple[str, tuple[tuple[str, str], ...]]
USER, PASSWORD = "fleetmon", "s3cret-ipmi"


def key(metric: str, **labels: str) -> Key:
    return metric, tuple(sorted(labels.items()))


@pytest.fixture
def literals(fixtures_dir: Path) -> Path:
    return fixtures_dir / "ipmi" / "telegraf-test-literals"


def test_parse_dcmi_power_reading(literals: Path) -> None:
    p = parse_dcmi_power_reading((literals / "ipmitool-dcmi-power-reading.txt").read_text())
    assert (p.instant, p.minimum, p.maximum, p.average, p.active) == (167.0, 124.0, 422.0, 156.0, True)
    off = parse_dcmi_power_reading("Instantaneous power reading:   0 Watts\nPower reading state is:   deactivated\n")
    assert off.active is False


@pytest.mark.parametrize("name", ["ipmitool-sdr-elist-v2-curated.txt", "ipmitool-sdr-elist-v2-with-errors.txt"])
def test_parse_sdr_elist(literals: Path, name: str) -> None:
    sensors = parse_sdr((literals / name).read_text())
    # "Unable to send command" lines are not sensors
    assert [s.name for s in sensors] == ["SEL", "Intrusion", "Fan1", "Inlet Temp", "USB Cable Pres",
                                         "Current 1", "Power Supply 1"]
    by = {s.name: s for s in sensors}
    assert (by["Current 1"].value, by["Current 1"].unit, by["Current 1"].entity) == (7.2, "Amps", "10.1")
    ps = by["Power Supply 1"]
    assert (ps.value, ps.unit, ps.states, ps.entity_id) == (110.0, "Watts", ["Presence detected"], 10)
    assert by["SEL"].status == "ns" and by["SEL"].value is None
    assert psu_statuses(sensors) == [PsuStatus("Power Supply 1", present=True, failed=False)]


def test_parse_plain_sdr(literals: Path) -> None:
    sensors = parse_sdr((literals / "ipmitool-sdr-v1.txt").read_text())
    by = {s.name: s for s in sensors}
    assert (by["Avg Power"].value, by["Avg Power"].unit) == (210.0, "Watts")
    assert (by["Planar 12V"].value, by["Planar 12V"].unit) == (12.04, "Volts")
    assert by["Power Supply 1"].value is None and by["Power Supply 1"].entity == ""
    assert by["DASD Backplane 3"].status == "ns"
    assert psu_statuses(sensors) == []  # plain `sdr` has no entity column: no PSU inference


# --- the simulated BMC --------------------------------------------------------------------------
# SDR records written from the IPMI 2.0 spec, section 43 (Table 43-1 full sensor record, type
# 01h; Table 43-2 compact sensor record, type 02h). Entity 10 (0Ah) = power supply.


def _id_string(name: str) -> list[int]:
    return [0xC0 | len(name), *name.encode()]  # type/length: 8-bit ASCII (11b), length


def full_record(number: int, entity_instance: int, name: str, m: int, unit: int) -> list[int]:
    body = [
        0x20, 0x00, number,  # owner: BMC at 20h, LUN 0; sensor number
        10, entity_instance,  # entity: power supply
        0x63, 0x40,  # init: scanning + events on; capabilities: auto re-arm, no thresholds
        0x0B, 0x01,  # sensor type: other units-based; event/reading type: threshold
        0, 0, 0, 0, 0, 0,  # event and reading masks
        0x00, unit, 0x00,  # units 1 (unsigned), base unit, modifier unit
        0x00, m, 0x00, 0x00, 0x00, 0x00, 0x00,  # linear; M; tolerance; B; accuracy; R/B exponents
        0x00, 0, 0, 0, 0xFF, 0x00,  # analog flags; nominal, normal max/min; sensor max/min
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  # thresholds, hysteresis, reserved, OEM
        *_id_string(name),
    ]
    return [0, 0, 0x51, 0x01, len(body), *body]  # record id (assigned), SDR v1.5, type, length


def compact_record(number: int, entity_instance: int, name: str) -> list[int]:
    body = [
        0x20, 0x00, number, 10, entity_instance,
        0x63, 0x40,
        0x08, 0x6F,  # sensor type 08h power supply; sensor-specific discrete states
        0, 0, 0, 0, 0x7F, 0x00,  # masks: offsets 0-6 readable (presence, failure, AC lost, …)
        0, 0, 0,  # units
        0x01, 0x00, 0, 0, 0, 0, 0, 0,  # record sharing, hysteresis, reserved, OEM
        *_id_string(name),
    ]
    return [0, 0, 0x51, 0x02, len(body), *body]


def _hex(data: list[int]) -> str:
    return " ".join(f"0x{b:02x}" for b in data)


def emulator_commands() -> str:
    watts = 6  # IPMI 2.0 Table 43-15: sensor unit type 6 = Watts
    return "\n".join([
        "mc_setbmc 0x20",
        "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02",
        f"main_sdr_add 0x20 {_hex(full_record(0x30, 1, 'PS1 Input Power', 2, watts))}",
        f"main_sdr_add 0x20 {_hex(compact_record(0x31, 1, 'PS1 Status'))}",
        f"main_sdr_add 0x20 {_hex(compact_record(0x32, 2, 'PS2 Status'))}",
        "sensor_add 0x20 0 0x30 0x0b 0x01",
        "sensor_set_value 0x20 0 0x30 0xd7 0",  # raw 215 × M 2 = 430 W
        "sensor_add 0x20 0 0x31 0x08 0x6f",
        "sensor_set_bit 0x20 0 0x31 0 1 0",  # PS1: presence detected
        "sensor_add 0x20 0 0x32 0x08 0x6f",
        "sensor_set_bit 0x20 0 0x32 0 1 0",  # PS2: presence detected …
        "sensor_set_bit 0x20 0 0x32 1 1 0",  # … and failure detected
        "mc_enable 0x20",
        "",
    ])


def lan_conf(port: int) -> str:
    return f"""name "fleetmon-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  user 2 true "{USER}" "{PASSWORD}" admin 10 md5
"""


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[int]:
    sim = require_binary("ipmi_sim")
    ipmitool = require_binary("ipmitool")
    port = free_port()  # a free TCP number; the simulator listens on UDP
    (tmp_path / "lan.conf").write_text(lan_conf(port))
    (tmp_path / "emu.cmds").write_text(emulator_commands())
    (tmp_path / "state").mkdir()
    proc = Process([sim, "-c", "lan.conf", "-f", "emu.cmds", "-s", str(tmp_path / "state"), "-n"],
                   tmp_path / "ipmi_sim.log", cwd=tmp_path)
    try:
        env = {**os.environ, "IPMI_PASSWORD": PASSWORD}
        deadline = time.monotonic() + 15
        while True:
            probe = subprocess.run(
                [ipmitool, "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", USER, "-E", "-C", "3",
                 "-N", "1", "-R", "1", "mc", "info"], env=env, capture_output=True, timeout=10, check=False)
            if probe.returncode == 0:
                break
            if not proc.alive() or time.monotonic() > deadline:
                pytest.fail(f"ipmi_sim did not answer: {proc.log_text()} {probe.stderr.decode()}")
            time.sleep(0.2)
        yield port
    finally:
        proc.stop()


def ipmi_plugin(port: int, tmp: Path, timeout: float = 8.0, **ipmi: object) -> PowerPlugin:
    off = KernelSourceConfig(enabled=False)
    icfg = IpmiConfig(host="127.0.0.1", port=port, username=USER, **ipmi)  # type: ignore[arg-type]
    cfg = PowerConfig(rapl=off, hwmon=off, power_supply=off, acpi=off, ipmi=icfg, source_timeout=timeout)
    return PowerPlugin(PluginContext(node="t", sysfs_root=tmp), cfg)


def collect(plugin: PowerPlugin) -> tuple[dict[Key, float], Collection]:
    col: Collection = asyncio.run(plugin.collect())
    return {s.key(): s.value for s in col.samples}, col


@pytest.mark.services
def test_real_ipmitool_lanplus_to_ipmi_sim(
        bmc: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("IPMI_PASSWORD", PASSWORD)
    plugin = ipmi_plugin(bmc, tmp_path)
    plugin.discover()
    source = plugin.sources[0]
    assert isinstance(source, IpmiSource)
    argv = source.argv("sdr", "elist")
    assert PASSWORD not in " ".join(argv) and "-E" in argv  # the password never travels in argv
    with caplog.at_level(logging.INFO):
        got, col = collect(plugin)
    ps1 = {"psu": "PS1 Status", "source": "ipmi"}
    ps2 = {"psu": "PS2 Status", "source": "ipmi"}
    assert got == {
        key("ipmi_sensor_watts", sensor="PS1 Input Power", entity="10.1"): 430.0,
        key("psu_present", **ps1): 1.0,
        key("psu_up", **ps1): 1.0,
        key("psu_present", **ps2): 1.0,
        key("psu_up", **ps2): 0.0,  # "Presence detected, Failure detected"
        key("power_source_up", source="ipmi"): 1.0,
    }
    assert [(e.kind, e.labels["psu"], e.severity.name) for e in col.events] == [
        ("power.psu_fault", "PS2 Status", "CRITICAL")]
    dcmi_lines = [r.getMessage() for r in caplog.records if "dcmi" in r.getMessage()]
    assert len(dcmi_lines) == 1 and "does not implement it" in dcmi_lines[0]
    collect(plugin)
    assert [r.getMessage() for r in caplog.records if "dcmi" in r.getMessage()] == dcmi_lines  # asked once
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)

    # sdr_types: only the PSU status sensors (`sdr type "Power Supply"`), not the analog one.
    typed = ipmi_plugin(bmc, tmp_path, sdr_types=["Power Supply"], dcmi=False)
    typed.discover()
    got, _ = collect(typed)
    assert got == {
        key("psu_present", **ps1): 1.0, key("psu_up", **ps1): 1.0,
        key("psu_present", **ps2): 1.0, key("psu_up", **ps2): 0.0,
        key("power_source_up", source="ipmi"): 1.0,
    }


@pytest.mark.services
def test_wrong_password_and_deadline(
        bmc: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("IPMI_PASSWORD", "not-the-password")
    plugin = ipmi_plugin(bmc, tmp_path)
    plugin.discover()
    with caplog.at_level(logging.WARNING):
        got, _ = collect(plugin)
    assert got == {key("power_source_up", source="ipmi"): 0.0}
    lines = [r.getMessage() for r in caplog.records if "ipmi" in r.getMessage()]
    assert len(lines) == 1
    assert f"BMC 127.0.0.1:{bmc}" in lines[0] and "IPMI_PASSWORD" in lines[0]
    assert "not-the-password" not in lines[0]

    # A BMC that does not answer at all: the source gives up at its deadline, ipmitool is killed.
    caplog.clear()
    silent = ipmi_plugin(free_port(), tmp_path, timeout=1.0)
    silent.discover()
    with caplog.at_level(logging.WARNING):
        got, _ = collect(silent)
    assert got == {key("power_source_up", source="ipmi"): 0.0}
    # the deadline ended it (how fast is for bench/): without it ipmitool would retry on its own
    assert any("no answer within 1s" in r.getMessage() for r in caplog.records)
