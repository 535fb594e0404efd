"""Ascend plugin: npu-smi tables (20.2.0 .. 24.1.RC2), -m maps and -t literals to exact values."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

import agent.plugins.ascend.readings as readings
from agent.errors import PluginUnavailable
from agent.model import Metric, Severity
from agent.plugin import PluginContext
from agent.plugins.accel import to_collection
from agent.plugins.ascend import AscendPlugin
from agent.plugins.ascend.npu_smi import (
    ChipMapping,
    Health,
    parse_health,
    parse_info_table,
    parse_kv_query,
    parse_mapping,
)
from agent.plugins.ascend.plugin import AscendConfig
from agent.plugins.ascend.readings import board_samples, build_readings, health_events
from agent.toolrun import ToolError, ToolOutputError
from tests.services import require_binary

MIB = 1 << 20
INF_OLD = "ai-server_atlas-800-inference-server_model-3000_version-1.0.0-1.0.10"
INF_NEW = "ai-server_atlas-800-inference-server_model-3000_version-1.0.11-1.0.15"
TRAIN_OLD = "ai-server_atlas-800-training-server_model-9010_version-6.0.RC1"
TRAIN_NEW = "ai-server_atlas-800-training-server_model-9010_version-24.1.RC2"
LIT = "gpustack-test-literals"


def read(fixtures_dir: Path, name: str) -> str:
    return (fixtures_dir / "ascend" / name).read_text()


# (npu, chip, device, name, health, bus, power, temp, aicore, mem used/total, hbm used/total, hugepages)
TABLES: dict[str, dict[str, Any]] = {
    INF_OLD: dict(version="20.2.0", chips=[
        (215, 0, 0, "310", "OK", "0000:DA:00.0", 12.8, 56.0, 0.0, (2703.0, 8192.0), (None, None), (None, None)),
        (215, 1, 1, "310", "OK", "0000:DC:00.0", 12.8, 57.0, 0.0, (2703.0, 8192.0), (None, None), (None, None)),
        (215, 2, 2, "310", "OK", "0000:DD:00.0", 12.8, 57.0, 0.0, (2703.0, 8192.0), (None, None), (None, None)),
        (215, 3, 3, "310", "OK", "0000:DB:00.0", 12.8, 55.0, 0.0, (2703.0, 8192.0), (None, None), (None, None)),
    ]),
    INF_NEW: dict(version="21.0.4.B030", chips=[
        (6, 0, 3, "310", "OK", "0000:89:00.0", 12.8, 73.0, 0.0, (2703.0, 8192.0), (None, None), (0.0, 970.0)),
        (6, 1, 4, "310", "OK", "0000:8A:00.0", 12.8, 74.0, 0.0, (2867.0, 8192.0), (None, None), (0.0, 970.0)),
        (6, 2, 5, "310", "OK", "0000:8B:00.0", 12.8, 70.0, 0.0, (2867.0, 8192.0), (None, None), (0.0, 970.0)),
        (6, 3, 6, "310", "OK", "0000:8C:00.0", 12.8, 65.0, 0.0, (2867.0, 8192.0), (None, None), (0.0, 970.0)),
    ]),
    TRAIN_OLD: dict(version="22.0.3.1", chips=[
        (0, 0, None, "910A", "OK", "0000:61:00.0", 67.2, 43.0, 0.0, (1867.0, 15077.0), (0.0, 32768.0), (15.0, 15.0)),
        (1, 0, None, "910A", "OK", "0000:DB:00.0", 63.3, 38.0, 0.0, (1867.0, 15077.0), (0.0, 32768.0), (15.0, 15.0)),
        (2, 0, None, "910A", "OK", "0000:B2:00.0", 64.8, 34.0, 0.0, (1868.0, 15077.0), (0.0, 32768.0), (15.0, 15.0)),
        (3, 0, None, "910A", "OK", "0000:3E:00.0", 191.7, 42.0, 0.0, (1866.0, 15077.0), (0.0, 32768.0),
         (15.0, 15.0)),
        (4, 0, None, "910A", "OK", "0000:60:00.0", 66.4, 44.0, 0.0, (1867.0, 15077.0), (0.0, 32768.0), (15.0, 15.0)),
        (5, 0, None, "910A", "OK", "0000:DA:00.0", 62.7, 33.0, 0.0, (1865.0, 15077.0), (0.0, 32768.0), (15.0, 15.0)),
        (6, 0, None, "910A", "OK", "0000:B1:00.0", 64.5, 35.0, 0.0, (1865.0, 15077.0), (0.0, 32768.0), (15.0, 15.0)),
        (7, 0, None, "910A", "OK", "0000:3D:00.0", 191.4, 40.0, 0.0, (1866.0, 15077.0), (0.0, 32768.0),
         (15.0, 15.0)),
    ]),
    TRAIN_NEW: dict(version="24.1.RC2", chips=[
        (0, 0, None, "xxx", "OK", "0000:C1:00.0", 70.5, 42.0, 0.0, (4252.0, 15137.0), (0.0, 32768.0),
         (1232.0, 1232.0)),
        (1, 0, None, "xxx", "OK", "0000:81:00.0", 71.2, 36.0, 0.0, (4666.0, 15137.0), (0.0, 32768.0),
         (1232.0, 1232.0)),
        (2, 0, None, "xxx", "OK", "0000:41:00.0", 69.0, 35.0, 0.0, (4317.0, 15137.0), (0.0, 32768.0),
         (1232.0, 1232.0)),
        (3, 0, None, "xxx", "Warning", "0000:01:00.0", 206.9, 39.0, 0.0, (3616.0, 15039.0), (0.0, 32768.0),
         (1232.0, 1232.0)),
        (4, 0, None, "xxx", "OK", "0000:C2:00.0", 70.2, 39.0, 0.0, (3708.0, 15137.0), (0.0, 32768.0),
         (1232.0, 1232.0)),
        (5, 0, None, "xxx", "OK", "0000:82:00.0", 64.9, 37.0, 0.0, (4346.0, 15137.0), (0.0, 32768.0),
         (1232.0, 1232.0)),
        (6, 0, None, "xxx", "OK", "0000:42:00.0", 69.4, 40.0, 0.0, (4261.0, 15137.0), (0.0, 32768.0),
         (1232.0, 1232.0)),
        (7, 0, None, "xxx", "Warning", "0000:02:00.0", 203.2, 42.0, 0.0, (4521.0, 15039.0), (0.0, 32768.0),
         (1232.0, 1232.0)),
    ]),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_info_table_exact_values(fixtures_dir: Path, name: str) -> None:
    table = parse_info_table(read(fixtures_dir, name + ".txt"))
    assert table.tool_version == TABLES[name]["version"]
    got = [
        (c.npu_id, c.chip_id, c.device_id, c.name, c.health, c.bus_id, c.power_watts, c.temperature,
         c.aicore_percent, (c.memory_used_mb, c.memory_total_mb), (c.hbm_used_mb, c.hbm_total_mb),
         (c.hugepages_used, c.hugepages_total))
        for c in table.chips
    ]
    assert got == TABLES[name]["chips"]


MAPS = {
    INF_OLD + "_mapping.txt": [(215, c, c, "MiniD") for c in range(4)],
    INF_NEW + "_mapping.txt": [(6, c, c, "MiniD") for c in range(4)] + [(6, 4, None, "Mcu")],
    TRAIN_OLD + "_mapping.txt": [(n, 0, n, "Ascend 910A") for n in range(8)],
    TRAIN_NEW + "_mapping.txt": [(n, 0, n, "Ascend 910A") for n in range(8)],
    f"{LIT}/910b_npu-smi-info-m.txt": [row for n in range(8) for row in ((n, 0, n, "Ascend xxx"), (n, 1, None, "Mcu"))],
    f"{LIT}/310p_npu-smi-info-m.txt": [
        row for i, n in enumerate((1, 2, 4, 5))
        for row in ((n, 0, 2 * i, "Ascend xxx"), (n, 1, 2 * i + 1, "Ascend xxx"), (n, 2, None, "Mcu"))
    ],
}


@pytest.mark.parametrize("name", sorted(MAPS))
def test_mapping_exact_values(fixtures_dir: Path, name: str) -> None:
    assert parse_mapping(read(fixtures_dir, name)) == [ChipMapping(*row) for row in MAPS[name]]


def test_every_fixture_is_covered(fixtures_dir: Path) -> None:
    files = {p.relative_to(fixtures_dir / "ascend").as_posix() for p in (fixtures_dir / "ascend").rglob("*.txt")}
    covered = {n + ".txt" for n in TABLES} | set(MAPS) | {
        f"{LIT}/910b_npu-smi-info-t-common-i0.txt", f"{LIT}/910b_npu-smi-info-t-usages-i0.txt",
        f"{LIT}/310p_npu-smi-info-t-common-i1.txt", f"{LIT}/310p_npu-smi-info-t-usages-i1.txt",
    } | {  # the ascend-faultdiag command logs: hccn_tool and npu-smi -t health, tests/test_ascend_hccn.py
        f"mind-cluster-faultdiag/{run}_npu_info_{when}.txt"
        for run in ("kg_parse", "modelarts_worker-0") for when in ("before", "after")
    }
    assert files == covered


def test_910b_common_and_usages(fixtures_dir: Path) -> None:
    common = parse_kv_query(read(fixtures_dir, f"{LIT}/910b_npu-smi-info-t-common-i0.txt"), source="common")
    usages = parse_kv_query(read(fixtures_dir, f"{LIT}/910b_npu-smi-info-t-usages-i0.txt"), source="usages")
    assert common.npu == {"NPU ID": "0", "Chip Count": "1"}
    assert sorted(common.chips) == [0] and sorted(usages.chips) == [0]
    # Fold the queries onto NPU 0 of the 910A table (single-chip cards, like the 910B).
    table = parse_info_table(read(fixtures_dir, TRAIN_NEW + ".txt"))
    [r] = [r for r in build_readings(table, None, {0: [common, usages]}) if r.index == "0"]
    assert r.sm_clock_hz == 1000e6  # Aicore curFreq(MHZ)
    assert r.temperature == 42.0 and r.power_watts == 70.5  # the table's values come first
    extras = {(x.metric.name, x.labels): x.value for x in r.extra}
    assert extras[("ascend_aicore_rated_clock_hertz", ())] == 1000e6
    assert extras[("ascend_aicore_count", ())] == 32
    assert extras[("ascend_engine_utilization_ratio", (("engine", "ctrlcpu"),))] == 0.09
    assert extras[("ascend_engine_utilization_ratio", (("engine", "aicpu"),))] == 0.0
    assert extras[("ascend_memory_bandwidth_utilization_ratio", (("memory", "hbm"),))] == 0.0
    assert extras[("ascend_hbm_total_bytes", ())] == 32768 * MIB
    assert extras[("ascend_ddr_used_bytes", ())] == 4252 * MIB
    assert extras[("ascend_health_code", ())] == 0
    # 910 with HBM: the device memory is the HBM.
    assert (r.memory_used_bytes, r.memory_total_bytes) == (0.0, 32768 * MIB)
    card = {"npu": "0", "vendor": "huawei", "model": "xxx"}
    assert [(m.name, v, labels) for m, v, labels in board_samples(0, "xxx", [common])] == [
        ("ascend_mcu_temperature_celsius", 48.0, card), ("ascend_board_power_watts", 45.2, card)
    ]


def test_310p_two_chips_per_card(fixtures_dir: Path) -> None:
    common = parse_kv_query(read(fixtures_dir, f"{LIT}/310p_npu-smi-info-t-common-i1.txt"), source="common")
    usages = parse_kv_query(read(fixtures_dir, f"{LIT}/310p_npu-smi-info-t-usages-i1.txt"), source="usages")
    assert common.npu == {"NPU ID": "1", "Chip Count": "2"}
    assert {c: f["Temperature(C)"] for c, f in common.chips.items()} == {0: "60", 1: "59"}
    assert {c: f["Aicore curFreq(MHZ)"] for c, f in common.chips.items()} == {0: "960", 1: "960"}
    # usages prints "Chip ID" last in each paragraph: the fields still land on the right chip.
    assert {c: f["DDR Capacity(MB)"] for c, f in usages.chips.items()} == {0: "44280", 1: "43693"}
    assert {c: f["Ctrlcpu Usage Rate(%)"] for c, f in usages.chips.items()} == {0: "2", 1: "3"}
    assert common.mcu == {"Chip Name": "mcu", "Temperature(C)": "48", "NPU Real-time Power(W)": "45.2"}
    assert [(m.name, v) for m, v, _ in board_samples(1, "310P", [common, usages])] == [
        ("ascend_mcu_temperature_celsius", 48.0), ("ascend_board_power_watts", 45.2)
    ]


def test_gpu_index_labels(fixtures_dir: Path) -> None:
    # With the -m map: the logic id. 310 table without it: the Device column. 910 without it: NPU id.
    table = parse_info_table(read(fixtures_dir, INF_NEW + ".txt"))
    mapping = parse_mapping(read(fixtures_dir, INF_NEW + "_mapping.txt"))
    assert [r.index for r in build_readings(table, mapping)] == ["0", "1", "2", "3"]
    assert [r.index for r in build_readings(table)] == ["3", "4", "5", "6"]
    train = parse_info_table(read(fixtures_dir, TRAIN_OLD + ".txt"))
    assert [r.index for r in build_readings(train)] == [str(n) for n in range(8)]


def test_vocabulary_and_health(fixtures_dir: Path) -> None:
    table = parse_info_table(read(fixtures_dir, TRAIN_NEW + ".txt"))
    mapping = parse_mapping(read(fixtures_dir, TRAIN_NEW + "_mapping.txt"))
    col = to_collection(build_readings(table, mapping))
    up = {s.labels["gpu"]: s.value for s in col.samples if s.name == "gpu_up"}
    assert up == {str(n): 1.0 for n in range(8)}  # Warning is a minor alarm: still up
    codes = {s.labels["gpu"]: s.value for s in col.samples if s.name == "ascend_health_code"}
    assert codes == {"0": 0, "1": 0, "2": 0, "3": 1, "4": 0, "5": 0, "6": 0, "7": 1}
    temp = [s for s in col.samples if s.name == "gpu_temperature_celsius" and s.labels["gpu"] == "3"]
    assert [(s.value, s.labels) for s in temp] == [(39.0, {"gpu": "3", "vendor": "huawei", "model": "xxx"})]
    [info] = [s for s in col.samples if s.name == "gpu_info" and s.labels["gpu"] == "7"]
    assert info.labels == {
        "gpu": "7", "vendor": "huawei", "model": "xxx", "kind": "NPU", "npu_id": "7", "chip_id": "0",
        "pci_bus": "0000:02:00.0", "chip_name": "Ascend 910A", "tool_version": "24.1.RC2",
    }
    # Alarm/Critical or an unknown state: not serving.
    text = read(fixtures_dir, TRAIN_NEW + ".txt").replace("| Warning       | 206.9", "| Critical      | 206.9")
    [r3] = [r for r in build_readings(parse_info_table(text)) if r.index == "3"]
    assert r3.up is False


HEALTH_WARNING = (
    "        Health Status                  : Warning\n"
    "        Error Code                     : 80E01801 80CB8009\n"
    "        Error Information              : node type=SOC, sensor type=Temperature\n"
)


def test_health_and_events(fixtures_dir: Path) -> None:
    health = parse_health(HEALTH_WARNING, source="npu-smi info -t health -i 3 -c 0")
    assert health == Health("Warning", ("80E01801", "80CB8009"), "node type=SOC, sensor type=Temperature")
    ok = parse_health(" Health Status : OK\n Error Code : NA\n Error Information : NA\n", source="h")
    assert ok == Health("OK", (), "")
    table = parse_info_table(read(fixtures_dir, TRAIN_NEW + ".txt"))
    [r] = [r for r in build_readings(table) if r.index == "3"]
    events = health_events(r, health)
    assert [(e.kind, e.severity, e.labels["code"]) for e in events] == [
        ("npu.error", Severity.WARNING, "80E01801"), ("npu.error", Severity.WARNING, "80CB8009")
    ]
    assert events[0].message == (
        "Ascend NPU 3 chip 0 (gpu 3): health Warning, error code 80E01801: node type=SOC, sensor type=Temperature"
    )
    assert "npu-smi info -t health -i 3 -c 0" in events[0].action


# --- malformed and truncated ------------------------------------------------------------------


def test_truncated_table(fixtures_dir: Path) -> None:
    lines = read(fixtures_dir, TRAIN_OLD + ".txt").splitlines()
    with pytest.raises(ToolOutputError, match="ends in the middle of a chip"):
        parse_info_table("\n".join(lines[:7]))
    with pytest.raises(ToolOutputError, match=r"no 'NPU Name \| Health' table header"):
        parse_info_table("\n".join(lines[:3]))


def test_garbage_table_values(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, INF_OLD + ".txt").replace("| OK              | 12.8              56", "| OK   | hot  56")
    with pytest.raises(ToolOutputError, match=r"NPU 215 chip 0 Power\(W\) is 'hot', expected a number"):
        parse_info_table(text)
    with pytest.raises(ToolOutputError, match=r"no 'NPU Name \| Health' table header found; it starts 'dcmi model"):
        parse_info_table("dcmi model initialized failed, because the device is used. ret is -8020\n")


def test_na_values_are_omitted(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, INF_OLD + ".txt").replace("| 12.8              56 ", "| NA                56 ")
    chip = parse_info_table(text).chips[0]
    assert chip.power_watts is None and chip.temperature == 56.0


def test_malformed_queries(fixtures_dir: Path) -> None:
    with pytest.raises(ToolOutputError, match="line 'Segmentation fault' is not 'Key : value'"):
        parse_kv_query("NPU ID : 0\nSegmentation fault\n", source="npu-smi info -t common -i 0")
    with pytest.raises(ToolOutputError, match="empty output"):
        parse_kv_query("\n\n", source="npu-smi info -t usages -i 0")
    bad = read(fixtures_dir, f"{LIT}/910b_npu-smi-info-t-common-i0.txt").replace(": 1000\n", ": fast\n", 1)
    table = parse_info_table(read(fixtures_dir, TRAIN_NEW + ".txt"))
    with pytest.raises(ToolOutputError, match=r"NPU 0 chip 0 'Aicore Freq\(MHZ\)' is 'fast'"):
        build_readings(table, None, {0: [parse_kv_query(bad, source="common")]})
    with pytest.raises(ToolOutputError, match="no 'Health Status' line"):
        parse_health("Error Code : NA\n", source="health")
    with pytest.raises(ToolOutputError, match="header but no chip rows"):
        parse_mapping("NPU ID  Chip ID  Chip Logic ID  Chip Name\n")


# --- the plugin against a real program standing in for npu-smi -----------------------------


def fake_npu_smi(tmp_path: Path, fixtures_dir: Path, table: str, mapping: str) -> Path:
    health = tmp_path / "health.txt"
    health.write_text(HEALTH_WARNING)
    ascend = fixtures_dir / "ascend"
    path = tmp_path / "npu-smi"
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{tmp_path}/calls"\n'
        'case "$*" in\n'
        f'  "info") cat "{ascend / table}" ;;\n'
        f'  "info -m") cat "{ascend / mapping}" ;;\n'
        f'  "info -t health -i "*" -c 0") cat "{health}" ;;\n'
        '  *) echo "unexpected: $*" >&2; exit 5 ;;\n'
        "esac\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_plugin_cycle_with_events(tmp_path: Path, fixtures_dir: Path) -> None:
    tool = fake_npu_smi(tmp_path, fixtures_dir, TRAIN_NEW + ".txt", TRAIN_NEW + "_mapping.txt")
    plugin = AscendPlugin(PluginContext(node="n1"), AscendConfig(npu_smi=str(tool), queries=[]))
    plugin.discover()
    ref = plugin.ctx.directory.gpu_by_pci("0000:c1:00.0")
    assert ref is not None and (ref.index, ref.vendor) == ("0", "huawei")
    first = plugin.collect()
    assert sorted((e.labels["gpu"], e.labels["code"]) for e in first.events) == [
        ("3", "80CB8009"), ("3", "80E01801"), ("7", "80CB8009"), ("7", "80E01801")
    ]
    active = sorted((s.labels["gpu"], s.labels["code"]) for s in first.samples if s.name == "ascend_error_code_active")
    assert active == [("3", "80CB8009"), ("3", "80E01801"), ("7", "80CB8009"), ("7", "80E01801")]
    # The same codes next cycle: still active, but not announced again.
    second = plugin.collect()
    assert second.events == []
    assert len([s for s in second.samples if s.name == "ascend_error_code_active"]) == 4
    counts = {(s.labels["gpu"], s.labels["code"]): s.value for s in second.samples
              if s.name == "ascend_error_events_total"}
    assert counts == {("3", "80CB8009"): 1, ("3", "80E01801"): 1, ("7", "80CB8009"): 1, ("7", "80E01801"): 1}
    # The codes clear (health query shows none), then come back: announced again, counted twice.
    (tmp_path / "health.txt").write_text(" Health Status : Warning\n Error Code : NA\n Error Information : NA\n")
    cleared = plugin.collect()
    assert cleared.events == [] and not [s for s in cleared.samples if s.name == "ascend_error_code_active"]
    (tmp_path / "health.txt").write_text(HEALTH_WARNING)
    again = plugin.collect()
    assert len(again.events) == 4
    assert {s.value for s in again.samples if s.name == "ascend_error_events_total"} == {2.0}
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[:2] == ["info", "info -m"]
    assert "info -t health -i 3 -c 0" in calls and "info -t health -i 0 -c 0" not in calls
    plugin.close()
    plugin.close()


def test_plugin_queries_fail_the_cycle_clearly(tmp_path: Path, fixtures_dir: Path) -> None:
    tool = fake_npu_smi(tmp_path, fixtures_dir, TRAIN_OLD + ".txt", TRAIN_OLD + "_mapping.txt")
    plugin = AscendPlugin(PluginContext(node="n1"), AscendConfig(npu_smi=str(tool), queries=["ecc"]))
    plugin.discover()
    with pytest.raises(ToolError, match=r"npu-smi info -t ecc -i 0 exited with status 5"):
        plugin.collect()


def test_plugin_missing_npu_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    plugin = AscendPlugin(PluginContext(node="n1"), AscendConfig())
    with pytest.raises(PluginUnavailable) as exc:
        plugin.discover()
    assert str(exc.value) == "npu-smi not found on PATH (set plugins.ascend.npu_smi to its path)"


def test_config_rejects_unknown_query() -> None:
    with pytest.raises(ValueError, match="'temp' is not one of common, usages, ecc"):
        AscendConfig(queries=["temp"]).validate()


# `npu-smi info -t ecc -i 0` in the layout of Huawei's npu-smi reference (no capture in the fixtures).
ECC_910 = """NPU ID                                   : 0
Chip Count                               : 1

