"""modbus plugin: SunSpec battery storage and inverters through a real pymodbus server holding
register images built from the SunSpec model definitions (shared/fixtures/sunspec/models)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

import agent.plugins.modbus.metrics as metrics
from agent.config import build
from agent.errors import PluginError, PluginUnavailable
from agent.model import Collection, Metric
from agent.plugin import PluginContext
from agent.plugins.modbus import ModbusPlugin
from agent.plugins.modbus.config import ModbusConfig
from agent.plugins.modbus.sunspec import GroupDef, SunSpecError, decode_model, load_models
from tests.sample_lookup import one, values
from tests.services import FIXTURES, free_port
from tests.sunspec_image import image, model_regs

MODELS_DIR = FIXTURES / "sunspec" / "models"
MODELS = load_models(MODELS_DIR)
WH = 3600.0




# --- plausible devices, built from the definitions -----------------------------------------------------

COMMON = {"Mn": "CATL", "Md": "EnerOne 372", "Vr": "2.1.0", "SN": "BESS0042", "DA": 1}
BATTERY = {  # model 802, scale factors chosen as a real BMS would
    "AHRtg_SF": 0, "WHRtg_SF": 2, "WChaDisChaMax_SF": 2, "SoC_SF": -1, "SoH_SF": 0, "V_SF": -1, "CellV_SF": -3,
    "A_SF": -1, "W_SF": 1, "AMax_SF": 0,  # DoD_SF and DisChaRte_SF not implemented
    "AHRtg": 280, "WHRtg": 372_700, "WChaRteMax": 186_000, "WDisChaRteMax": 186_000,
    "SoC": 64.5, "SoH": 97, "DoD": 35,  # DoD given, but its scale factor is not implemented
    "NCyc": 412, "ChaSt": 4, "State": 3, "Typ": 4,
    "Evt1": 1 << 2,  # OVER_TEMP_WARNING
    "V": 1331.2, "CellVMax": 3.352, "CellVMin": 3.310, "CellVAvg": 3.328,
    "A": -9.4, "W": -12_500,
}
BANK = {"NStr": 2, "NStrCon": 2, "ModTmpMax": 31.5, "ModTmpMin": 24.0, "ModTmpAvg": 27.2,
        "CellV_SF": -3, "ModTmp_SF": -1, "A_SF": -1, "SoH_SF": 0, "SoC_SF": -1, "V_SF": -1}
STRINGS = [
    ({"StrNMod": 2, "StrSoC": 64.0, "StrSoH": 97, "StrA": -4.7, "StrCellVMax": 3.352, "StrCellVMin": 3.310,
      "StrModTmpMax": 31.5, "StrModTmpMin": 24.0, "StrConFail": 0, "StrEvt1": 0}, {}),
    ({"StrNMod": 2, "StrSoC": 65.0, "StrSoH": 98, "StrA": -4.7, "StrCellVMax": 3.349, "StrCellVMin": 3.318,
      "StrModTmpMax": 30.1, "StrModTmpMin": 24.5, "StrConFail": 0, "StrEvt1": 0}, {}),
]
STRING1 = {"Idx": 1, "NMod": 2, "SoC": 64.0, "SoH": 97, "A": -4.7, "V": 665.6, "CellVMax": 3.352, "CellVMin": 3.310,
           "ModTmpMax": 31.5, "ModTmpMin": 24.0, "ConFail": 0,
           "SoC_SF": -1, "SoH_SF": 0, "A_SF": -1, "V_SF": -1, "CellV_SF": -3, "ModTmp_SF": -1}
STRING1_MODULES = [
    ({"ModNCell": 4, "ModSoC": 63.8, "ModCellVMax": 3.352, "ModCellVMin": 3.310, "ModCellTmpMax": 31.5,
      "ModCellTmpMin": 26.0}, {}),
    ({"ModNCell": 4, "ModSoC": 64.2, "ModCellVMax": 3.341, "ModCellVMin": 3.322, "ModCellTmpMax": 29.0,
      "ModCellTmpMin": 24.0}, {}),
]
MODULE = {"StrIdx": 1, "ModIdx": 1, "NCell": 4, "SoC": 63.8, "SoH": 96, "V": 13.3, "CellVMax": 3.352,
          "CellVMin": 3.310, "CellVAvg": 3.330, "CellTmpMax": 31.5, "CellTmpMin": 26.0, "CellTmpAvg": 28.4,
          "SN": "MOD-1-1", "SoC_SF": -1, "V_SF": -1, "CellV_SF": -3, "Tmp_SF": -1}  # SoH_SF not implemented
CELLS = [({"CellV": v, "CellTmp": t}, {}) for v, t in ((3.352, 31.5), (3.331, 28.0), (3.310, 26.0), (3.327, 28.1))]
INVERTER = {  # model 701, a 250 kW three-phase PCS
    "ACType": 2, "St": 1, "InvSt": 3, "ConnSt": 1, "Alrm": 0,
    "W_SF": 2, "VA_SF": 2, "Var_SF": 2, "PF_SF": -3, "A_SF": -1, "V_SF": -1, "Hz_SF": -2, "TotWh_SF": 0,
    "TotVarh_SF": 0, "Tmp_SF": -1,
    "W": 245_600, "VA": 248_000, "Var": -12_300, "PF": 0.99, "A": 356.2, "LLV": 399.8, "LNV": 230.8, "Hz": 50.01,
    "TotWhInj": 123_456_789, "TotWhAbs": 98_765_432, "TmpAmb": 24.5, "TmpCab": 38.0, "TmpSnk": 51.2,
    "WL1": 81_900, "WL2": 81_800, "WL3": 81_900, "AL1": 118.7, "AL2": 118.8, "AL3": 118.7,
    "VL1": 230.9, "VL2": 230.7, "VL3": 230.8, "ThrotPct": 100,
}


def bess_image() -> list[int]:
    return image([
        model_regs(MODELS[1], COMMON),
        model_regs(MODELS[802], BATTERY),
        model_regs(MODELS[803], BANK, {"string": STRINGS}),
        model_regs(MODELS[804], STRING1, {"lithium_ion_string_module": STRING1_MODULES}),
        model_regs(MODELS[805], MODULE, {"lithium-ion-module-cell": CELLS}),
    ])


def inverter_image(**override: Any) -> list[int]:
    return image([model_regs(MODELS[1], {**COMMON, "Mn": "Sungrow", "Md": "SC250HX", "SN": "PCS-7"}),
                  model_regs(MODELS[701], {**INVERTER, **override})])


class ModbusServer:
    """A real pymodbus TCP server on loopback holding one register image per unit id."""

    def __init__(self, units: dict[int, tuple[int, list[int]]]) -> None:
        self.port = free_port()
        devices = [SimDevice(id=unit, simdata=[SimData(base, values=regs, datatype=DataType.UINT16)])
                   for unit, (base, regs) in units.items()]
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ModbusServer:
        self.task = asyncio.create_task(self.server.serve_forever())
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # listening yet?
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                await w.wait_closed()
                return self
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await self.server.shutdown()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def plugin(devices: list[dict[str, Any]], **kw: Any) -> ModbusPlugin:
    cfg = build(ModbusConfig, {"devices": devices, "models_dir": str(MODELS_DIR), "request_timeout": 1.0,
                               "device_timeout": 4.0, **kw}, "plugins.modbus")
    p = ModbusPlugin(PluginContext(node="poller-1"), cfg)
    p.discover()
    return p


# --- the decoder, on every model definition --------------------------------------------------------------


def _plausible(g: GroupDef, counts: dict[str, int] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A value for every point of a group (scale factors -2 .. 1), two instances of each repeat
    (a repeat count named by a point of any enclosing group is set to 2 where that point is)."""
    counts = {} if counts is None else counts
    vals: dict[str, Any] = {}
    for i, p in enumerate(g.points):
        if p.type == "sunssf":
            vals[p.name] = (i % 4) - 2
        elif p.type == "string":
            vals[p.name] = f"{p.name[:2 * p.size - 1]}"
        elif p.type in ("pad", "ipaddr", "ipv6addr", "eui48"):
            continue
        elif p.symbols:
            vals[p.name] = p.symbols[0][1] if p.type.startswith("enum") else 1 << p.symbols[-1][1]
        elif p.type == "float32":
            vals[p.name] = 1.5
        elif p.type.startswith("acc") or p.type.startswith("uint") or p.type == "count":
            vals[p.name] = 7 + i
        elif p.type.startswith("int"):
            vals[p.name] = -(3 + i)
    groups: dict[str, Any] = {}
    for sub in g.groups:
        n = 2 if isinstance(sub.count, str) or sub.count == 0 else sub.count
        groups[sub.name] = [_plausible(sub, counts) for _ in range(n)]
    for point in g.points:
        if point.name in _count_names(g):
            vals[point.name] = 2
    return vals, groups


