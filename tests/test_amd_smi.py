"""AMD plugin, amd-smi and amdsmi paths.

No captured ``amd-smi`` output is in shared/fixtures, so these documents are built here in the
shape AMD documents for ``amd-smi metric --json`` (ROCm 6.4+: ``{"gpu_data": [...]}``; 6.0-6.3: a
bare list; values as ``{"value", "unit"}`` or ``"N/A"``) and for the amdsmi Python API's dicts.
They check the mapping and unit conversions, not a particular tool version.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from agent.errors import PluginUnavailable
from agent.plugin import PluginContext
from agent.plugins.accel import EccCount, to_collection
from agent.plugins.amd import AmdPlugin
from agent.plugins.amd.amd_smi import AmdSmiIdentity, parse_amd_smi_list, parse_amd_smi_metric
from agent.plugins.amd.amdsmi_lib import reading_from_answers
from agent.plugins.amd.plugin import AmdConfig
from agent.toolrun import ToolOutputError

MIB = 1 << 20


def v(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit}


def mi300_metric(**over: Any) -> dict[str, Any]:
    gpu: dict[str, Any] = {
        "gpu": 0,
        "usage": {"gfx_activity": v(91, "%"), "umc_activity": v(66, "%"), "mm_activity": "N/A"},
        "power": {"socket_power": v(702, "W"), "gfx_voltage": "N/A", "throttle_status": "N/A"},
        "clock": {"gfx_0": {"clk": v(2100, "MHz")}, "mem_0": {"clk": v(1300, "MHz")}},
        "temperature": {"edge": "N/A", "hotspot": v(78, "C"), "mem": v(61, "C")},
        "pcie": {"width": 16, "speed": v(32, "GT/s"), "replay_count": 3},
        "ecc": {"total_correctable_count": 5, "total_uncorrectable_count": 0, "total_deferred_count": 0},
        "ecc_blocks": {
            "UMC": {"correctable_count": 4, "uncorrectable_count": 0, "deferred_count": 0},
            "GFX": {"correctable_count": 1, "uncorrectable_count": 0, "deferred_count": 0},
        },
        "fan": {"speed": "N/A", "max": "N/A", "rpm": "N/A", "usage": "N/A"},
        "xgmi_err": 2,
        "energy": {"total_energy_consumption": v(123456.5, "J")},
        "mem_usage": {"total_vram": v(196592, "MB"), "used_vram": v(283, "MB")},
        "throttle": {
            "accumulation_counter": 1234,
            "ppt_violation_status": "ACTIVE",
            "socket_thermal_violation_status": "NOT ACTIVE",
            "hbm_thermal_violation_status": "N/A",
        },
    }
    gpu.update(over)
    return gpu


LIST = [{"gpu": 0, "bdf": "0000:0c:00.0", "uuid": "4dff74a1-0000-1000-80ea-d1b9f1b0b1a5", "kfd_id": 1, "node_id": 2}]


def test_metric_maps_to_shared_vocabulary() -> None:
    identity = parse_amd_smi_list(json.dumps(LIST))
    assert identity == {"0": AmdSmiIdentity("0", "0000:0c:00.0", "4dff74a1-0000-1000-80ea-d1b9f1b0b1a5", "")}
    [r] = parse_amd_smi_metric(json.dumps({"gpu_data": [mi300_metric()]}), identity)
    assert (r.index, r.uuid, r.info["pci_bus"]) == ("0", "4dff74a1-0000-1000-80ea-d1b9f1b0b1a5", "0000:0c:00.0")
    assert (r.utilization, r.memory_utilization) == (0.91, 0.66)
    assert (r.memory_total_bytes, r.memory_used_bytes) == (196592 * MIB, 283 * MIB)
    # MI300 has no edge sensor: the die temperature is the hotspot.
    assert (r.temperature, r.junction_temperature, r.memory_temperature) == (78.0, 78.0, 61.0)
    assert (r.power_watts, r.energy_joules) == (702.0, 123456.5)
    assert (r.sm_clock_hz, r.memory_clock_hz) == (2100e6, 1300e6)
    assert (r.pcie_generation, r.pcie_width, r.pcie_replays, r.xgmi_errors) == (5.0, 16.0, 3.0, 2.0)
    assert r.fan_ratio is None
    assert r.ecc == [
        EccCount("correctable", 5.0), EccCount("uncorrectable", 0.0), EccCount("deferred", 0.0),
        EccCount("correctable", 1.0, block="GFX"), EccCount("uncorrectable", 0.0, block="GFX"),
        EccCount("deferred", 0.0, block="GFX"),
        EccCount("correctable", 4.0, block="UMC"), EccCount("uncorrectable", 0.0, block="UMC"),
        EccCount("deferred", 0.0, block="UMC"),
    ]
    assert r.clock_events == {"ppt": True, "socket_thermal": False}
    col = to_collection([r])
    ecc = {(s.labels["type"], s.labels.get("block", "")): s.value for s in col.samples
           if s.name == "gpu_ecc_errors_total"}
    assert ecc[("correctable", "UMC")] == 4 and ecc[("correctable", "")] == 5
    events = {s.labels["reason"]: s.value for s in col.samples if s.name == "gpu_clock_event_active"}
    assert events == {"ppt": 1.0, "socket_thermal": 0.0}


def test_older_list_form_and_units() -> None:
    old = mi300_metric(power={"average_socket_power": v(290, "W")},
                       energy={"total_energy_consumption": v(5_000_000, "uJ")},
                       mem_usage={"total_vram": v(64, "GB"), "used_vram": v(0, "GB")})
    [r] = parse_amd_smi_metric(json.dumps([old]))
    assert r.power_watts == 290.0
    assert r.energy_joules == pytest.approx(5.0)
    assert r.memory_total_bytes == 64 * (1 << 30)
    assert r.model == "" and r.uuid == ""  # no identity given: labels omit them


def test_malformed_metric() -> None:
    with pytest.raises(ToolOutputError, match=r"^amd-smi metric --json: output is not JSON"):
        parse_amd_smi_metric(json.dumps({"gpu_data": [mi300_metric()]})[:300])
    with pytest.raises(ToolOutputError, match="expected a list of objects with a 'gpu' key"):
        parse_amd_smi_metric('{"error": "amdsmi_init failed"}')
    bad = mi300_metric(usage={"gfx_activity": v("busy", "%")})  # type: ignore[arg-type]
    with pytest.raises(ToolOutputError, match=r"gpu 0 usage.gfx_activity is 'busy', expected a number"):
        parse_amd_smi_metric(json.dumps([bad]))
    odd = mi300_metric(energy={"total_energy_consumption": v(1, "kWh")})
    with pytest.raises(ToolOutputError, match="unknown unit 'kWh'"):
        parse_amd_smi_metric(json.dumps([odd]))


def test_amdsmi_library_answers() -> None:
    answers = {
        "uuid": "4dff74a1-0000-1000-80ea-d1b9f1b0b1a5", "bdf": "0000:0c:00.0",
        "asic": {"market_name": "AMD Instinct MI300X"},
        "activity": {"gfx_activity": 50, "umc_activity": 10, "mm_activity": "N/A"},
        "vram": {"vram_total": 196592, "vram_used": 283},
        "temp_edge": None, "temp_hotspot": 70, "temp_vram": 55,
        "power": {"current_socket_power": 650, "average_socket_power": "N/A"},
        "energy": {"energy_accumulator": 1_000_000, "counter_resolution": 15.3},
        "gfx_clock": {"clk": 2100}, "mem_clock": {"clk": 1300},
        "ecc": {"correctable_count": 2, "uncorrectable_count": 0},
        "pcie": {"pcie_metric": {"pcie_width": 16, "pcie_speed": 32000, "pcie_replay_count": 0},
                 "pcie_static": {"max_pcie_width": 16, "max_pcie_speed": 32000}},
    }
    r = reading_from_answers(0, answers)
    assert (r.model, r.uuid, r.info["pci_bus"]) == ("AMD Instinct MI300X", answers["uuid"], "0000:0c:00.0")
    assert (r.utilization, r.memory_utilization) == (0.5, 0.1)
    assert (r.temperature, r.junction_temperature, r.memory_temperature) == (70.0, 70.0, 55.0)
    assert r.power_watts == 650.0
    assert r.energy_joules == pytest.approx(15.3)
    assert (r.pcie_generation, r.pcie_generation_max, r.pcie_width_max) == (5.0, 5.0, 16.0)
    assert r.ecc == [EccCount("correctable", 2.0), EccCount("uncorrectable", 0.0)]
    # Unsupported calls (None) leave their fields out.
    bare = reading_from_answers(1, {})
    assert (bare.temperature, bare.power_watts, bare.ecc) == (None, None, [])


def test_plugin_prefers_amd_smi_over_rocm_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "list.json").write_text(json.dumps(LIST))
    (tmp_path / "metric.json").write_text(json.dumps({"gpu_data": [mi300_metric()]}))
    tool = tmp_path / "amd-smi"
    tool.write_text(
        "#!/bin/sh\n"
        f'case "$*" in\n  "list --json") cat "{tmp_path}/list.json" ;;\n'
        f'  "metric --json") cat "{tmp_path}/metric.json" ;;\n  *) exit 4 ;;\nesac\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    rocm = tmp_path / "rocm-smi"
    rocm.write_text("#!/bin/sh\nexit 1\n")
    rocm.chmod(rocm.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")  # found first, and cat still works
    plugin = AmdPlugin(PluginContext(node="n1"), AmdConfig())
    plugin.discover()
    col = plugin.collect()
    [xgmi] = [s for s in col.samples if s.name == "gpu_xgmi_errors_total"]
    assert xgmi.value == 2 and xgmi.labels["uuid"] == "4dff74a1-0000-1000-80ea-d1b9f1b0b1a5"
    assert plugin.ctx.directory.gpu_by_pci("0000:0c:00.0") is not None
    plugin.close()


# --- the amdsmi choke point, with a stand-in module (the library and its GPUs are absent here) ---


def fake_amdsmi(calls: list[str], fail_code: int | None = None) -> types.ModuleType:
    m = types.ModuleType("amdsmi")

    class AmdSmiLibraryException(Exception):
        def __init__(self, code: int) -> None:
            super().__init__(f"AMDSMI_STATUS {code}")
            self.code = code

        def get_error_code(self) -> int:
            return self.code

    def unsupported(*_a: object) -> None:
        raise AmdSmiLibraryException(2)

    def temp(h: str, kind: int, metric: int) -> int:
        calls.append(f"temp{kind}")
        if kind == 0:
            raise AmdSmiLibraryException(2)  # MI300: no edge sensor -> AMDSMI_STATUS_NOT_SUPPORTED
        return {1: 70, 2: 55}[kind]

    def ecc(h: str) -> dict[str, int]:
        if fail_code is not None:
            raise AmdSmiLibraryException(fail_code)
        return {"correctable_count": 2, "uncorrectable_count": 0}

    m.AmdSmiLibraryException = AmdSmiLibraryException  # type: ignore[attr-defined]
    m.amdsmi_wrapper = types.SimpleNamespace(AMDSMI_STATUS_NOT_SUPPORTED=2)  # type: ignore[attr-defined]
    m.AmdSmiTemperatureType = types.SimpleNamespace(EDGE=0, HOTSPOT=1, VRAM=2)  # type: ignore[attr-defined]
    m.AmdSmiTemperatureMetric = types.SimpleNamespace(CURRENT=0)  # type: ignore[attr-defined]
    m.AmdSmiClkType = types.SimpleNamespace(GFX=0, MEM=1)  # type: ignore[attr-defined]
    m.amdsmi_init = lambda: calls.append("init")  # type: ignore[attr-defined]
    m.amdsmi_shut_down = lambda: calls.append("shut_down")  # type: ignore[attr-defined]
    m.amdsmi_get_processor_handles = lambda: ["h0"]  # type: ignore[attr-defined]
    m.amdsmi_get_gpu_device_uuid = lambda h: "4dff74a1"  # type: ignore[attr-defined]
    m.amdsmi_get_gpu_device_bdf = lambda h: "0000:0c:00.0"  # type: ignore[attr-defined]
    m.amdsmi_get_gpu_asic_info = lambda h: {"market_name": "AMD Instinct MI300X"}  # type: ignore[attr-defined]
    m.amdsmi_get_gpu_activity = lambda h: {"gfx_activity": 50, "umc_activity": 10}  # type: ignore[attr-defined]
    m.amdsmi_get_gpu_vram_usage = lambda h: {"vram_total": 196592, "vram_used": 283}  # type: ignore[attr-defined]
    m.amdsmi_get_temp_metric = temp  # type: ignore[attr-defined]
    m.amdsmi_get_power_info = lambda h: {"current_socket_power": 650}  # type: ignore[attr-defined]
    m.amdsmi_get_energy_count = unsupported  # type: ignore[attr-defined]
    m.amdsmi_get_clock_info = lambda h, clk: {"clk": 2100 if clk == 0 else 1300}  # type: ignore[attr-defined]
    m.amdsmi_get_gpu_total_ecc_count = ecc  # type: ignore[attr-defined]
    m.amdsmi_get_pcie_info = unsupported  # type: ignore[attr-defined]
    return m


def test_amdsmi_library_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi(calls))
    plugin = AmdPlugin(PluginContext(node="n1"), AmdConfig(source="amdsmi"))
    plugin.discover()
    for _ in range(2):
        col = plugin.collect()
    got = {s.name: s.value for s in col.samples if s.name.startswith("gpu_") and s.name != "gpu_ecc_errors_total"}
    assert got == {
        "gpu_up": 1.0, "gpu_info": 1.0, "gpu_utilization_ratio": 0.5, "gpu_memory_utilization_ratio": 0.1,
        "gpu_memory_used_bytes": 283 * MIB, "gpu_memory_total_bytes": 196592 * MIB,
        "gpu_temperature_celsius": 70.0, "gpu_junction_temperature_celsius": 70.0,
        "gpu_memory_temperature_celsius": 55.0, "gpu_power_watts": 650.0,
        "gpu_sm_clock_hertz": 2100e6, "gpu_memory_clock_hertz": 1300e6,
    }
    # discover + 2 collections = 3 reads; the unsupported edge sensor was asked only once.
    assert calls.count("temp0") == 1 and calls.count("temp1") == 3
    plugin.close()
    assert calls[-1] == "shut_down"


def test_amdsmi_library_error_is_device_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi([], fail_code=10))
    plugin = AmdPlugin(PluginContext(node="n1"), AmdConfig(source="amdsmi"))
    with pytest.raises(PluginUnavailable, match=r"amdsmi amdsmi_get_gpu_total_ecc_count on GPU 0 failed: "
                                                r"AMDSMI_STATUS 10"):
        plugin.discover()
