"""APC PowerNet-MIB rack PDUs: the rPDU2 tree (AP84xx/86xx/89xx, AP79xxB), else the older rPDU tree.

Units as PowerNet-MIB states them: currents in tenths of amperes, phase voltage in volts, device
and phase power in hundredths of kW, outlet power in watts, energy in tenths of kWh, power
factors in hundredths (rPDU2) or thousandths (rPDU ident). A value of -1 means "not supported by
this model" (an AP7902B has no power meter): it is omitted. Checked against the snmpsim-data
recordings of an AP7902B, AP8641 and AP8932 (``shared/fixtures/snmp/snmpsim-data/pdu``).
"""

from __future__ import annotations

from agent.model import Collection, Labels
from agent.plugins.snmp import metrics as m
from agent.plugins.snmp.reader import Reader, non_negative, ratio, scaled
from agent.plugins.snmp.snapshot import Snapshot

KWH = 3.6e6  # joules per kWh

R2 = "1.3.6.1.4.1.318.1.1.26"
R2_IDENT = f"{R2}.2.1.1"  # rPDU2IdentEntry
R2_DEV_PROPS = f"{R2}.4.2.1"  # rPDU2DevicePropertiesEntry
R2_DEV_STATUS = f"{R2}.4.3.1"  # rPDU2DeviceStatusEntry
R2_PHASE_CFG = f"{R2}.6.1.1"  # rPDU2PhaseConfigEntry
R2_PHASE_STATUS = f"{R2}.6.3.1"  # rPDU2PhaseStatusEntry
R2_BANK_CFG = f"{R2}.8.1.1"  # rPDU2BankConfigEntry
R2_BANK_PROPS = f"{R2}.8.2.1"  # rPDU2BankPropertiesEntry
R2_BANK_STATUS = f"{R2}.8.3.1"  # rPDU2BankStatusEntry
R2_SW_STATUS = f"{R2}.9.2.3.1"  # rPDU2OutletSwitchedStatusEntry
R2_MET_PROPS = f"{R2}.9.4.2.1"  # rPDU2OutletMeteredPropertiesEntry
R2_MET_STATUS = f"{R2}.9.4.3.1"  # rPDU2OutletMeteredStatusEntry

# rPDU2 load states: lowLoad(1) normal(2) nearOverload(3) overload(4); anything else (5 on an
# AP7902B device row) is not a load verdict.
_R2_STATE = {1: 0, 2: 1, 3: 2, 4: 3}
_LEVELS = (("low", 0), ("near_overload", 1), ("overload", 2))


def _cols(entry: str, *cols: int) -> tuple[str, ...]:
    return tuple(f"{entry}.{c}" for c in cols)


def _state(value: int | None, table: dict[int, int]) -> int | None:
    return None if value is None else table.get(value)


class _Rows:
    """Columns of one table, read by row index."""

    def __init__(self, snap: Snapshot, entry: str) -> None:
        self.snap, self.entry = snap, entry

    def indexes(self, col: int) -> list[str]:
        return sorted(self.snap.column(f"{self.entry}.{col}"), key=_index_key)

    def number(self, col: int, index: str) -> int | None:
        return self.snap.number(f"{self.entry}.{col}.{index}")

    def text(self, col: int, index: str) -> str | None:
        return self.snap.text(f"{self.entry}.{col}.{index}")


def _index_key(index: str) -> tuple[int, ...]:
    return tuple(int(p) for p in index.split(".") if p.isdigit())


def _rpdu2_present(snap: Snapshot) -> bool:
    return bool(snap.column(f"{R2_DEV_STATUS}.1")) or bool(snap.column(f"{R2_PHASE_STATUS}.1"))