def _count_names(g: GroupDef) -> set[str]:
    out = {sub.count for sub in g.groups if isinstance(sub.count, str)}
    for sub in g.groups:
        out |= _count_names(sub)
    return out


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_every_model_definition_round_trips(model_id: int) -> None:
    defn = MODELS[model_id]
    vals, groups = _plausible(defn.group)
    regs = model_regs(defn, vals, groups)
    decoded = decode_model(defn, regs)
    for p in defn.group.points:
        if p.name in ("ID", "L") or p.name not in vals or p.type == "sunssf":
            continue
        want = vals[p.name]
        got = decoded.values.get(p.name)
        if isinstance(want, (int, float)) and p.sf:
            assert got == pytest.approx(round(want / 10 ** vals[p.sf]) * 10 ** vals[p.sf]), p.name
        else:
            assert got == want, p.name
    for sub in defn.group.groups:
        assert len(decoded.groups[sub.name]) == len(groups[sub.name]), sub.name


def test_fixture_models_are_the_ones_read() -> None:
    assert {1, 701, 802, 803, 804, 805} <= set(MODELS)
    assert set(MODELS) == {1, *range(701, 714), *range(802, 810)}


def test_not_implemented_and_truncated() -> None:
    regs = model_regs(MODELS[802], {**BATTERY, "SoC": 0xFFFF * 0.1, "SoH_SF": 0x8000 - 0x10000})
    got = decode_model(MODELS[802], regs).values
    assert "SoC" not in got  # 0xFFFF: not implemented
    assert "SoH" not in got  # its scale factor is not implemented
    assert "DoD" not in got and "DisChaRte" not in got
    assert got["W"] == -12_500 and got["CellVMax"] == pytest.approx(3.352)
    with pytest.raises(SunSpecError, match="model 802: length 62 but only 10 registers read"):
        decode_model(MODELS[802], regs[:12])


