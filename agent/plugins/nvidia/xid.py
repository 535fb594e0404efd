"""XID meanings and the per-node XID ledger shared by the ``nvidia`` and ``kmsg`` plugins.

The catalog is the project's own table (``../shared/xid-catalog.csv``, shipped here as
``xid_catalog.csv``); it is read on first use, never at import time.

The ledger is what makes "the same XID seen by NVML and by the kernel log within a second counts
once" true without losing real repeats. The driver prints one ``NVRM: Xid`` line for each XID it
posts to NVML, so the two sources see the same sequence. Each source numbers its sightings of one
(GPU, XID) pair within a burst (sightings closer than the window): the n-th NVML event and the
n-th kernel-log line then share the key ``("xid", bus, xid, n)`` in
:meth:`NodeDirectory.first_sighting`, so the pair counts once while a burst of sixteen XID 13
lines from one source still counts sixteen.
"""

from __future__ import annotations

import csv
import functools
import io
import threading
import weakref
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple

from agent.model import Collection, Metric, Severity
from agent.plugin import NodeDirectory

#: XID 79: "GPU has fallen off the bus" (catalog); the GPU answers nothing until a reboot.
XID_FALLEN_OFF_BUS = 79
_DEFAULT_WINDOW_S = 1.0
_ZERO_MAX_AGE_S = 60.0


@dataclass(frozen=True)
class XidInfo:
    xid: int
    name: str
    severity: Severity
    action: str
    notes: str = ""


def parse_catalog(text: str, where: str = "xid_catalog.csv") -> dict[int, XidInfo]:
    """Parse the catalog CSV (``xid,name,severity,suggested_action,notes``)."""
    out: dict[int, XidInfo] = {}
    reader = csv.DictReader(io.StringIO(text))
    for lineno, row in enumerate(reader, start=2):
        try:
            xid = int(row["xid"])
            out[xid] = XidInfo(
                xid, row["name"].strip(), Severity.parse(row["severity"]),
                (row.get("suggested_action") or "").strip(), (row.get("notes") or "").strip(),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where} line {lineno}: {err}") from err
    return out


@functools.lru_cache(maxsize=1)
def catalog() -> dict[int, XidInfo]:
    text = resources.files(__package__).joinpath("xid_catalog.csv").read_text(encoding="utf-8")
    return parse_catalog(text)


def describe(xid: int) -> XidInfo:
    """Catalog entry; an XID the catalog lacks is kept with severity warning (issue 3)."""
    known = catalog().get(xid)
    if known is not None:
        return known
    return XidInfo(xid, "XID not in the catalog", Severity.WARNING, "inspect_kernel_log")


def bus_key(pci: str) -> str:
    """``00000000:9B:00.0`` / ``0000:9b:00`` → ``0000:9b:00``: the form the kernel prints in Xid lines."""
    return NodeDirectory.normalize_pci(pci).split(".")[0]


class XidCount(NamedTuple):
    """One (bus, XID)'s sightings counted once across NVML and the kernel log."""

    n: int
    first_ts: float  # time of the first sighting


class XidLedger:
    """XID counts per (GPU bus, xid), cross-source de-duplication, GPUs fallen off the bus."""

    def __init__(self, directory: NodeDirectory, window_s: float = _DEFAULT_WINDOW_S) -> None:
        self.directory = directory
        self.window = window_s
        self._lock = threading.Lock()
        self._burst: dict[tuple[str, str, int], tuple[float, int]] = {}
        self._counts: Counter[tuple[str, int]] = Counter()
        self._first: dict[tuple[str, int], float] = {}
        self._fallen: set[str] = set()
        self._reporters: dict[str, int] = {}

    def record(self, source: str, pci: str, xid: int, ts: float) -> bool:
        """Count one sighting; True when it is new (not the other source's copy of one already counted)."""
        bus = bus_key(pci)
        with self._lock:
            last = self._burst.get((source, bus, xid))
            n = last[1] + 1 if last is not None and abs(ts - last[0]) <= self.window else 0
            self._burst[(source, bus, xid)] = (ts, n)
        first = self.directory.first_sighting(("xid", bus, str(xid), str(n)), ts)
        with self._lock:
            if first:
                self._counts[(bus, xid)] += 1
                self._first.setdefault((bus, xid), ts)
            if xid == XID_FALLEN_OFF_BUS:
                self._fallen.add(bus)
        return first

    def counts(self) -> dict[tuple[str, int], XidCount]:
        """How often, and since when, per (bus, xid)."""
        with self._lock:
            return {key: XidCount(n, self._first[key]) for key, n in self._counts.items()}

    def fallen(self, pci: str) -> bool:
        with self._lock:
            return bus_key(pci) in self._fallen

    # Both plugins could report gpu_xid_errors_total; two writers of one series would make it
    # jump between their values, so exactly one does: the claimant with the lowest rank
    # (nvidia 0, kmsg 1: the kernel-log reader reports XIDs only on nodes without the nvidia plugin).
    def claim(self, reporter: str, rank: int) -> None:
        with self._lock:
            self._reporters[reporter] = rank

    def release(self, reporter: str) -> None:
        with self._lock:
            self._reporters.pop(reporter, None)

    def reports(self, reporter: str) -> bool:
        with self._lock:
            if reporter not in self._reporters:
                return False
            return min(self._reporters.items(), key=lambda kv: (kv[1], kv[0]))[0] == reporter

    def labels(self, bus: str) -> dict[str, str]:
        """GPU labels for a bus the nvidia plugin registered, else the bus address itself."""
        ref = self.directory.gpu_by_pci(bus + ".0")
        if ref is None:
            return {"pci": bus, "vendor": "nvidia"}
        return {"gpu": ref.index, "uuid": ref.uuid, "vendor": ref.vendor or "nvidia", "model": ref.model}


_LEDGERS: weakref.WeakKeyDictionary[NodeDirectory, XidLedger] = weakref.WeakKeyDictionary()
_LEDGERS_LOCK = threading.Lock()


def ledger_for(directory: NodeDirectory) -> XidLedger:
    """The one ledger of this node (one per NodeDirectory, i.e. per agent)."""
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(directory)
        if ledger is None:
            ledger = _LEDGERS[directory] = XidLedger(directory, getattr(directory, "_window", _DEFAULT_WINDOW_S))
        return ledger


def add_appearing_counter(col: Collection, metric: Metric, value: float, labels: dict[str, str], *,
                          first_ts: float, started: float, seen: set[tuple[str, ...]]) -> None:
    """Add a counter series that did not exist before its first event, preceded once by a 0.

    ``increase()`` needs two samples in its window, so a series born at 1 would hide its first
    XID from the rule pack (alerts/rules/README.md, "Counters that appear"). The 0 is stamped just
    before the first sighting and at least a second before this collection, so it always sorts
    before the collection's own samples; never more than a minute before it, so a replayed old
    log does not send timestamps the collector refuses as far from now.
    """
    key = (metric.name, *sorted(labels.items(), key=lambda kv: kv[0]))
    flat = tuple(str(part) for part in key)
    if flat not in seen:
        seen.add(flat)
        zero_ts = max(started - _ZERO_MAX_AGE_S, min(first_ts, started - 1.0)) - 0.001
        col.append(metric.sample(0.0, labels, zero_ts))
    col.add(metric, value, labels)
