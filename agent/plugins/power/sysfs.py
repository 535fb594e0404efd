"""Kernel power sources under ``--sysfs-root``: RAPL (powercap), hwmon, power_supply, ACPI meter.

Each source scans its class directory once (:meth:`LocalSource.scan`: which devices, which
attribute files, the facts that never change such as names, labels and ranges) and then reads
only the files that change, with no directory listing (:meth:`LocalSource.read`): ``pread`` on
descriptors held from one read to the next (:mod:`agent.attrfiles`; sysfs answers afresh at
offset 0). A file that vanishes (a device unplugged) marks the source stale and the plugin
rescans; new devices appear at the next rescan (hot-plug signal or timer).

Reading is apart from parsing: :func:`read_file` reads a file once (scans), and the pure
functions below turn attribute texts into readings in base units, so tests feed them captured data.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from agent.model import Collection, Metric, Series
from agent.plugins.power import metrics as m
from agent.plugins.power.source import Env, LocalSource, SourceError

# ---------------------------------------------------------------------------------------------
# reading

#: errno values meaning the file (its device) is gone: rescan.
_GONE = {errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ENOTDIR}


def read_file(path: str) -> bytes:
    """The one read of an attribute file (sysfs attributes fit in a page)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


class ClassEntry(NamedTuple):
    name: str  # the entry in class/<class>/ (intel-rapl:0, hwmon3, BAT0)
    path: Path  # the device directory it links to, resolved


def class_entries(class_dir: Path) -> list[ClassEntry]:
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
            out.append(ClassEntry(name, path.resolve()))
            continue
        target = _link_file_target(path)
        if target is not None:
            out.append(ClassEntry(name, target))
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

    For scans. Attributes that are absent are simply left out (unsupported, never invented);
    one the kernel refuses (EACCES, or EIO/ENODATA from a driver that cannot answer) is left out
    too, and a permission refusal is returned so the caller can say how to fix it.
    """
    values: dict[str, str] = {}
    denied: list[Path] = []
    for name in names:
        path = directory / name
        try:
            values[name] = read_file(str(path)).decode(errors="replace").strip()
        except PermissionError:
            denied.append(path)
        except OSError:
            # absent, or e.g. EIO/ENODATA: hwmon drivers return errors for sensors they cannot read now.
            continue
    return values, denied


def list_attrs(directory: Path, pattern: re.Pattern[str]) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir() if pattern.match(p.name))
    except OSError:
        return []


class _Reader:
    """Reads planned files during one pass; remembers refusals and vanished files."""

    def __init__(self, source: LocalSource) -> None:
        self.source = source
        self.denied: list[str] = []

    def raw(self, path: str) -> bytes | None:
        """The file's bytes; None when it is absent now or unreadable (a refusal is noted, a
        vanished file marks the source for a rescan)."""
        try:
            return self.source.files.read(path)
        except PermissionError:
            self.denied.append(path)
        except OSError as err:
            if err.errno in _GONE:
                self.source.stale = True
        return None

    def int(self, path: str) -> int | None:
        """The file's integer; None when it is absent now, unreadable, or not a number."""
        return _int(self.raw(path))

    def text(self, path: str) -> str | None:
        data = self.raw(path)
        return (data.decode(errors="replace").strip() or None) if data is not None else None


# ---------------------------------------------------------------------------------------------
# parsing


def _int(text: str | bytes | None) -> int | None:
    """A sysfs number: the kernel prints s64/u64 values; beyond that it is not one (and a
    400-digit value would overflow the float conversion of the caller)."""
    if not text:
        return None
    try:
        value = int(text)  # int() takes surrounding whitespace, str or bytes
    except ValueError:
        return None
    return value if -(1 << 63) <= value < 1 << 64 else None


def _uint(text: str | bytes | None) -> int | None:
    """A u64 sysfs counter (RAPL energy): a negative value is not one."""
    value = _int(text)
    return value if value is not None and value >= 0 else None


