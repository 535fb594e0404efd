"""InfiniBand ports and network interfaces from sysfs: small readers, pure parsers.

Reads use ``os.open``/``os.read`` on string paths: this plugin reads ~50 files per IB port
every 10 s, and pathlib's ``read_text`` costs several times more per file.

A file that cannot be read (EINVAL for ``speed`` on a link without carrier, EACCES, a counter
that reads ``N/A (no PMA)`` on an iWARP device) is unsupported: it yields None, never 0.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field

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
    return int(head) if head.isdigit() else None


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*Gb/sec")


def parse_rate(text: str | None) -> float | None:
    """``400 Gb/sec (4X NDR)`` -> bytes per second (the kernel prints gigabits per second)."""
    if not text:
        return None
    m = _RATE.match(text)
    return float(m.group(1)) * 1e9 / 8 if m else None


def parse_speed(text: str | None) -> float | None:
    """``speed`` in Mb/s -> bytes per second; -1 (unknown, e.g. no link) is None."""
    value = parse_int(text)
    if value is None or value <= 0:
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


def _read_at(dfd: int, name: str, size: int = _READ_SIZE) -> bytes | None:
    """One file relative to an open directory (openat); None when the kernel refuses it."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None  # EINVAL / EACCES on read: unsupported, omitted
    finally:
        os.close(fd)


def _text_at(dfd: int, name: str) -> str | None:
    raw = _read_at(dfd, name)
    return None if raw is None else raw.decode("utf-8", "replace").strip()


def _read_numbers(pfd: int, folder: str, names: tuple[str, ...] | None = None) -> dict[str, int]:
    """Every numeric file of a counters folder (or the ``names`` a scan found there). Files are
    opened relative to the folder's descriptor (openat), so the kernel walks the long sysfs path
    once per folder rather than once per file: this halves the cost of a 45-file port."""
    out: dict[str, int] = {}
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY, dir_fd=pfd)
    except OSError:
        return out
    try:
        for name in names if names is not None else sorted(os.listdir(dfd)):
            raw = _read_at(dfd, name, 64)
            if raw is None:
                continue
            try:
                out[name] = int(raw)
            except ValueError:
                continue  # "N/A (no PMA)" and the like: unsupported, never 0
    finally:
        os.close(dfd)
    return out


@dataclass(frozen=True)
class PortPlan:
    """What a scan found of one IB port: the facts that do not change and the files that do."""

    device: str
    port: str
    link_layer: str | None
    counters: tuple[str, ...]
    hw_counters: tuple[str, ...]


def read_ib_port(base: str, device: str, port: str, plan: PortPlan | None = None) -> IbPort | None:
    """One port; with a ``plan`` only the files that change are read, without listing a folder.
    None when the port is gone."""
    ib = IbPort(device=device, port=port)
    try:
        pfd = os.open(f"{base}/{device}/ports/{port}", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        ib.state = parse_state(_text_at(pfd, "state"))
        ib.phys_state = parse_state(_text_at(pfd, "phys_state"))
        ib.rate = parse_rate(_text_at(pfd, "rate"))
        ib.link_layer = plan.link_layer if plan is not None else _text_at(pfd, "link_layer") or None
        ib.counters = _read_numbers(pfd, "counters", plan.counters if plan is not None else None)
        ib.hw_counters = _read_numbers(pfd, "hw_counters", plan.hw_counters if plan is not None else None)
    finally:
        os.close(pfd)
    return ib


def scan_ib_port(base: str, device: str, port: str) -> PortPlan | None:
    path = f"{base}/{device}/ports/{port}"
    if not os.path.isdir(path):
        return None
    return PortPlan(device, port, read_text(f"{path}/link_layer") or None,
                    tuple(list_dir(f"{path}/counters")), tuple(list_dir(f"{path}/hw_counters")))


def ib_devices(sysfs_root: str, include: list[str], exclude: list[str]) -> list[str]:
    return [d for d in list_dir(f"{sysfs_root}/class/infiniband") if selected(d, include, exclude)]


def read_ib_device(sysfs_root: str, device: str) -> IbDevice:
    """A device and all its ports, listing and reading everything (``scan_ib_device`` once, then
    ``read_ib_ports`` each collection, reads only what changes)."""
    base = f"{sysfs_root}/class/infiniband"
    dev = _ib_identity(base, device)
    ports = list_dir(f"{base}/{device}/ports")
    for port in sorted(ports, key=lambda p: (len(p), p)):
        ib = read_ib_port(base, device, port)
        dev.ports.append(ib if ib is not None else IbPort(device=device, port=port))
    return dev


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


def read_ib_ports(sysfs_root: str, plan: DevicePlan) -> IbDevice | None:
    """A scanned device's ports now; None when one of them is gone (time to scan again)."""
    base = f"{sysfs_root}/class/infiniband"
    ident = plan.identity
    dev = IbDevice(name=ident.name, hca_type=ident.hca_type, fw_ver=ident.fw_ver, board_id=ident.board_id)
    for port in plan.ports:
        ib = read_ib_port(base, ident.name, port.port, port)
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


def read_net(sysfs_root: str, name: str, address: bytes | None = None) -> NetInterface:
    """One interface; ``address`` known from a scan (a hardware address does not change) is not
    read again."""
    path = f"{sysfs_root}/class/net/{name}"
    return NetInterface(
        name=name,
        operstate=read_text(f"{path}/operstate") or None,
        carrier=parse_int(read_text(f"{path}/carrier")),
        carrier_changes=parse_int(read_text(f"{path}/carrier_changes")),
        carrier_up=parse_int(read_text(f"{path}/carrier_up_count")),
        carrier_down=parse_int(read_text(f"{path}/carrier_down_count")),
        speed=parse_speed(read_text(f"{path}/speed")),
        mtu=parse_int(read_text(f"{path}/mtu")),
        address=address if address is not None else parse_address(read_text(f"{path}/address")),
    )
