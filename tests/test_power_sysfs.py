"""Power plugin, kernel sources, on the captured sysfs trees (node_exporter's and procfs')."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.attrfiles import PAGE, HeldFiles
from agent.errors import PluginUnavailable
from agent.model import Collection
from agent.plugin import PluginContext
from agent.plugins.power import PowerPlugin
from agent.plugins.power.config import PowerConfig
from agent.plugins.power.energy import PowerIntegrator, WrappingCounter
from agent.plugins.power.sysfs import parse_acpi_power_meter, parse_hwmon_chip
from tests.services import captured_link, require_binary

Key = tuple[str, tuple[tuple[str, str], ...]]


def values(col: Collection) -> dict[Key, float]:
    return {s.key(): s.value for s in col.samples}


def key(metric: str, **labels: str) -> Key:
    return metric, tuple(sorted(labels.items()))


_MADE: list[PowerPlugin] = []


@pytest.fixture(autouse=True)
def _close_plugins() -> Iterator[None]:
    yield
    while _MADE:
        _MADE.pop().close()


def plugin_for(root: Path, dev: Path | None = None, **cfg: object) -> PowerPlugin:
    ctx = PluginContext(node="t", sysfs_root=root, dev_root=dev or root / "no-dev")
    plugin = PowerPlugin(ctx, PowerConfig(**cfg))  # type: ignore[arg-type]
    _MADE.append(plugin)
    return plugin


def collect(plugin: PowerPlugin) -> Collection:
    return asyncio.run(plugin.collect())


@pytest.fixture
def node_exporter_sys(fixtures_dir: Path) -> Path:
    return fixtures_dir / "sysfs" / "node-exporter" / "sys"


@pytest.fixture
def procfs_sys(fixtures_dir: Path) -> Path:
    return fixtures_dir / "sysfs" / "procfs" / "sys"


def nct6779_device(root: Path) -> dict[str, str]:
    """The nct6779's ``device`` label comes from a link's target alone (class/hwmon/hwmon3 ->
    devices/platform/nct6775.656/hwmon/hwmon3): a copy that flattened the links has no name to give."""
    return {} if captured_link(root / "class/hwmon/hwmon3") == "copy" else {"device": "nct6775.656"}


# Expected values: the fixture files' numbers, converted by hand.
NODE_EXPORTER_EXPECTED = {
    # powercap/intel-rapl:0/energy_uj = 240422366267 µJ; intel-rapl:0:0 = 118821284256 µJ
    key("rapl_energy_joules_total", zone="intel-rapl:0", name="package-0"): 240422.366267,
    key("rapl_energy_joules_total", zone="intel-rapl:0:0", name="core"): 118821.284256,
    # constraint_{0,1}_power_limit_uw = 4090000000 µW; core's limit is 0 (unprogrammed): omitted
    key("rapl_power_limit_watts", zone="intel-rapl:0", name="package-0", constraint="long_term"): 4090.0,
    key("rapl_power_limit_watts", zone="intel-rapl:0", name="package-0", constraint="short_term"): 4090.0,
    key("power_supply_online", supply="AC", type="Mains"): 0.0,
    key("power_supply_present", supply="BAT0", type="Battery"): 1.0,
    key("power_supply_status", supply="BAT0", type="Battery", status="Discharging"): 1.0,
    # power_now 5002000 µW; energy_now 36580000 µWh = 131688 J; energy_full 45070000 µWh;
    # energy_full_design 47520000 µWh; capacity 81 %; voltage_now 11660000 µV
    key("power_supply_power_watts", supply="BAT0", type="Battery"): 5.002,
    key("power_supply_energy_joules", supply="BAT0", type="Battery"): 131688.0,
    key("power_supply_energy_full_joules", supply="BAT0", type="Battery"): 162252.0,
    key("power_supply_energy_full_design_joules", supply="BAT0", type="Battery"): 171072.0,
    key("power_supply_capacity_ratio", supply="BAT0", type="Battery"): 0.81,
    key("power_supply_voltage_volts", supply="BAT0", type="Battery"): 11.66,
    key("power_source_up", source="rapl"): 1.0,
    key("power_source_up", source="hwmon"): 1.0,
    key("power_source_up", source="power_supply"): 1.0,
}


def test_node_exporter_tree_exact_values(node_exporter_sys: Path) -> None:
    plugin = plugin_for(node_exporter_sys)
    plugin.discover()
    assert [s.name for s in plugin.sources] == ["rapl", "hwmon", "power_supply"]
    got = values(collect(plugin))
    device = nct6779_device(node_exporter_sys)
    assert got == {
        **NODE_EXPORTER_EXPECTED,
        # nct6779 in0_input = 792 mV, in1_input = 1024 mV
        key("hwmon_voltage_volts", chip="nct6779", sensor="in0", **device): 0.792,
        key("hwmon_voltage_volts", chip="nct6779", sensor="in1", **device): 1.024,
    }
    plugin.close()
    plugin.close()


def test_procfs_tree_exact_values(procfs_sys: Path) -> None:
    plugin = plugin_for(procfs_sys)
    plugin.discover()
    got = values(collect(plugin))
    expected = {
        key("rapl_energy_joules_total", zone="intel-rapl:0", name="package-0"): 240422.366267,
        key("rapl_energy_joules_total", zone="intel-rapl:0:0", name="core"): 118821.284256,
        # the procfs archive's odd zone "intel-rapl:a" named package-10
        key("rapl_energy_joules_total", zone="intel-rapl:a", name="package-10"): 240422.366267,
        key("rapl_power_limit_watts", zone="intel-rapl:0", name="package-0", constraint="long_term"): 4090.0,
        key("rapl_power_limit_watts", zone="intel-rapl:0", name="package-0", constraint="short_term"): 4090.0,
        key("rapl_power_limit_watts", zone="intel-rapl:a", name="package-10", constraint="long_term"): 4090.0,
        key("rapl_power_limit_watts", zone="intel-rapl:a", name="package-10", constraint="short_term"): 4090.0,
        key("power_supply_online", supply="AC", type="Mains"): 0.0,
        key("power_supply_present", supply="BAT0", type="Battery"): 1.0,
        key("power_supply_status", supply="BAT0", type="Battery", status="Discharging"): 1.0,
        # power_now 4830000 µW; energy_now 49450000 µWh; full 50060000; design 47520000;
        # capacity 98 %; voltage_now 12229000 µV
        key("power_supply_power_watts", supply="BAT0", type="Battery"): 4.83,
        key("power_supply_energy_joules", supply="BAT0", type="Battery"): 178020.0,
        key("power_supply_energy_full_joules", supply="BAT0", type="Battery"): 180216.0,
        key("power_supply_energy_full_design_joules", supply="BAT0", type="Battery"): 171072.0,
        key("power_supply_capacity_ratio", supply="BAT0", type="Battery"): 0.98,
        key("power_supply_voltage_volts", supply="BAT0", type="Battery"): 12.229,
        key("power_source_up", source="rapl"): 1.0,
        key("power_source_up", source="power_supply"): 1.0,
    }
    assert got == expected
    # the procfs subset has no class/hwmon: the source is simply not used
    assert "hwmon" not in [s.name for s in plugin.sources]


def test_second_collection_derives_rapl_power(node_exporter_sys: Path) -> None:
    plugin = plugin_for(node_exporter_sys)
    plugin.discover()
    first = values(collect(plugin))
    assert not any(k[0] == "rapl_power_watts" for k in first)  # needs two readings
    second = values(collect(plugin))
    # The captured files do not change between collections: 0 µJ consumed → 0 W, exactly.
    assert second[key("rapl_power_watts", zone="intel-rapl:0", name="package-0")] == 0.0
    assert second[key("rapl_energy_joules_total", zone="intel-rapl:0", name="package-0")] == 240422.366267


def test_rapl_unwraps_with_max_energy_range() -> None:
    max_range = 262143328850  # intel-rapl:0/max_energy_range_uj in both trees
    c = WrappingCounter()
    assert c.update("z", 240422366267, max_range, 0.0) == (240422366267, None)
    total, rate = c.update("z", 262143000000, max_range, 10.0)
    assert (total, rate) == (262143000000, 2172063373.3)
    # wrapped: 328850 µJ to the top of the range, then 1000000 µJ past zero
    total, rate = c.update("z", 1000000, max_range, 20.0)
    assert total == max_range + 1000000
    assert rate == pytest.approx((max_range - 262143000000 + 1000000) / 10.0)
    total, _ = c.update("z", 5000000, max_range, 30.0)
    assert total == max_range + 5000000


def test_integrator_trapezoid_and_gap() -> None:
    i = PowerIntegrator(max_gap_s=60)
    assert i.update("n", 300.0, 0.0) == 0.0
    assert i.update("n", 500.0, 10.0) == 4000.0  # (300+500)/2 × 10 s
    assert i.update("n", 500.0, 20.0) == 9000.0
    assert i.update("n", 100.0, 200.0) == 9000.0  # a 180 s hole is not bridged
    assert i.update("n", 300.0, 210.0) == 11000.0


def test_unreadable_energy_uj_names_the_file_and_the_fix(
        node_exporter_sys: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Root reads any file, so the EACCES of a non-root agent (Linux >= 5.10) is simulated
    # at the one read function of a collection.
    real = HeldFiles.read

    def read(self: HeldFiles, path: str, size: int = PAGE) -> bytes:
        if path.endswith("/energy_uj"):
            raise PermissionError(13, "Permission denied", path)
        return real(self, path, size)

    monkeypatch.setattr(HeldFiles, "read", read)
    plugin = plugin_for(node_exporter_sys)
    plugin.discover()
    with caplog.at_level(logging.WARNING):
        got = values(collect(plugin))
    assert got[key("power_source_up", source="rapl")] == 0.0
    assert got[key("power_source_up", source="hwmon")] == 1.0  # the others go on
    assert got[key("power_supply_power_watts", supply="BAT0", type="Battery")] == 5.002
    lines = [r.getMessage() for r in caplog.records if "rapl" in r.getMessage()]
    assert len(lines) == 1
    assert "intel-rapl:0/energy_uj" in lines[0] and "run the agent as root" in lines[0]


def test_hwmon_parser_units() -> None:
    # hwmon ABI units: power µW, energy µJ, in mV, curr mA (values as an amdgpu/ina3221 show them)
    chip = parse_hwmon_chip("hwmon2", {
        "name": "ina3221", "power1_input": "27500000", "energy1_input": "123456789",
        "in1_input": "12096", "in1_label": "VDD_IN", "curr1_input": "2272",
    }, "1-0040")
    got = {(r.kind, r.sensor): r.value for r in chip.readings}
    assert got == {("power", "power1"): 27.5, ("energy", "energy1"): 123.456789,
                   ("in", "VDD_IN"): 12.096, ("curr", "curr1"): 2.272}
    assert chip.chip == "ina3221" and chip.device == "1-0040"


def test_acpi_power_meter(tmp_path: Path) -> None:
    # No captured tree has an ACPI power meter; this one follows the driver's ABI
    # (Documentation/hwmon/acpi_power_meter.rst: power1_average, power1_cap in µW).
    dev = tmp_path / "devices" / "LNXSYSTM:00" / "ACPI000D:00"
    hw = dev / "hwmon" / "hwmon0"
    hw.mkdir(parents=True)
    (hw / "name").write_text("power_meter\n")
    (hw / "power1_average").write_text("345000000\n")
    (hw / "power1_cap").write_text("500000000\n")
    (tmp_path / "class" / "hwmon").mkdir(parents=True)
    (tmp_path / "class" / "hwmon" / "hwmon0").symlink_to("../../devices/LNXSYSTM:00/ACPI000D:00/hwmon/hwmon0")
    assert parse_acpi_power_meter({"power1_average": "345000000", "power1_cap": "500000000"}) == (345.0, 500.0)
    plugin = plugin_for(tmp_path)
    plugin.discover()
    assert [s.name for s in plugin.sources] == ["hwmon", "acpi"]
    first = values(collect(plugin))
    assert first[key("node_power_watts", source="acpi")] == 345.0
    assert first[key("node_power_cap_watts", source="acpi")] == 500.0
    assert first[key("node_energy_joules_total", source="acpi")] == 0.0
    assert first[key("hwmon_power_watts", chip="power_meter", device="ACPI000D:00", sensor="power1")] == 345.0
    second = values(collect(plugin))
    assert second[key("node_energy_joules_total", source="acpi")] > 0.0


def test_hwmon_device_from_links_only(tmp_path: Path) -> None:
    """A real /sys: class/hwmon/hwmonN links into devices/, and hwmonN/device links to the device.
    The device label is the link target's name; a directory copied in place of a link (a
    flattened tree) names nothing, so the label is omitted rather than made up ("device")."""
    chip = tmp_path / "devices/platform/i2c-1/1-0040/hwmon/hwmon0"
    chip.mkdir(parents=True)
    for name, text in (("name", "ina3221"), ("in1_input", "12096")):
        (chip / name).write_text(text + "\n")
    flat = tmp_path / "class/hwmon/hwmon1"  # as cp -rL leaves it: plain directories
    (flat / "device").mkdir(parents=True)
    for name, text in (("name", "ina3221"), ("in1_input", "5000")):
        (flat / name).write_text(text + "\n")
    (tmp_path / "class/hwmon/hwmon0").symlink_to("../../devices/platform/i2c-1/1-0040/hwmon/hwmon0")
    plugin = plugin_for(tmp_path)
    plugin.discover()
    got = {k: v for k, v in values(collect(plugin)).items() if k[0] == "hwmon_voltage_volts"}
    plugin.close()
    assert got == {key("hwmon_voltage_volts", chip="ina3221", device="1-0040", sensor="in1"): 12.096,
                   key("hwmon_voltage_volts", chip="ina3221", sensor="in1"): 5.0}
    # The same chip reached through a device link instead of its class link's path.
    (flat / "device").rmdir()
    (tmp_path / "devices/platform/i2c-1/1-0041").mkdir()
    (flat / "device").symlink_to("../../devices/platform/i2c-1/1-0041")
    plugin = plugin_for(tmp_path)
    plugin.discover()
    got = values(collect(plugin))
    plugin.close()
    assert got[key("hwmon_voltage_volts", chip="ina3221", device="1-0041", sensor="in1")] == 5.0


def test_no_source_makes_the_plugin_unavailable(tmp_path: Path) -> None:
    plugin = plugin_for(tmp_path)
    with pytest.raises(PluginUnavailable, match="no power source") as err:
        plugin.discover()
    assert "rapl: no RAPL zone" in str(err.value)
    plugin.close()


def test_once_prom_passes_promtool(node_exporter_sys: Path, fleetmon_cmd: list[str], repo_root: Path) -> None:
    promtool = require_binary("promtool")
    out = subprocess.run(
        [*fleetmon_cmd, "agent", "--once", "--format", "prom", "--plugins", "power",
         "--sysfs-root", str(node_exporter_sys), "--node", "n1"],
        cwd=repo_root, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert 'rapl_energy_joules_total{name="package-0",node="n1",zone="intel-rapl:0"} 240422.366267' in out
    assert 'power_supply_power_watts{node="n1",supply="BAT0",type="Battery"} 5.002' in out
    device = "".join(f'{k}="{v}",' for k, v in nct6779_device(node_exporter_sys).items())
    assert f'hwmon_voltage_volts{{chip="nct6779",{device}node="n1",sensor="in0"}} 0.792' in out
    assert "# TYPE rapl_energy_joules_total counter" in out
    check = subprocess.run([promtool, "check", "metrics"], input=out, capture_output=True, text=True,
                           timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
