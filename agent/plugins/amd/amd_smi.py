"""Parse ``amd-smi list --json`` and ``amd-smi metric --json`` (ROCm 6.x/7.x) into readings.

``amd-smi metric --json`` is a list of per-GPU objects (ROCm 6.0-6.3) or ``{"gpu_data": [...]}``
(ROCm 6.4+). A value is a bare number, ``{"value": v, "unit": u}``, or ``"N/A"`` when the ASIC
does not report it (omitted here). Only amd-smi has ECC per RAS block, energy, XGMI errors
and the MI300 violation status; rocm-smi's JSON has none of them.

Note: no captured amd-smi output is in ``shared/fixtures``; the field names follow AMD's
amd-smi documentation and CHANGELOG (``ecc_blocks``, ``throttle.*_violation_status`` from ROCm
6.3). The tests use documents built in that shape and say so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from agent.plugins.accel import AccelReading, EccCount, pcie_generation
from agent.toolrun import ToolOutputError

_MIB = 1 << 20
# amd-smi's "MB" for memory is bytes // (1024 * 1024) in its source, i.e. MiB.
_BYTES: dict[str, float] = {"B": 1, "KB": 1 << 10, "MB": _MIB, "GB": 1 << 30}
_JOULES = {"J": 1.0, "mJ": 1e-3, "uJ": 1e-6}


@dataclass(frozen=True, slots=True)
class AmdSmiIdentity:
    gpu: str
    bdf: str = ""
    uuid: str = ""
    model: str = ""


def _load(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # also a 4300-digit number, or nesting past the stack
        why = f"{err.msg} at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else err
        raise ToolOutputError(f"{source}: output is not JSON ({why}); it starts {text.strip()[:40]!r}") from err


def _gpu_list(doc: Any, source: str) -> list[dict[str, Any]]:
    if isinstance(doc, dict) and isinstance(doc.get("gpu_data"), list):
        doc = doc["gpu_data"]  # ROCm 6.4+ wraps the list
    if not isinstance(doc, list) or not all(isinstance(g, dict) and "gpu" in g for g in doc):
        raise ToolOutputError(f"{source}: expected a list of objects with a 'gpu' key")
    return doc


def parse_amd_smi_list(text: str, *, source: str = "amd-smi list --json") -> dict[str, AmdSmiIdentity]:
    out: dict[str, AmdSmiIdentity] = {}
    for g in _gpu_list(_load(text, source), source):
        gpu = str(g["gpu"])
        out[gpu] = AmdSmiIdentity(
            gpu=gpu,
            bdf=_text(g.get("bdf")),
            uuid=_text(g.get("uuid")),
            model=_text(g.get("market_name") or (g.get("asic") or {}).get("market_name")),
        )
    return out


def _text(v: Any) -> str:
    if v is None or (isinstance(v, str) and v.strip().upper().startswith("N/A")):
        return ""
    if isinstance(v, (dict, list)):  # not a name: str() of it would become a label
        return ""
    return str(v).strip()


class _Gpu:
    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source
        self.name = f"gpu {data.get('gpu')}"

    def get(self, *path: str) -> Any:
        node: Any = self.data
        for key in path:
            if not isinstance(node, dict):
                return None
            # Key case changed between releases (GFX_0 / gfx_0).
            node = node.get(key, node.get(key.upper(), node.get(key.lower())))
        return node

    def number(self, *path: str, units: dict[str, float] | None = None) -> float | None:
        raw = self.get(*path)
        unit = ""
        if isinstance(raw, dict) and "value" in raw:
            unit = str(raw.get("unit", ""))
            raw = raw["value"]
        if raw is None or (isinstance(raw, str) and (not raw.strip() or raw.strip().upper().startswith("N/A"))):
            return None
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ToolOutputError(f"{self.source}: {self.name} {'.'.join(path)} is {raw!r}, expected a number")
        try:
            value = float(raw)
        except (ValueError, OverflowError):  # OverflowError: an integer past a float's range
            raise ToolOutputError(
                f"{self.source}: {self.name} {'.'.join(path)} is {raw!r}, expected a number"
            ) from None
        if not math.isfinite(value):  # NaN/Infinity (JSON tokens Python reads): not reported
            return None
        if units is not None and unit:
            if unit not in units:
                raise ToolOutputError(f"{self.source}: {self.name} {'.'.join(path)} has unknown unit {unit!r}")
            value *= units[unit]
        return value


def _ratio(pct: float | None) -> float | None:
    return None if pct is None else pct / 100.0


def _hz(mhz: float | None) -> float | None:
    return None if mhz is None else mhz * 1e6  # amd-smi reports MHz


def _active(v: Any) -> bool | None:
    if isinstance(v, dict):
        v = v.get("value")
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return bool(v)
    if isinstance(v, str):
        word = v.strip().upper().replace("_", " ")
        if word in ("ACTIVE", "THROTTLED", "TRUE"):
            return True
        if word in ("NOT ACTIVE", "INACTIVE", "UNTHROTTLED", "FALSE"):
            return False
    return None


def parse_amd_smi_metric(
    text: str, identity: dict[str, AmdSmiIdentity] | None = None, *, source: str = "amd-smi metric --json"
) -> list[AccelReading]:
    identity = identity or {}
    readings = []
    for data in _gpu_list(_load(text, source), source):
        g = _Gpu(data, source)
        index = str(data["gpu"])
        ident = identity.get(index, AmdSmiIdentity(index))
        r = AccelReading(index=index, vendor="amd", kind="GPU", model=ident.model, uuid=ident.uuid)
        r.info = {"pci_bus": ident.bdf}
        r.utilization = _ratio(g.number("usage", "gfx_activity"))
        r.memory_utilization = _ratio(g.number("usage", "umc_activity"))
        r.memory_total_bytes = g.number("mem_usage", "total_vram", units=_BYTES)
        r.memory_used_bytes = g.number("mem_usage", "used_vram", units=_BYTES)
        edge = g.number("temperature", "edge")
        hotspot = g.number("temperature", "hotspot")
        r.temperature = edge if edge is not None else hotspot  # MI300: no edge sensor
        r.junction_temperature = hotspot
        r.memory_temperature = g.number("temperature", "mem")
        r.power_watts = g.number("power", "socket_power")
        if r.power_watts is None:
            r.power_watts = g.number("power", "average_socket_power")  # ROCm 6.0 name
        r.energy_joules = g.number("energy", "total_energy_consumption", units=_JOULES)
        r.sm_clock_hz = _hz(g.number("clock", "gfx_0", "clk"))
        r.memory_clock_hz = _hz(g.number("clock", "mem_0", "clk"))
        r.fan_ratio = _ratio(g.number("fan", "usage"))
        width = g.number("pcie", "width")
        speed = g.number("pcie", "speed")
        if speed is not None:
            gen = pcie_generation(speed)  # GT/s per lane
            r.pcie_generation = None if gen is None else float(gen)
        r.pcie_width = width
        r.pcie_replays = g.number("pcie", "replay_count")
        r.xgmi_errors = g.number("xgmi_err")
        for kind in ("correctable", "uncorrectable", "deferred"):
            total = g.number("ecc", f"total_{kind}_count")
            if total is not None:
                r.ecc.append(EccCount(kind, total))
        blocks = g.get("ecc_blocks")
        if isinstance(blocks, dict):
            for block in sorted(blocks):
                for kind in ("correctable", "uncorrectable", "deferred"):
                    value = g.number("ecc_blocks", block, f"{kind}_count")
                    if value is not None:
                        r.ecc.append(EccCount(kind, value, block=block))
        throttle = g.get("throttle")
        if isinstance(throttle, dict):
            for key, value in throttle.items():
                if key.endswith("_violation_status"):
                    state = _active(value)
                    if state is not None:
                        r.clock_events[key.removesuffix("_violation_status")] = state
        status = _active(g.get("power", "throttle_status"))
        if status is not None:
            r.clock_events["throttled"] = status
        readings.append(r)
    return readings
