"""CMIS 4.x/5.x (QSFP-DD, OSFP, QSFP with CMIS): lower page, pages 00h, 01h, 02h and 11h.

References are to CMIS rev 5.2: table 8-4..8-10 (lower page: revision, memory model, module
state, module flags, monitors), table 8-24 (page 00h identity), table 8-41/8-43 (page 01h
wavelength, supported monitors, bias multiplier), table 8-62 (page 02h thresholds), tables
8-77..8-82 (page 11h lane flags and monitors). Lanes 1-8 of bank 0 only.
"""

from __future__ import annotations

from agent.plugins.optics.fields import EepromError, s16, text, u16, upper_at
from agent.plugins.optics.reading import LEVELS, Lane, ModuleReading, identifier_name

TEMP_LSB_C = 1 / 256
VCC_LSB_V = 100e-6
BIAS_LSB_A = 2e-6  # times the multiplier of page 01h byte 160 bits 4-3
POWER_LSB_MW = 0.1e-3

#: Lower page byte 3 bits 3-1 (table 8-6).
MODULE_STATES = {1: "ModuleLowPwr", 2: "ModulePwrUp", 3: "ModuleReady", 4: "ModulePwrDn", 5: "ModuleFault"}

# Page 02h threshold blocks (4 x 16-bit, in the order of LEVELS).
THRESHOLDS = {"temperature": 128, "voltage": 136, "tx_power": 176, "tx_bias": 184, "rx_power": 192}
# Page 11h flag bytes: one byte per level (bit n = lane n+1), in the order of LEVELS.
LANE_FLAGS = {"tx_power": 139, "tx_bias": 143, "rx_power": 149}
# Page 11h per-lane status bytes (bit n = lane n+1).
TX_FAULT, TX_LOL, RX_LOS, RX_LOL = 135, 137, 147, 148
# Page 11h monitors: 8 x 16-bit each.
TX_POWER, TX_BIAS, RX_POWER = 154, 170, 186


