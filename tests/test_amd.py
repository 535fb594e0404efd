"""AMD plugin: rocm-smi JSON captures from ROCm 4.3 to 6.2.4 parsed to exact values."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

import agent.plugins.accel as accel
import agent.plugins.amd.rocm_smi as rocm_smi
from agent.errors import CollectTimeout, PluginUnavailable
from agent.model import Collection, Metric
from agent.plugin import PluginContext
from agent.plugins.accel import to_collection
from agent.plugins.amd import AmdPlugin
from agent.plugins.amd.plugin import AmdConfig
from agent.plugins.amd.rocm_smi import parse_rocm_smi
from agent.toolrun import ToolOutputError
from tests.services import require_binary

MIB = 1 << 20


def amd(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / "amd" / name).read_text()


# card0 of every capture, field by field (None: the capture does not report it).
EXPECTED_CARD0: dict[str, dict[str, Any]] = {
    "amd-gpu-6.2.4-rocm-smi.json": dict(
        n=1, model="Navi 32 [Radeon RX 7700 XT / 7800 XT]", uuid="0x5c88007d760374f3",
        utilization=1.0, memory_utilization=None, memory_used_bytes=11615076352, memory_total_bytes=17163091968,
        temperature=45.0, junction_temperature=51.0, memory_temperature=54.0, power_watts=53.0,
        power_limit_watts=None, sm_clock_hz=None, memory_clock_hz=None, fan_ratio=None,
        pcie_generation=None, pcie_width=None, pcie_replays=None,
        info=dict(device_id="0x747e"),
    ),
    "mi100_rocm571.json": dict(
        n=6, model="Arcturus GL-XL [Instinct MI100]", uuid="",
        utilization=0.0, memory_utilization=0.0, memory_used_bytes=6782976, memory_total_bytes=34342961152,
        temperature=31.0, junction_temperature=34.0, memory_temperature=30.0, power_watts=39.0,
        power_limit_watts=290.0, sm_clock_hz=300e6, memory_clock_hz=1200e6, fan_ratio=None,
        pcie_generation=3, pcie_width=16, pcie_replays=0,
        info=dict(pci_bus="0000:1E:00.0", serial="0", vbios_version="113-D3430400-037", device_id="0x738c",
                  driver_version="6.2.4"),
    ),
    "mi100_rocm602.json": dict(
        n=4, model="Arcturus GL-XL [Instinct MI100]", uuid="0x79ccd55167a2124a",
        utilization=0.0, memory_utilization=0.0, memory_used_bytes=6750208, memory_total_bytes=34342961152,
        temperature=53.0, junction_temperature=55.0, memory_temperature=53.0, power_watts=36.0,
        power_limit_watts=290.0, sm_clock_hz=300e6, memory_clock_hz=1200e6, fan_ratio=None,
        pcie_generation=4, pcie_width=16, pcie_replays=0,
        info=dict(pci_bus="0000:83:00.0", vbios_version="113-D3431401-101", device_id="0x738c",
                  driver_version="6.3.6"),
    ),
    # ROCm 4.3 printed the PCI vendor id as the card series: the model falls back to the device id.
    "rx6700xt_rocm430.json": dict(
        n=1, model="0x73df", uuid="",
        utilization=0.0, memory_utilization=0.0, memory_used_bytes=1622728704, memory_total_bytes=12868124672,
        temperature=45.0, junction_temperature=47.0, memory_temperature=46.0, power_watts=6.0,
        power_limit_watts=211.0, sm_clock_hz=500e6, memory_clock_hz=96e6, fan_ratio=None,
        pcie_generation=4, pcie_width=16, pcie_replays=0,
        info=dict(pci_bus="0000:07:00.0", device_id="0x73df"),
    ),
    "rx6700xt_rocm571.json": dict(
        n=1, model="Navi 22 [Radeon RX 6700/6700 XT / 6800M]", uuid="",
        utilization=0.0, memory_utilization=0.0, memory_used_bytes=1564491776, memory_total_bytes=12868124672,
        temperature=45.0, junction_temperature=47.0, memory_temperature=46.0, power_watts=6.0,
        power_limit_watts=211.0, sm_clock_hz=500e6, memory_clock_hz=96e6, fan_ratio=None,
        pcie_generation=4, pcie_width=16, pcie_replays=0,
        info=dict(pci_bus="0000:07:00.0", device_id="0x73df"),
    ),
    # "Average Graphics Package Power (W)": "N/A (Secondary die)" -> omitted, not zero.
    "rx6700xt_rocm602.json": dict(
        n=1, model="Navi 22 [Radeon RX 6700/6700 XT / 6800M]", uuid="",
        utilization=0.0, memory_utilization=0.0, memory_used_bytes=1572757504, memory_total_bytes=12868124672,
        temperature=45.0, junction_temperature=47.0, memory_temperature=46.0, power_watts=None,
        power_limit_watts=211.0, sm_clock_hz=500e6, memory_clock_hz=96e6, fan_ratio=None,
        pcie_generation=4, pcie_width=16, pcie_replays=0,
        info=dict(pci_bus="0000:07:00.0", device_id="0x73df"),
    ),
    # ROCm 6.1.2 renamed "GPU memory use (%)" to "GPU Memory Read/Write Activity (%)".
    "rx6700xt_rocm612.json": dict(
        n=1, model="Navi 22 [Radeon RX 6700/6700 XT / 6800M]", uuid="",
        utilization=0.0, memory_utilization=0.0, memory_used_bytes=1572745216, memory_total_bytes=12868124672,
        temperature=45.0, junction_temperature=47.0, memory_temperature=46.0, power_watts=6.0,
        power_limit_watts=211.0, sm_clock_hz=0.0, memory_clock_hz=96e6, fan_ratio=None,
        pcie_generation=4, pcie_width=16, pcie_replays=0,
        info=dict(pci_bus="0000:07:00.0", device_id="0x73df"),
    ),
    "vega-10-XT.json": dict(
        n=1, model="0x6861", uuid="0x2150e7d042a1124",
        utilization=0.0, memory_utilization=None, memory_used_bytes=17776640, memory_total_bytes=17163091968,
        temperature=39.0, junction_temperature=40.0, memory_temperature=92.0, power_watts=15.0,
        power_limit_watts=170.0, sm_clock_hz=1269e6, memory_clock_hz=167e6, fan_ratio=0.13,
        pcie_generation=3, pcie_width=16, pcie_replays=0,
        info=dict(pci_bus="0000:04:00.0", device_id="0x6861", driver_version="5.9.25"),
    ),
    "vega-20-WKS-GL-XE.json": dict(
        n=1, model="Radeon Instinct MI50 32GB", uuid="0x2f048617326b1ea",
        utilization=0.0, memory_utilization=0.0, memory_used_bytes=10850304, memory_total_bytes=34342961152,
        temperature=36.0, junction_temperature=38.0, memory_temperature=35.0, power_watts=26.0,
        power_limit_watts=225.0, sm_clock_hz=1725e6, memory_clock_hz=1000e6, fan_ratio=0.0,
        pcie_generation=4, pcie_width=16, pcie_replays=0,
        info=dict(pci_bus="0000:63:00.0", serial="692024000810", device_id="0x66a1", driver_version="5.9.17"),
    ),
}


def test_every_capture_is_covered(fixtures_dir: Path) -> None:
    assert sorted(p.name for p in (fixtures_dir / "amd").glob("*.json")) == sorted(EXPECTED_CARD0)


@pytest.mark.parametrize("name", sorted(EXPECTED_CARD0))
def test_card0_exact_values(fixtures_dir: Path, name: str) -> None:
    want = dict(EXPECTED_CARD0[name])
    readings = parse_rocm_smi(amd(fixtures_dir, name))
    assert len(readings) == want.pop("n")
    r = readings[0]
    assert (r.index, r.vendor, r.kind) == ("0", "amd", "GPU")
    info = want.pop("info")
    for key, value in info.items():
        assert r.info[key] == value, key
    for key, value in want.items():
        assert getattr(r, key) == value, key


def test_mi100_all_cards(fixtures_dir: Path) -> None:
    readings = parse_rocm_smi(amd(fixtures_dir, "mi100_rocm571.json"))
    assert [r.index for r in readings] == ["0", "1", "2", "3", "4", "5"]
    assert [r.temperature for r in readings] == [31.0, 30.0, 31.0, 33.0, 32.0, 33.0]
    assert [r.memory_temperature for r in readings] == [30.0, 38.0, 31.0, 36.0, 38.0, 38.0]
    assert [r.power_watts for r in readings] == [39.0, 37.0, 35.0, 39.0, 39.0, 40.0]
    assert [r.info["pci_bus"] for r in readings][:5] == [
        "0000:1E:00.0", "0000:22:00.0", "0000:3F:00.0", "0000:43:00.0", "0000:46:00.0"
    ]
    newer = parse_rocm_smi(amd(fixtures_dir, "mi100_rocm602.json"))
    assert [r.uuid for r in newer][:3] == ["0x79ccd55167a2124a", "0x4edfb117a17a07d", "0xd4a9ec48d03d261d"]
    assert [r.power_watts for r in newer] == [36.0, 44.0, 43.0, 39.0]


def test_vendor_extras(fixtures_dir: Path) -> None:
    r = parse_rocm_smi(amd(fixtures_dir, "vega-20-WKS-GL-XE.json"))[0]
    extras = {(x.metric.name, x.labels): x.value for x in r.extra}
    assert extras == {
        ("amd_clock_hertz", (("clock", "fclk"),)): 1080e6,
        ("amd_clock_hertz", (("clock", "socclk"),)): 971e6,
        ("amd_clock_hertz", (("clock", "dcefclk"),)): 357e6,
        ("amd_voltage_volts", ()): 1.0,
    }
    # rocm-smi 4.3 lists HBM sensors but they read N/A on a Navi card: omitted.
    old = parse_rocm_smi(amd(fixtures_dir, "rx6700xt_rocm430.json"))[0]
    assert not [x for x in old.extra if x.metric.name == "amd_hbm_temperature_celsius"]


def test_collection_uses_shared_vocabulary(fixtures_dir: Path) -> None:
    col = to_collection(parse_rocm_smi(amd(fixtures_dir, "vega-20-WKS-GL-XE.json")))
    by_name = {s.name: s for s in col.samples}
    base = {"gpu": "0", "vendor": "amd", "model": "Radeon Instinct MI50 32GB", "uuid": "0x2f048617326b1ea"}
    assert by_name["gpu_temperature_celsius"].labels == base
    assert by_name["gpu_temperature_celsius"].value == 36.0
    assert by_name["gpu_up"].value == 1.0
    assert by_name["gpu_info"].labels == {
        **base, "kind": "GPU", "pci_bus": "0000:63:00.0", "serial": "692024000810",
        "vbios_version": "113-D1631700-111", "device_id": "0x66a1", "driver_version": "5.9.17",
    }
    assert by_name["gpu_sm_clock_hertz"].value == 1725e6
    assert by_name["gpu_pcie_replay_total"].value == 0
    # Not in rocm-smi's JSON: omitted rather than zero.
    for absent in ("gpu_energy_joules_total", "gpu_ecc_errors_total", "gpu_xgmi_errors_total",
                   "gpu_pcie_link_generation_max"):
        assert absent not in by_name


# --- malformed and truncated output -------------------------------------------------------


def test_truncated_output_is_a_clear_error(fixtures_dir: Path) -> None:
    text = amd(fixtures_dir, "mi100_rocm602.json")
    with pytest.raises(ToolOutputError, match=r"^rocm-smi: output is not JSON \(.* at line \d+ column \d+\)"):
        parse_rocm_smi(text[: len(text) // 2])


def test_garbage_output_is_a_clear_error() -> None:
    pattern = r"^rocm-smi: output is not JSON \(Expecting value at line 1 column 1\); it starts 'ERROR: GPU\[0\]"
    with pytest.raises(ToolOutputError, match=pattern):
        parse_rocm_smi("ERROR: GPU[0]\t: Unable to read sysfs\n", source="rocm-smi")


def test_wrong_shape_is_a_clear_error(fixtures_dir: Path) -> None:
    with pytest.raises(ToolOutputError, match="expected a JSON object of cards, got list"):
        parse_rocm_smi("[1, 2]")
    with pytest.raises(ToolOutputError, match="card0 is str, expected an object"):
        parse_rocm_smi('{"card0": "x"}')


def test_bad_number_names_card_and_label(fixtures_dir: Path) -> None:
    doc = json.loads(amd(fixtures_dir, "vega-10-XT.json"))
    doc["card0"]["GPU use (%)"] = "lots"
    with pytest.raises(ToolOutputError, match=r"card0 'GPU use \(%\)' is 'lots', expected a number"):
        parse_rocm_smi(json.dumps(doc))
    doc["card0"]["GPU use (%)"] = "0"
    doc["card0"]["pcie clock level"] = "1 (fast)"
    with pytest.raises(ToolOutputError, match="'pcie clock level' is '1 \\(fast\\)'"):
        parse_rocm_smi(json.dumps(doc))


def test_no_cards_is_empty() -> None:
    assert parse_rocm_smi('{"system": {"Driver version": "6.3.6"}}') == []


# --- the plugin, running a real program in place of rocm-smi --------------------------------


def fake_tool(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def make_plugin(**cfg: Any) -> AmdPlugin:
    return AmdPlugin(PluginContext(node="n1"), AmdConfig(**cfg))


def test_plugin_reads_through_rocm_smi(tmp_path: Path, fixtures_dir: Path) -> None:
    capture = fixtures_dir / "amd" / "mi100_rocm602.json"
    # rocm-smi exits 2 when a query is unsupported yet prints the JSON: still a good read.
    tool = fake_tool(tmp_path, "rocm-smi",
                     f'[ "$1 $#" = "--showid 19" ] || exit 9\ncat "{capture}"\nexit 2\n')
    plugin = make_plugin(source="rocm-smi", rocm_smi=str(tool))
    plugin.discover()
    col: Collection = plugin.collect()
    temps = sorted((s.labels["gpu"], s.value) for s in col.samples if s.name == "gpu_temperature_celsius")
    assert temps == [("0", 53.0), ("1", 55.0), ("2", 54.0), ("3", 51.0)]
    ref = plugin.ctx.directory.gpu_by_pci("0000:83:00.0")
    assert ref is not None and (ref.index, ref.uuid, ref.vendor) == ("0", "0x79ccd55167a2124a", "amd")
    plugin.close()
    plugin.close()


def test_plugin_missing_tools_is_unavailable_in_one_line(tmp_path: Path) -> None:
    plugin = make_plugin(source="rocm-smi", rocm_smi=str(tmp_path / "rocm-smi"))
    with pytest.raises(PluginUnavailable) as exc:
        plugin.discover()
    assert "\n" not in str(exc.value)
    assert str(exc.value) == f"rocm-smi not found at {tmp_path / 'rocm-smi'} (set plugins.amd.rocm_smi to its path)"
    plugin.close()


def test_auto_falls_back_and_names_every_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    plugin = make_plugin()
    with pytest.raises(PluginUnavailable) as exc:
        plugin.discover()
    msg = str(exc.value)
    assert msg.startswith("the amdsmi Python library is not installed")
    assert "amd-smi not found on PATH (set plugins.amd.amd_smi to its path)" in msg
    assert msg.endswith("rocm-smi not found on PATH (set plugins.amd.rocm_smi to its path)")


def test_garbage_fails_one_cycle_not_the_plugin(tmp_path: Path, fixtures_dir: Path) -> None:
    capture = fixtures_dir / "amd" / "vega-10-XT.json"
    state = tmp_path / "garbage"
    tool = fake_tool(tmp_path, "rocm-smi", f'if [ -e "{state}" ]; then echo "Segmentation fault"; '
                                           f'else cat "{capture}"; fi\n')
    plugin = make_plugin(source="rocm-smi", rocm_smi=str(tool))
    plugin.discover()
    state.touch()
    with pytest.raises(ToolOutputError, match=r"rocm-smi --showid .* vram --json: output is not JSON"):
        plugin.collect()
    state.unlink()
    assert any(s.name == "gpu_up" for s in plugin.collect().samples)


def test_hung_tool_is_a_timeout(tmp_path: Path, fixtures_dir: Path) -> None:
    capture = fixtures_dir / "amd" / "vega-10-XT.json"
    state = tmp_path / "hang"
    tool = fake_tool(tmp_path, "rocm-smi", f'[ -e "{state}" ] && sleep 30\ncat "{capture}"\n')
    plugin = make_plugin(source="rocm-smi", rocm_smi=str(tool), tool_timeout=0.5)
    plugin.discover()
    state.touch()
    with pytest.raises(CollectTimeout):
        plugin.collect()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="source must be one of"):
        AmdConfig(source="nvml").validate()


def test_once_prom_output_passes_promtool(tmp_path: Path, fixtures_dir: Path, fleetmon_cmd: list[str]) -> None:
    capture = fixtures_dir / "amd" / "mi100_rocm571.json"
    tool = fake_tool(tmp_path, "rocm-smi", f'cat "{capture}"\n')
    out = subprocess.run(
        [*fleetmon_cmd, "agent", "--once", "--format", "prom", "--plugins", "amd", "--node", "n1",
         "--set", f"amd.rocm_smi={tool}", "--set", "amd.source=rocm-smi"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert 'gpu_memory_temperature_celsius{gpu="4",model="Arcturus GL-XL [Instinct MI100]"' in out
    promtool = require_binary("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=out, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_readme_lists_every_metric(repo_root: Path) -> None:
    text = (repo_root / "agent" / "plugins" / "amd" / "README.md").read_text()
    declared = {m.name for mod in (accel, rocm_smi) for m in vars(mod).values() if isinstance(m, Metric)}
    assert declared and {n for n in declared if f"`{n}`" not in text} == set()