def _scaled(text: str | bytes | None, divisor: int) -> float | None:
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
_HWMON_METRIC = {"power": m.HWMON_POWER, "energy": m.HWMON_ENERGY, "in": m.HWMON_VOLTAGE, "curr": m.HWMON_CURRENT}


def hwmon_sensors(attrs: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(kind, sensor name, value attribute) of each reading a chip offers, sorted by kind and index."""
    stems: dict[tuple[str, int], None] = {}
    for key in attrs:
        mt = _HWMON_ATTR.match(key)
        if mt:
            stems[(mt.group(1), int(mt.group(2)))] = None
    out = []
    for kind, idx in sorted(stems):
        stem = f"{kind}{idx}"
        attr = f"{stem}_input"
        if attr not in attrs and kind == "power":
            attr = f"{stem}_average"  # meters that only average (acpi_power_meter)
        if attr in attrs:
            out.append((kind, attrs.get(f"{stem}_label") or stem, attr))
    return out


def parse_hwmon_chip(hwmon: str, attrs: Mapping[str, str], device: str = "") -> HwmonChip:
    readings = []
    for kind, sensor, attr in hwmon_sensors(attrs):
        value = _scaled(attrs.get(attr), _HWMON_DIVISOR[kind])
        if value is not None:
            readings.append(HwmonReading(kind, sensor, value))
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


def _uwh_to_j(value: int) -> float:
    # µWh → J: 1 µWh = 3600 µJ; integer multiply first so the result is rounded once.
    return value * 3600 / 1_000_000


# The numeric power_supply attributes and their metrics, in the order they are emitted.
_SUPPLY_METRIC: dict[str, Metric] = {
    "online": m.PS_ONLINE, "present": m.PS_PRESENT, "power_now": m.PS_POWER, "energy_now": m.PS_ENERGY,
    "energy_full": m.PS_ENERGY_FULL, "energy_full_design": m.PS_ENERGY_DESIGN, "charge_now": m.PS_CHARGE,
    "capacity": m.PS_CAPACITY, "voltage_now": m.PS_VOLTAGE, "current_now": m.PS_CURRENT,
}


def _supply_value(attr: str, raw: int) -> float:
    """One numeric attribute in base units (power_supply class ABI,
    Documentation/ABI/testing/sysfs-class-power: µW, µWh, µAh, µV, µA, percent)."""
    if attr in ("energy_now", "energy_full", "energy_full_design", "charge_now"):
        return _uwh_to_j(raw)  # µWh → J, µAh → C: the same factor
    if attr == "capacity":
        return raw / 100  # percent
    if attr in ("power_now", "voltage_now", "current_now"):
        return raw / 1_000_000  # µW, µV, µA
    return float(raw)


def parse_power_supply(name: str, attrs: Mapping[str, str]) -> SupplyReading:
    """power_supply class ABI (Documentation/ABI/testing/sysfs-class-power): µW, µWh, µAh, µV, µA, %."""

    def num(attr: str) -> float | None:
        raw = _int(attrs.get(attr))
        return None if raw is None else _supply_value(attr, raw)

    return SupplyReading(
        name=name, type=attrs.get("type", ""),
        online=_int(attrs.get("online")), present=_int(attrs.get("present")),
        status=attrs.get("status") or None,
        power_w=num("power_now"), energy_j=num("energy_now"), energy_full_j=num("energy_full"),
        energy_full_design_j=num("energy_full_design"), charge_c=num("charge_now"),
        capacity_ratio=num("capacity"), voltage_v=num("voltage_now"), current_a=num("current_now"),
    )


# ---------------------------------------------------------------------------------------------
# sources


def _denied_message(path: Path | str) -> str:
    return (f"cannot read {path}: permission denied; RAPL energy_uj is root-only since Linux 5.10 "
            f"(CVE-2020-8694): run the agent as root or grant it read access to that file "
            f"(e.g. a udev rule or tmpfiles.d entry setting mode 0444)")


@dataclass
class _ZonePlan:
    key: str  # counter key: rapl/<zone>
    energy_path: str
    max_range_uj: int | None
    energy: Series
    power: Series
    limits: list[tuple[str, Series]]  # (constraint_N_power_limit_uw path, series)


class RaplSource(LocalSource):
    name = "rapl"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._warned_denied: set[str] = set()
        self._zones: list[_ZonePlan] = []

    @property
    def target(self) -> str:
        return str(self.env.ctx.sysfs("class", "powercap"))

    def scan(self) -> None:
        zones = []
        for zone, path in class_entries(self.env.ctx.sysfs("class", "powercap")):
            if not (path / "energy_uj").exists():
                continue  # a control type (intel-rapl), not a zone
            names = [n for n in list_attrs(path, _CONSTRAINT) if n.endswith("_name")]
            attrs, _ = read_attrs(path, ["name", "max_energy_range_uj", *names])
            name = attrs.get("name") or zone
            labels = {"zone": zone, "name": name}
            limits = []
            for limit_file in list_attrs(path, _CONSTRAINT):
                mt = _CONSTRAINT.match(limit_file)
                if mt and mt.group(2) == "power_limit_uw":
                    cname = attrs.get(f"constraint_{mt.group(1)}_name") or f"constraint_{mt.group(1)}"
                    limits.append((str(path / limit_file), m.RAPL_LIMIT.series({**labels, "constraint": cname})))
            zones.append(_ZonePlan(f"rapl/{zone}", str(path / "energy_uj"), _int(attrs.get("max_energy_range_uj")),
                                   m.RAPL_ENERGY.series(labels), m.RAPL_POWER.series(labels), limits))
        self._zones = zones
        self.stale = False

    def absent_reason(self) -> str | None:
        return None if self._zones else f"no RAPL zone under {self.target}"

    def read(self, col: Collection, now: float) -> None:
        r = _Reader(self)
        readable = 0
        for z in self._zones:
            energy_uj = r.int(z.energy_path)
            if energy_uj is not None:
                readable += 1
                total_uj, rate = self.env.counters.update(z.key, energy_uj, z.max_range_uj, now)
                col.put(z.energy, total_uj / 1_000_000)  # RAPL reports µJ
                col.put(z.power, None if rate is None else rate / 1_000_000)  # µJ/s → W
            for path, series in z.limits:
                # 0 is what the kernel shows for a constraint nobody programmed (a disabled
                # subzone such as core): no limit, not a 0 W limit.
                limit = r.int(path)
                if limit:
                    col.put(series, limit / 1_000_000)  # µW
        if r.denied and not readable:
            raise SourceError(_denied_message(r.denied[0]))
        for path in r.denied:
            if path not in self._warned_denied:
                self._warned_denied.add(path)
                self.env.log.warning("rapl: %s", _denied_message(path))


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


@dataclass
class HwmonScan:
    hwmon: str  # hwmonN
    path: Path
    device: str
    attrs: dict[str, str]  # name and the labels (static); value files are listed, not read


def scan_hwmon(class_dir: Path) -> list[HwmonScan]:
    """Every chip with its power-related attribute names, its ``name`` and sensor labels."""
    chips = []
    for hwmon, path in class_entries(class_dir):
        files = list_attrs(path, _HWMON_ATTR)
        attrs, _ = read_attrs(path, ["name", *(f for f in files if f.endswith("_label"))])
        attrs.update({f: "" for f in files if not f.endswith("_label")})
        chips.append(HwmonScan(hwmon, path, _hwmon_device(path), attrs))
    return chips


class HwmonSource(LocalSource):
    name = "hwmon"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._sensors: list[tuple[str, int, Series]] = []  # (value file, unit divisor, series)

    @property
    def target(self) -> str:
        return str(self.env.ctx.sysfs("class", "hwmon"))

    def scan(self) -> None:
        sensors = []
        for chip in scan_hwmon(self.env.ctx.sysfs("class", "hwmon")):
            base = {"chip": chip.attrs.get("name") or chip.hwmon}
            for kind, sensor, attr in hwmon_sensors(chip.attrs):
                labels = {**base, "sensor": sensor}
                if chip.device:
                    labels["device"] = chip.device
                sensors.append((str(chip.path / attr), _HWMON_DIVISOR[kind], _HWMON_METRIC[kind].series(labels)))
        self._sensors = sensors
        self.stale = False

    def absent_reason(self) -> str | None:
        if self._sensors:
            return None
        return f"no hwmon power, energy, voltage or current sensor under {self.target}"

    def read(self, col: Collection, now: float) -> None:
        r = _Reader(self)
        for path, divisor, series in self._sensors:
            raw = r.int(path)  # EIO/ENODATA: a sensor the driver cannot read now is left out
            if raw is not None:
                col.put(series, raw / divisor)


@dataclass
class _SupplyPlan:
    labels: dict[str, str]
    status_path: str | None
    numbers: list[tuple[str, str, Series]]  # (attribute, path, series)


class PowerSupplySource(LocalSource):
    name = "power_supply"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._supplies: list[_SupplyPlan] = []

    @property
    def target(self) -> str:
        return str(self.env.ctx.sysfs("class", "power_supply"))

    def scan(self) -> None:
        supplies = []
        for name, path in class_entries(self.env.ctx.sysfs("class", "power_supply")):
            attrs, _ = read_attrs(path, ["type"])
            kind = attrs.get("type", "")
            labels = {"supply": name, "type": kind} if kind else {"supply": name}
            numbers = [(attr, str(path / attr), metric.series(labels))
                       for attr, metric in _SUPPLY_METRIC.items() if (path / attr).exists()]
            status = str(path / "status") if (path / "status").exists() else None
            supplies.append(_SupplyPlan(labels, status, numbers))
        self._supplies = supplies
        self.stale = False

    def absent_reason(self) -> str | None:
        return None if self._supplies else f"no power supply under {self.target}"

    def read(self, col: Collection, now: float) -> None:
        r = _Reader(self)
        for s in self._supplies:
            if s.status_path is not None:
                status = r.text(s.status_path)
                if status:
                    col.add(m.PS_STATUS, 1, {**s.labels, "status": status})
            for attr, path, series in s.numbers:
                raw = r.int(path)
                if raw is not None:
                    col.put(series, _supply_value(attr, raw))


@dataclass
class _Meter:
    device: str
    average_path: str
    cap_path: str


class AcpiSource(LocalSource):
    """The ACPI 4.0 power meter (ACPI000D), exposed as the hwmon chip ``power_meter``."""

    name = "acpi"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._meters: list[_Meter] = []

    @property
    def target(self) -> str:
        return str(self.env.ctx.sysfs("class", "hwmon"))

    def scan(self) -> None:
        chips = scan_hwmon(self.env.ctx.sysfs("class", "hwmon"))
        self._meters = [_Meter(c.device, str(c.path / "power1_average"), str(c.path / "power1_cap"))
                        for c in chips if c.attrs.get("name") == "power_meter"]
        self.stale = False

    def absent_reason(self) -> str | None:
        if self._meters:
            return None
        return f"no ACPI power meter (hwmon chip power_meter) under {self.target}"

    def read(self, col: Collection, now: float) -> None:
        r = _Reader(self)
        for meter in self._meters:
            # power1_average and power1_cap in µW (Documentation/hwmon/acpi_power_meter.rst).
            watts, cap = r.int(meter.average_path), r.int(meter.cap_path)
            # One meter per node is the norm; label by device only when there are several.
            extra = {"meter": meter.device} if len(self._meters) > 1 and meter.device else None
            self.env.node_power(col, "acpi", None if watts is None else watts / 1_000_000, now, extra)
            col.add(m.NODE_POWER_CAP, None if cap is None else cap / 1_000_000, {"source": "acpi", **(extra or {})})
