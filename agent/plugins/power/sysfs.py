"""Kernel power sources under ``--sysfs-root``: RAPL (powercap), hwmon, power_supply, ACPI meter.

Reading (small functions returning ``{attribute: text}``) is apart from parsing (pure
functions turning those texts into readings in base units), so tests feed the parsers and the
whole source the captured trees in ``shared/fixtures/sysfs``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.model import Collection
from agent.plugins.power import metrics as m
from agent.plugins.power.source import Env, Source, SourceError

# ---------------------------------------------------------------------------------------------
# reading


def class_entries(class_dir: Path) -> list[tuple[str, Path]]:
    """The devices of a sysfs class, as (name, resolved directory), sorted by name.

    Entries are symlinks into ``devices/``. A tree checked out where symlinks are not
    supported (git with ``core.symlinks=false``, some archive tools) holds each link as a
    small file whose content is the link target; those are followed too, so captured trees
    work wherever they are unpacked.
    """
    try:
        names = sorted(p.name for p in class_dir.iterdir())
    except FileNotFoundError:
        return []
    except OSError as err:
        raise SourceError(f"cannot list {class_dir}: {err.strerror}") from err
    out = []
    for name in names:
        path = class_dir / name
        if path.is_dir():
            out.append((name, path.resolve()))
            continue
        target = _link_file_target(path)
        if target is not None:
            out.append((name, target))
    return out


def _link_file_target(path: Path) -> Path | None:
    try:
        if not path.is_file() or path.stat().st_size > 4096:
            return None
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("../") or "\n" in text or "\0" in text:  # NUL: no path (resolve() raises)
        return None
    target = (path.parent / text).resolve()
    return target if target.is_dir() else None


def read_attrs(directory: Path, names: Iterable[str]) -> tuple[dict[str, str], list[Path]]:
    """Read the named attribute files that exist: ({name: text}, [files we may not read]).

    Attributes that are absent are simply left out (unsupported, never invented); one the
    kernel refuses (EACCES, or EIO/ENODATA from a driver that cannot answer) is left out too,
    and a permission refusal is returned so the caller can say how to fix it.
    """
    values: dict[str, str] = {}
    denied: list[Path] = []
    for name in names:
        path = directory / name
        try:
            values[name] = path.read_text(errors="replace").strip()
        except PermissionError:
            denied.append(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue
        except OSError:
            # e.g. EIO/ENODATA: hwmon drivers return errors for sensors they cannot read now.
            continue
    return values, denied


def list_attrs(directory: Path, pattern: re.Pattern[str]) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir() if pattern.match(p.name))
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# parsing


def _int(text: str | None) -> int | None:
    """A sysfs number: the kernel prints s64/u64 values; beyond that it is not one (and a
    400-digit value would overflow the float conversion of the caller)."""
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if -(1 << 63) <= value < 1 << 64 else None


def _uint(text: str | None) -> int | None:
    """A u64 sysfs counter (RAPL energy): a negative value is not one."""
    value = _int(text)
    return value if value is not None and value >= 0 else None


def _scaled(text: str | None, divisor: int) -> float | None:
    """A sysfs integer in a sub-unit (µW, mV, …) → base unit; None when absent or not a number."""
    value = _int(text)
    return None if value is None else value / divisor


@dataclass
class RaplZone:
    zone: str  # sysfs directory name, unique: intel-rapl:0, intel-rapl:0:0
    name: str  # the zone's own name: package-0, core, dram, psys
    energy_uj: int | None
    max_energy_range_uj: int | None
    limits_uw: dict[str, int] = field(default_factory=dict)  # constraint name → power limit


_CONSTRAINT = re.compile(r"^constraint_(\d+)_(name|power_limit_uw)$")


def parse_rapl_zone(zone: str, attrs: Mapping[str, str]) -> RaplZone:
    limits: dict[str, int] = {}
    for key in attrs:
        mt = _CONSTRAINT.match(key)
        if mt and mt.group(2) == "power_limit_uw":
            limit = _uint(attrs[key])
            cname = attrs.get(f"constraint_{mt.group(1)}_name") or f"constraint_{mt.group(1)}"
            # 0 is what the kernel shows for a constraint nobody programmed (a disabled
            # subzone such as core): no limit, not a 0 W limit.
            if limit:
                limits[cname] = limit
    return RaplZone(
        zone=zone,
        name=attrs.get("name") or zone,
        energy_uj=_uint(attrs.get("energy_uj")),
        max_energy_range_uj=_uint(attrs.get("max_energy_range_uj")),
        limits_uw=limits,
    )


@dataclass
class HwmonReading:
    kind: str  # power, energy, in, curr
    sensor: str  # the sensor's label file, else its attribute stem (in0, power1)
    value: float  # base unit


@dataclass
class HwmonChip:
    chip: str
    device: str
    readings: list[HwmonReading]


_HWMON_ATTR = re.compile(r"^(power|energy|in|curr)(\d+)_(input|average|label|cap)$")

# hwmon sysfs ABI (Documentation/hwmon/sysfs-interface.rst): power µW, energy µJ,
# voltage (in*) mV, current (curr*) mA.
_HWMON_DIVISOR = {"power": 1_000_000, "energy": 1_000_000, "in": 1000, "curr": 1000}


def parse_hwmon_chip(hwmon: str, attrs: Mapping[str, str], device: str = "") -> HwmonChip:
    stems: dict[tuple[str, int], None] = {}
    for key in attrs:
        mt = _HWMON_ATTR.match(key)
        if mt:
            stems[(mt.group(1), int(mt.group(2)))] = None
    readings = []
    for kind, idx in sorted(stems):
        stem = f"{kind}{idx}"
        raw = attrs.get(f"{stem}_input")
        if raw is None and kind == "power":
            raw = attrs.get(f"{stem}_average")  # meters that only average (acpi_power_meter)
        value = _scaled(raw, _HWMON_DIVISOR[kind])
        if value is None:
            continue
        readings.append(HwmonReading(kind, attrs.get(f"{stem}_label") or stem, value))
    return HwmonChip(attrs.get("name") or hwmon, device, readings)


def parse_acpi_power_meter(attrs: Mapping[str, str]) -> tuple[float | None, float | None]:
    """(average watts, cap watts) of an ACPI power meter (ACPI 4.0 §10.4, driver acpi_power_meter).

    The driver reports ``power1_average`` and ``power1_cap`` in µW
    (Documentation/hwmon/acpi_power_meter.rst).
    """
    return _scaled(attrs.get("power1_average"), 1_000_000), _scaled(attrs.get("power1_cap"), 1_000_000)


@dataclass
class SupplyReading:
    name: str
    type: str
    online: int | None = None
    present: int | None = None
    status: str | None = None
    power_w: float | None = None
    energy_j: float | None = None
    energy_full_j: float | None = None
    energy_full_design_j: float | None = None
    charge_c: float | None = None
    capacity_ratio: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None


SUPPLY_ATTRS = (
    "type", "online", "present", "status", "power_now", "energy_now", "energy_full",
    "energy_full_design", "charge_now", "capacity", "voltage_now", "current_now",
)


def _uwh_to_j(text: str | None) -> float | None:
    value = _int(text)
    # µWh → J: 1 µWh = 3600 µJ; integer multiply first so the result is rounded once.
    return None if value is None else value * 3600 / 1_000_000


def parse_power_supply(name: str, attrs: Mapping[str, str]) -> SupplyReading:
    """power_supply class ABI (Documentation/ABI/testing/sysfs-class-power): µW, µWh, µAh, µV, µA, %."""
    charge = _int(attrs.get("charge_now"))
    capacity = _int(attrs.get("capacity"))
    return SupplyReading(
        name=name,
        type=attrs.get("type", ""),
        online=_int(attrs.get("online")),
        present=_int(attrs.get("present")),
        status=attrs.get("status") or None,
        power_w=_scaled(attrs.get("power_now"), 1_000_000),
        energy_j=_uwh_to_j(attrs.get("energy_now")),
        energy_full_j=_uwh_to_j(attrs.get("energy_full")),
        energy_full_design_j=_uwh_to_j(attrs.get("energy_full_design")),
        charge_c=None if charge is None else charge * 3600 / 1_000_000,  # µAh → C
        capacity_ratio=None if capacity is None else capacity / 100,  # percent
        voltage_v=_scaled(attrs.get("voltage_now"), 1_000_000),
        current_a=_scaled(attrs.get("current_now"), 1_000_000),
    )


# ---------------------------------------------------------------------------------------------
# sources


def _denied_message(path: Path) -> str:
    return (f"cannot read {path}: permission denied; RAPL energy_uj is root-only since Linux 5.10 "
            f"(CVE-2020-8694): run the agent as root or grant it read access to that file "
            f"(e.g. a udev rule or tmpfiles.d entry setting mode 0444)")


class RaplSource(Source):
    name = "rapl"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._warned_denied: set[Path] = set()

    @property
    def target(self) -> str:
        return str(self.env.ctx.sysfs("class", "powercap"))

    def read(self) -> tuple[list[RaplZone], list[Path]]:
        zones: list[RaplZone] = []
        denied: list[Path] = []
        for zone, path in class_entries(self.env.ctx.sysfs("class", "powercap")):
            if not (path / "energy_uj").exists():
                continue  # a control type (intel-rapl), not a zone
            names = ["name", "energy_uj", "max_energy_range_uj",
                     *list_attrs(path, _CONSTRAINT)]
            attrs, refused = read_attrs(path, names)
            denied.extend(refused)
            zones.append(parse_rapl_zone(zone, attrs))
        return zones, denied

    def absent_reason(self) -> str | None:
        entries = class_entries(self.env.ctx.sysfs("class", "powercap"))
        if not any((p / "energy_uj").exists() for _, p in entries):
            return f"no RAPL zone under {self.target}"
        return None

    async def collect(self, col: Collection, now: float) -> None:
        zones, denied = await asyncio.to_thread(self.read)
        readable = [z for z in zones if z.energy_uj is not None]
        if denied and not readable:
            raise SourceError(_denied_message(denied[0]))
        for path in denied:
            if path not in self._warned_denied:
                self._warned_denied.add(path)
                self.env.log.warning("rapl: %s", _denied_message(path))
        for z in zones:
            labels = {"zone": z.zone, "name": z.name}
            if z.energy_uj is not None:
                total_uj, rate = self.env.counters.update(f"rapl/{z.zone}", z.energy_uj, z.max_energy_range_uj, now)
                col.add(m.RAPL_ENERGY, total_uj / 1_000_000, labels)  # RAPL reports µJ
                col.add(m.RAPL_POWER, None if rate is None else rate / 1_000_000, labels)  # µJ/s → W
            for cname, limit in z.limits_uw.items():
                col.add(m.RAPL_LIMIT, limit / 1_000_000, {**labels, "constraint": cname})  # µW


def _hwmon_device(path: Path) -> str:
    # class/hwmon/hwmonN → devices/…/<device>/hwmon/hwmonN: the device directory names the chip
    # stably across boots (the hwmonN number is not stable).
    if path.parent.name == "hwmon" and path.parent.parent.name != "class":
        return path.parent.parent.name
    # ``device`` is a link to the device directory. A copy that flattened links (cp -rL) holds a
    # directory named "device" instead: the device's name is gone, so no label (never "device").
    dev = path / "device"
    if dev.is_symlink():
        return dev.resolve().name
    target = _link_file_target(dev)
    return target.name if target is not None else ""


def scan_hwmon(class_dir: Path) -> list[tuple[str, str, dict[str, str]]]:
    """(hwmonN, device, attributes) for every chip, reading only power-related attributes."""
    chips = []
    for hwmon, path in class_entries(class_dir):
        names = ["name", *list_attrs(path, _HWMON_ATTR)]
        attrs, _ = read_attrs(path, names)
        chips.append((hwmon, _hwmon_device(path), attrs))
    return chips


class HwmonSource(Source):
    name = "hwmon"

    @property
    def target(self) -> str:
        return str(self.env.ctx.sysfs("class", "hwmon"))

    def read(self) -> list[HwmonChip]:
        return [parse_hwmon_chip(h, attrs, dev) for h, dev, attrs in scan_hwmon(self.env.ctx.sysfs("class", "hwmon"))]

    def absent_reason(self) -> str | None:
        for _, path in class_entries(self.env.ctx.sysfs("class", "hwmon")):
            if any(_HWMON_ATTR.match(n) for n in list_attrs(path, _HWMON_ATTR)):
                return None
        return f"no hwmon power, energy, voltage or current sensor under {self.target}"

    async def collect(self, col: Collection, now: float) -> None:
        chips = await asyncio.to_thread(self.read)
        metric = {"power": m.HWMON_POWER, "energy": m.HWMON_ENERGY, "in": m.HWMON_VOLTAGE, "curr": m.HWMON_CURRENT}
        for chip in chips:
            for r in chip.readings:
                labels = {"chip": chip.chip, "sensor": r.sensor}
                if chip.device:
                    labels["device"] = chip.device
                col.add(metric[r.kind], r.value, labels)


class PowerSupplySource(Source):
    name = "power_supply"

    @property
    def target(self) -> str:
        return str(self.env.ctx.sysfs("class", "power_supply"))

    def read(self) -> list[SupplyReading]:
        out = []
        for name, path in class_entries(self.env.ctx.sysfs("class", "power_supply")):
            attrs, _ = read_attrs(path, SUPPLY_ATTRS)
            out.append(parse_power_supply(name, attrs))
        return out

    def absent_reason(self) -> str | None:
        if not class_entries(self.env.ctx.sysfs("class", "power_supply")):
            return f"no power supply under {self.target}"
        return None

    async def collect(self, col: Collection, now: float) -> None:
        for s in await asyncio.to_thread(self.read):
            labels = {"supply": s.name, "type": s.type} if s.type else {"supply": s.name}
            col.add(m.PS_ONLINE, s.online, labels)
            col.add(m.PS_PRESENT, s.present, labels)
            if s.status:
                col.add(m.PS_STATUS, 1, {**labels, "status": s.status})
            col.add(m.PS_POWER, s.power_w, labels)
            col.add(m.PS_ENERGY, s.energy_j, labels)
            col.add(m.PS_ENERGY_FULL, s.energy_full_j, labels)
            col.add(m.PS_ENERGY_DESIGN, s.energy_full_design_j, labels)
            col.add(m.PS_CHARGE, s.charge_c, labels)
            col.add(m.PS_CAPACITY, s.capacity_ratio, labels)
            col.add(m.PS_VOLTAGE, s.voltage_v, labels)
            col.add(m.PS_CURRENT, s.current_a, labels)


class AcpiSource(Source):
    """The ACPI 4.0 power meter (ACPI000D), exposed as the hwmon chip ``power_meter``."""

    name = "acpi"

    @property
    def target(self) -> str:
        return str(self.env.ctx.sysfs("class", "hwmon"))

    def read(self) -> list[tuple[str, float | None, float | None]]:
        out = []
        for _, dev, attrs in scan_hwmon(self.env.ctx.sysfs("class", "hwmon")):
            if attrs.get("name") == "power_meter":
                watts, cap = parse_acpi_power_meter(attrs)
                out.append((dev, watts, cap))
        return out

    def absent_reason(self) -> str | None:
        for _, path in class_entries(self.env.ctx.sysfs("class", "hwmon")):
            attrs, _ = read_attrs(path, ["name"])
            if attrs.get("name") == "power_meter":
                return None
        return f"no ACPI power meter (hwmon chip power_meter) under {self.target}"

    async def collect(self, col: Collection, now: float) -> None:
        meters = await asyncio.to_thread(self.read)
        for dev, watts, cap in meters:
            # One meter per node is the norm; label by device only when there are several.
            extra = {"meter": dev} if len(meters) > 1 and dev else None
            self.env.node_power(col, "acpi", watts, now, extra)
            col.add(m.NODE_POWER_CAP, cap, {"source": "acpi", **(extra or {})})
