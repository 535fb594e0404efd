"""Hygon plugin: hy-smi JSON (DTK 24.04.3) through the shared rocm-smi parser, and rocminfo."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.errors import PluginUnavailable
from agent.plugin import PluginContext
from agent.plugins.accel import to_collection
from agent.plugins.hygon import HygonPlugin
from agent.plugins.hygon.plugin import HygonConfig, hsa_labels, parse_hy_smi
from agent.plugins.hygon.rocminfo import HsaAgent, parse_rocminfo
from agent.toolrun import ToolOutputError

MIB = 1 << 20


def hygon(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / "hygon" / name).read_text()


def test_hy_smi_exact_values(fixtures_dir: Path) -> None:
    [r] = parse_hy_smi(hygon(fixtures_dir, "hygon-gpu-24.04.3-rocm-smi.json"))
    assert (r.index, r.vendor, r.kind, r.model, r.uuid) == ("0", "hygon", "DCU", "DCU xxxx", "7100fa8866904061")
    assert r.utilization == 0.0  # "DCU use (%)": "0"
    assert r.memory_total_bytes == 65520 * MIB  # "vram Total Memory (MiB)": "65520"
    assert r.memory_used_bytes == 2 * MIB
    assert r.temperature == 41.0
    assert r.junction_temperature == 39.0
    assert r.memory_temperature == 44.0  # "Temperature (Sensor mem) (C)"
    assert r.power_watts == 80.0
    assert r.info["serial"] == "TPXxxxx"
    assert r.info["device_id"] == "0x6210"
    # Not printed by this hy-smi query: omitted.
    assert (r.sm_clock_hz, r.pcie_generation, r.pcie_replays, r.power_limit_watts) == (None, None, None, None)


def test_rocminfo_exact_values(fixtures_dir: Path) -> None:
    agents = parse_rocminfo(hygon(fixtures_dir, "hygon-gpu-24.04.3-rocminfo.txt"))
    assert agents == [
        HsaAgent(1, "Hygon C86 7390 32-core Processor", "CPU-XX", "Hygon C86 7390 32-core Processor", "CPU", 0),
        HsaAgent(2, "gfx928", "GPU-7100fa8866904061", "K1xx_AI", "DCU", 8),
    ]
    assert hsa_labels(agents) == {"7100fa8866904061": {"isa": "gfx928", "marketing_name": "K1xx_AI"}}


def test_rocminfo_joins_hy_smi_by_unique_id(fixtures_dir: Path) -> None:
    hsa = hsa_labels(parse_rocminfo(hygon(fixtures_dir, "hygon-gpu-24.04.3-rocminfo.txt")))
    col = to_collection(parse_hy_smi(hygon(fixtures_dir, "hygon-gpu-24.04.3-rocm-smi.json"), hsa))
    [info] = [s for s in col.samples if s.name == "gpu_info"]
    assert info.labels == {
        "gpu": "0", "vendor": "hygon", "model": "DCU xxxx", "uuid": "7100fa8866904061", "kind": "DCU",
        "serial": "TPXxxxx", "device_id": "0x6210", "isa": "gfx928", "marketing_name": "K1xx_AI",
    }
    names = sorted({s.name for s in col.samples})
    assert names == sorted([
        "gpu_up", "gpu_info", "gpu_utilization_ratio", "gpu_memory_used_bytes", "gpu_memory_total_bytes",
        "gpu_temperature_celsius", "gpu_junction_temperature_celsius", "gpu_memory_temperature_celsius",
        "gpu_power_watts",
    ])


def test_truncated_and_garbage(fixtures_dir: Path) -> None:
    text = hygon(fixtures_dir, "hygon-gpu-24.04.3-rocm-smi.json")
    with pytest.raises(ToolOutputError, match=r"^hy-smi .*--json: output is not JSON"):
        parse_hy_smi(text[:200])
    doc = json.loads(text)
    doc["card0"]["vram Total Memory (MiB)"] = "64G"
    with pytest.raises(ToolOutputError, match=r"card0 'vram Total Memory \(MiB\)' is '64G', expected a number"):
        parse_hy_smi(json.dumps(doc))
    with pytest.raises(ToolOutputError, match="no 'Agent N' sections"):
        parse_rocminfo("ROCk module is NOT loaded, possibly no GPU devices\n")
    truncated = hygon(fixtures_dir, "hygon-gpu-24.04.3-rocminfo.txt").split("  Device Type:             DCU")[0]
    with pytest.raises(ToolOutputError, match=r"agent 2 is incomplete or malformed \('Device Type'\)"):
        parse_rocminfo(truncated)


def fake_tool(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_plugin_with_real_programs(tmp_path: Path, fixtures_dir: Path) -> None:
    capture = fixtures_dir / "hygon" / "hygon-gpu-24.04.3-rocm-smi.json"
    smi = fake_tool(tmp_path, "hy-smi", f'[ "$#" = 9 ] || exit 7\ncat "{capture}"\n')
    info = fake_tool(tmp_path, "rocminfo", f'cat "{fixtures_dir}/hygon/hygon-gpu-24.04.3-rocminfo.txt"\n')
    plugin = HygonPlugin(PluginContext(node="n1"), HygonConfig(hy_smi=str(smi), rocminfo=str(info)))
    plugin.discover()
    col = plugin.collect()
    temp = [s for s in col.samples if s.name == "gpu_temperature_celsius"]
    assert [(s.labels["vendor"], s.value) for s in temp] == [("hygon", 41.0)]
    [info_sample] = [s for s in col.samples if s.name == "gpu_info"]
    assert info_sample.labels["isa"] == "gfx928"
    plugin.close()
    plugin.close()


def test_plugin_without_rocminfo_still_works(tmp_path: Path, fixtures_dir: Path) -> None:
    smi = fake_tool(tmp_path, "hy-smi", f'cat "{fixtures_dir}/hygon/hygon-gpu-24.04.3-rocm-smi.json"\n')
    plugin = HygonPlugin(PluginContext(node="n1"), HygonConfig(hy_smi=str(smi), rocminfo=str(tmp_path / "none")))
    plugin.discover()
    [info_sample] = [s for s in plugin.collect().samples if s.name == "gpu_info"]
    assert "isa" not in info_sample.labels


def test_missing_hy_smi_is_unavailable(tmp_path: Path) -> None:
    plugin = HygonPlugin(PluginContext(node="n1"), HygonConfig(hy_smi=str(tmp_path / "hy-smi")))
    with pytest.raises(PluginUnavailable, match=r"^hy-smi not found at .* \(set plugins.hygon.hy_smi to its path\)$"):
        plugin.discover()
    plugin.close()


def test_no_dcus_is_unavailable(tmp_path: Path) -> None:
    smi = fake_tool(tmp_path, "hy-smi", "echo '{}'\n")
    plugin = HygonPlugin(PluginContext(node="n1"), HygonConfig(hy_smi=str(smi), rocminfo="-"))
    with pytest.raises(PluginUnavailable, match="hy-smi reports no Hygon DCUs"):
        plugin.discover()
