"""InfluxDB line protocol: the other wire format fleetmon speaks, on both sides.

It lives beside the fleetmon.v1 schema because the agent (``--format influx``) and the collector
(its InfluxDB sinks) must write byte-identical lines, and ``proto`` is the one package they share.

Escaping per the line-protocol reference: measurement escapes comma and space; tag keys, tag
values and field keys escape comma, equals sign and space; string field values are double-quoted
with backslash and double quote escaped. Newlines cannot be represented in names and are
replaced by a space. Backslashes elsewhere are literal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ ", "\r": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\ ", "\r": r"\ "})


def escape_measurement(name: str) -> str:
    return name.translate(_MEAS)


def escape_key(text: str) -> str:
    """Tag keys, tag values and field keys."""
    return text.translate(_KEY)


def escape_string_field(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_float(value: float) -> str:
    """A float field; ``None`` for NaN/±Inf, which line protocol cannot carry."""
    return repr(float(value))


def encode_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, float | int | str | bool],
    ts_ns: int,
) -> str | None:
    """One line, tags sorted (InfluxDB's recommendation); None when no field is representable."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = f"{value}i"
        elif isinstance(value, float):
            if not math.isfinite(value):
                continue  # line protocol has no NaN/Inf: omit the field (e.g. 0 mW as dBm)
            text = repr(value)
        else:
            text = escape_string_field(str(value))
        parts.append(f"{escape_key(key)}={text}")
    if not parts:
        return None
    tag_text = "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v != "")
    return f"{escape_measurement(measurement)}{tag_text} {','.join(parts)} {ts_ns}"


def encode_points(
    points: Iterable[tuple[str, Mapping[str, str], str, float, int]],
) -> list[str]:
    """Group (measurement, tags, field, value, ts_ns) so one device and instant share a line."""
    grouped: dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, float | int | str | bool]] = {}
    for measurement, tags, field, value, ts_ns in points:
        key = (measurement, tuple(sorted(tags.items())), ts_ns)
        grouped.setdefault(key, {})[field] = value
    lines = []
    for (measurement, tags, ts_ns), fields in grouped.items():
        line = encode_line(measurement, dict(tags), fields, ts_ns)
        if line is not None:
            lines.append(line)
    return lines