def parse_rpdu2(snap: Snapshot, labels: Labels) -> Collection:
    col = Collection()
    base = dict(labels)
    ident, props, status = _Rows(snap, R2_IDENT), _Rows(snap, R2_DEV_PROPS), _Rows(snap, R2_DEV_STATUS)
    modules = {i: props.number(2, i) or 1 for i in props.indexes(1)} or {i: status.number(2, i) or 1
                                                                        for i in status.indexes(1)}
    multi = len(set(modules.values())) > 1

    def mod_labels(module: int | None) -> dict[str, str]:
        return {**base, "module": str(module)} if multi and module is not None else dict(base)

    rating: dict[int, float] = {}
    for i in props.indexes(1):
        mod = props.number(2, i) or 1
        rated = non_negative(props.number(9, i))  # rPDU2DevicePropertiesMaxCurrentRating, amps
        if rated:
            rating[mod] = float(rated)
            col.add(m.PDU_RATING, rated, mod_labels(mod))
    for i in ident.indexes(1):
        mod = ident.number(2, i) or 1
        info = {k: v for k, v in (("model", ident.text(8, i)), ("serial", ident.text(9, i)),
                                  ("firmware", ident.text(6, i)), ("name", ident.text(3, i))) if v}
        col.add(m.PDU_INFO, 1, {**mod_labels(mod), **info})
    for i in status.indexes(1):
        lab = mod_labels(status.number(2, i) or 1)
        col.add(m.PDU_POWER, scaled(non_negative(status.number(5, i)), 10.0), lab)  # hundredths of kW -> W
        col.add(m.PDU_PEAK_POWER, scaled(non_negative(status.number(6, i)), 10.0), lab)
        col.add(m.PDU_ENERGY, scaled(non_negative(status.number(9, i)), 0.1 * KWH), lab)  # tenths of kWh -> J
        col.add(m.PDU_APPARENT, scaled(non_negative(status.number(16, i)), 10.0), lab)  # hundredths of kVA -> VA
        col.add(m.PDU_PF, scaled(non_negative(status.number(17, i)), 0.01), lab)

    cfg = _Rows(snap, R2_PHASE_CFG)
    thresholds: dict[tuple[int, int], list[int | None]] = {}
    for i in cfg.indexes(1):
        key = (cfg.number(2, i) or 1, cfg.number(3, i) or 0)
        thresholds[key] = [non_negative(cfg.number(c, i)) for c in (5, 6, 7)]  # low, near, overload (amps)
    phases = _Rows(snap, R2_PHASE_STATUS)
    for i in phases.indexes(1):
        mod, number = phases.number(2, i) or 1, phases.number(3, i)
        if number is None:
            continue
        lab = {**mod_labels(mod), "phase": str(number)}
        amps = scaled(non_negative(phases.number(5, i)), 0.1)  # tenths of amps
        col.add(m.PDU_PHASE_CURRENT, amps, lab)
        col.add(m.PDU_PHASE_VOLTAGE, non_negative(phases.number(6, i)), lab)  # volts
        col.add(m.PDU_PHASE_POWER, scaled(non_negative(phases.number(7, i)), 10.0), lab)  # hundredths of kW
        col.add(m.PDU_PHASE_APPARENT, scaled(non_negative(phases.number(8, i)), 10.0), lab)
        col.add(m.PDU_PHASE_PF, scaled(non_negative(phases.number(9, i)), 0.01), lab)
        col.add(m.PDU_PHASE_PEAK_CURRENT, scaled(non_negative(phases.number(10, i)), 0.1), lab)
        col.add(m.PDU_PHASE_STATE, _state(phases.number(4, i), _R2_STATE), lab)
        # APC rates a PDU per input phase: the device's maximum current rating is each phase's.
        col.add(m.PDU_PHASE_RATING, rating.get(mod), lab)
        col.add(m.PDU_PHASE_LOAD, ratio(amps, rating.get(mod)), lab)
        for (level, k) in _LEVELS:
            value = thresholds.get((mod, number), [None] * 3)[k]
            col.add(m.PDU_PHASE_THRESHOLD, value, {**lab, "level": level})

    bcfg, bprops, banks = _Rows(snap, R2_BANK_CFG), _Rows(snap, R2_BANK_PROPS), _Rows(snap, R2_BANK_STATUS)
    bthresh = {(bcfg.number(2, i) or 1, bcfg.number(3, i) or 0): [non_negative(bcfg.number(c, i)) for c in (5, 6, 7)]
               for i in bcfg.indexes(1)}
    breaker = {(bprops.number(2, i) or 1, bprops.number(3, i) or 0): non_negative(bprops.number(5, i))
               for i in bprops.indexes(1)}
    for i in banks.indexes(1):
        mod, number = banks.number(2, i) or 1, banks.number(3, i)
        if number is None:
            continue
        lab = {**mod_labels(mod), "bank": str(number)}
        amps = scaled(non_negative(banks.number(5, i)), 0.1)
        col.add(m.PDU_BANK_CURRENT, amps, lab)
        col.add(m.PDU_BANK_PEAK_CURRENT, scaled(non_negative(banks.number(6, i)), 0.1), lab)
        col.add(m.PDU_BANK_STATE, _state(banks.number(4, i), _R2_STATE), lab)
        rated = breaker.get((mod, number))
        col.add(m.PDU_BANK_RATING, rated, lab)
        col.add(m.PDU_BANK_LOAD, ratio(amps, rated), lab)
        for (level, k) in _LEVELS:
            col.add(m.PDU_BANK_THRESHOLD, bthresh.get((mod, number), [None] * 3)[k], {**lab, "level": level})

    outlets: dict[tuple[int, int], dict[str, str]] = {}
    sw = _Rows(snap, R2_SW_STATUS)
    for i in sw.indexes(1):
        mod, number = sw.number(2, i) or 1, sw.number(4, i)
        if number is None:
            continue
        lab = {**mod_labels(mod), "outlet": str(number)}
        outlets[(mod, number)] = lab
        state = sw.number(5, i)  # rPDU2OutletSwitchedStatusState: off(1), on(2)
        col.add(m.PDU_OUTLET_ON, None if state not in (1, 2) else float(state == 2), lab)
        name = sw.text(3, i)
        if name:
            col.add(m.PDU_OUTLET_INFO, 1, {**lab, "name": name})
    mprops, met = _Rows(snap, R2_MET_PROPS), _Rows(snap, R2_MET_STATUS)
    rated_w = {(mprops.number(2, i) or 1, mprops.number(4, i) or 0): non_negative(mprops.number(6, i))
               for i in mprops.indexes(1)}
    for i in met.indexes(1):
        mod, number = met.number(2, i) or 1, met.number(4, i)
        if number is None:
            continue
        lab = {**mod_labels(mod), "outlet": str(number)}
        if (mod, number) not in outlets:
            outlets[(mod, number)] = lab
            name = met.text(3, i)
            if name:
                col.add(m.PDU_OUTLET_INFO, 1, {**lab, "name": name})
        watts = non_negative(met.number(7, i))  # watts
        col.add(m.PDU_OUTLET_CURRENT, scaled(non_negative(met.number(6, i)), 0.1), lab)  # tenths of amps
        col.add(m.PDU_OUTLET_POWER, watts, lab)
        col.add(m.PDU_OUTLET_PEAK_POWER, non_negative(met.number(8, i)), lab)
        col.add(m.PDU_OUTLET_ENERGY, scaled(non_negative(met.number(11, i)), 0.1 * KWH), lab)  # tenths of kWh
        rated = rated_w.get((mod, number))
        col.add(m.PDU_OUTLET_RATING, rated, lab)
        col.add(m.PDU_OUTLET_LOAD, ratio(None if watts is None else float(watts), rated), lab)
    return col