DDR Single Bit Error Count               : 0
DDR Double Bit Error Count               : 0
DDR Single Bit Aggregate Total Err Cnt   : 0
DDR Double Bit Aggregate Total Err Cnt   : 0
DDR Single Bit Isolated Pages Count      : 0
DDR Double Bit Isolated Pages Count      : 0
HBM Single Bit Error Count               : 3
HBM Double Bit Error Count               : 1
HBM Single Bit Aggregate Total Err Cnt   : 12
HBM Double Bit Aggregate Total Err Cnt   : 1
HBM Single Bit Isolated Pages Count      : 2
HBM Double Bit Isolated Pages Count      : 1
Chip ID                                  : 0
"""


def test_ecc_query(fixtures_dir: Path) -> None:
    table = parse_info_table(read(fixtures_dir, TRAIN_NEW + ".txt"))
    ecc = parse_kv_query(ECC_910, source="npu-smi info -t ecc -i 0")
    col = to_collection(build_readings(table, None, {0: [ecc]}))
    got = {(s.labels["type"], s.labels["scope"], s.labels["block"]): s.value
           for s in col.samples if s.name == "gpu_ecc_errors_total" and s.labels["gpu"] == "0"}
    assert got == {
        ("correctable", "volatile", "ddr"): 0, ("uncorrectable", "volatile", "ddr"): 0,
        ("correctable", "aggregate", "ddr"): 0, ("uncorrectable", "aggregate", "ddr"): 0,
        ("correctable", "volatile", "hbm"): 3, ("uncorrectable", "volatile", "hbm"): 1,
        ("correctable", "aggregate", "hbm"): 12, ("uncorrectable", "aggregate", "hbm"): 1,
    }
    pages = {(s.labels["cause"], s.labels["memory"]): s.value for s in col.samples
             if s.name == "gpu_retired_pages_total" and s.labels["gpu"] == "0"}
    assert pages == {("single_bit", "ddr"): 0, ("double_bit", "ddr"): 0,
                     ("single_bit", "hbm"): 2, ("double_bit", "hbm"): 1}
    # Chips of other NPUs got no ECC query: no ECC series for them.
    assert not [s for s in col.samples if s.name == "gpu_ecc_errors_total" and s.labels["gpu"] == "1"]


def test_once_prom_output_passes_promtool(tmp_path: Path, fixtures_dir: Path, fleetmon_cmd: list[str]) -> None:
    tool = fake_npu_smi(tmp_path, fixtures_dir, TRAIN_NEW + ".txt", TRAIN_NEW + "_mapping.txt")
    out = subprocess.run(
        [*fleetmon_cmd, "agent", "--once", "--format", "prom", "--plugins", "ascend", "--node", "n1",
         "--set", f"ascend.npu_smi={tool}", "--set", "ascend.queries=[]"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert 'gpu_temperature_celsius{gpu="3",model="xxx",node="n1",vendor="huawei"} 39' in out
    assert 'ascend_error_code_active{code="80E01801",gpu="7",model="xxx",node="n1",vendor="huawei"} 1' in out
    promtool = require_binary("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=out, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_readme_lists_every_metric(repo_root: Path) -> None:
    text = (repo_root / "agent" / "plugins" / "ascend" / "README.md").read_text()
    declared = {m.name for m in vars(readings).values() if isinstance(m, Metric)}
    assert declared and {n for n in declared if f"`{n}`" not in text} == set()
