"""InfluxDB line protocol: the other wire format fleetmon speaks, on both sides.

It lives beside the fleetmon.v1 schema because the agent (``--format influx``) and the collector
(its InfluxDB sinks) must write byte-identical lines, and ``proto`` is the one package they share.

Escaping follows the line-protocol reference ("Special characters"): the measurement escapes
comma and space; tag keys, tag values and field keys escape comma, equals sign and space; string
field values are double-quoted with backslash and double quote escaped. Line protocol cannot carry
a newline in a name or a value ("Line protocol does not support the newline character \\n in tag
or field values"), so CR and LF are replaced by a space.

Backslashes are where servers disagree, so the encoder takes a ``dialect``:

``influxdb1`` (default): InfluxDB 1.x's parser (``models/points.go``, also behind 1.8's
    ``/api/v2/write``) keeps backslashes literal and only treats ``\\,`` ``\\=`` ``\\ `` as
    escapes, so ``c\\d`` round-trips as written. It cannot represent a backslash at the end of
    a name (it would escape the delimiter after it: the server refuses the whole request), nor,
    in a measurement or field key, a backslash right before a comma, space or equals sign (the
    measurement loses it; the field key makes the line unparsable). Tag keys and values do keep
    ``a\\,b``. Those unrepresentable backslashes are dropped (``C:\\`` is written ``C:``), as
    newlines are replaced, rather than losing the point; checked against influxd 1.6 in
    ``tests/test_lineprotocol.py``.
``influxdb2``: InfluxDB 2.x/3.x and VictoriaMetrics read two contiguous backslashes as one
    literal backslash, so every backslash in a name is doubled, and any name round-trips.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Literal

Dialect = Literal["influxdb1", "influxdb2"]
DIALECTS: tuple[Dialect, ...] = ("influxdb1", "influxdb2")

_NEWLINES = str.maketrans({"\n": " ", "\r": " "})
_MEAS = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


_LINE_START = "#\t\0"
_V1_BEFORE_SPECIAL = re.compile(r"\\+(?=[ ,=]|$)")


def _prepare(text: str, dialect: Dialect, *, tag: bool) -> str:
    text = text.translate(_NEWLINES)
    if dialect == "influxdb2":
        return text.replace("\\", "\\\\")
    # influxdb1: drop the backslashes 1.x cannot carry (see module doc).
    if tag:
        return text.rstrip("\\")
    return _V1_BEFORE_SPECIAL.sub("", text)


def escape_measurement(name: str, dialect: Dialect = "influxdb1") -> str:
    # A line starting with '#' is a comment (the point would be dropped without a word), and a
    # leading tab or NUL is skipped as blank by the parsers: neither can start a measurement.
    return _prepare(name, dialect, tag=False).lstrip(_LINE_START).translate(_MEAS)


def escape_key(text: str, dialect: Dialect = "influxdb1") -> str:
    """Tag keys and tag values."""
    return _prepare(text, dialect, tag=True).translate(_KEY)


def escape_field_key(text: str, dialect: Dialect = "influxdb1") -> str:
    return _prepare(text, dialect, tag=False).translate(_KEY)


def escape_string_field(text: str) -> str:
    """A string field value, quoted. Both dialects unescape ``\\\\`` and ``\\"`` inside quotes."""
    text = text.translate(_NEWLINES)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_float(value: float) -> str | None:
    """A float field; ``None`` for NaN/±Inf, which line protocol cannot carry.

    The shortest digits that read back as the same float (``repr``'s), laid out as the
    collector's column encoder writes them (orjson's Ryu formatter, ~3x faster than ``repr``;
    ``collector/storage/lines.py``): positional from 1e-5 up to 1e16, otherwise scientific with
    the exponent unpadded (``2.5e-7``, ``1e+16``). ``repr`` differs only for exponents -5 to -9.
    """
    value = float(value)
    if not math.isfinite(value):
        return None
    text = repr(value)
    return _unpad_exponent(text) if "e-0" in text else text


def _unpad_exponent(text: str) -> str:
    """``repr``'s ``1.5e-05`` / ``2.5e-07`` as ``0.000015`` / ``2.5e-7``."""
    mantissa, exponent = text.split("e")
    if exponent != "-05":
        return f"{mantissa}e{int(exponent)}"
    sign = "-" if mantissa.startswith("-") else ""
    return f"{sign}0.0000{mantissa.lstrip('-').replace('.', '')}"


