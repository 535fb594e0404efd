"""The optics plugin: InfiniBand/RoCE port counters, network links and transceiver diagnostics.

Port counters and link state are read every collection (default 10 s). Which devices, ports,
counter files and interfaces there are, and what never changes (a HCA's type and firmware, a
port's link layer, an interface's hardware address), is found by a scan at discovery and again
every ``rescan_interval`` or when a port is gone: a collection lists no directory. Module EEPROMs
are read at most every ``eeprom_interval`` (default 30 s): I2C reads are slow and the module's
microcontroller updates its monitors only every few hundred milliseconds. Between EEPROM
reads the last decoded values are emitted again, so series stay continuous.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from agent.attrfiles import HeldFiles
from agent.errors import PluginUnavailable
from agent.model import Collection, Event, Severity
from agent.plugin import Plugin, PluginContext
from agent.plugins.optics import emit
from agent.plugins.optics.eeprom import EepromError
from agent.plugins.optics.kernel import EepromDenied, EepromUnavailable, ModuleReader, live_address
from agent.plugins.optics.reading import ModuleReading
from agent.plugins.optics.sysfs import (
    DevicePlan,
    NetInterface,
    ib_devices,
    net_interfaces,
    parse_address,
    read_ib_ports,
    read_net,
    read_text,
    scan_ib_device,
)


@dataclass
class OpticsConfig:
    #: IB devices to read (shell globs, e.g. ``mlx5_*``); empty means all.
    ib_devices: list[str] = field(default_factory=list)
    exclude_ib_devices: list[str] = field(default_factory=list)
    #: Network interfaces to read (globs); empty means all.
    interfaces: list[str] = field(default_factory=list)
    exclude_interfaces: list[str] = field(default_factory=lambda: ["lo"])
    #: Only interfaces backed by a device (sysfs ``device`` link): skips bonds, bridges, veths.
    physical_only: bool = True
    #: How module EEPROMs are read: auto (netlink, then ioctl, then ethtool -m), or one route, or off.
    eeprom: Literal["auto", "netlink", "ioctl", "ethtool", "off"] = "auto"
    #: Seconds between EEPROM reads (port counters follow the plugin's own interval).
    eeprom_interval: float = 30.0
    #: The ethtool binary for the text fallback (fixed argv, no shell).
    ethtool_path: str = "ethtool"
    ethtool_timeout: float = 5.0
    #: Seconds between scans for IB devices, ports, counter files and interfaces that came or went
    #: (a port that disappears triggers one at once).
    rescan_interval: float = 300.0

    def validate(self) -> None:
        if self.eeprom_interval <= 0:
            raise ValueError("eeprom_interval must be positive (seconds)")
        if self.rescan_interval <= 0:
            raise ValueError("rescan_interval must be positive (seconds)")
        if self.ethtool_timeout <= 0:
            raise ValueError("ethtool_timeout must be positive (seconds)")


FLAP_ACTION = ("Check the cable and transceiver at both ends and the switch port; reseat or replace "
               "the optic if the link keeps flapping")


class OpticsPlugin(Plugin):
    name = "optics"
    Config = OpticsConfig
    default_interval = 10.0
    config: OpticsConfig

    def __init__(self, ctx: PluginContext, config: OpticsConfig) -> None:
        super().__init__(ctx, config)
        self._root = str(ctx.sysfs_root)
        self._reader: ModuleReader | None = None
        self._modules: dict[str, ModuleReading] = {}
        self._eeprom_at = float("-inf")
        self._carrier_changes: dict[str, int] = {}
        self._link_downed: dict[tuple[str, str], int] = {}
        self._logged: set[str] = set()
        self._devices: list[DevicePlan] = []
        self._nics: list[tuple[str, bytes | None]] = []  # (interface, hardware address)
        self._scanned_at = float("-inf")
        #: The attribute files a collection reads, held open between collections.
        self._files = HeldFiles()

    def discover(self) -> None:
        c = self.config
        ibs = ib_devices(self._root, c.ib_devices, c.exclude_ib_devices)
        nics = net_interfaces(self._root, c.interfaces, c.exclude_interfaces, c.physical_only)
        if not ibs and not nics:
            kind = "physical network interface" if c.physical_only else "network interface"
            raise PluginUnavailable(
                f"no InfiniBand device under {self._root}/class/infiniband and no {kind} under "
                f"{self._root}/class/net (after include/exclude filters)"
            )
        self.log.info("watching %d IB device(s) and %d interface(s)", len(ibs), len(nics))
        if c.eeprom != "off":
            self._reader = ModuleReader(c.eeprom, c.ethtool_path, c.ethtool_timeout)

    def _scan(self) -> None:
        c = self.config
        self._files.release()  # the files to read may change with the scan
        self._devices = [scan_ib_device(self._root, name)
                         for name in ib_devices(self._root, c.ib_devices, c.exclude_ib_devices)]
        self._nics = [(n, parse_address(read_text(f"{self._root}/class/net/{n}/address")))
                      for n in net_interfaces(self._root, c.interfaces, c.exclude_interfaces, c.physical_only)]
        self._scanned_at = time.monotonic()

    def collect(self) -> Collection:
        c = self.config
        col = Collection()
        if time.monotonic() - self._scanned_at >= c.rescan_interval:
            self._scan()
        devices = [read_ib_ports(self._root, plan, self._files) for plan in self._devices]
        if any(dev is None for dev in devices):  # a port went away: scan again, read again
            self._scan()
            devices = [read_ib_ports(self._root, plan, self._files) for plan in self._devices]
        for dev in devices:
            if dev is None:
                continue
            emit.ib_device_samples(col, dev)
            for port in dev.ports:
                self._watch_link_downed(col, port.device, port.port, port.counters.get("link_downed"))
        nics = [read_net(self._root, name, self._files, address) for name, address in self._nics]
        for nic in nics:
            emit.net_samples(col, nic)
            self._watch_carrier(col, nic)
        if self._reader is not None:
            now = time.monotonic()
            if now - self._eeprom_at >= c.eeprom_interval:
                self._eeprom_at = now
                self._refresh_modules(nics)
            for ifname, reading in self._modules.items():
                emit.module_samples(col, ifname, reading)
        return col

    def _refresh_modules(self, nics: list[NetInterface]) -> None:
        assert self._reader is not None
        fresh: dict[str, ModuleReading] = {}
        for nic in nics:
            if not self._is_live(nic):
                continue
            try:
                reading = self._reader.read(nic.name)
            except EepromDenied as err:
                self._once("denied", "%s; port counters continue", err)
                continue
            except (EepromError, EepromUnavailable) as err:
                self._once(f"error:{nic.name}", "module EEPROM of %s not decoded: %s", nic.name, err)
                continue
            if reading is not None:
                fresh[nic.name] = reading
        self._modules = fresh

    def _is_live(self, nic: NetInterface) -> bool:
        """EEPROM is read through the running kernel: only for an interface the running kernel
        has with the hardware address this sysfs tree shows, so a captured or foreign tree
        (``--sysfs-root``) never mixes in this host's modules."""
        if nic.address is None:
            return False
        live = live_address(nic.name)
        if live is None:
            return False
        n = min(len(live), len(nic.address))
        return n > 0 and live[:n] == nic.address[:n]

    def _watch_carrier(self, col: Collection, nic: NetInterface) -> None:
        if nic.carrier_changes is None:
            return
        before = self._carrier_changes.get(nic.name)
        self._carrier_changes[nic.name] = nic.carrier_changes
        if before is not None and nic.carrier_changes > before:
            delta = nic.carrier_changes - before
            col.events.append(Event(
                kind="net.link_flap", severity=Severity.WARNING,
                message=f"{nic.name}: link carrier changed {delta} time(s) since the last collection",
                labels={"interface": nic.name}, action=FLAP_ACTION,
            ))

    def _watch_link_downed(self, col: Collection, device: str, port: str, value: int | None) -> None:
        if value is None:
            return
        key = (device, port)
        before = self._link_downed.get(key)
        self._link_downed[key] = value
        if before is not None and value > before:
            col.events.append(Event(
                kind="ib.link_downed", severity=Severity.WARNING,
                message=f"{device} port {port}: link went down {value - before} time(s) since the last collection",
                labels={"device": device, "port": port}, action=FLAP_ACTION,
            ))

    def _once(self, key: str, msg: str, *args: object) -> None:
        if key in self._logged:
            self.log.debug(msg, *args)
            return
        self._logged.add(key)
        self.log.warning(msg, *args)

    def close(self) -> None:
        self._files.release()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
