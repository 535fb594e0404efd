"""InfiniBand ports and network interfaces from sysfs: small readers, pure parsers.

A collection reads ~50 files per IB port with ``pread`` on descriptors held from one read to the
next (:mod:`agent.attrfiles`), on string paths: pathlib's ``read_text`` costs several times more
per file. Scans list the folders and read the facts that do not change with plain reads.

A file that cannot be read (EINVAL for ``speed`` on a link without carrier, EACCES, a counter
that reads ``N/A (no PMA)`` on an iWARP device) is unsupported: it yields None, never 0.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from dataclasses import dataclass, field

from agent.attrfiles import HeldFiles

_READ_SIZE = 4096


def read_text(path: str) -> str | None:
    """One sysfs attribute, stripped; None when the kernel refuses it (EINVAL, EACCES, ...)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, _READ_SIZE).decode("utf-8", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def list_dir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


# --- pure parsers ------------------------------------------------------------------------------


def parse_int(text: str | None) -> int | None:
    """A counter or number as sysfs prints it; ``N/A (no PMA)`` and the like are None."""
    if not text:
        return None
    try:
        return int(text, 0) if text.startswith("0x") else int(text)
    except ValueError:
        return None


def parse_state(text: str | None) -> int | None:
    """``4: ACTIVE`` / ``5: LinkUp`` -> the number the kernel prints before the colon."""
    if not text:
        return None
    head = text.partition(":")[0].strip()
    # isdigit() alone is true for "²" and other digits int() refuses; the kernel prints ASCII
    # (and a small number: 4300 digits are past what int() reads).
    return int(head) if head.isascii() and head.isdigit() and len(head) <= 20 else None


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*Gb/sec")


def parse_rate(text: str | None) -> float | None:
    """``400 Gb/sec (4X NDR)`` -> bytes per second (the kernel prints gigabits per second)."""
    if not text:
        return None
    m = _RATE.match(text)
    if not m:
        return None
    gbits = float(m.group(1))
    return gbits * 1e9 / 8 if math.isfinite(gbits) else None  # 400 nines read as inf: no rate


def parse_count(text: str | None) -> int | None:
    """A counter the kernel prints unsigned (carrier_changes, …): anything else is not one."""
    value = parse_int(text)
    return value if value is not None and 0 <= value < 1 << 64 else None


def parse_speed(text: str | None) -> float | None:
    """``speed`` in Mb/s -> bytes per second; -1 (unknown, e.g. no link) is None."""
    value = parse_int(text)
    # The kernel prints a u32 (ethtool_link_ksettings.speed); -1 and beyond are no speed.
    if value is None or not 0 < value < 1 << 32:
        return None
    return value * 1e6 / 8


def parse_address(text: str | None) -> bytes | None:
    if not text:
        return None
    try:
        return bytes(int(part, 16) for part in text.split(":"))
    except ValueError:
        return None


# --- InfiniBand ------------------------------------------------------------------------------


@dataclass
class IbPort:
    device: str
    port: str
    state: int | None = None
    phys_state: int | None = None
    rate: float | None = None  # bytes/s
    link_layer: str | None = None
    counters: dict[str, int] = field(default_factory=dict)  # file -> raw value as read
    hw_counters: dict[str, int] = field(default_factory=dict)


@dataclass
class IbDevice:
    name: str
    hca_type: str | None = None
    fw_ver: str | None = None
    board_id: str | None = None
    ports: list[IbPort] = field(default_factory=list)


def _numbers(files: HeldFiles, folder: str, names: tuple[str, ...]) -> dict[str, int]:
    """The numeric files ``names`` of a counters folder, as the kernel prints them."""
    out: dict[str, int] = {}
    for name in names:
        try:
            raw = files.read(f"{folder}/{name}", 64)
        except OSError:
            continue  # EINVAL / EACCES: unsupported, omitted
        try:
            value = int(raw)
        except ValueError:
            continue  # "N/A (no PMA)" and the like: unsupported, never 0
        if 0 <= value < 1 << 64:  # the kernel prints u64 counters; anything else is not one
            out[name] = value
    return out


@dataclass(frozen=True)
class PortPlan:
    """What a scan found of one IB port: the facts that do not change and the files that do."""

    device: str
    port: str
    link_layer: str | None
    counters: tuple[str, ...]
    hw_counters: tuple[str, ...]


def read_ib_port(base: str, plan: PortPlan, files: HeldFiles) -> IbPort | None:
    """One scanned port now: only the files that change, without listing a folder. None when
    the port is gone."""
    path = f"{base}/{plan.device}/ports/{plan.port}"
    if not os.path.isdir(path):  # a held file of a removed port may still read (a regular file)
        return None
    ib = IbPort(device=plan.device, port=plan.port, link_layer=plan.link_layer)
    text = files.text
    ib.state = parse_state(text(f"{path}/state"))
    ib.phys_state = parse_state(text(f"{path}/phys_state"))
    ib.rate = parse_rate(text(f"{path}/rate"))
    ib.counters = _numbers(files, f"{path}/counters", plan.counters)
    ib.hw_counters = _numbers(files, f"{path}/hw_counters", plan.hw_counters)
    return ib


def scan_ib_port(base: str, device: str, port: str) -> PortPlan | None:
    path = f"{base}/{device}/ports/{port}"
    if not os.path.isdir(path):
        return None
    return PortPlan(device, port, read_text(f"{path}/link_layer") or None,
                    tuple(list_dir(f"{path}/counters")), tuple(list_dir(f"{path}/hw_counters")))


def ib_devices(sysfs_root: str, include: list[str], exclude: list[str]) -> list[str]:
    return [d for d in list_dir(f"{sysfs_root}/class/infiniband") if selected(d, include, exclude)]


def _ib_identity(base: str, device: str) -> IbDevice:
    return IbDevice(
        name=device,
        hca_type=read_text(f"{base}/{device}/hca_type") or None,
        fw_ver=read_text(f"{base}/{device}/fw_ver") or None,
        board_id=read_text(f"{base}/{device}/board_id") or None,
    )


@dataclass(frozen=True)
class DevicePlan:
    """A scanned IB device: its identity (read once) and its ports' plans."""

    identity: IbDevice
    ports: tuple[PortPlan, ...]


def scan_ib_device(sysfs_root: str, device: str) -> DevicePlan:
    base = f"{sysfs_root}/class/infiniband"
    ports = sorted(list_dir(f"{base}/{device}/ports"), key=lambda p: (len(p), p))
    plans = tuple(plan for port in ports if (plan := scan_ib_port(base, device, port)) is not None)
    return DevicePlan(_ib_identity(base, device), plans)


def read_ib_ports(sysfs_root: str, plan: DevicePlan, files: HeldFiles) -> IbDevice | None:
    """A scanned device's ports now; None when one of them is gone (time to scan again)."""
    base = f"{sysfs_root}/class/infiniband"
    ident = plan.identity
    dev = IbDevice(name=ident.name, hca_type=ident.hca_type, fw_ver=ident.fw_ver, board_id=ident.board_id)
    for port in plan.ports:
        ib = read_ib_port(base, port, files)
        if ib is None:
            return None
        dev.ports.append(ib)
    return dev


# --- network interfaces --------------------------------------------------------------------------


@dataclass
class NetInterface:
    name: str
    operstate: str | None = None
    carrier: int | None = None
    carrier_changes: int | None = None
    carrier_up: int | None = None
    carrier_down: int | None = None
    speed: float | None = None  # bytes/s
    mtu: int | None = None
    address: bytes | None = None


def selected(name: str, include: list[str], exclude: list[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(name, pat) for pat in include):
        return False
    return not any(fnmatch.fnmatchcase(name, pat) for pat in exclude)


def net_interfaces(sysfs_root: str, include: list[str], exclude: list[str], physical_only: bool) -> list[str]:
    """Interfaces under ``class/net``; physical ones have a ``device`` entry (virtual ones,
    bonds, bridges, veths and tunnels, have none)."""
    base = f"{sysfs_root}/class/net"
    out = []
    for name in list_dir(base):
        path = f"{base}/{name}"
        if not os.path.isdir(path):
            continue  # bonding_masters, and captured trees where a link was stored as a file
        if physical_only and not os.path.lexists(f"{path}/device"):
            continue
        if selected(name, include, exclude):
            out.append(name)
    return out


def read_net(sysfs_root: str, name: str, files: HeldFiles, address: bytes | None = None) -> NetInterface:
    """One interface; ``address`` known from a scan (a hardware address does not change) is not
    read again."""
    path = f"{sysfs_root}/class/net/{name}"
    text = files.text
    return NetInterface(
        name=name,
        operstate=text(f"{path}/operstate") or None,
        carrier=parse_int(text(f"{path}/carrier")),
        carrier_changes=parse_count(text(f"{path}/carrier_changes")),
        carrier_up=parse_count(text(f"{path}/carrier_up_count")),
        carrier_down=parse_count(text(f"{path}/carrier_down_count")),
        speed=parse_speed(text(f"{path}/speed")),
        mtu=parse_int(text(f"{path}/mtu")),
        address=address if address is not None else parse_address(text(f"{path}/address")),
    )