def _field_text(value: float | int | str | bool) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return format_float(value)  # None: NaN/Inf omitted (e.g. 0 mW as dBm)
    return escape_string_field(str(value))


def series_prefix(measurement: str, tags: Iterable[tuple[str, str]], dialect: Dialect) -> str | None:
    meas = escape_measurement(measurement, dialect)
    if not meas:
        return None
    tag_parts = []
    for key, value in sorted(tags):
        ekey, evalue = escape_key(key, dialect), escape_key(value, dialect)
        if ekey and evalue:
            tag_parts.append(f",{ekey}={evalue}")
    return meas + "".join(tag_parts)


def encode_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, float | int | str | bool],
    ts_ns: int,
    *,
    dialect: Dialect = "influxdb1",
) -> str | None:
    """One line, tags sorted (InfluxDB's recommendation); None when no field is representable.

    Tags with an empty key or value are left out (line protocol has no empty tag value; an absent
    tag reads back as empty in InfluxQL). A field whose key is empty after escaping is left out.
    """
    prefix = series_prefix(measurement, tags.items(), dialect)
    if prefix is None:
        return None
    parts = []
    for key, value in fields.items():
        text = _field_text(value)
        ekey = escape_field_key(key, dialect)
        if text is None or not ekey:
            continue
        parts.append(f"{ekey}={text}")
    if not parts:
        return None
    return f"{prefix} {','.join(parts)} {int(ts_ns)}"


class LineEncoder:
    """:func:`encode_line` for many lines of the same series, with the escaped series prefix
    (measurement + sorted tags) and field keys remembered: a fleet writes the same series every
    interval, and escaping dominated the sink's cost (``bench/bench_sinks.py``). Output is
    byte-identical to :func:`encode_line`. The caches are dropped when they reach ``max_cache``
    entries, so label churn cannot grow them without bound."""

    def __init__(self, dialect: Dialect = "influxdb1", max_cache: int = 200_000) -> None:
        self.dialect = dialect
        self.max_cache = max_cache
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str | None] = {}
        self._fields: dict[str, str] = {}

    def prefix(self, measurement: str, tags: tuple[tuple[str, str], ...]) -> str | None:
        key = (measurement, tags)
        try:
            return self._prefixes[key]
        except KeyError:
            pass
        if len(self._prefixes) >= self.max_cache:
            self._prefixes.clear()
        prefix = self._prefixes[key] = series_prefix(measurement, tags, self.dialect)
        return prefix

    def field_key(self, key: str) -> str:
        try:
            return self._fields[key]
        except KeyError:
            pass
        if len(self._fields) >= self.max_cache:
            self._fields.clear()
        ekey = self._fields[key] = escape_field_key(key, self.dialect)
        return ekey

    def line(self, measurement: str, tags: tuple[tuple[str, str], ...],
             fields: Mapping[str, float | int | str | bool], ts_ns: int) -> str | None:
        prefix = self.prefix(measurement, tags)
        if prefix is None:
            return None
        known = self._fields
        isfinite = math.isfinite
        parts = []
        for key, value in fields.items():
            ekey = known.get(key)
            if ekey is None:
                ekey = self.field_key(key)
            if not ekey:
                continue
            if type(value) is float:  # the common case first: plain floats
                if isfinite(value):
                    text = repr(value)
                    parts.append(f"{ekey}={_unpad_exponent(text) if 'e-0' in text else text}")
            else:
                text = _field_text(value)
                if text is not None:
                    parts.append(f"{ekey}={text}")
        if not parts:
            return None
        return f"{prefix} {','.join(parts)} {int(ts_ns)}"


def encode_points(
    points: Iterable[tuple[str, Mapping[str, str], str, float, int]],
    *,
    dialect: Dialect = "influxdb1",
) -> list[str]:
    """Group (measurement, tags, field, value, ts_ns) so one device and instant share a line."""
    grouped: dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, float | int | str | bool]] = {}
    for measurement, tags, field, value, ts_ns in points:
        key = (measurement, tuple(sorted(tags.items())), ts_ns)
        grouped.setdefault(key, {})[field] = value
    encoder = LineEncoder(dialect)
    lines = []
    for (measurement, tags, ts_ns), fields in grouped.items():
        line = encoder.line(measurement, tags, fields, ts_ns)
        if line is not None:
            lines.append(line)
    return lines
