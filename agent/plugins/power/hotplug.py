"""Hot-plug signal for the kernel power sources: the kernel's uevents, polled without blocking.

The kernel announces every device added, removed or changed on a netlink socket
(``NETLINK_KOBJECT_UEVENT``, multicast group 1: lib/kobject_uevent.c; what ``udevadm monitor
--kernel`` shows), which any user may read. The power plugin drains it once per collection (one ``recv`` that usually
answers EAGAIN) and rescans its sysfs classes when a power_supply, hwmon or powercap device came
or went. Where the socket cannot be opened (a sandbox without netlink, another OS) the plugin
relies on its rescan timer alone.
"""

from __future__ import annotations

import logging
import socket

log = logging.getLogger("fleetmon.agent.power")

NETLINK_KOBJECT_UEVENT = 15  # linux/netlink.h
_KERNEL_GROUP = 1  # kernel-originated uevents (udevd re-broadcasts on group 2 in its own format)


def uevent_subsystem(datagram: bytes) -> str | None:
    """The ``SUBSYSTEM=`` of one kernel uevent (``action@devpath\\0KEY=value\\0…``), or None."""
    for field in datagram.split(b"\0"):
        if field.startswith(b"SUBSYSTEM="):
            return field[len(b"SUBSYSTEM="):].decode(errors="replace")
    return None


class UeventWatch:
    """Tells whether a device of the given subsystems was added, removed or changed since the last call."""

    def __init__(self, subsystems: set[str]) -> None:
        self.subsystems = subsystems
        self._sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        except (OSError, AttributeError) as err:  # no AF_NETLINK here, or not permitted
            log.debug("no uevent socket (%s): power sources are rescanned on the timer only", err)
            return
        try:
            sock.bind((0, _KERNEL_GROUP))
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            log.debug("cannot bind the uevent socket (%s): power sources are rescanned on the timer only", err)
            return
        self._sock = sock

    @property
    def active(self) -> bool:
        return self._sock is not None

    def changed(self) -> bool:
        """Drain what arrived; True if any of it concerns our subsystems (or some was lost)."""
        if self._sock is None:
            return False
        hit = False
        while True:
            try:
                data = self._sock.recv(16384)
            except BlockingIOError:
                return hit
            except OSError as err:  # ENOBUFS: the queue overflowed, events were lost
                log.debug("uevent socket: %s", err)
                return True
            if uevent_subsystem(data) in self.subsystems:
                hit = True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
