"""Build SunSpec register images from the model definitions (test data for the modbus plugin).

No recorded SunSpec device exists in the fixtures, so a test device's registers are built from
the SunSpec Alliance's definitions: each point gets the value the test gives it (engineering
units for scaled points, raw numbers for enums/bitfields, text for strings), encoded with the
scale factors the test gives, and every other point its type's "not implemented" value.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from agent.plugins.modbus.sunspec import _NOT_IMPLEMENTED, END, SUNS, GroupDef, ModelDef

Values = Mapping[str, Any]


def _encode_int(value: int, size: int) -> list[int]:
    value &= (1 << (16 * size)) - 1  # two's complement for negatives
    return [(value >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]


def _sf(name: str, values: Values, scope: Sequence[Values]) -> int:
    """The scale factor a test gave; none given: the value is written as is (and the scale
    factor register reads "not implemented")."""
    for v in (values, *reversed(scope)):
        if name in v:
            return int(v[name])
    return 0


def group_regs(g: GroupDef, values: Values, groups: Mapping[str, Sequence[tuple[Values, Mapping[str, Any]]]],
               scope: Sequence[Values] = ()) -> list[int]:
    regs: list[int] = []
    for p in g.points:
        if p.name not in values:
            if p.type == "string":
                regs += [0] * p.size
            elif p.type == "float32":
                regs += [0x7FC0, 0]
            else:
                sentinel = _NOT_IMPLEMENTED.get(p.type)
                regs += _encode_int(0x8000 if sentinel is None else sentinel, p.size)
            continue
        v = values[p.name]
        if p.type == "string":
            data = str(v).encode()[: 2 * p.size].ljust(2 * p.size, b"\0")
            regs += list(struct.unpack(f">{p.size}H", data))
        elif p.type == "float32":
            regs += list(struct.unpack(">2H", struct.pack(">f", float(v))))
        else:
            sf = _sf(p.sf, values, scope) if p.sf else 0
            raw = int(v) if sf == -0x8000 else round(v / 10**sf)  # -32768: the SF itself "not implemented"
            regs += _encode_int(raw, p.size)
    for sub in g.groups:
        for sub_values, sub_groups in groups.get(sub.name, []):
            regs += group_regs(sub, sub_values, sub_groups, [*scope, values])
    return regs


def model_regs(defn: ModelDef, values: Values, groups: Mapping[str, Sequence[tuple[Values, Mapping[str, Any]]]]
               | None = None) -> list[int]:
    body = group_regs(defn.group, {**values, "ID": defn.id, "L": 0}, groups or {})
    body[1] = len(body) - 2
    return body


def image(models: Sequence[list[int]]) -> list[int]:
    out = list(SUNS)
    for m in models:
        out += m
    return [*out, END, 0]
