"""Decoded SunSpec models -> samples (pure). Which point feeds which metric, per model.

Units are already engineering units after the scale factors (V, A, W, Wh, %, °C); here they
become base units (joules, ratios). A point the device does not implement is absent from the
decoded values, so its sample is omitted.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.model import Collection, Labels, Metric
from agent.plugins.modbus import metrics as m
from agent.plugins.modbus.sunspec import GroupValues, bits_set, symbol

WH = 3600.0  # joules per watt-hour
# 802 ChaSt: DISCHARGING(3), CHARGING(4)
_DISCHARGING, _CHARGING = 3, 4


def _num(g: GroupValues, name: str) -> float | None:
    v = g.values.get(name)
    return float(v) if isinstance(v, (int, float)) else None


def _pct(g: GroupValues, name: str) -> float | None:
    v = _num(g, name)
    return None if v is None else v / 100  # SunSpec percent


def _add(col: Collection, metric: Metric, g: GroupValues, name: str, labels: Labels, *, scale: float = 1.0) -> None:
    v = _num(g, name)
    col.add(metric, None if v is None else v * scale, labels)


def _bits(col: Collection, metric: Metric, g: GroupValues, name: str, labels: Labels, *, key: str) -> None:
    v = g.values.get(name)
    p = g.points.get(name)
    if isinstance(v, int) and p is not None:
        for bit, on in bits_set(p, v).items():
            col.add(metric, float(on), {**labels, key: bit.lower()})


def first(models: Mapping[int, list[GroupValues]], model: int) -> GroupValues | None:
    found = models.get(model)
    return found[0] if found else None


def identity(common: GroupValues | None) -> dict[str, str]:
    if common is None:
        return {}
    keys = (("manufacturer", "Mn"), ("model", "Md"), ("version", "Vr"), ("serial", "SN"))
    return {k: str(common.values[p]) for k, p in keys if isinstance(common.values.get(p), str)}


def battery_samples(models: Mapping[int, list[GroupValues]], labels: Labels) -> Collection:
    col = Collection()
    common = first(models, 1)
    for bat in models.get(802, []):
        ident = identity(common)
        typ = bat.values.get("Typ")
        if isinstance(typ, int) and bat.points.get("Typ") is not None:
            name = symbol(bat.points["Typ"], typ)
            if name:
                ident["battery_type"] = name.lower()
        col.add(m.BESS_INFO, 1, {**labels, **ident})
        col.add(m.SOC, _pct(bat, "SoC"), labels)
        col.add(m.SOH, _pct(bat, "SoH"), labels)
        col.add(m.DOD, _pct(bat, "DoD"), labels)
        _add(col, m.CYCLES, bat, "NCyc", labels)
        _add(col, m.CHARGE_STATUS, bat, "ChaSt", labels)
        _add(col, m.STATE, bat, "State", labels)
        _add(col, m.VOLTAGE, bat, "V", labels)
        _add(col, m.CURRENT, bat, "A", labels)
        _add(col, m.CAPACITY, bat, "WHRtg", labels, scale=WH)
        _add(col, m.MAX_CHARGE, bat, "WChaRteMax", labels)
        _add(col, m.MAX_DISCHARGE, bat, "WDisChaRteMax", labels)
        _add(col, m.CELL_V_MAX, bat, "CellVMax", labels)
        _add(col, m.CELL_V_MIN, bat, "CellVMin", labels)
        _add(col, m.CELL_V_AVG, bat, "CellVAvg", labels)
        watts = _num(bat, "W")
        col.add(m.POWER, watts, labels)
        if watts is not None:
            status = bat.values.get("ChaSt")
            # The charge status says the direction where the device reports it; else SunSpec's
            # DER sign convention (positive = delivered, i.e. discharging).
            charging = status == _CHARGING if status in (_CHARGING, _DISCHARGING) else watts < 0
            col.add(m.CHARGE_POWER, abs(watts) if charging else 0.0, labels)
            col.add(m.DISCHARGE_POWER, 0.0 if charging else abs(watts), labels)
        _bits(col, m.ALARM, bat, "Evt1", labels, key="alarm")
    for bank in models.get(803, []):
        _add(col, m.STRINGS, bank, "NStr", labels)
        _add(col, m.STRINGS_CONNECTED, bank, "NStrCon", labels)
        _add(col, m.MOD_T_MAX, bank, "ModTmpMax", labels)
        _add(col, m.MOD_T_MIN, bank, "ModTmpMin", labels)
        _add(col, m.MOD_T_AVG, bank, "ModTmpAvg", labels)
        for n, group in enumerate(bank.groups.get("string", []), start=1):
            _string_samples(col, group, {**labels, "string": str(n)}, prefix="Str")
    for string in models.get(804, []):
        idx = _num(string, "Idx")
        lab = {**labels, "string": str(int(idx)) if idx is not None else "?"}
        _string_samples(col, string, lab, prefix="")
        for n, mod in enumerate(string.groups.get("lithium_ion_string_module", []), start=1):
            mlab = {**lab, "module": str(n)}
            col.add(m.MOD_SOC, _pct(mod, "ModSoC"), mlab)
            col.add(m.MOD_SOH, _pct(mod, "ModSoH"), mlab)
            _add(col, m.MOD_CELL_V_MAX, mod, "ModCellVMax", mlab)
            _add(col, m.MOD_CELL_V_MIN, mod, "ModCellVMin", mlab)
            _add(col, m.MOD_CELL_T_MAX, mod, "ModCellTmpMax", mlab)
            _add(col, m.MOD_CELL_T_MIN, mod, "ModCellTmpMin", mlab)
    for mod in models.get(805, []):
        str_idx, mod_idx = _num(mod, "StrIdx"), _num(mod, "ModIdx")
        mlab = {**labels, "string": str(int(str_idx)) if str_idx is not None else "?",
                "module": str(int(mod_idx)) if mod_idx is not None else "?"}
        col.add(m.MOD_SOC, _pct(mod, "SoC"), mlab)
        col.add(m.MOD_SOH, _pct(mod, "SoH"), mlab)
        _add(col, m.MOD_CELL_V_MAX, mod, "CellVMax", mlab)
        _add(col, m.MOD_CELL_V_MIN, mod, "CellVMin", mlab)
        _add(col, m.MOD_CELL_T_MAX, mod, "CellTmpMax", mlab)
        _add(col, m.MOD_CELL_T_MIN, mod, "CellTmpMin", mlab)
        for n, cell in enumerate(mod.groups.get("lithium-ion-module-cell", []), start=1):
            clab = {**mlab, "cell": str(n)}
            _add(col, m.CELL_V, cell, "CellV", clab)
            _add(col, m.CELL_T, cell, "CellTmp", clab)
    return _dedupe(col)


def _string_samples(col: Collection, g: GroupValues, labels: Labels, prefix: str) -> None:
    p = prefix
    col.add(m.STR_SOC, _pct(g, f"{p}SoC"), labels)
    col.add(m.STR_SOH, _pct(g, f"{p}SoH"), labels)
    _add(col, m.STR_A, g, f"{p}A", labels)
    _add(col, m.STR_V, g, f"{p}V" if p else "V", labels)
    _add(col, m.STR_CELL_V_MAX, g, f"{p}CellVMax", labels)
    _add(col, m.STR_CELL_V_MIN, g, f"{p}CellVMin", labels)
    _add(col, m.STR_T_MAX, g, f"{p}ModTmpMax", labels)
    _add(col, m.STR_T_MIN, g, f"{p}ModTmpMin", labels)
    _add(col, m.STR_FAIL, g, f"{p}ConFail", labels)
    _bits(col, m.STR_ALARM, g, f"{p}Evt1", labels, key="alarm")


def _dedupe(col: Collection) -> Collection:
    """A string or module reported twice (in the bank's string group and in its own model): the
    first reading wins, so each series appears once per collection."""
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    out = Collection(events=col.events)
    for s in col.samples:
        key = s.key()
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


_TEMPS = (("TmpAmb", "ambient"), ("TmpCab", "cabinet"), ("TmpSnk", "heatsink"), ("TmpTrns", "transformer"),
          ("TmpSw", "switch"), ("TmpOt", "other"))


def inverter_samples(models: Mapping[int, list[GroupValues]], labels: Labels) -> Collection:
    col = Collection()
    common = first(models, 1)
    for ac in models.get(701, []):
        col.add(m.INV_INFO, 1, {**labels, **identity(common)})
        _add(col, m.INV_POWER, ac, "W", labels)
        _add(col, m.INV_VA, ac, "VA", labels)
        _add(col, m.INV_VAR, ac, "Var", labels)
        _add(col, m.INV_PF, ac, "PF", labels)
        _add(col, m.INV_A, ac, "A", labels)
        _add(col, m.INV_V, ac, "LLV", {**labels, "kind": "line_to_line"})
        _add(col, m.INV_V, ac, "LNV", {**labels, "kind": "line_to_neutral"})
        _add(col, m.INV_HZ, ac, "Hz", labels)
        _add(col, m.INV_E_INJ, ac, "TotWhInj", labels, scale=WH)
        _add(col, m.INV_E_ABS, ac, "TotWhAbs", labels, scale=WH)
        for point, sensor in _TEMPS:
            _add(col, m.INV_TEMP, ac, point, {**labels, "sensor": sensor})
        _add(col, m.INV_STATE, ac, "InvSt", labels)
        _add(col, m.INV_ON, ac, "St", labels)
        _add(col, m.INV_GRID, ac, "ConnSt", labels)
        throttle = _num(ac, "ThrotPct")
        col.add(m.INV_THROTTLE, None if throttle is None else throttle / 100, labels)
        _bits(col, m.INV_ALARM, ac, "Alrm", labels, key="alarm")
        for phase in ("L1", "L2", "L3"):
            plab = {**labels, "phase": phase}
            _add(col, m.INV_PH_W, ac, f"W{phase}", plab)
            _add(col, m.INV_PH_A, ac, f"A{phase}", plab)
            _add(col, m.INV_PH_V, ac, f"V{phase}", plab)
    return col
