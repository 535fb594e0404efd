"""Host plugin: psutil reads /proc and /sys itself; ``--procfs-root`` is passed to it via PROCFS_PATH.

Names start with ``host_``, never ``node_``: node_exporter owns the ``node_`` namespace, and a
site that drops ``--once --format prom`` into its textfile directory, or scrapes both exporters
into one Prometheus, must not get two families of one name (``node_load1``,
``node_filesystem_*``, ``node_network_*`` and ``node_disk_*`` all exist there with other help
texts and labels; node_exporter then fails the whole scrape).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

from agent.model import Collection, counter, gauge
from agent.plugin import Plugin

CPU_USAGE = gauge("host_cpu_utilization_ratio", "Share of CPU time not idle since the previous collection (0-1)")
CPU_COUNT = gauge("host_cpus", "Logical CPUs")
LOAD1 = gauge("host_load1", "1-minute load average")
LOAD5 = gauge("host_load5", "5-minute load average")
LOAD15 = gauge("host_load15", "15-minute load average")
MEM_TOTAL = gauge("host_memory_total_bytes", "Physical memory", "bytes")
MEM_AVAILABLE = gauge("host_memory_available_bytes", "Memory available without swapping", "bytes")
MEM_USED = gauge("host_memory_used_bytes", "Memory in use (total - available)", "bytes")
SWAP_USED = gauge("host_swap_used_bytes", "Swap in use", "bytes")
UPTIME = gauge("host_uptime_seconds", "Seconds since boot", "seconds")
FS_SIZE = gauge("host_filesystem_size_bytes", "Filesystem size", "bytes")
FS_AVAILABLE = gauge("host_filesystem_available_bytes", "Filesystem space available to unprivileged users", "bytes")
NET_RX = counter("host_network_receive_bytes_total", "Bytes received", "bytes")
NET_TX = counter("host_network_transmit_bytes_total", "Bytes sent", "bytes")
NET_RX_ERR = counter("host_network_receive_errors_total", "Receive errors")
NET_TX_ERR = counter("host_network_transmit_errors_total", "Transmit errors")
DISK_READ = counter("host_disk_read_bytes_total", "Bytes read", "bytes")
DISK_WRITE = counter("host_disk_written_bytes_total", "Bytes written", "bytes")

_PSEUDO_FS = {"tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "nsfs", "autofs"}
# /proc/stat columns that are not busy time. Linux counts guest time inside user/nice as well
# (kernel/sched/cputime.c), so guest and guest_nice are left out of the total, as psutil does.
_IDLE = ("idle", "iowait")
_NOT_IN_TOTAL = ("guest", "guest_nice")


def cpu_busy_ratio(prev: Mapping[str, float], cur: Mapping[str, float]) -> float | None:
    """Busy share of CPU time between two ``/proc/stat`` readings (seconds per column).

    None when nothing can be measured: no time passed, or a counter went backwards (a
    suspended VM, a CPU hot-unplugged). Never a made-up 0.
    """
    total = sum(cur[k] - prev.get(k, 0.0) for k in cur if k not in _NOT_IN_TOTAL)
    idle = sum(cur.get(k, 0.0) - prev.get(k, 0.0) for k in _IDLE)
    if total <= 0 or idle < 0 or idle > total:
        return None
    return 1.0 - idle / total


@dataclass
class HostConfig:
    #: Mount points to report; empty means every real (non-pseudo) filesystem.
    mountpoints: list[str] = field(default_factory=list)
    #: Interfaces to skip (loopback is always skipped).
    exclude_interfaces: list[str] = field(default_factory=list)


class HostPlugin(Plugin):
    name = "host"
    Config = HostConfig
    default_interval = 15.0
    config: HostConfig
    _cpu_prev: dict[str, float] | None = None

    def discover(self) -> None:
        # psutil reads procfs at a module-level path; honour --procfs-root (STYLE 5).
        psutil.PROCFS_PATH = str(self.ctx.procfs_root)

    def collect(self) -> Collection:
        col = Collection()
        # Utilisation is a rate: the first collection has nothing to compare with and says
        # nothing (``--once`` never prints it) rather than psutil's placeholder 0.0.
        cpu = psutil.cpu_times()._asdict()
        if self._cpu_prev is not None:
            col.add(CPU_USAGE, cpu_busy_ratio(self._cpu_prev, cpu))
        self._cpu_prev = cpu
        col.add(CPU_COUNT, psutil.cpu_count() or None)
        try:
            l1, l5, l15 = os.getloadavg() if self.ctx.procfs_root.as_posix() == "/proc" else _loadavg(
                self.ctx.procfs_root.joinpath("loadavg").read_text()
            )
            col.add(LOAD1, l1)
            col.add(LOAD5, l5)
            col.add(LOAD15, l15)
        except (OSError, ValueError):
            pass
        vm = psutil.virtual_memory()
        col.add(MEM_TOTAL, vm.total)
        col.add(MEM_AVAILABLE, vm.available)
        col.add(MEM_USED, vm.total - vm.available)
        col.add(SWAP_USED, psutil.swap_memory().used)
        col.add(UPTIME, time.time() - psutil.boot_time())
        for part in psutil.disk_partitions(all=False):
            if part.fstype in _PSEUDO_FS:
                continue
            if self.config.mountpoints and part.mountpoint not in self.config.mountpoints:
                continue
            try:
                usage = psutil.disk_usage(part.mountpoint)
            except OSError:
                continue
            labels = {"mountpoint": part.mountpoint, "device": part.device, "fstype": part.fstype}
            col.add(FS_SIZE, usage.total, labels)
            col.add(FS_AVAILABLE, usage.free, labels)  # psutil's "free" is statvfs f_bavail * f_frsize
        for nic, io in psutil.net_io_counters(pernic=True).items():
            if nic == "lo" or nic in self.config.exclude_interfaces:
                continue
            labels = {"interface": nic}
            col.add(NET_RX, io.bytes_recv, labels)
            col.add(NET_TX, io.bytes_sent, labels)
            col.add(NET_RX_ERR, io.errin, labels)
            col.add(NET_TX_ERR, io.errout, labels)
        for disk, dio in (psutil.disk_io_counters(perdisk=True) or {}).items():
            if disk.startswith(("loop", "ram")):
                continue
            col.add(DISK_READ, dio.read_bytes, {"device": disk})
            col.add(DISK_WRITE, dio.write_bytes, {"device": disk})
        return col


def _loadavg(text: str) -> tuple[float, float, float]:
    a, b, c = text.split()[:3]
    return float(a), float(b), float(c)
