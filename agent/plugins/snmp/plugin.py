"""SNMP poller for the power chain past the node: rack PDUs, UPSs and environmental sensors.

One agent (a facility poller host, or any node) polls many devices. ``collect`` is a coroutine:
devices are polled concurrently (``concurrency`` at a time) on one pysnmp engine, each under its
own ``device_timeout``, so a dead PDU costs its own samples, ``pdu_up 0`` and one log line, never
the other devices' data. Reading (``client.py``) is apart from parsing (the MIB readers turn a
:class:`Snapshot` into samples and are tested on recordings).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import ConfigError, PluginError, PluginUnavailable
from agent.model import Collection, Metric
from agent.plugin import AsyncPlugin, FailureEpisodes, PluginContext
from agent.plugins.snmp import metrics as m
from agent.plugins.snmp.apc import RPDU, RPDU2
from agent.plugins.snmp.config import DeviceConfig, SnmpConfig
from agent.plugins.snmp.profiles import builtin_profiles, compile_profile
from agent.plugins.snmp.reader import Reader
from agent.plugins.snmp.snapshot import Snapshot, merge
from agent.plugins.snmp.system import SYSTEM
from agent.plugins.snmp.upsmib import UPS_MIB

if TYPE_CHECKING:
    from agent.plugins.snmp.client import SnmpClient

#: Built-in readers; a tuple is a fallback chain (the first the device implements is used).
NATIVE: dict[str, tuple[Reader, ...]] = {
    "apc": (RPDU2, RPDU),
    "apc-rpdu2": (RPDU2,),
    "apc-rpdu": (RPDU,),
    "ups-mib": (UPS_MIB,),
}
DEFAULT_MIBS = {"pdu": ["apc"], "ups": ["ups-mib"], "sensor": []}
UP: dict[str, Metric] = {"pdu": m.PDU_UP, "ups": m.UPS_UP, "sensor": m.SENSOR_UP}


@dataclass
class Device:
    cfg: DeviceConfig
    chains: list[tuple[Reader, ...]]

    @property
    def labels(self) -> dict[str, str]:
        out = {self.cfg.kind: self.cfg.name, **self.cfg.labels}
        if self.cfg.rack:
            out["rack"] = self.cfg.rack
        return out


def resolve_devices(cfg: SnmpConfig) -> list[Device]:
    """Each device with its readers; unknown MIB names are a ConfigError naming device and key."""
    table: dict[str, tuple[Reader, ...]] = dict(NATIVE)
    for name, profile in {**builtin_profiles(), **cfg.profiles}.items():
        table[name] = (compile_profile(name, profile, f"plugins.snmp.profiles.{name}"),)
    out = []
    for i, dev in enumerate(cfg.devices):
        names = DEFAULT_MIBS[dev.kind] if dev.mibs is None else dev.mibs
        unknown = [n for n in names if n not in table]
        if unknown:
            raise ConfigError(f"plugins.snmp.devices[{i}] ({dev.name}): unknown mibs {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(table))} (add a mapping under plugins.snmp.profiles)")
        out.append(Device(dev, [table[n] for n in names]))
    return out


def parse_device(dev: Device, snap: Snapshot) -> tuple[Collection, list[str]]:
    """Samples of one polled device (pure); also the MIBs the device turned out not to have."""
    labels = dev.labels
    col = SYSTEM.parse(snap, labels)
    missing = []
    for chain in dev.chains:
        reader = next((r for r in chain if r.present(snap)), None)
        if reader is None:
            missing.append(" / ".join(r.name for r in chain))
            continue
        col.extend(reader.parse(snap, labels))
    return col, missing


class SnmpPlugin(AsyncPlugin):
    name = "snmp"
    Config = SnmpConfig
    default_interval = 30.0
    config: SnmpConfig

    def __init__(self, ctx: PluginContext, config: SnmpConfig) -> None:
        super().__init__(ctx, config)
        self.devices: list[Device] = []
        # pysnmp SnmpEngines: one shared by the v2c devices, one per v3 device (an engine's USM
        # table holds one key set per user name, and devices often share the user name with
        # different keys). They live as long as the plugin; their sockets live for one
        # collection, on its event loop (client.open_engine / release_engine).
        self._engines: dict[int, Any] = {}
        self._clients: dict[int, SnmpClient] = {}
        self._episodes = FailureEpisodes()
        self._missing_noted: set[tuple[str, str]] = set()

    def discover(self) -> None:
        if not self.config.devices:
            raise PluginUnavailable("no SNMP devices configured (plugins.snmp.devices)")
        try:
            import pysnmp  # noqa: F401, PLC0415 - only to name the extra to install
        except ImportError as err:
            raise PluginUnavailable("pysnmp is not installed (pip install 'fleetmon[snmp]')") from err
        self.devices = resolve_devices(self.config)
        self.log.info("snmp: %d device(s): %s", len(self.devices),
                      ", ".join(f"{d.cfg.kind} {d.cfg.name}" for d in self.devices))

    def _client(self, i: int, dev: Device) -> SnmpClient:
        # pysnmp is imported on first use: a node that does not poll SNMP never loads it.
        from pysnmp.hlapi.v3arch.asyncio import SnmpEngine  # noqa: PLC0415

        from agent.plugins.snmp.client import SnmpClient, open_engine  # noqa: PLC0415

        slot = i if dev.cfg.version == "3" else -1
        engine = self._engines.get(slot)
        if engine is None:
            engine = self._engines[slot] = SnmpEngine()
        open_engine(engine)
        client = self._clients.get(i)
        if client is None:
            client = SnmpClient(engine, dev.cfg, timeout=self.config.request_timeout,
                                retries=self.config.retries, max_repetitions=self.config.max_repetitions)
            self._clients[i] = client
        return client

    async def collect(self) -> Collection:
        if not self.devices:
            # discover() imports pysnmp and compiles the profiles: it runs on the scheduler's
            # worker thread at start, never here on the event loop; a device that stops
            # answering costs its own samples and is asked again next time.
            raise PluginError("snmp plugin collected before discover()")
        gate = asyncio.Semaphore(self.config.concurrency)
        try:
            results = await asyncio.gather(*(self._poll(i, dev, gate) for i, dev in enumerate(self.devices)))
        finally:
            self._release_engines()
        col = Collection()
        for sub in results:
            col.extend(sub)
        return col

    async def _poll(self, i: int, dev: Device, gate: asyncio.Semaphore) -> Collection:
        labels = dev.labels
        key = f"{dev.cfg.kind}/{dev.cfg.name}"
        async with gate:
            started = time.monotonic()
            client = self._client(i, dev)
            try:
                snap = await asyncio.wait_for(self._read(client, dev), self.config.device_timeout)
            except TimeoutError:
                self._fail(key, f"{client.where}: no complete answer within {self.config.device_timeout:g}s "
                                f"(plugins.snmp.device_timeout)", "no answer")
                return self._down(dev, labels)
            except PluginError as err:
                self._fail(key, str(err), getattr(err, "reason", str(err)))
                return self._down(dev, labels)
            elapsed = time.monotonic() - started
        if self._episodes.recovered(key):
            self.log.info("snmp: %s answers again", client.where)
        col, missing = parse_device(dev, snap)
        for name in missing:
            if (key, name) not in self._missing_noted:
                self._missing_noted.add((key, name))
                self.log.warning("snmp: %s does not implement %s (nothing under its OIDs); set "
                                 "plugins.snmp.devices[].mibs for this model", client.where, name)
        col.add(UP[dev.cfg.kind], 1, labels)
        col.add(m.POLL_DURATION, round(elapsed, 6), labels)
        return col

    async def _read(self, client: SnmpClient, dev: Device) -> Snapshot:
        first = [chain[0] for chain in dev.chains]
        gets = [*SYSTEM.gets, *(g for r in first for g in r.gets)]
        walks = [w for r in first for w in r.walks]
        snap = await client.poll(gets, walks)
        # A fallback is read only when the device lacks the chain's first reader (chains have two).
        later = [chain[1] for chain in dev.chains if len(chain) > 1 and not chain[0].present(snap)]
        if later:
            more = await client.poll([g for r in later for g in r.gets], [w for r in later for w in r.walks])
            snap = merge([snap, more])
        return snap

    def _down(self, dev: Device, labels: dict[str, str]) -> Collection:
        col = Collection()
        col.add(UP[dev.cfg.kind], 0, labels)
        return col

    def _fail(self, key: str, message: str, reason: str) -> None:
        # A silent device times out on whichever request went first: one episode, one line.
        if self._episodes.failed(key, reason):
            self.log.warning("snmp: %s", message)

    def _release_engines(self) -> None:
        from agent.plugins.snmp.client import release_engine  # noqa: PLC0415

        for engine in self._engines.values():
            release_engine(engine)

    def close(self) -> None:
        # Sockets never outlive a collection (see __init__); the engines are dropped here.
        self._engines, self._clients = {}, {}
