"""Parse Huawei ``npu-smi`` output: pure functions, text in, dataclasses out.

Three shapes:

- ``npu-smi info``: a box-drawn table, two rows per chip. Its columns changed across versions
  (checked against npu-smi 20.2.0 and 21.0.4 on Atlas 800 3000 / Ascend 310, 22.0.3.1 and
  24.1.RC2 on Atlas 800 9010 / Ascend 910A), so the column names are read from the two header
  rows and the values matched to them by position, never by a fixed offset;
- ``npu-smi info -m``: the NPU/chip/logic-id map (``-`` logic id for the board MCU);
- ``npu-smi info -t <query> -i <npu> [-c <chip>]``: ``Key : value`` lines. Chip sections are
  paragraphs; a paragraph belongs to the chip its ``Chip ID`` line names, which ``-t common``
  prints first and ``-t usages``/``-t ecc`` print last (gpustack's 310P/910B literals), and a
  ``Chip Name : mcu`` paragraph is the board's management controller.

Values npu-smi cannot read print as ``NA`` (or ``-``): they are ``None`` here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from agent.toolrun import ToolOutputError

_VERSION_RE = re.compile(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)")
# A "used / total" pair is one value; anything else is one whitespace-separated token.
_TOKEN_RE = re.compile(r"[^\s/]+\s*/\s*[^\s/]+|\S+")
_NA = {"NA", "N/A", "-", ""}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(text: str | None, what: str, source: str) -> float | None:
    if text is None or text.strip().upper() in _NA:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ToolOutputError(f"{source}: {what} is {text!r}, expected a number") from None
    return value if math.isfinite(value) else None  # float() reads "nan"/"inf": not a reading


def _pair(text: str | None, what: str, source: str) -> tuple[float | None, float | None]:
    if text is None:
        return None, None
    used, sep, total = text.partition("/")
    if not sep:
        raise ToolOutputError(f"{source}: {what} is {text!r}, expected 'USED / TOTAL'")
    return _number(used.strip(), what, source), _number(total.strip(), what, source)


@dataclass
class TableChip:
    """One chip as the ``npu-smi info`` table shows it (two rows)."""

    npu_id: int
    chip_id: int
    name: str
    health: str
    bus_id: str = ""
    device_id: int | None = None  # "Device" column of the 310 tables
    power_watts: float | None = None
    temperature: float | None = None
    aicore_percent: float | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    hbm_used_mb: float | None = None
    hbm_total_mb: float | None = None
    hugepages_used: float | None = None
    hugepages_total: float | None = None


@dataclass
class InfoTable:
    tool_version: str
    chips: list[TableChip]


def parse_info_table(text: str, *, source: str = "npu-smi info") -> InfoTable:
    version = ""
    head_a: list[list[str]] | None = None
    head_b: list[list[str]] | None = None
    data: list[list[str]] = []
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("|"):
            continue  # box borders "+---+", "+===+", and anything outside the table
        m = _VERSION_RE.search(s)
        if m and not version:
            version = m.group(2)
            continue
        cells = _cells(s)
        first = cells[0].split()
        if first[:2] == ["NPU", "Name"]:
            head_a = [c.split() for c in cells]
            continue
        if first[:1] == ["Chip"] and head_a is not None and head_b is None:
            head_b = [c.split() for c in cells]
            continue
        if first[:2] == ["NPU", "Chip"] or "Process id" in s or s.startswith("| No running processes"):
            break  # the process table follows the device table (24.1.RC2)
        if head_b is not None:
            data.append(cells)
    if head_a is None or head_b is None:
        raise ToolOutputError(
            f"{source}: no 'NPU Name | Health' table header found; it starts {text.strip()[:40]!r}"
        )
    if len(data) % 2:
        raise ToolOutputError(f"{source}: the table ends in the middle of a chip (odd number of rows: truncated?)")
    chips = [_chip(data[i], data[i + 1], head_a, head_b, source) for i in range(0, len(data), 2)]
    return InfoTable(version, chips)


def _row_values(cells: list[str], heads: list[list[str]], where: str, source: str) -> dict[str, str]:
    if len(cells) != len(heads):
        raise ToolOutputError(f"{source}: {where} has {len(cells)} cells, the header has {len(heads)}")
    out: dict[str, str] = {}
    for cell, names in zip(cells, heads, strict=True):
        tokens = _TOKEN_RE.findall(cell)
        if len(tokens) > len(names):
            raise ToolOutputError(f"{source}: {where} cell {cell!r} has more values than columns {names}")
        out.update(zip(names, tokens, strict=False))
    return out


def _chip(a: list[str], b: list[str], head_a: list[list[str]], head_b: list[list[str]], source: str
          ) -> TableChip:
    va = _row_values(a, head_a, f"row {' | '.join(a)!r}", source)
    vb = _row_values(b, head_b, f"row {' | '.join(b)!r}", source)
    try:
        npu_id, chip_id = int(va["NPU"]), int(vb["Chip"])
        device = int(vb["Device"]) if "Device" in vb else None
    except (KeyError, ValueError) as err:
        raise ToolOutputError(f"{source}: chip row {' | '.join(a)!r} has no NPU/Chip number ({err})") from err
    where = f"NPU {npu_id} chip {chip_id}"
    chip = TableChip(npu_id=npu_id, chip_id=chip_id, name=va.get("Name", ""), health=va.get("Health", ""),
                     bus_id=vb.get("Bus-Id", ""), device_id=device)
    chip.power_watts = _number(va.get("Power(W)"), f"{where} Power(W)", source)
    chip.temperature = _number(va.get("Temp(C)"), f"{where} Temp(C)", source)
    chip.aicore_percent = _number(vb.get("AICore(%)"), f"{where} AICore(%)", source)
    chip.memory_used_mb, chip.memory_total_mb = _pair(vb.get("Memory-Usage(MB)"), f"{where} Memory-Usage", source)
    chip.hbm_used_mb, chip.hbm_total_mb = _pair(vb.get("HBM-Usage(MB)"), f"{where} HBM-Usage", source)
    chip.hugepages_used, chip.hugepages_total = _pair(
        va.get("Hugepages-Usage(page)"), f"{where} Hugepages-Usage", source
    )
    return chip


@dataclass(frozen=True, slots=True)
class ChipMapping:
    npu_id: int
    chip_id: int
    logic_id: int | None  # None for the board MCU ("-")
    name: str  # "Ascend 910A", "MiniD" (the 310's internal name), "Mcu"


_MAP_ROW_RE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+|-)\s+(\S.*?)\s*$")


def parse_mapping(text: str, *, source: str = "npu-smi info -m") -> list[ChipMapping]:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.split()[:2] == ["NPU", "ID"]), None)
    if start is None:
        raise ToolOutputError(f"{source}: no 'NPU ID  Chip ID  Chip Logic ID  Chip Name' header found")
    out = []
    for line in lines[start + 1:]:
        m = _MAP_ROW_RE.match(line)
        if m is None:
            continue  # blank or trailing lines
        try:
            logic = None if m.group(3) == "-" else int(m.group(3))
            out.append(ChipMapping(int(m.group(1)), int(m.group(2)), logic, m.group(4)))
        except ValueError:  # past int()'s 4300 digits
            raise ToolOutputError(f"{source}: chip row {line.strip()[:60]!r} has a number out of range") from None
    if not out:
        raise ToolOutputError(f"{source}: header but no chip rows (truncated?)")
    return out


@dataclass
class KvQuery:
    """``npu-smi info -t <query> -i N``: NPU-level fields, per-chip fields, the MCU's fields."""

    npu: dict[str, str] = field(default_factory=dict)
    chips: dict[int, dict[str, str]] = field(default_factory=dict)
    mcu: dict[str, str] = field(default_factory=dict)