# --- the plugin against a real pymodbus server ---------------------------------------------------------


@pytest.mark.services
def test_bess_and_inverters_over_modbus_tcp(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[Collection, Collection]:
        units = {1: (40000, bess_image()), 2: (0, inverter_image()),
                 3: (40000, inverter_image(ConnSt=0, InvSt=6, Alrm=1 << 4, W=0)),  # GRID_DISCONNECT
                 4: (40000, [0] * 8)}  # not SunSpec
        async with ModbusServer(units) as srv:
            p = plugin([
                {"name": "bess-1", "kind": "bess", "host": "127.0.0.1", "port": srv.port, "unit_id": 1, "rack": "E1"},
                {"name": "pcs-1", "kind": "inverter", "host": "127.0.0.1", "port": srv.port, "unit_id": 2},
                {"name": "pcs-2", "kind": "inverter", "host": "127.0.0.1", "port": srv.port, "unit_id": 3,
                 "base_address": 40000},
                {"name": "meter", "kind": "inverter", "host": "127.0.0.1", "port": srv.port, "unit_id": 4},
                {"name": "gone", "kind": "bess", "host": "127.0.0.1", "port": free_port()},
            ])
            try:
                first = await p.collect()
                await srv.stop()  # every device drops off
                down = await p.collect()
            finally:
                p.close()
        return first, down

    with caplog.at_level(logging.INFO, logger="fleetmon.agent.modbus"):
        col, down = asyncio.run(scenario())
    up = {dict(k).get("bess") or dict(k).get("inverter"): v for k, v in values(col, "modbus_device_up").items()}
    assert up == {"bess-1": 1, "pcs-1": 1, "pcs-2": 1, "meter": 0, "gone": 0}
    bess = {"bess": "bess-1", "rack": "E1"}
    assert one(col, "bess_info", **bess) == 1
    [info] = values(col, "bess_info", **bess)
    assert dict(info) == {"manufacturer": "CATL", "model": "EnerOne 372", "serial": "BESS0042", "version": "2.1.0",
                          "battery_type": "lithium_ion"}
    assert one(col, "bess_state_of_charge_ratio", **bess) == pytest.approx(0.645)
    assert one(col, "bess_state_of_health_ratio", **bess) == pytest.approx(0.97)
    assert values(col, "bess_depth_of_discharge_ratio", **bess) == {}  # DoD_SF not implemented
    assert one(col, "bess_power_watts", **bess) == -12_500
    assert (one(col, "bess_charge_power_watts", **bess), one(col, "bess_discharge_power_watts", **bess)) == (12_500, 0)
    assert one(col, "bess_energy_capacity_joules", **bess) == pytest.approx(372_700 * WH)
    assert one(col, "bess_cell_voltage_max_volts", **bess) - one(col, "bess_cell_voltage_min_volts", **bess) \
        == pytest.approx(0.042)
    assert one(col, "bess_voltage_volts", **bess) == pytest.approx(1331.2)
    assert one(col, "bess_charge_cycles_total", **bess) == 412
    assert one(col, "bess_alarm", alarm="over_temp_warning", **bess) == 1
    assert one(col, "bess_alarm", alarm="over_temp_alarm", **bess) == 0
    assert one(col, "bess_module_temperature_max_celsius", **bess) == pytest.approx(31.5)
    assert values(col, "bess_string_state_of_charge_ratio", **bess) == {
        (("string", "1"),): pytest.approx(0.64), (("string", "2"),): pytest.approx(0.65)}
    assert one(col, "bess_module_cell_voltage_min_volts", string="1", module="2", **bess) == pytest.approx(3.322)
    # Module 1 of string 1 is both in model 804's module group and in model 805: reported once.
    assert one(col, "bess_module_cell_temperature_max_celsius", string="1", module="1", **bess) == pytest.approx(31.5)
    assert values(col, "bess_module_state_of_health_ratio", module="1", **bess) == {}  # 805's SoH_SF missing
    assert len(values(col, "bess_cell_voltage_volts", **bess)) == 4
    assert one(col, "bess_cell_temperature_celsius", cell="3", **bess) == pytest.approx(26.0)
    models = {dict(k)["model"] for k in values(col, "sunspec_model_info", **bess)}
    assert models == {"1", "802", "803", "804", "805"}

    inv = {"inverter": "pcs-1"}  # found at register 0
    assert one(col, "inverter_power_watts", **inv) == 245_600
    assert one(col, "inverter_frequency_hertz", **inv) == pytest.approx(50.01)
    assert one(col, "inverter_energy_injected_joules_total", **inv) == 123_456_789 * WH
    assert one(col, "inverter_power_factor_ratio", **inv) == pytest.approx(0.99)
    assert one(col, "inverter_grid_connected", **inv) == 1 and one(col, "inverter_state", **inv) == 3
    assert one(col, "inverter_temperature_celsius", sensor="heatsink", **inv) == pytest.approx(51.2)
    assert values(col, "inverter_temperature_celsius", sensor="transformer", **inv) == {}
    assert one(col, "inverter_phase_current_amperes", phase="L2", **inv) == pytest.approx(118.8)
    assert one(col, "inverter_alarm", alarm="grid_disconnect", **inv) == 0
    assert one(col, "inverter_alarm", alarm="grid_disconnect", inverter="pcs-2") == 1
    assert one(col, "inverter_grid_connected", inverter="pcs-2") == 0

    assert set(values(down, "modbus_device_up").values()) == {0.0}
    msgs = [r.getMessage() for r in caplog.records]
    assert any("inverter meter" in m and "no SunSpec marker 'SunS' at register 40000, 0, 50000" in m for m in msgs)
    assert len([m for m in msgs if "bess gone" in m and "cannot connect" in m]) == 1  # said once, down twice
    assert any("bess bess-1" in m and ("cannot connect" in m or "failed" in m) for m in msgs)


def test_missing_models_dir_disables_the_plugin(tmp_path: Path) -> None:
    cfg = build(ModbusConfig, {"devices": [{"name": "b", "host": "h"}], "models_dir": str(tmp_path)}, "m")
    want = r"no SunSpec model definitions \(model_<id>\.json\) found \(plugins\.modbus\.models_dir\)"
    with pytest.raises(PluginUnavailable, match=want):
        ModbusPlugin(PluginContext(node="n"), cfg).discover()


def test_readme_lists_every_metric(repo_root: Path) -> None:
    text = (repo_root / "agent" / "plugins" / "modbus" / "README.md").read_text()
    declared = {m.name for m in vars(metrics).values() if isinstance(m, Metric)}
    assert {n for n in declared if f"`{n}`" not in text} == set()


def test_collect_never_discovers_on_the_event_loop() -> None:
    """discover() reads every SunSpec model file: it belongs to the scheduler's worker thread at
    start. A collection without it (before discover, after close) fails with a clear error
    instead of reading files on the event loop; the plugin still works once discovered."""
    cfg = build(ModbusConfig, {"devices": [{"name": "bess-1", "kind": "bess", "host": "127.0.0.1", "port": 502}],
                               "models_dir": str(MODELS_DIR)}, "plugins.modbus")
    p = ModbusPlugin(PluginContext(node="n"), cfg)
    with pytest.raises(PluginError, match="modbus plugin collected before discover"):
        asyncio.run(p.collect())
    assert p.models == {}  # nothing was loaded on the loop
    p.discover()
    assert p.models
    p.close()
    with pytest.raises(PluginError, match="before discover"):
        asyncio.run(p.collect())
