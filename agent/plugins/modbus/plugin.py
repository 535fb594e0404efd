"""Battery energy storage (BESS) and DER inverters over Modbus TCP, read through SunSpec models.

Discovery finds the ``SunS`` marker and walks the model chain (model 1 common, 70x DER,
802-805 battery); each model is decoded by the SunSpec definitions themselves
(``sunspec.py``), so scale factors and "not implemented" values follow the spec for every
model. Devices are polled concurrently, each under its own deadline; a dead device costs its
own samples, ``modbus_device_up 0`` and one log line.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from pathlib import Path

from agent.errors import PluginError, PluginUnavailable
from agent.model import Collection
from agent.plugin import AsyncPlugin, FailureEpisodes, PluginContext
from agent.plugins.modbus import metrics as m
from agent.plugins.modbus.client import ModbusError, SunSpecClient
from agent.plugins.modbus.config import ModbusConfig, ModbusDeviceConfig
from agent.plugins.modbus.readings import battery_samples, inverter_samples
from agent.plugins.modbus.sunspec import GroupValues, ModelDef, SunSpecError, decode_model, load_models


def default_models_dir() -> Path:
    """The SunSpec model definitions pysunspec2 ships (the SunSpec Alliance's JSON models)."""
    try:
        return Path(str(resources.files("sunspec2").joinpath("models").joinpath("json")))
    except ModuleNotFoundError as err:
        raise PluginUnavailable("no SunSpec model definitions: install pysunspec2 (pip install "
                                "'fleetmon[modbus]') or set plugins.modbus.models_dir") from err


def labels_of(dev: ModbusDeviceConfig) -> dict[str, str]:
    out = {dev.kind: dev.name, **dev.labels}
    if dev.rack:
        out["rack"] = dev.rack
    return out


def device_samples(dev: ModbusDeviceConfig, models: dict[int, list[GroupValues]]) -> Collection:
    labels = labels_of(dev)
    return battery_samples(models, labels) if dev.kind == "bess" else inverter_samples(models, labels)


class ModbusPlugin(AsyncPlugin):
    name = "modbus"
    Config = ModbusConfig
    default_interval = 10.0
    config: ModbusConfig

    def __init__(self, ctx: PluginContext, config: ModbusConfig) -> None:
        super().__init__(ctx, config)
        self.models: dict[int, ModelDef] = {}
        self._clients: list[SunSpecClient] = []
        self._episodes = FailureEpisodes()

    def discover(self) -> None:
        if not self.config.devices:
            raise PluginUnavailable("no Modbus devices configured (plugins.modbus.devices)")
        try:
            import pymodbus  # noqa: F401, PLC0415 - only to name the extra to install
        except ImportError as err:
            raise PluginUnavailable("pymodbus is not installed (pip install 'fleetmon[modbus]')") from err
        folder = Path(self.config.models_dir) if self.config.models_dir else default_models_dir()
        try:
            self.models = load_models(folder)
        except SunSpecError as err:
            raise PluginUnavailable(f"{err} (plugins.modbus.models_dir)") from err
        self._clients = [SunSpecClient(d, self.config.request_timeout) for d in self.config.devices]
        self.log.info("modbus: %d device(s), %d SunSpec models from %s", len(self._clients), len(self.models), folder)

    async def collect(self) -> Collection:
        if not self._clients:
            # discover() reads the SunSpec model files: it runs on the scheduler's worker thread
            # at start, never here on the event loop. A device that stops answering is found
            # again per device (its model chain is walked anew, asynchronously).
            raise PluginError("modbus plugin collected before discover() (or after close())")
        gate = asyncio.Semaphore(self.config.concurrency)
        try:
            results = await asyncio.gather(*(self._poll(c, gate) for c in self._clients))
        finally:
            # Connections live for one collection, on its event loop (many Modbus devices and
            # gateways accept only a few connections, and an idle one may be dropped by them);
            # the discovered model chain is kept.
            for c in self._clients:
                c.close()
        col = Collection()
        for sub in results:
            col.extend(sub)
        return col

    async def _poll(self, client: SunSpecClient, gate: asyncio.Semaphore) -> Collection:
        dev = client.dev
        labels = labels_of(dev)
        key = f"{dev.kind}/{dev.name}"
        async with gate:
            started = time.monotonic()
            try:
                col = await asyncio.wait_for(self._read(client), self.config.device_timeout)
            except TimeoutError:
                client.close()
                client.chain = []
                self._fail(key, f"{client.where}: no complete answer within {self.config.device_timeout:g}s "
                                "(plugins.modbus.device_timeout)")
                col = Collection()
                col.add(m.UP, 0, labels)
                return col
            except PluginError as err:
                client.chain = []
                self._fail(key, str(err))
                col = Collection()
                col.add(m.UP, 0, labels)
                return col
        if self._episodes.recovered(key):
            self.log.info("modbus: %s answers again", client.where)
        col.add(m.UP, 1, labels)
        col.add(m.POLL_DURATION, round(time.monotonic() - started, 6), labels)
        return col

    async def _read(self, client: SunSpecClient) -> Collection:
        chain = client.chain or await client.discover()
        decoded: dict[int, list[GroupValues]] = {}
        col = Collection()
        labels = labels_of(client.dev)
        for header in chain:
            col.add(m.MODELS, 1, {**labels, "model": str(header.id), "address": str(header.address),
                                  "length": str(header.length)})
            defn = self.models.get(header.id)
            if defn is None:
                continue  # a model without a definition here (vendor 64xxx): listed, not read
            regs = await client.read_model(header)
            try:
                decoded.setdefault(header.id, []).append(decode_model(defn, regs))
            except SunSpecError as err:
                raise ModbusError(f"{client.where}: {err}") from err
        col.extend(device_samples(client.dev, decoded))
        return col

    def _fail(self, key: str, message: str) -> None:
        if self._episodes.failed(key, message):
            self.log.warning("modbus: %s", message)

    def close(self) -> None:
        clients, self._clients = self._clients, []
        for c in clients:
            c.close()
