"""Parse ``hccn_tool`` output (the NPUs' own RoCE ports): pure functions, text in, readings out.

Checked against the ascend-faultdiag captures in ``shared/fixtures/ascend/mind-cluster-faultdiag``
(hccn_tool of driver 23.0.x on an Atlas 800 9000 / Ascend 910A):

- ``hccn_tool -i N -optical -g``: ``key : value`` lines; per-lane ``Tx PowerK``/``Rx PowerK`` in
  mW, ``Tx BiasK`` in mA, module ``temperature`` in C and ``Vcc`` in mV; one pair of thresholds per
  quantity (``… High Thres`` / ``… Low Thres``); LOS/LOL flags as lane bitmasks (bit K = lane K+1);
  ``Host/Media SNR LaneK`` in dB or ``not supported``;
- ``-link_stat -g``: ``[devid N]`` prefixed lines: the tool's ``link up count`` and the link
  change history, newest first (``Tue Aug  1 14:44:40 2022    LINK DOWN``);
- ``-stat -g``: ``name:number`` counters (``roce_rx_err_pkt_num``…);
- ``-fec -g``: ``fec mode: <mode>``; ``-net_health -g``: ``net health status: <status>``.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from dataclasses import dataclass, field

from agent.plugins.optics.reading import Lane, ModuleReading
from agent.toolrun import ToolOutputError

_NOT_SUPPORTED = {"not supported", "na", "n/a", "-", ""}
_LANE_KEY = re.compile(r"^(Tx Power|Rx Power|Tx Bias|Host SNR Lane|Media SNR Lane)\s*(\d+)$")
_NUMBER_UNIT = re.compile(r"^(-?\d+(?:\.\d+)?)\s*([A-Za-z%]*)$")
#: hccn_tool's one threshold pair per quantity, as the module's *warning* thresholds: the
#: captured pair (Vcc 3.135-3.465 V = 3.3 V ± 5 %, 0-70 C) is the SFF-8636 warning band.
_THRESHOLDS = {
    "Vcc High Thres": ("voltage", "high_warning"), "Vcc Low Thres": ("voltage", "low_warning"),
    "Temp High Thres": ("temperature", "high_warning"), "Temp Low Thres": ("temperature", "low_warning"),
    "TxPower High Thres": ("tx_power", "high_warning"), "TxPower Low Thres": ("tx_power", "low_warning"),
    "RxPower High Thres": ("rx_power", "high_warning"), "RxPower Low Thres": ("rx_power", "low_warning"),
}


def _kv_lines(text: str, source: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or (line.endswith(":") and line.count(":") == 1):
            continue  # "optical info:" header
        key, sep, value = line.partition(":")
        if not sep:
            raise ToolOutputError(f"{source}: line {line[:60]!r} is not 'key : value'")
        out[" ".join(key.split())] = value.strip()
    return out


def _quantity(text: str, want_unit: str, what: str, source: str) -> float | None:
    if text.strip().lower() in _NOT_SUPPORTED:
        return None
    m = _NUMBER_UNIT.match(text.strip())
    if m is None or m.group(2) not in (want_unit, ""):
        raise ToolOutputError(f"{source}: {what} is {text!r}, expected a number in {want_unit}")
    value = float(m.group(1))
    return value if math.isfinite(value) else None  # 400 digits read as inf: not a reading


@dataclass
class OpticalReading:
    present: bool | None
    module: ModuleReading
    media_snr_db: dict[int, float] = field(default_factory=dict)
    host_snr_db: dict[int, float] = field(default_factory=dict)
    tx_los: dict[int, bool] = field(default_factory=dict)


def _flags(text: str, lanes: int, what: str, source: str) -> dict[int, bool]:
    try:
        mask = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise ToolOutputError(f"{source}: {what} is {text!r}, expected a lane bitmask like 0x0") from None
    return {k + 1: bool(mask >> k & 1) for k in range(lanes)}


def parse_optical(text: str, *, source: str) -> OpticalReading:
    kv = _kv_lines(text, source)
    if "temperature" not in kv and not any(_LANE_KEY.match(k) for k in kv):
        raise ToolOutputError(f"{source}: no optical readings (no 'temperature' or 'Tx Power0' line)")
    present_text = kv.get("present", "").lower()
    present = None if not present_text else present_text == "present"
    wave = kv.get("xsfp wave length", "")
    mod = ModuleReading(
        standard="hccn_tool", identifier=0, type=kv.get("xsfp identifier", "").split(" or ")[0].strip(),
        vendor=kv.get("vendor name", ""), part_number=kv.get("vendor part number", ""),
        serial=kv.get("vendor serial number", ""),
        wavelength_nm=_quantity(wave, "nm", "xsfp wave length", source) if wave else None,
    )
    if "temperature" in kv:
        mod.temperature_c = _quantity(kv["temperature"], "C", "temperature", source)
    if "Vcc" in kv:
        mv = _quantity(kv["Vcc"], "mV", "Vcc", source)
        mod.voltage_v = None if mv is None else mv / 1000  # hccn_tool prints millivolts
    lanes: dict[int, Lane] = {}
    out = OpticalReading(present, mod)
    for key, value in kv.items():
        m = _LANE_KEY.match(key)
        if m is None:
            continue
        lane = int(m.group(2)) + 1  # hccn_tool counts lanes from 0; fleetmon (SFF-8636, CMIS) from 1
        entry = lanes.setdefault(lane, Lane(lane))
        kind = m.group(1)
        if kind == "Tx Power":
            entry.tx_power_mw = _quantity(value, "mW", key, source)
        elif kind == "Rx Power":
            entry.rx_power_mw = _quantity(value, "mW", key, source)
        elif kind == "Tx Bias":
            ma = _quantity(value, "mA", key, source)
            entry.tx_bias_a = None if ma is None else ma / 1000  # milliamperes
        elif kind == "Media SNR Lane":
            snr = _quantity(value, "dB", key, source)
            if snr is not None:
                out.media_snr_db[lane] = snr
        else:
            snr = _quantity(value, "dB", key, source)
            if snr is not None:
                out.host_snr_db[lane] = snr
    n = max(lanes) if lanes else 0
    for key, attr in (("Rx Los Flag", "rx_los"), ("Tx LoL Flag", "tx_lol"), ("Rx LoL Flag", "rx_lol")):
        if key in kv and n:
            for lane, flag in _flags(kv[key], n, key, source).items():
                setattr(lanes.setdefault(lane, Lane(lane)), attr, flag)
    if "Tx Los Flag" in kv and n:
        out.tx_los = _flags(kv["Tx Los Flag"], n, "Tx Los Flag", source)
    mod.lanes = [lanes[k] for k in sorted(lanes)]
    for key, (quantity, level) in _THRESHOLDS.items():
        if key in kv:
            unit = {"voltage": "mV", "temperature": "C"}.get(quantity, "mW")
            v = _quantity(kv[key], unit, key, source)
            if v is not None:
                mod.thresholds[(quantity, level)] = v / 1000 if quantity == "voltage" else v
    return out


@dataclass(frozen=True)
class LinkChange:
    ts: float  # unix seconds, as the NPU's clock printed it (no zone: read as UTC)
    up: bool
    text: str


@dataclass
class LinkStat:
    up_count: int | None
    changes: list[LinkChange]  # newest first, as printed


_DEVID = re.compile(r"^\[devid\s*\d+\]")
_CHANGE = re.compile(r"^(\w{3}\s+\w{3}\s+\d+\s+\d\d:\d\d:\d\d\s+\d{4})\s+LINK\s+(UP|DOWN)$")


def _when(text: str, source: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        raise ToolOutputError(f"{source}: link change time {text!r} is not like 'Tue Aug  1 14:43:40 2022'") from None


def parse_link_stat(text: str, *, source: str) -> LinkStat:
    up_count: int | None = None
    changes = []
    seen_header = False
    for raw in text.splitlines():
        line = _DEVID.sub("", raw.strip()).strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        key = " ".join(key.split())
        if sep and key == "link up count":
            try:
                up_count = int(value.strip())
            except ValueError:
                raise ToolOutputError(f"{source}: link up count is {value.strip()!r}, expected a number") from None
            if not 0 <= up_count < 1 << 64:
                raise ToolOutputError(f"{source}: link up count is {up_count}, not a count")
            seen_header = True
            continue
        if sep and key in ("current time", "link change records"):
            seen_header = True
            continue
        m = _CHANGE.match(line)
        if m is None:
            raise ToolOutputError(f"{source}: line {line[:60]!r} is neither a link counter nor a LINK UP/DOWN record")
        changes.append(LinkChange(_when(m.group(1), source), m.group(2) == "UP", " ".join(m.group(1).split())))
    if not seen_header:
        raise ToolOutputError(f"{source}: no 'link up count' line")
    return LinkStat(up_count, changes)


def parse_stat(text: str, *, source: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.endswith(":"):
            continue  # "packet statistics:"
        key, sep, value = line.partition(":")
        if not sep:
            raise ToolOutputError(f"{source}: line {line[:60]!r} is not 'name:number'")
        try:
            number = int(value.strip())
        except ValueError:
            raise ToolOutputError(f"{source}: {key.strip()} is {value.strip()!r}, expected a number") from None
        if not 0 <= number < 1 << 64:  # the tool's counters are u64; -1 would be a counter run backwards
            raise ToolOutputError(f"{source}: {key.strip()} is {number}, not a counter (0 to 2^64-1)")
        out[key.strip()] = number
    if not out:
        raise ToolOutputError(f"{source}: no counters")
    return out


def parse_status_line(text: str, key: str, *, source: str) -> str:
    """``fec mode: …`` / ``net health status: …``: the value after the key."""
    for raw in text.splitlines():
        k, sep, value = raw.partition(":")
        if sep and " ".join(k.split()).lower() == key:
            return value.strip()
    raise ToolOutputError(f"{source}: no '{key}:' line; it starts {text.strip()[:40]!r}")
