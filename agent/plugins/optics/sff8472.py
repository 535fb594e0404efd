"""SFF-8472 (SFP, SFP+, SFP28): identity at A0h, diagnostics at A2h.

References are to SFF-8472 rev 12.4: table 4-1 (A0h), table 8-3 (byte 92, diagnostic
monitoring type), table 9-5 (A2h thresholds), table 9-6 (external calibration constants),
table 9-11 (A2h byte 110 status), table 9-12 (alarm and warning flags).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from agent.plugins.optics.fields import EepromError, f32, s16, text, u16
from agent.plugins.optics.reading import LEVELS, Lane, ModuleReading, identifier_name

# A0h byte 92 (table 8-3).
DDM_IMPLEMENTED = 0x40
INTERNALLY_CALIBRATED = 0x20
EXTERNALLY_CALIBRATED = 0x10
# A0h byte 93 bit 7: alarm/warning flags implemented.
FLAGS_IMPLEMENTED = 0x80
# A0h byte 65 (options): bit 1 RX_LOS implemented, bit 3 TX_FAULT implemented.
OPT_RX_LOS = 0x02
OPT_TX_FAULT = 0x08

# Raw units (section 9.2): temperature 1/256 degC signed, Vcc 100 uV, bias 2 uA, power 0.1 uW.
TEMP_LSB_C = 1 / 256
VCC_LSB_V = 100e-6
BIAS_LSB_A = 2e-6
POWER_LSB_MW = 0.1e-3

# A2h threshold blocks (table 9-5): 4 x 16-bit values each, in the order of LEVELS.
THRESHOLDS = {"temperature": 0, "voltage": 8, "tx_bias": 16, "tx_power": 24, "rx_power": 32}

# Table 9-12: (byte, bit) of the high alarm; low alarm is the next bit down. Warnings: +4 bytes.
FLAG_BITS = {
    "temperature": (112, 7),
    "voltage": (112, 5),
    "tx_bias": (112, 3),
    "tx_power": (112, 1),
    "rx_power": (113, 7),
}


def decode(a0: bytes, a2: bytes | None) -> ModuleReading:
    if len(a0) < 96:
        raise EepromError(f"SFF-8472 A0h is {len(a0)} bytes; identity needs bytes 0-95")
    r = ModuleReading(
        standard="SFF-8472",
        identifier=a0[0],
        type=identifier_name(a0[0]),
        vendor=text(a0, 20, 16),
        part_number=text(a0, 40, 16),
        revision=text(a0, 56, 4),
        serial=text(a0, 68, 16),
        spec_revision=f"0x{a0[94]:02x}",
    )
    # Bytes 60-61 are the laser wavelength unless byte 8 says passive (bit 2) or active (bit 3)
    # cable, where they carry the copper compliance code instead.
    if not a0[8] & 0x0C:
        wl = u16(a0, 60)
        r.wavelength_nm = float(wl) if wl else None
    diag = a0[92]
    if not diag & DDM_IMPLEMENTED or a2 is None:
        return r
    if len(a2) < 118:
        raise EepromError(f"SFF-8472 A2h is {len(a2)} bytes; diagnostics need bytes 0-117")

    cal = _Calibration(a2) if diag & EXTERNALLY_CALIBRATED else None
    temp = cal.temperature if cal else float
    volt = cal.voltage if cal else float
    bias = cal.bias if cal else float
    txp = cal.tx_power if cal else float
    rxp = cal.rx_power if cal else float

    r.temperature_c = _finite(temp(s16(a2, 96)) * TEMP_LSB_C)
    r.voltage_v = _finite(volt(u16(a2, 98)) * VCC_LSB_V)
    lane = Lane(
        lane=1,
        tx_bias_a=_finite(bias(u16(a2, 100)) * BIAS_LSB_A),
        tx_power_mw=_finite(txp(u16(a2, 102)) * POWER_LSB_MW),
        rx_power_mw=_finite(rxp(u16(a2, 104)) * POWER_LSB_MW),
    )
    # Thresholds are stored in the same raw form as the readings; with external calibration
    # they are A/D counts too and take the same conversion (section 9.3).
    conv: dict[str, tuple[Callable[[int], float], float, bool]] = {
        "temperature": (temp, TEMP_LSB_C, True),
        "voltage": (volt, VCC_LSB_V, False),
        "tx_bias": (bias, BIAS_LSB_A, False),
        "tx_power": (txp, POWER_LSB_MW, False),
        "rx_power": (rxp, POWER_LSB_MW, False),
    }
    for quantity, base in THRESHOLDS.items():
        fn, lsb, signed = conv[quantity]
        for i, level in enumerate(LEVELS):
            raw = s16(a2, base + 2 * i) if signed else u16(a2, base + 2 * i)
            value = _finite(fn(raw) * lsb)
            if value is not None:
                r.thresholds[(quantity, level)] = value

    if a0[93] & FLAGS_IMPLEMENTED:
        for quantity, (byte, bit) in FLAG_BITS.items():
            target = r.alarms if quantity in ("temperature", "voltage") else lane.alarms
            for warn, kind in ((0, "alarm"), (4, "warning")):
                flags = a2[byte + warn]
                target[(quantity, f"high_{kind}")] = bool(flags >> bit & 1)
                target[(quantity, f"low_{kind}")] = bool(flags >> (bit - 1) & 1)
    status = a2[110]  # table 9-11: bit 2 TX_FAULT state, bit 1 RX_LOS state
    if a0[65] & OPT_RX_LOS:
        lane.rx_los = bool(status & 0x02)
    if a0[65] & OPT_TX_FAULT:
        lane.tx_fault = bool(status & 0x04)
    r.lanes.append(lane)
    return r


def _finite(value: float) -> float | None:
    """External calibration constants are IEEE-754 floats the module's vendor wrote: NaN or
    infinity there (or a product that overflows) is no reading, and is omitted."""
    return value if math.isfinite(value) else None


class _Calibration:
    """External calibration constants (A2h bytes 56-91, table 9-6).

    Slopes are unsigned 8.8 fixed point, offsets signed 16-bit in the result's raw unit; the
    received power is a 4th-order polynomial with IEEE-754 single-precision coefficients.
    """

    def __init__(self, a2: bytes) -> None:
        self.rx = [f32(a2, 72), f32(a2, 68), f32(a2, 64), f32(a2, 60), f32(a2, 56)]  # Rx_PWR(0..4)
        self.bias_s, self.bias_o = u16(a2, 76) / 256, s16(a2, 78)
        self.tx_s, self.tx_o = u16(a2, 80) / 256, s16(a2, 82)
        self.t_s, self.t_o = u16(a2, 84) / 256, s16(a2, 86)
        self.v_s, self.v_o = u16(a2, 88) / 256, s16(a2, 90)

    def temperature(self, raw: int) -> float:
        return self.t_s * raw + self.t_o

    def voltage(self, raw: int) -> float:
        return self.v_s * raw + self.v_o

    def bias(self, raw: int) -> float:
        return self.bias_s * raw + self.bias_o

    def tx_power(self, raw: int) -> float:
        return self.tx_s * raw + self.tx_o

    def rx_power(self, raw: int) -> float:
        c0, c1, c2, c3, c4 = self.rx
        return c0 + raw * (c1 + raw * (c2 + raw * (c3 + raw * c4)))