RPDU2 = Reader(
    "apc-rpdu2",
    walks=(
        *_cols(R2_IDENT, 1, 2, 3, 6, 8, 9),
        *_cols(R2_DEV_PROPS, 1, 2, 9),
        *_cols(R2_DEV_STATUS, 1, 2, 4, 5, 6, 9, 16, 17),
        *_cols(R2_PHASE_CFG, 1, 2, 3, 5, 6, 7),
        *_cols(R2_PHASE_STATUS, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
        *_cols(R2_BANK_CFG, 1, 2, 3, 5, 6, 7),
        *_cols(R2_BANK_PROPS, 1, 2, 3, 5),
        *_cols(R2_BANK_STATUS, 1, 2, 3, 4, 5, 6),
        *_cols(R2_SW_STATUS, 1, 2, 3, 4, 5),
        *_cols(R2_MET_PROPS, 1, 2, 4, 6),
        *_cols(R2_MET_STATUS, 1, 2, 3, 4, 6, 7, 8, 11),
    ),
    gets=(),
    parse=parse_rpdu2,
    present=_rpdu2_present,
)

# --- the older rPDU tree (1.3.6.1.4.1.318.1.1.12) -----------------------------------------------
R1 = "1.3.6.1.4.1.318.1.1.12"
R1_IDENT = f"{R1}.1"
R1_PHASE_CFG = f"{R1}.2.2.1.1"  # rPDULoadPhaseConfigEntry
R1_LOAD = f"{R1}.2.3.1.1"  # rPDULoadStatusEntry
R1_BANK_CFG = f"{R1}.2.4.1.1"  # rPDULoadBankConfigEntry
R1_OUTLET = f"{R1}.3.5.1.1"  # rPDUOutletStatusEntry
# rPDULoadStatusLoadState: phaseLoadNormal(1) phaseLoadLow(2) phaseLoadNearOverload(3) phaseLoadOverload(4)
_R1_STATE = {1: 1, 2: 0, 3: 2, 4: 3}


def parse_rpdu(snap: Snapshot, labels: Labels) -> Collection:
    col = Collection()
    base = dict(labels)
    ident = {k: snap.text(f"{R1_IDENT}.{c}.0") for k, c in (("name", 1), ("firmware", 3), ("model", 5),
                                                            ("serial", 6))}
    col.add(m.PDU_INFO, 1, {**base, **{k: v for k, v in ident.items() if v}})
    rating = non_negative(snap.number(f"{R1_IDENT}.7.0"))  # rPDUIdentDeviceRating, amps
    col.add(m.PDU_RATING, rating, base)
    col.add(m.PDU_POWER, non_negative(snap.number(f"{R1_IDENT}.16.0")), base)  # rPDUIdentDevicePowerWatts
    col.add(m.PDU_PF, scaled(non_negative(snap.number(f"{R1_IDENT}.17.0")), 0.001), base)  # thousandths
    col.add(m.PDU_APPARENT, non_negative(snap.number(f"{R1_IDENT}.18.0")), base)  # VA
    breaker = non_negative(snap.number(f"{R1_IDENT}.11.0"))  # rPDUIdentDeviceBreakerRating, amps
    pcfg, bcfg, load = _Rows(snap, R1_PHASE_CFG), _Rows(snap, R1_BANK_CFG), _Rows(snap, R1_LOAD)
    pth = {pcfg.number(1, i): [non_negative(pcfg.number(c, i)) for c in (2, 3, 4)] for i in pcfg.indexes(1)}
    bth = {bcfg.number(1, i): [non_negative(bcfg.number(c, i)) for c in (2, 3, 4)] for i in bcfg.indexes(1)}
    for i in load.indexes(1):
        phase, bank = load.number(4, i) or 0, load.number(5, i) or 0  # a row is a phase (bank 0) or a bank
        amps = scaled(non_negative(load.number(2, i)), 0.1)  # tenths of amps
        state = _state(load.number(3, i), _R1_STATE)
        if phase and not bank:
            lab = {**base, "phase": str(phase)}
            col.add(m.PDU_PHASE_CURRENT, amps, lab)
            col.add(m.PDU_PHASE_STATE, state, lab)
            col.add(m.PDU_PHASE_RATING, rating, lab)
            col.add(m.PDU_PHASE_LOAD, ratio(amps, rating), lab)
            for (level, k) in _LEVELS:
                col.add(m.PDU_PHASE_THRESHOLD, pth.get(phase, [None] * 3)[k], {**lab, "level": level})
        elif bank:
            lab = {**base, "bank": str(bank)}
            col.add(m.PDU_BANK_CURRENT, amps, lab)
            col.add(m.PDU_BANK_STATE, state, lab)
            col.add(m.PDU_BANK_RATING, breaker, lab)
            col.add(m.PDU_BANK_LOAD, ratio(amps, breaker), lab)
            for (level, k) in _LEVELS:
                col.add(m.PDU_BANK_THRESHOLD, bth.get(bank, [None] * 3)[k], {**lab, "level": level})
    out = _Rows(snap, R1_OUTLET)
    for i in out.indexes(1):
        lab = {**base, "outlet": i}
        state = out.number(4, i)  # rPDUOutletStatusOutletState: outletStatusOn(1), outletStatusOff(2)
        col.add(m.PDU_OUTLET_ON, None if state not in (1, 2) else float(state == 1), lab)
        name = out.text(2, i)
        if name:
            col.add(m.PDU_OUTLET_INFO, 1, {**lab, "name": name})
        # rPDUOutletStatusLoad reads 0 on outlets without a meter (AP7902B): not reported here;
        # metered outlets are read from the rPDU2 tree.
    return col


RPDU = Reader(
    "apc-rpdu",
    walks=(R1_PHASE_CFG, R1_LOAD, R1_BANK_CFG, *_cols(R1_OUTLET, 1, 2, 4)),
    gets=tuple(f"{R1_IDENT}.{c}.0" for c in (1, 3, 5, 6, 7, 11, 16, 17, 18)),
    parse=parse_rpdu,
    present=lambda snap: snap.has_prefix(R1_LOAD) or snap.text(f"{R1_IDENT}.5.0") is not None,
)
