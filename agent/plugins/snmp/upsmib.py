"""UPS-MIB (RFC 1628, 1.3.6.1.2.1.33): the standard every UPS network card speaks, more or less.

Units per RFC 1628: battery voltage in 0.1 V DC, currents in 0.1 A RMS, frequencies in 0.1 Hz,
voltages in V RMS, power in W, charge and load in percent, runtime in minutes. Objects whose
range is non-negative but read negative (Huawei UPS5000 answers -1 for charge and runtime it
does not estimate) are "not supported": omitted. Checked against the snmpsim-data recordings of
Eaton 93E, EAST iStars, Huawei UPS5000, Phoenixtec and an Ingrasys power switch.
"""

from __future__ import annotations

from agent.model import Collection, Labels
from agent.plugins.snmp import metrics as m
from agent.plugins.snmp.reader import Reader, non_negative, scaled
from agent.plugins.snmp.snapshot import Snapshot

UPS = "1.3.6.1.2.1.33.1"
IDENT, BATTERY, INPUT, OUTPUT, ALARM, CONFIG = (f"{UPS}.{n}" for n in (1, 2, 3, 4, 6, 9))
INPUT_ENTRY = f"{INPUT}.3.1"
OUTPUT_ENTRY = f"{OUTPUT}.4.1"
# upsBatteryStatus: unknown(1) batteryNormal(2) batteryLow(3) batteryDepleted(4)
_LOW = {3, 4}
BATTERY_ON = 5  # upsOutputSource battery(5)


def _lines(snap: Snapshot, entry: str, col: int) -> dict[str, int]:
    return {k: v for k, v in snap.int_column(f"{entry}.{col}").items()}


def parse_ups_mib(snap: Snapshot, labels: Labels) -> Collection:
    col = Collection()
    base = dict(labels)
    ident = {k: (snap.text(f"{IDENT}.{c}.0") or "").strip() for k, c in (("manufacturer", 1), ("model", 2),
                                                                          ("software", 3), ("name", 5))}
    col.add(m.UPS_INFO, 1, {**base, **{k: v for k, v in ident.items() if v}})
    status = snap.number(f"{BATTERY}.1.0")
    if status in (2, 3, 4):
        col.add(m.UPS_LOW_BATTERY, float(status in _LOW), base)
    source = snap.number(f"{OUTPUT}.1.0")
    if source is not None and 1 <= source <= 7:
        col.add(m.UPS_OUTPUT_SOURCE, source, base)
        col.add(m.UPS_ON_BATTERY, float(source == BATTERY_ON), base)
    col.add(m.UPS_SECONDS_ON_BATTERY, non_negative(snap.number(f"{BATTERY}.2.0")), base)
    minutes = non_negative(snap.number(f"{BATTERY}.3.0"))
    if minutes == 0 and source != BATTERY_ON:
        # Cards that do not estimate runtime answer 0 while on mains (EAST iStars, the Santak
        # WebPower card): "no time left" would be invented; a real 0 on battery is kept.
        minutes = None
    col.add(m.UPS_RUNTIME, scaled(minutes, 60.0), base)  # minutes
    charge = non_negative(snap.number(f"{BATTERY}.4.0"))
    col.add(m.UPS_CHARGE, None if charge is None or charge > 100 else charge / 100, base)  # percent
    col.add(m.UPS_BATTERY_VOLTAGE, scaled(non_negative(snap.number(f"{BATTERY}.5.0")), 0.1), base)  # 0.1 V DC
    col.add(m.UPS_BATTERY_CURRENT, scaled(snap.number(f"{BATTERY}.6.0"), 0.1), base)  # 0.1 A, signed
    temp = snap.number(f"{BATTERY}.7.0")
    col.add(m.UPS_BATTERY_TEMPERATURE, None if temp is None or temp == -1 else temp, base)  # degrees C
    for line, v in _lines(snap, INPUT_ENTRY, 2).items():
        col.add(m.UPS_INPUT_FREQUENCY, scaled(non_negative(v), 0.1), {**base, "line": line})  # 0.1 Hz
    for line, v in _lines(snap, INPUT_ENTRY, 3).items():
        col.add(m.UPS_INPUT_VOLTAGE, non_negative(v), {**base, "line": line})
    for line, v in _lines(snap, INPUT_ENTRY, 4).items():
        col.add(m.UPS_INPUT_CURRENT, scaled(non_negative(v), 0.1), {**base, "line": line})
    for line, v in _lines(snap, INPUT_ENTRY, 5).items():
        col.add(m.UPS_INPUT_POWER, non_negative(v), {**base, "line": line})
    col.add(m.UPS_OUTPUT_FREQUENCY, scaled(non_negative(snap.number(f"{OUTPUT}.2.0")), 0.1), base)
    for line, v in _lines(snap, OUTPUT_ENTRY, 2).items():
        col.add(m.UPS_OUTPUT_VOLTAGE, non_negative(v), {**base, "line": line})
    for line, v in _lines(snap, OUTPUT_ENTRY, 3).items():
        col.add(m.UPS_OUTPUT_CURRENT, scaled(non_negative(v), 0.1), {**base, "line": line})
    powers = {line: v for line, v in _lines(snap, OUTPUT_ENTRY, 4).items() if v >= 0}
    for line, v in powers.items():
        col.add(m.UPS_OUTPUT_POWER, v, {**base, "line": line})
    if powers:
        col.add(m.UPS_REAL_POWER, sum(powers.values()), base)
    loads = {line: v for line, v in _lines(snap, OUTPUT_ENTRY, 5).items() if v >= 0}
    for line, v in loads.items():
        col.add(m.UPS_OUTPUT_LOAD, v / 100, {**base, "line": line})  # percent
    if loads:
        # As NUT's ups.load on a three-phase UPS: the most loaded line is what runs out first.
        col.add(m.UPS_LOAD, max(loads.values()) / 100, base)
    col.add(m.UPS_REAL_POWER_NOMINAL, non_negative(snap.number(f"{CONFIG}.6.0")) or None, base)
    col.add(m.UPS_ALARMS, non_negative(snap.number(f"{ALARM}.1.0")), base)
    return col


UPS_MIB = Reader(
    "ups-mib",
    walks=(f"{INPUT_ENTRY}.2", f"{INPUT_ENTRY}.3", f"{INPUT_ENTRY}.4", f"{INPUT_ENTRY}.5",
           f"{OUTPUT_ENTRY}.2", f"{OUTPUT_ENTRY}.3", f"{OUTPUT_ENTRY}.4", f"{OUTPUT_ENTRY}.5"),
    gets=(*(f"{IDENT}.{c}.0" for c in (1, 2, 3, 5)), *(f"{BATTERY}.{c}.0" for c in range(1, 8)),
          f"{OUTPUT}.1.0", f"{OUTPUT}.2.0", f"{ALARM}.1.0", f"{CONFIG}.6.0"),
    parse=parse_ups_mib,
    present=lambda snap: snap.has_prefix(UPS),
)
