"""The ``plugins.modbus`` YAML section: SunSpec devices over Modbus TCP."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass
class ModbusDeviceConfig:
    #: The device's name: the value of its `bess` or `inverter` label.
    name: str = ""
    #: bess: battery storage (SunSpec 802-805); inverter: DER / PCS (SunSpec 701).
    kind: Literal["bess", "inverter"] = "bess"
    host: str = ""
    port: int = 502
    #: Modbus unit (device) id behind the address (gateways put several devices on one address).
    unit_id: int = 1
    #: Register address of the "SunS" marker; unset: tried at 40000, 0 and 50000 (in that order).
    base_address: int | None = None
    rack: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.name or not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must be set (letters, digits, _ . : -); it becomes the "
                             f"{self.kind} label")
        if not self.host:
            raise ValueError("host must be set (the device's or gateway's address)")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a TCP port (1-65535)")
        if not 0 <= self.unit_id <= 247:
            raise ValueError(f"unit_id {self.unit_id} is not a Modbus unit id (0-247)")
        if self.base_address is not None and not 0 <= self.base_address <= 65535:
            raise ValueError(f"base_address {self.base_address} is not a register address (0-65535)")
        for key in self.labels:
            if key in ("node", self.kind, "rack"):
                raise ValueError(f"labels.{key}: set by the plugin; use `name`/`rack` instead")


@dataclass
class ModbusConfig:
    devices: list[ModbusDeviceConfig] = field(default_factory=list)
    #: Folder of SunSpec model definitions (model_<id>.json); empty: the ones pysunspec2 ships.
    models_dir: str = ""
    #: One request's timeout; a device's whole poll has `device_timeout`.
    request_timeout: float = 2.0
    device_timeout: float = 5.0
    concurrency: int = 16

    def validate(self) -> None:
        if self.request_timeout <= 0 or self.device_timeout <= 0:
            raise ValueError("request_timeout and device_timeout must be positive (seconds)")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        seen: set[tuple[str, str]] = set()
        for d in self.devices:
            if (d.kind, d.name) in seen:
                raise ValueError(f"devices: two {d.kind} devices named {d.name!r}; names label the series")
            seen.add((d.kind, d.name))
