"""The one place the plugin talks Modbus (pymodbus 3, asyncio): find the SunSpec model chain and
read each model's registers. Errors become :class:`ModbusError` naming the device and the fix."""

from __future__ import annotations

from agent.errors import PluginError
from agent.plugins.modbus.config import ModbusDeviceConfig
from agent.plugins.modbus.sunspec import END, SUNS, ModelHeader

#: Modbus allows at most 125 registers per read (Modbus Application Protocol V1.1b3, 6.3).
MAX_READ = 125
DEFAULT_BASES = (40000, 0, 50000)
#: A chain longer than this is a device answering garbage, not SunSpec.
MAX_MODELS = 64


class ModbusError(PluginError):
    """One device failed one poll; the message names the device and what to check."""


class SunSpecClient:
    def __init__(self, dev: ModbusDeviceConfig, timeout: float) -> None:
        self.dev, self.timeout = dev, timeout
        self._client: object | None = None
        self.chain: list[ModelHeader] = []

    @property
    def where(self) -> str:
        return f"{self.dev.kind} {self.dev.name} ({self.dev.host}:{self.dev.port} unit {self.dev.unit_id})"

    async def _connected(self):  # type: ignore[no-untyped-def]  # pymodbus client
        from pymodbus.client import AsyncModbusTcpClient  # noqa: PLC0415 - pymodbus loads on first use

        client = self._client
        if client is None or not client.connected:  # type: ignore[attr-defined]
            self.close()
            client = AsyncModbusTcpClient(self.dev.host, port=self.dev.port, timeout=self.timeout, retries=0,
                                          reconnect_delay=0)
            if not await client.connect():
                client.close()
                raise ModbusError(f"{self.where}: cannot connect (check the address, port {self.dev.port} and "
                                  "that the device or gateway accepts Modbus TCP)")
            self._client = client
        return client

    async def read(self, address: int, count: int) -> list[int]:
        from pymodbus.exceptions import ModbusException  # noqa: PLC0415

        client = await self._connected()
        out: list[int] = []
        while count > 0:
            n = min(count, MAX_READ)
            try:
                rr = await client.read_holding_registers(address, count=n, device_id=self.dev.unit_id)
            except ModbusException as err:
                self.close()
                raise ModbusError(f"{self.where}: reading {n} registers at {address} failed: {err}") from err
            if rr.isError():
                raise ModbusError(f"{self.where}: reading {n} registers at {address}: the device answered "
                                  f"exception {getattr(rr, 'exception_code', '?')} (address not mapped?)")
            if len(rr.registers) != n:
                raise ModbusError(f"{self.where}: asked {n} registers at {address}, got {len(rr.registers)}")
            out.extend(rr.registers)
            address, count = address + n, count - n
        return out

    async def discover(self) -> list[ModelHeader]:
        bases = (self.dev.base_address,) if self.dev.base_address is not None else DEFAULT_BASES
        base = None
        for candidate in bases:
            try:
                marker = await self.read(candidate, 2)
            except ModbusError:
                if self._client is None:
                    raise  # the connection itself failed: no other base will do better
                continue  # an exception response: nothing mapped there
            if tuple(marker) == SUNS:
                base = candidate
                break
        if base is None:
            raise ModbusError(f"{self.where}: no SunSpec marker 'SunS' at register "
                              f"{', '.join(map(str, bases))} (set base_address; is it a SunSpec device?)")
        chain = []
        addr = base + 2
        for _ in range(MAX_MODELS):
            model_id, length = await self.read(addr, 2)
            if model_id == END:
                break
            chain.append(ModelHeader(model_id, length, addr))
            addr += 2 + length
        else:
            raise ModbusError(f"{self.where}: the model chain has no end marker within {MAX_MODELS} models")
        self.chain = chain
        return chain

    async def read_model(self, header: ModelHeader) -> list[int]:
        regs = await self.read(header.address, header.length + 2)
        if regs[0] != header.id or regs[1] != header.length:
            self.chain = []  # the device's map changed (firmware update): find it again next time
            raise ModbusError(f"{self.where}: model {header.id} is no longer at register {header.address}")
        return regs

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()  # type: ignore[attr-defined]
