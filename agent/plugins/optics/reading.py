"""What a transceiver reports, independent of the standard that encoded it.

The three decoders (SFF-8472, SFF-8636, CMIS) and the ``ethtool -m`` text parser all produce a
:class:`ModuleReading`; :mod:`agent.plugins.optics.emit` turns one into samples. Values keep the
units of the metrics (celsius, volts, amperes) except optical power, which stays in milliwatts
until the edge so that a 0 mW reading becomes -inf dBm in exactly one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Quantities and levels of ``optical_threshold`` / ``optical_alarm`` (the rule pack relies on them).
QUANTITIES = ("temperature", "voltage", "tx_bias", "tx_power", "rx_power")
LEVELS = ("high_alarm", "low_alarm", "high_warning", "low_warning")

#: The four thresholds of each quantity are stored in this order in all three standards
#: (SFF-8472 table 9-5, SFF-8636 table 6-19, CMIS 5.2 table 8-62): high alarm, low alarm,
#: high warning, low warning.
Key = tuple[str, str]


@dataclass
class Lane:
    """One optical lane (1-based, as ``ethtool -m`` and the specifications number them)."""

    lane: int
    tx_bias_a: float | None = None
    tx_power_mw: float | None = None
    rx_power_mw: float | None = None
    rx_los: bool | None = None
    tx_fault: bool | None = None
    rx_lol: bool | None = None
    tx_lol: bool | None = None
    #: (quantity, level) -> flag raised, for the per-lane quantities tx_bias/tx_power/rx_power.
    alarms: dict[Key, bool] = field(default_factory=dict)


@dataclass
class ModuleReading:
    """One module's identity, diagnostics, thresholds and flags. ``None`` = not reported."""

    standard: str  # "SFF-8472", "SFF-8636", "CMIS"
    identifier: int
    type: str  # SFF-8024 identifier name: "SFP", "QSFP28", "QSFP-DD", "OSFP", ...
    vendor: str = ""
    part_number: str = ""
    revision: str = ""
    serial: str = ""
    wavelength_nm: float | None = None
    temperature_c: float | None = None
    voltage_v: float | None = None
    lanes: list[Lane] = field(default_factory=list)
    #: (quantity, level) -> threshold in celsius, volts, amperes or milliwatts (powers).
    thresholds: dict[Key, float] = field(default_factory=dict)
    #: (quantity, level) -> flag raised, module-wide (temperature, voltage; SFP lanes too).
    alarms: dict[Key, bool] = field(default_factory=dict)
    module_state: int | None = None  # CMIS only (lower page byte 3, bits 3-1)
    spec_revision: str = ""  # CMIS "5.0", SFF-8636 revision code, ...


def mw_to_dbm(mw: float) -> float:
    """Milliwatts to dBm; 0 mW (no light) is -inf, which every output format can carry."""
    if mw <= 0.0:
        return -math.inf
    return 10.0 * math.log10(mw)


#: SFF-8024 table 4-1 identifiers this plugin decodes (others are reported by type only).
IDENTIFIERS = {
    0x03: "SFP",
    0x0C: "QSFP",
    0x0D: "QSFP+",
    0x11: "QSFP28",
    0x18: "QSFP-DD",
    0x19: "OSFP",
    0x1A: "SFP-DD",
    0x1B: "DSFP",
    0x1E: "QSFP-CMIS",
    0x1F: "SFP-DD-CMIS",
    0x20: "SFP+-CMIS",
}

SFF8472_IDS = frozenset({0x03})
SFF8636_IDS = frozenset({0x0C, 0x0D, 0x11})
CMIS_IDS = frozenset({0x18, 0x19, 0x1A, 0x1B, 0x1E, 0x1F, 0x20})


def identifier_name(ident: int) -> str:
    return IDENTIFIERS.get(ident, f"0x{ident:02x}")
