"""Pure parsing of kernel-log lines: the record framing, then the messages fleetmon cares about.

Framings accepted (one line each):

- ``/dev/kmsg`` records: ``<prio>,<seq>,<usec since boot>,<flags>[,...];<message>``
  (Documentation/ABI/testing/dev-kmsg); continuation lines start with a space (key=value
  dictionary) and belong to the record before them.
- ``dmesg --time-format iso``: ``2024-11-15T12:02:03,470068+00:00 <message>``, optionally after
  ``dmesg --decode``'s ``kern  :warn  : `` prefix.
- ``dmesg -T``: ``[Sun Feb 23 16:24:18 2025] <message>`` (local time, as dmesg prints it).
- plain ``dmesg``: ``[  123.456789] <message>`` (seconds since boot).

Messages recognised (kernel / driver formats they come from):

- NVIDIA ``NVRM: Xid (PCI:0000:9b:00): 119, pid=..., <text>`` (nvidia.ko ``nvErrorLog``).
- NVSwitch ``nvidia-nvswitch3: SXid (PCI:0000:c6:00.0): 24007, Fatal, <text>``.
- PCIe AER ``<driver> 0000:3b:00.0: AER: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)``
  (drivers/pci/pcie/aer.c ``__aer_print_error``; kernels before 4.19 print it without ``AER: ``).
- mlx5 ``mlx5_core 0000:5e:00.0: <func>:<line>:(pid 0): Port module event: module 0, Cable unplugged``
  and ``Port module event[error]: module 0, Cable error, <reason>``
  (drivers/net/ethernet/mellanox/mlx5/core/events.c ``port_module``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime


class Malformed(ValueError):
    """A line in none of the accepted framings."""


@dataclass(frozen=True)
class Record:
    message: str
    #: Unix seconds, when the framing carries wall-clock time (dmesg iso / -T).
    wall: float | None = None
    #: Seconds since boot, when the framing carries that instead (/dev/kmsg, plain dmesg).
    since_boot: float | None = None
    priority: int | None = None
    seq: int | None = None


_U64 = 1 << 64
_KMSG = re.compile(r"^(\d+),(\d+),(\d+),[^;]*;(.*)$", re.S)
_DECODE_PREFIX = re.compile(r"^[a-z]+\s*:[a-z]+\s*: ")
_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)[,.](\d{1,9})([+-]\d\d:?\d\d|Z)? (.*)$", re.S)
_CTIME = re.compile(r"^\[([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\] ?(.*)$", re.S)
_MONO = re.compile(r"^\[\s*(\d+\.\d+)\] ?(.*)$", re.S)


def parse_line(line: str) -> Record | None:
    """One line → a Record; None for blank and continuation lines; Malformed otherwise."""
    line = line.rstrip("\r\n")
    if not line.strip() or (line[0] == " " and _KMSG_CONTINUATION.match(line)):
        return None
    m = _KMSG.match(line)
    if m:
        prio, seq, usec, message = m.groups()
        # Sequence and timestamp are u64 (dev-kmsg ABI): more than 20 digits is not a record
        # (and int() refuses past 4300 digits, float() overflows past 308).
        if max(len(prio), len(seq), len(usec)) > 20 or int(usec) >= _U64 or int(seq) >= _U64:
            raise Malformed(f"kmsg record numbers out of range in {line[:80]!r}")
        return Record(message, since_boot=int(usec) / 1e6, priority=int(prio) & 7, seq=int(seq))
    body = _DECODE_PREFIX.sub("", line, count=1)
    m = _ISO.match(body)
    if m:
        stamp, frac, tz, message = m.groups()
        tz = tz or "+00:00"
        if tz == "Z":
            tz = "+00:00"
        elif ":" not in tz:
            tz = tz[:3] + ":" + tz[3:]
        try:
            when = datetime.fromisoformat(f"{stamp}{tz}").timestamp() + int(frac) / 10 ** len(frac)
        except ValueError as err:
            raise Malformed(f"bad ISO timestamp in {line[:80]!r}") from err
        return Record(message, wall=when)
    m = _CTIME.match(body)
    if m:
        try:
            when = time.mktime(time.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"))  # dmesg -T prints local time
        except ValueError as err:
            raise Malformed(f"bad timestamp in {line[:80]!r}") from err
        return Record(m.group(2), wall=when)
    m = _MONO.match(body)
    if m:
        since_boot = float(m.group(1))
        if not since_boot <= _U64 / 1e9:  # printk time is a u64 of nanoseconds (this also refuses inf)
            raise Malformed(f"bad timestamp in {line[:80]!r}")
        return Record(m.group(2), since_boot=since_boot)
    raise Malformed(f"not a kernel log line: {line[:80]!r}")


# /dev/kmsg continuation lines: " KEY=value" (SUBSYSTEM=, DEVICE=, ...).
_KMSG_CONTINUATION = re.compile(r"^ [A-Z_]+=")


@dataclass(frozen=True)
class Xid:
    pci: str  # as printed: domain:bus:device (no function)
    xid: int
    detail: str


@dataclass(frozen=True)
class SXid:
    device: str
    sxid: int
    fatal: bool | None
    detail: str


@dataclass(frozen=True)
class Aer:
    device: str
    severity: str  # corrected | non_fatal | fatal
    type: str  # physical_layer | data_link_layer | transaction_layer | ...
    detail: str


@dataclass(frozen=True)
class ModuleEvent:
    device: str
    module: int
    status: str  # plugged | unplugged | error | disabled
    detail: str


Finding = Xid | SXid | Aer | ModuleEvent

_PCI = r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?"
_XID = re.compile(rf"NVRM: Xid \((?:PCI:)?({_PCI})\): (\d+)(?:, ?(.*))?$", re.S)
_SXID = re.compile(rf"SXid \((?:PCI:)?({_PCI})\): (\d+)(?:, ?(Fatal|Non-fatal|Nonfatal|Non-Fatal))?(?:, ?(.*))?$", re.S)
_AER = re.compile(
    rf"(?:^|\s)({_PCI}): (?:AER: )?PCIe Bus Error: severity=([^,]+), type=([^,]+)(?:, ?(.*))?$", re.S)
_MODULE = re.compile(
    rf"^mlx5_core ({_PCI})(?: \S+)?:.*?Port module event(?:\[error\])?: module (\d+), Cable (\w+)(?:, (.*))?$", re.S)


def _severity(text: str) -> str:
    t = text.lower()
    if "non-fatal" in t or "nonfatal" in t:
        return "non_fatal"
    if "fatal" in t:
        return "fatal"
    return "corrected"


def classify(message: str) -> Finding | None:
    """The finding in one message, or None for everything fleetmon does not turn into events."""
    if "Xid" in message:
        m = _XID.search(message)
        if m:
            return Xid(m.group(1).lower(), int(m.group(2)), (m.group(3) or "").strip())
        m = _SXID.search(message)
        if m:
            fatal = None if m.group(3) is None else m.group(3) == "Fatal"
            return SXid(m.group(1).lower(), int(m.group(2)), fatal, (m.group(4) or "").strip())
        return None
    if "PCIe Bus Error" in message:
        m = _AER.search(message)
        if m:
            kind = m.group(3).strip().lower().replace(" ", "_")
            return Aer(m.group(1).lower(), _severity(m.group(2)), kind, (m.group(4) or "").strip())
        return None
    if "Port module event" in message:
        m = _MODULE.search(message)
        if m:
            return ModuleEvent(m.group(1).lower(), int(m.group(2)), m.group(3).lower(), (m.group(4) or "").strip())
    return None
