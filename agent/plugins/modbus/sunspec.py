"""SunSpec model definitions and a decoder driven by them (pure: registers in, values out).

The definitions are the SunSpec Alliance's JSON models (``model_<id>.json``: a group of points,
each with a type and size in 16-bit registers, an optional scale-factor point, and repeating
sub-groups whose count is a number, the name of a point, or 0 for "as many as fit in the
model's length"). Nothing model-specific lives here: any model the definitions describe decodes.

Rules from the SunSpec Information Model Specification (v1.1, "Point types" and "Unimplemented
values"): a point holding its type's *not implemented* value is absent; a scaled value is
``raw x 10^sf`` and is absent when its scale factor is not implemented; strings are NUL padded;
``acc`` (accumulator) points are monotonic counters whose 0 means not implemented.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import PluginError


class SunSpecError(PluginError):
    """A register image or a model definition cannot be decoded; the message names the model."""


#: Registers per type for types whose size is implied; the definitions give `size` anyway.
_NOT_IMPLEMENTED: dict[str, int | None] = {
    "int16": 0x8000, "uint16": 0xFFFF, "acc16": 0, "enum16": 0xFFFF, "bitfield16": 0xFFFF,
    "sunssf": 0x8000, "count": 0, "pad": None,
    "int32": 0x80000000, "uint32": 0xFFFFFFFF, "acc32": 0, "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF, "ipaddr": 0,
    "int64": 0x8000000000000000, "uint64": 0xFFFFFFFFFFFFFFFF, "acc64": 0,
    "bitfield64": 0xFFFFFFFFFFFFFFFF,
}
_SIGNED = {"int16": 16, "sunssf": 16, "int32": 32, "int64": 64}
NUMERIC = set(_NOT_IMPLEMENTED) - {"pad", "ipaddr"}


@dataclass(frozen=True)
class Point:
    name: str
    type: str
    size: int
    sf: str = ""
    units: str = ""
    symbols: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class GroupDef:
    name: str
    points: tuple[Point, ...]
    groups: tuple[GroupDef, ...] = ()
    #: 1 for the model's top group; an int, a point name, or 0 ("fill the model") for repeats.
    count: int | str = 1

    @property
    def size(self) -> int:
        return sum(p.size for p in self.points)


@dataclass(frozen=True)
class ModelDef:
    id: int
    group: GroupDef

    @property
    def fixed_length(self) -> int:
        """Registers of the fixed part after ID and L (what L reads when no group repeats)."""
        return self.group.size - 2


def _group(raw: dict, top: bool) -> GroupDef:
    points = tuple(
        Point(p["name"], p["type"], int(p["size"]), p.get("sf", ""), p.get("units", ""),
              tuple((s["name"], int(s["value"])) for s in p.get("symbols", [])))
        for p in raw.get("points", [])
    )
    count: int | str = 1 if top else raw.get("count", 1)
    if isinstance(count, str) and count.isdigit():
        count = int(count)
    return GroupDef(raw["name"], points, tuple(_group(g, False) for g in raw.get("groups", [])), count)


def load_model(path: Path) -> ModelDef:
    try:
        data = json.loads(path.read_text())
        return ModelDef(int(data["id"]), _group(data["group"], True))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SunSpecError(f"{path}: not a SunSpec model definition ({err})") from err


def load_models(folder: Path) -> dict[int, ModelDef]:
    models = {}
    for path in sorted(folder.glob("model_*.json")):
        m = load_model(path)
        models[m.id] = m
    if not models:
        raise SunSpecError(f"{folder}: no SunSpec model definitions (model_<id>.json) found")
    return models


# --- values ---------------------------------------------------------------------------------


@dataclass
class GroupValues:
    """Decoded points of one group instance: engineering values (scaled), raw enums/bitfields,
    strings; an unimplemented point is absent. ``groups`` holds repeated sub-group instances."""

    values: dict[str, float | int | str] = field(default_factory=dict)
    groups: dict[str, list[GroupValues]] = field(default_factory=dict)
    points: dict[str, Point] = field(default_factory=dict)


def _raw(regs: list[int], start: int, size: int) -> int:
    v = 0
    for r in regs[start:start + size]:
        v = (v << 16) | (r & 0xFFFF)
    return v


def _string(regs: list[int], start: int, size: int) -> str | None:
    data = b"".join(struct.pack(">H", r & 0xFFFF) for r in regs[start:start + size])
    text = data.split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()
    return text or None


def _decode_point(p: Point, regs: list[int], start: int) -> int | float | str | None:
    if p.type == "string":
        return _string(regs, start, p.size)
    if p.type == "float32":
        value = struct.unpack(">f", struct.pack(">I", _raw(regs, start, 2)))[0]
        return None if math.isnan(value) else value
    if p.type not in _NOT_IMPLEMENTED or p.type == "pad":
        return None
    raw = _raw(regs, start, p.size)
    if raw == _NOT_IMPLEMENTED[p.type]:
        return None
    bits = _SIGNED.get(p.type)
    if bits and raw >= 1 << (bits - 1):
        raw -= 1 << bits
    return raw


def _decode_group(g: GroupDef, regs: list[int], offset: int, end: int, *, model: int,
                  scope: list[GroupValues]) -> tuple[GroupValues, int]:
    out = GroupValues(points={p.name: p for p in g.points})
    raw_values: dict[str, int | float | str] = {}
    pos = offset
    for p in g.points:
        if pos + p.size > end:
            raise SunSpecError(f"model {model}: point {g.name}.{p.name} at register +{pos} runs past the "
                               f"model's length ({end} registers)")
        v = _decode_point(p, regs, pos)
        if v is not None:
            raw_values[p.name] = v
        pos += p.size
    chain = [*scope, GroupValues(values=raw_values)]
    for name, raw in raw_values.items():
        p = out.points[name]
        if p.sf and isinstance(raw, (int, float)):
            sf = _lookup_sf(p.sf, chain)
            if sf is None or not -10 <= sf <= 10:
                # Not implemented, or outside the specification's range (sunssf: -10..10; 32767
                # would make a 32768-digit number): the value cannot be known.
                continue
            out.values[name] = raw * 10**sf if sf >= 0 else raw / 10**-sf
        else:
            out.values[name] = raw
    for sub in g.groups:
        count = _count(sub, chain, model)
        instances: list[GroupValues] = []
        if count == 0 and sub.count == 0:  # repeat to the end of the model
            while sub.size and pos + sub.size <= end:
                inst, pos = _decode_group(sub, regs, pos, end, model=model, scope=[*scope, out])
                instances.append(inst)
        else:
            for _ in range(count):
                inst, pos = _decode_group(sub, regs, pos, end, model=model, scope=[*scope, out])
                instances.append(inst)
        out.groups[sub.name] = instances
    return out, pos


def _lookup_sf(name: str, chain: list[GroupValues]) -> int | None:
    for g in reversed(chain):
        v = g.values.get(name)
        if isinstance(v, int):
            return v
        if name in g.points or name in g.values:
            return None
    if name.lstrip("-").isdigit():  # a literal scale factor in the definition
        return int(name)
    return None


def _count(sub: GroupDef, chain: list[GroupValues], model: int) -> int:
    if isinstance(sub.count, int):
        return sub.count
    for g in reversed(chain):
        v = g.values.get(sub.count)
        if isinstance(v, int):
            return v
    raise SunSpecError(f"model {model}: group {sub.name} repeats {sub.count} times, but {sub.count} "
                       "is not implemented")


def decode_model(defn: ModelDef, regs: list[int]) -> GroupValues:
    """Decode one model's registers, starting at its ID register (``regs[0]`` = ID, ``regs[1]`` = L)."""
    if len(regs) < 2:
        raise SunSpecError(f"model {defn.id}: {len(regs)} registers, not even the ID and length")
    length = regs[1]
    if length + 2 > len(regs):
        raise SunSpecError(f"model {defn.id}: length {length} but only {len(regs) - 2} registers read")
    values, _ = _decode_group(defn.group, regs, 0, length + 2, model=defn.id, scope=[])
    return values


def symbol(point: Point, value: int) -> str | None:
    for name, v in point.symbols:
        if v == value:
            return name
    return None


def bits_set(point: Point, value: int) -> dict[str, bool]:
    """Each named bit of a bitfield point: set or not."""
    return {name: bool(value >> bit & 1) for name, bit in point.symbols}


# --- the device's model chain -------------------------------------------------------------------

SUNS = (0x5375, 0x6E53)  # "SunS"
END = 0xFFFF



@dataclass(frozen=True)
class ModelHeader:
    id: int
    length: int
    address: int  # register address of the model's ID register
