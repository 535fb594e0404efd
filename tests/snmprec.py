"""Read snmpsim ``.snmprec`` recordings (``OID|TYPE|VALUE`` lines, optionally bz2) into a Snapshot.

For tests that feed the MIB readers the recorded values directly. Tags: 2 INTEGER, 4 OCTET
STRING, 4x hex OCTET STRING, 6 OID, 64 IpAddress, 65 Counter32, 66 Gauge32, 67 TimeTicks,
70 Counter64. A value with a variation module (``2:numeric|...,initial=154``) reads as its
``initial`` value, which is what snmpsim serves first.
"""

from __future__ import annotations

import bz2
from pathlib import Path

from agent.plugins.snmp.snapshot import Snapshot

_INT_TAGS = {"2", "65", "66", "67", "70"}


def load(path: Path) -> Snapshot:
    raw = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
    snap = Snapshot()
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        oid, tag, value = line.split("|", 2)
        tag, _, variation = tag.partition(":")
        if variation:
            opts = dict(kv.split("=", 1) for kv in value.split(",") if "=" in kv)
            if "initial" not in opts:
                continue
            value = opts["initial"]
        if tag in _INT_TAGS:
            snap.put(oid, int(value))
        elif tag == "4x":
            snap.put(oid, bytes.fromhex(value).decode("utf-8", errors="replace").replace("\x00", "").strip())
        elif tag in ("4", "6", "64"):
            snap.put(oid, value.strip())
    return snap
