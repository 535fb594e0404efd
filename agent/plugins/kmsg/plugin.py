"""Follow the kernel log and turn XID, SXID, PCIe AER and mlx5 module lines into events and counters.

Reading is apart from parsing (STYLE 4): :class:`KmsgReader` yields text lines from
``<dev-root>/kmsg`` (one record per ``read()``, non-blocking, starting at the current end) or from
a file (replays, tests); :mod:`agent.plugins.kmsg.parse` does the rest.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from agent.errors import PluginUnavailable
from agent.model import Collection, Event, Metric, Severity, counter
from agent.plugin import Plugin, PluginContext
from agent.plugins.kmsg.parse import Aer, Malformed, ModuleEvent, Record, SXid, Xid, classify, parse_line
from agent.plugins.nvidia import metrics as gpu_metrics
from agent.plugins.nvidia.xid import add_appearing_counter, describe, ledger_for

RECORDS = counter("kmsg_records_total", "Kernel log records read")
MALFORMED = counter("kmsg_malformed_lines_total", "Kernel log lines in no known framing (skipped)")
OVERRUNS = counter("kmsg_overruns_total", "Times the kernel overwrote records before they were read (EPIPE)")
SXID = counter("nvswitch_sxid_errors_total", "NVSwitch SXID errors by switch (PCI address) and SXID")
AER = counter("pcie_aer_errors_total", "PCIe AER errors reported by the kernel, by device and severity")
MODULE = counter("net_module_events_total", "mlx5 port module (cable/transceiver) events by device, module, status",
                 measurement="net")

_MAX_RECORD = 8192  # /dev/kmsg hands out one record per read(); CONSOLE_EXT_LOG_MAX is 8 KiB


@dataclass
class KmsgConfig:
    #: A file to read instead of ``<dev-root>/kmsg`` (a saved dmesg, a test fixture).
    path: str = ""
    #: Read what is already there instead of starting at the current end.
    from_start: bool = False
    #: Records handled per drain at most, so one collection stays bounded after a flood.
    max_records: int = 20_000
    #: Follow ``/dev/kmsg`` on a background thread so events leave within a second.
    follow: bool = True

    def validate(self) -> None:
        if self.max_records < 1:
            raise ValueError("max_records must be at least 1")


class KmsgReader:
    """Lines from /dev/kmsg (character device) or a regular file, without blocking."""

    def __init__(self, path: Path, from_start: bool) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError as err:
            raise PluginUnavailable(
                f"cannot read {path}: permission denied (needs root or CAP_SYSLOG when kernel.dmesg_restrict=1)"
            ) from err
        except FileNotFoundError as err:
            raise PluginUnavailable(f"{path} does not exist") from err
        except OSError as err:
            raise PluginUnavailable(f"cannot open {path}: {err.strerror}") from err
        self.is_device = stat.S_ISCHR(os.fstat(self.fd).st_mode)
        self.overruns = 0
        self._partial = b""
        if not from_start:
            # /dev/kmsg: SEEK_END moves to the next record to be written (Documentation/ABI/testing/dev-kmsg).
            os.lseek(self.fd, 0, os.SEEK_END)

    def read_lines(self, limit: int) -> list[str]:
        lines: list[str] = []
        if self.is_device:
            while len(lines) < limit:
                try:
                    chunk = os.read(self.fd, _MAX_RECORD)
                except BlockingIOError:
                    break
                except OSError as err:
                    if err.errno == errno.EPIPE:  # records overwritten before we read them; go on
                        self.overruns += 1
                        continue
                    raise
                if not chunk:
                    break
                lines.extend(chunk.decode("utf-8", "replace").splitlines())
            return lines
        while len(lines) < limit:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                break
            data = self._partial + chunk
            *complete, self._partial = data.split(b"\n")
            lines.extend(line.decode("utf-8", "replace") for line in complete)
        if self._partial and len(lines) < limit:
            # A replayed file's last line may lack its newline (kmsg.1.log does); files are
            # replays, not live logs, so take it as complete.
            lines.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        return lines

    def wait(self, timeout_s: float | None, wake_fd: int | None = None) -> None:
        """Block until a record is readable (or ``wake_fd`` is, or the timeout passed; None: no timeout)."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        if wake_fd is not None:
            poller.register(wake_fd, select.POLLIN)
        poller.poll(None if timeout_s is None else int(timeout_s * 1000))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class KmsgPlugin(Plugin):
    name = "kmsg"
    Config = KmsgConfig
    default_interval = 10.0
    config: KmsgConfig

    def __init__(self, ctx: PluginContext, config: KmsgConfig) -> None:
        super().__init__(ctx, config)
        self.reader: KmsgReader | None = None
        self._ledger = ledger_for(ctx.directory)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None  # a pipe that ends the follower's wait at close()
        # Printk time is CLOCK_MONOTONIC-based (local_clock); on servers that do not suspend,
        # boot time = now - monotonic converts it to wall time well within the 1 s XID window.
        self._boot = time.time() - time.monotonic()
        self.records = 0
        self.malformed = 0
        self.sxid: Counter[tuple[str, int]] = Counter()
        self.aer: Counter[tuple[str, str]] = Counter()
        self.modules: Counter[tuple[str, int, str]] = Counter()
        self.xid_lines: Counter[tuple[str, int]] = Counter()  # every Xid line, before de-duplication
        self._first: dict[tuple[object, ...], float] = {}  # first sighting per counter key
        self._reported: set[tuple[str, ...]] = set()

    def discover(self) -> None:
        path = Path(self.config.path) if self.config.path else self.ctx.dev("kmsg")
        self.reader = KmsgReader(path, self.config.from_start)
        self._ledger.claim(self.name, 1)
        if self.config.follow and self.reader.is_device:
            self._wake = os.pipe()
            self._thread = threading.Thread(target=self._follow, name="fleetmon-kmsg", daemon=True)
            self._thread.start()

    def _follow(self) -> None:
        # Parked in poll() until the kernel logs something or close() writes to the wake pipe:
        # no timeout, so an idle node costs this thread no wake-ups at all.
        wake_fd = self._wake[0] if self._wake is not None else None
        while not self._stop.is_set():
            reader = self.reader
            if reader is None:
                return
            try:
                reader.wait(None, wake_fd)
                if self._stop.is_set():
                    return
                self.drain()
            except Exception as err:  # noqa: BLE001 - supervision boundary: the follower must outlive one bad read
                self.log.warning("kmsg follower: %s", err)
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        if self._wake is not None:
            os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        self._ledger.release(self.name)
        with self._lock:
            if self.reader is not None:
                self.reader.close()
                self.reader = None

    def drain(self) -> int:
        """Read and handle what is available now; returns the number of lines handled."""
        with self._lock:
            if self.reader is None:
                return 0
            lines = self.reader.read_lines(self.config.max_records)
            for line in lines:
                try:
                    record = parse_line(line)
                except Malformed as err:
                    self.malformed += 1
                    if self.malformed <= 3:
                        self.log.info("skipping malformed kernel log line: %s", err)
                    continue
                if record is not None:
                    self.records += 1
                    self._handle(record)
            return len(lines)

    def _ts(self, record: Record) -> float:
        if record.wall is not None:
            return record.wall
        if record.since_boot is not None:
            return self._boot + record.since_boot
        return time.time()

    def _handle(self, record: Record) -> None:
        finding = classify(record.message)
        if finding is None:
            return
        ts = self._ts(record)
        if isinstance(finding, Xid):
            self._xid(finding, ts)
        elif isinstance(finding, SXid):
            self.sxid[(finding.device, finding.sxid)] += 1
            self._first.setdefault(("sxid", finding.device, finding.sxid), ts)
            severity = Severity.CRITICAL if finding.fatal else Severity.WARNING
            kind = "fatal" if finding.fatal else "non-fatal" if finding.fatal is False else ""
            self.ctx.emit(Event("nvswitch.sxid", severity,
                                f"NVSwitch {finding.device} SXID {finding.sxid} {kind}: {finding.detail}".strip(),
                                {"device": finding.device, "sxid": str(finding.sxid)},
                                "reset_nvswitch_fabric" if finding.fatal else "monitor", ts))
        elif isinstance(finding, Aer):
            self.aer[(finding.device, finding.severity)] += 1
            self._first.setdefault(("aer", finding.device, finding.severity), ts)
            # Corrected AER errors are counted only: they are frequent and harmless one by one;
            # rules watch their rate.
            if finding.severity != "corrected":
                severity = Severity.CRITICAL if finding.severity == "fatal" else Severity.WARNING
                self.ctx.emit(Event("pcie.aer", severity,
                                    f"PCIe {finding.severity} error ({finding.type}) on {finding.device}",
                                    {"device": finding.device, "severity": finding.severity, "type": finding.type},
                                    "inspect_hardware" if finding.severity == "fatal" else "monitor", ts))
        elif isinstance(finding, ModuleEvent):
            self.modules[(finding.device, finding.module, finding.status)] += 1
            self._first.setdefault(("module", finding.device, finding.module, finding.status), ts)
            severity = {"plugged": Severity.INFO, "unplugged": Severity.WARNING}.get(finding.status, Severity.CRITICAL)
            detail = f": {finding.detail}" if finding.detail else ""
            self.ctx.emit(Event("net.module", severity,
                                f"{finding.device} module {finding.module} cable {finding.status}{detail}",
                                {"device": finding.device, "module": str(finding.module), "status": finding.status},
                                "none" if finding.status == "plugged" else "reseat_or_replace_cable", ts))

    def _xid(self, finding: Xid, ts: float) -> None:
        self.xid_lines[(finding.pci, finding.xid)] += 1
        if not self._ledger.record("kmsg", finding.pci, finding.xid, ts):
            return  # NVML reported this one already
        entry = describe(finding.xid)
        labels = {**self._ledger.labels(finding.pci), "pci": finding.pci, "xid": str(finding.xid)}
        where = f"GPU {labels['gpu']} ({finding.pci})" if "gpu" in labels else finding.pci
        detail = f": {finding.detail}" if finding.detail else ""
        self.ctx.emit(Event("gpu.xid", entry.severity, f"XID {finding.xid} ({entry.name}) on {where}{detail}",
                            labels, entry.action, ts))

    def collect(self) -> Collection:
        started = time.time()
        self.drain()
        col = Collection()
        seen = self._reported

        def appearing(metric: Metric, n: float, labels: dict[str, str], key: tuple[object, ...]) -> None:
            add_appearing_counter(col, metric, n, labels, first_ts=self._first[key], started=started, seen=seen)

        with self._lock:
            col.add(RECORDS, self.records)
            col.add(MALFORMED, self.malformed)
            col.add(OVERRUNS, self.reader.overruns if self.reader is not None else 0)
            for (device, sxid), n in sorted(self.sxid.items()):
                appearing(SXID, n, {"device": device, "sxid": str(sxid)}, ("sxid", device, sxid))
            for (device, severity), n in sorted(self.aer.items()):
                appearing(AER, n, {"device": device, "severity": severity}, ("aer", device, severity))
            for (device, module, status), n in sorted(self.modules.items()):
                appearing(MODULE, n, {"device": device, "module": str(module), "status": status},
                          ("module", device, module, status))
        if self._ledger.reports(self.name):
            for (bus, xid), (n, first_ts) in sorted(self._ledger.counts().items()):
                add_appearing_counter(col, gpu_metrics.XID, n, {**self._ledger.labels(bus), "xid": str(xid)},
                                      first_ts=first_ts, started=started, seen=seen)
        return col
