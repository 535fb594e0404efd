"""SNMPv2-MIB system group: every device's identity and uptime (RFC 3418)."""

from __future__ import annotations

from agent.model import Collection, Labels
from agent.plugins.snmp import metrics as m
from agent.plugins.snmp.reader import Reader, scaled
from agent.plugins.snmp.snapshot import Snapshot

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"


def parse_system(snap: Snapshot, labels: Labels) -> Collection:
    col = Collection()
    ident = {k: v for k, v in (("sys_object_id", snap.text(SYS_OBJECT_ID)), ("sys_name", snap.text(SYS_NAME)))
             if v}
    if ident:
        col.add(m.DEVICE_INFO, 1, {**labels, **ident})
    col.add(m.UPTIME, scaled(snap.number(SYS_UPTIME), 0.01), labels)  # TimeTicks: hundredths of a second
    return col


SYSTEM = Reader("system", walks=(), gets=(SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME), parse=parse_system)