def _paragraphs(text: str, source: str) -> list[dict[str, str]]:
    paras: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: tuple[dict[str, str], str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if current:
                paras.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep and not key.strip() and last is not None:
            # A value continued on its own line (`-t health` lists one Error Information entry
            # per code: "                               : node type=adda, ..."), even after a blank line.
            para, name = last
            para[name] = "; ".join(v for v in (para[name], value.strip()) if v)
            continue
        if not sep or not key.strip():
            raise ToolOutputError(f"{source}: line {line[:60]!r} is not 'Key : value'")
        name = " ".join(key.split())
        current[name] = value.strip()
        last = (current, name)
    if current:
        paras.append(current)
    return paras


def parse_kv_query(text: str, *, source: str) -> KvQuery:
    paras = _paragraphs(text, source)
    if not paras:
        raise ToolOutputError(f"{source}: empty output")
    q = KvQuery()
    for p in paras:
        if "Chip ID" in p:
            try:
                chip = int(p["Chip ID"])
            except ValueError:
                raise ToolOutputError(f"{source}: Chip ID is {p['Chip ID']!r}, expected a number") from None
            q.chips[chip] = p
        elif p.get("Chip Name", "").lower() == "mcu":
            q.mcu = p
        else:
            q.npu.update(p)
    return q


@dataclass(frozen=True, slots=True)
class Health:
    status: str  # OK, Warning, Alarm, Critical, ...
    error_codes: tuple[str, ...]
    information: str


def parse_health(text: str, *, source: str) -> Health:
    """``npu-smi info -t health -i N -c C``: ``Health Status``, ``Error Code``, ``Error Information``."""
    fields: dict[str, str] = {}
    for p in _paragraphs(text, source):
        fields.update(p)
    status = fields.get("Health Status") or fields.get("Health")
    if not status:
        raise ToolOutputError(f"{source}: no 'Health Status' line")
    codes_text = fields.get("Error Code", "NA")
    codes = () if codes_text.upper() in _NA else tuple(codes_text.split())
    info = fields.get("Error Information", "NA")
    return Health(status, codes, "" if info.upper() in _NA else info)
