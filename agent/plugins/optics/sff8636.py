"""SFF-8636 (QSFP+, QSFP28): lower page 00h, upper page 00h (identity), upper page 03h (thresholds).

References are to SFF-8636 rev 2.10a: table 6-2/6-4 (status, LOS, fault, LOL), table 6-5..6-7
(flags), table 6-8 (monitors), table 6-15 (upper page 00h), table 6-24 (byte 220), table 6-19
(page 03h thresholds).
"""

from __future__ import annotations

from agent.plugins.optics.fields import EepromError, s16, text, u16, upper_at
from agent.plugins.optics.reading import LEVELS, Lane, ModuleReading, identifier_name

LANES = 4
TEMP_LSB_C = 1 / 256
VCC_LSB_V = 100e-6
BIAS_LSB_A = 2e-6
POWER_LSB_MW = 0.1e-3

# Page 03h threshold blocks (4 x 16-bit, in the order of LEVELS).
THRESHOLDS = {"temperature": 128, "voltage": 144, "rx_power": 176, "tx_bias": 184, "tx_power": 192}
LSB = {"temperature": TEMP_LSB_C, "voltage": VCC_LSB_V, "rx_power": POWER_LSB_MW,
       "tx_bias": BIAS_LSB_A, "tx_power": POWER_LSB_MW}
# Per-lane flag bytes (two lanes per byte: lane 1/3 in bits 7-4, lane 2/4 in bits 3-0;
# within a nibble high alarm, low alarm, high warning, low warning).
LANE_FLAGS = {"rx_power": 9, "tx_bias": 11, "tx_power": 13}


def decode(lower: bytes, upper: dict[int, bytes]) -> ModuleReading:
    p0 = upper.get(0)
    if p0 is None or len(p0) < 128:
        raise EepromError("SFF-8636 upper page 00h is missing; identity cannot be read")
    r = ModuleReading(
        standard="SFF-8636",
        identifier=lower[0],
        type=identifier_name(lower[0]),
        vendor=text(p0, 148 - 128, 16),
        part_number=text(p0, 168 - 128, 16),
        revision=text(p0, 184 - 128, 2),
        serial=text(p0, 196 - 128, 16),
        spec_revision=f"0x{lower[1]:02x}",
    )
    tech = (upper_at(p0, 147) or 0) >> 4
    # Byte 147 bits 7-4 >= 0xA: copper (passive or active cable); there is no laser, so
    # bytes 186-187 hold copper attenuation and there is no bias or optical power to read.
    copper = tech >= 0xA
    if not copper:
        r.wavelength_nm = u16(p0, 186 - 128) / 20  # units of 0.05 nm
    dmt = upper_at(p0, 220) or 0
    # Byte 220: bit 5 temperature and bit 4 supply voltage monitoring implemented; bit 2 TX
    # power monitoring supported. Optical modules commonly leave bits 5/4 clear yet report
    # both (ethtool prints them unconditionally), so only copper cables rely on them.
    if dmt & 0x20 or not copper:
        r.temperature_c = s16(lower, 22) * TEMP_LSB_C
    if dmt & 0x10 or not copper:
        r.voltage_v = u16(lower, 26) * VCC_LSB_V
    for quantity, byte in (("temperature", 6), ("voltage", 7)):
        for i, level in enumerate(LEVELS):
            r.alarms[(quantity, level)] = bool(lower[byte] >> (7 - i) & 1)

    # Option values (table 6-22): byte 194 bit 4 Rx CDR LOL and bit 5 Tx CDR LOL flags
    # implemented; byte 195 bit 3 Tx fault implemented. Rx LOS has no "implemented" bit; every
    # optical module reports it, a copper cable has no light to lose.
    opt3, opt4 = upper_at(p0, 194) or 0, upper_at(p0, 195) or 0
    for i in range(LANES):
        lane = Lane(lane=i + 1)
        if not copper:
            lane.rx_los = bool(lower[3] >> i & 1)
        if opt4 & 0x08:
            lane.tx_fault = bool(lower[4] >> i & 1)
        if opt3 & 0x10:
            lane.rx_lol = bool(lower[5] >> i & 1)
        if opt3 & 0x20:
            lane.tx_lol = bool(lower[5] >> (4 + i) & 1)
        if not copper:
            lane.rx_power_mw = u16(lower, 34 + 2 * i) * POWER_LSB_MW
            lane.tx_bias_a = u16(lower, 42 + 2 * i) * BIAS_LSB_A
            if dmt & 0x04:
                lane.tx_power_mw = u16(lower, 50 + 2 * i) * POWER_LSB_MW
            for quantity, byte in LANE_FLAGS.items():
                if quantity == "tx_power" and not dmt & 0x04:
                    continue
                flags = lower[byte + i // 2]
                shift = 7 if i % 2 == 0 else 3
                for j, level in enumerate(LEVELS):
                    lane.alarms[(quantity, level)] = bool(flags >> (shift - j) & 1)
        r.lanes.append(lane)

    p3 = upper.get(3)
    if p3 is not None and len(p3) >= 128:
        for quantity, base in THRESHOLDS.items():
            if copper and quantity in ("rx_power", "tx_bias", "tx_power"):
                continue
            if quantity == "tx_power" and not dmt & 0x04:
                continue
            for j, level in enumerate(LEVELS):
                off = base - 128 + 2 * j
                raw = s16(p3, off) if quantity == "temperature" else u16(p3, off)
                r.thresholds[(quantity, level)] = raw * LSB[quantity]
    return r