def decode(lower: bytes, upper: dict[int, bytes]) -> ModuleReading:
    p0 = upper.get(0)
    if p0 is None or len(p0) < 128:
        raise EepromError("CMIS page 00h is missing; identity cannot be read")
    r = ModuleReading(
        standard="CMIS",
        identifier=lower[0],
        type=identifier_name(lower[0]),
        vendor=text(p0, 129 - 128, 16),
        part_number=text(p0, 148 - 128, 16),
        revision=text(p0, 164 - 128, 2),
        serial=text(p0, 166 - 128, 16),
        spec_revision=f"{lower[1] >> 4}.{lower[1] & 0x0F}",
        module_state=(lower[3] >> 1) & 0x07,
    )
    flat = bool(lower[2] & 0x80)
    p1, p2, p11 = upper.get(1), upper.get(2), upper.get(0x11)
    mon = upper_at(p1, 159)  # bit 0 temperature, bit 1 Vcc monitor supported
    lane_mon = upper_at(p1, 160)  # bit 0 bias, bit 1 tx power, bit 2 rx power; bits 4-3 multiplier
    # Flat memory is passive copper: no monitors. Paged memory without a readable page 01h
    # (legacy ioctl) is assumed to implement the mandatory module monitors.
    temp_ok = not flat and (mon is None or bool(mon & 0x01))
    vcc_ok = not flat and (mon is None or bool(mon & 0x02))
    if temp_ok:
        r.temperature_c = s16(lower, 14) * TEMP_LSB_C
    if vcc_ok:
        r.voltage_v = u16(lower, 16) * VCC_LSB_V
    for i, level in enumerate(LEVELS):
        # Byte 9: bits 0-3 temperature high alarm, low alarm, high warning, low warning;
        # bits 4-7 the same for Vcc.
        if temp_ok:
            r.alarms[("temperature", level)] = bool(lower[9] >> i & 1)
        if vcc_ok:
            r.alarms[("voltage", level)] = bool(lower[9] >> (4 + i) & 1)
    if p1 is not None and len(p1) >= 128:
        wl = u16(p1, 138 - 128)
        r.wavelength_nm = wl * 0.05 if wl else None
    multiplier = {0: 1, 1: 2, 2: 4}.get(((lane_mon or 0) >> 3) & 0x03, 1)
    supported = {
        "tx_bias": lane_mon is not None and bool(lane_mon & 0x01),
        "tx_power": lane_mon is not None and bool(lane_mon & 0x02),
        "rx_power": lane_mon is not None and bool(lane_mon & 0x04),
        "temperature": temp_ok,
        "voltage": vcc_ok,
    }
    if p2 is not None and len(p2) >= 128:
        for quantity, base in THRESHOLDS.items():
            if not supported[quantity]:
                continue
            for j, level in enumerate(LEVELS):
                off = base - 128 + 2 * j
                if quantity == "temperature":
                    value = s16(p2, off) * TEMP_LSB_C
                elif quantity == "voltage":
                    value = u16(p2, off) * VCC_LSB_V
                elif quantity == "tx_bias":
                    value = u16(p2, off) * BIAS_LSB_A * multiplier
                else:
                    value = u16(p2, off) * POWER_LSB_MW
                r.thresholds[(quantity, level)] = value
    if p11 is None or len(p11) < 128:
        return r
    lanes = media_lanes(lower, p1)

    page11: bytes = p11

    def bit(byte: int, n: int) -> bool:
        return bool(page11[byte - 128] >> n & 1)

    # Page 01h byte 157: Tx flags implemented (bit 0 fault, bit 2 CDR LOL); byte 158: Rx flags
    # implemented (bit 1 LOS, bit 2 CDR LOL). Without page 01h nothing says they are.
    tx_flags, rx_flags = upper_at(p1, 157) or 0, upper_at(p1, 158) or 0
    for n in (lane_no - 1 for lane_no in lanes):
        lane = Lane(lane=n + 1)
        if tx_flags & 0x01:
            lane.tx_fault = bit(TX_FAULT, n)
        if tx_flags & 0x04:
            lane.tx_lol = bit(TX_LOL, n)
        if rx_flags & 0x02:
            lane.rx_los = bit(RX_LOS, n)
        if rx_flags & 0x04:
            lane.rx_lol = bit(RX_LOL, n)
        if supported["tx_power"]:
            lane.tx_power_mw = u16(p11, TX_POWER - 128 + 2 * n) * POWER_LSB_MW
        if supported["tx_bias"]:
            lane.tx_bias_a = u16(p11, TX_BIAS - 128 + 2 * n) * BIAS_LSB_A * multiplier
        if supported["rx_power"]:
            lane.rx_power_mw = u16(p11, RX_POWER - 128 + 2 * n) * POWER_LSB_MW
        for quantity, base in LANE_FLAGS.items():
            if supported[quantity]:
                for j, level in enumerate(LEVELS):
                    lane.alarms[(quantity, level)] = bit(base + j, n)
        r.lanes.append(lane)
    return r


#: Media lanes of each form factor (SFF-8024 identifier), when the module advertises nothing better.
FORM_FACTOR_LANES = {0x18: 8, 0x19: 8, 0x1A: 2, 0x1B: 2, 0x1E: 4, 0x1F: 2, 0x20: 1}


def media_lanes(lower: bytes, p1: bytes | None) -> list[int]:
    """The media lanes (1-8, bank 0) that some advertised application uses.

    An application descriptor (lower page bytes 86-117, table 8-23: 4 bytes each, a host
    interface ID of 0xFF ends the list) gives its media lane count in byte +2 bits 3-0; page 01h
    bytes 176-183 (MediaLaneAssignmentOptions) say on which lanes an instance may start. A
    twin-port 2x400G module advertises 4 lanes starting on lane 1 or 5: lanes 1-8. Unused lanes
    of a 4-lane module in an 8-lane form factor are left out, so their zero readings never
    look like a dark fibre.
    """
    limit = FORM_FACTOR_LANES.get(lower[0], 8)
    if p1 is None or len(p1) < 128:
        return list(range(1, limit + 1))
    used: set[int] = set()
    for app in range(8):
        base = 86 + 4 * app
        if lower[base] in (0x00, 0xFF):
            break
        count = lower[base + 2] & 0x0F
        starts = p1[176 - 128 + app]
        for start in range(8):
            if count and starts >> start & 1:
                used.update(range(start + 1, min(start + count, 8) + 1))
    lanes = sorted(n for n in used if n <= limit)
    return lanes or list(range(1, limit + 1))


def state_name(state: int) -> str:
    return MODULE_STATES.get(state, f"reserved({state})")


__all__ = ["MODULE_STATES", "EepromError", "decode", "state_name"]
