"""Parse ``ethtool -m <interface>`` text: the fallback when EEPROM pages cannot be read directly.

ethtool prints one ``key : value`` per line (sfpid.c/sfpdiag.c for SFP, qsfp.c for SFF-8636,
cmis.c for CMIS). Per-lane values carry ``(Channel N)`` or ``(Chan N)`` in the key; CMIS and
newer SFF-8636 output print lane flags as ``[ Yes, No, ... ]`` lists. Units are the ones ethtool
prints: mA, mW (with dBm beside it), degrees C, V, nm.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable

from agent.plugins.optics.eeprom import EepromError
from agent.plugins.optics.reading import Lane, ModuleReading, identifier_name

_LANE = re.compile(r"\s*\((?:Channel|Chan|Lane)\s*(\d+)\)\s*")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")

# Value lines: key -> (quantity, printed units per reading unit; divided to keep decimals exact).
_VALUES = {
    "laser bias current": ("tx_bias", 1000.0),  # mA per A
    "laser tx bias current": ("tx_bias", 1000.0),
    "laser output power": ("tx_power", 1.0),  # mW
    "transmit avg optical power": ("tx_power", 1.0),
    "receiver signal average optical power": ("rx_power", 1.0),
    "rcvr signal avg optical power": ("rx_power", 1.0),
    "receiver signal oma": ("rx_power", 1.0),
    "module temperature": ("temperature", 1.0),  # degrees C
    "module voltage": ("voltage", 1.0),  # V
}
# Flag and threshold lines name the quantity with these prefixes.
_QUANTITY_PREFIX = {
    "laser bias current": "tx_bias",
    "laser output power": "tx_power",
    "laser tx power": "tx_power",
    "module temperature": "temperature",
    "module voltage": "voltage",
    "laser rx power": "rx_power",
}
_LEVEL = re.compile(r"\b(high|low) (alarm|warning)\b")
_LIST_FLAGS = {"rx loss of signal": "rx_los", "tx fault": "tx_fault",
               "rx loss of lock": "rx_lol", "tx loss of lock": "tx_lol"}


def parse(text: str) -> ModuleReading:
    """One module's reading from ``ethtool -m`` output; raises EepromError when it is not one."""
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        # ``key : value``: split at the first colon, not with a regex (``\s*[^:]+?\s*:`` backtracked
        # cubically on a long run of blanks without a colon: a hang on one odd line).
        key, sep, value = line.partition(":")
        if sep and key:
            value = value[1:] if value[:1].isspace() else value
            fields.append((key.strip(), value.rstrip()))
    if not fields or fields[0][0].lower() != "identifier":
        raise EepromError("ethtool -m output does not start with 'Identifier'")
    ident_text = fields[0][1]
    try:
        ident = int(ident_text.split()[0], 16)
    except (ValueError, IndexError) as err:
        raise EepromError(f"ethtool -m: unreadable identifier {ident_text!r}") from err
    if not 0 <= ident <= 0xFF:  # SFF-8024 identifiers are one byte
        raise EepromError(f"ethtool -m: identifier {ident_text!r} is not a byte")
    standard = "SFF-8472" if ident == 0x03 else ("SFF-8636" if ident in (0x0C, 0x0D, 0x11) else "CMIS")
    r = ModuleReading(standard=standard, identifier=ident, type=identifier_name(ident))
    lanes: dict[int, Lane] = {}
    none_flags: list[str] = []

    def lane(n: int) -> Lane:
        if n not in lanes:
            lanes[n] = Lane(lane=n)
        return lanes[n]

    for raw_key, value in fields[1:]:
        lane_m = _LANE.search(raw_key)
        lane_no = int(lane_m.group(1)) if lane_m else None
        key = _LANE.sub(" ", raw_key).strip().lower()
        key = re.sub(r"\s+", " ", key)
        if key == "vendor name":
            r.vendor = value
        elif key == "vendor pn":
            r.part_number = value
        elif key == "vendor rev":
            r.revision = value
        elif key == "vendor sn":
            r.serial = value
        elif key in ("laser wavelength", "wavelength"):
            num = _number(value)
            if num is not None and value.rstrip().endswith("nm"):
                r.wavelength_nm = num
        elif key in ("module state",):
            with contextlib.suppress(ValueError, IndexError):
                state = int(value.split()[0], 16)
                r.module_state = state if 0 <= state <= 0xFF else None  # a byte (CMIS lower page 3)
        elif key in _LIST_FLAGS and value.startswith("["):
            items = [v.strip().lower() for v in value.strip("[] ").split(",") if v.strip()]
            for n, item in enumerate(items, start=1):
                setattr(lane(n), _LIST_FLAGS[key], item == "yes")
        elif key in _LIST_FLAGS and value == "None":
            none_flags.append(_LIST_FLAGS[key])  # no lane has it: applied to every lane below
        elif key.endswith("threshold"):
            _threshold(r, key, value)
        elif value in ("On", "Off"):
            _flag(r, key, value == "On", lane, lane_no or 1)
        else:
            _value(r, key, value, lane_no, lane)
    r.lanes = [lanes[n] for n in sorted(lanes)]
    for flag in none_flags:
        for ln in r.lanes:
            setattr(ln, flag, False)
    return r


def _quantity(key: str) -> str | None:
    for prefix, quantity in _QUANTITY_PREFIX.items():
        if key.startswith(prefix):
            return quantity
    return None


def _level(key: str) -> str | None:
    m = _LEVEL.search(key)
    return f"{m.group(1)}_{m.group(2)}" if m else None


def _number(value: str) -> float | None:
    m = _NUMBER.search(value)
    number = float(m.group()) if m else math.inf
    return number if math.isfinite(number) else None  # 400 digits read as inf: not a reading


def _threshold(r: ModuleReading, key: str, value: str) -> None:
    quantity, level, num = _quantity(key), _level(key), _number(value)
    if quantity is None or level is None or num is None:
        return
    r.thresholds[(quantity, level)] = num / 1000 if quantity == "tx_bias" else num  # mA -> A


def _flag(r: ModuleReading, key: str, on: bool, lane: Callable[[int], Lane], lane_no: int) -> None:
    quantity, level = _quantity(key), _level(key)
    if quantity is None or level is None:
        return
    if quantity in ("temperature", "voltage"):
        r.alarms[(quantity, level)] = on
    else:
        # SFP output has no channel: its one lane (1) carries the bias/power flags.
        lane(lane_no).alarms[(quantity, level)] = on


def _value(r: ModuleReading, key: str, value: str, lane_no: int | None, lane: Callable[[int], Lane]) -> None:
    for prefix, (quantity, scale) in _VALUES.items():
        if key != prefix:
            continue
        num = _number(value)
        if num is None:
            return
        if quantity == "temperature":
            r.temperature_c = num
        elif quantity == "voltage":
            r.voltage_v = num
        else:
            target = lane(lane_no if lane_no is not None else 1)
            setattr(target, {"tx_bias": "tx_bias_a", "tx_power": "tx_power_mw",
                             "rx_power": "rx_power_mw"}[quantity], num / scale)
        return
