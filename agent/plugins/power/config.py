"""The ``plugins.power`` YAML section: one sub-section per source, each optional."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class KernelSourceConfig:
    """RAPL, hwmon, power_supply and the ACPI power meter: on by default, read from --sysfs-root."""

    enabled: bool = True


@dataclass
class IpmiConfig:
    enabled: bool = True
    #: BMC address for ``-I lanplus``; empty means the local BMC (``<dev>/ipmi0``, needs root).
    host: str = ""
    port: int = 623
    username: str = ""
    #: Prefer ``password_env``; a password given here is handed to ipmitool the same way
    #: (environment + ``-E``), so it never shows in ``ps`` or in logs.
    password: str = ""
    password_env: str = "IPMI_PASSWORD"
    interface: str = "lanplus"
    #: RMCP+ cipher suite; giving one skips ipmitool's cipher-suite probe (seconds on some BMCs).
    cipher_suite: int = 3
    ipmitool: str = "ipmitool"
    dcmi: bool = True
    sdr: bool = True
    #: Empty: ``sdr elist`` (every sensor). Else ``sdr type <T>`` for each, e.g. ["Power Supply",
    #: "Current", "Voltage"]: far fewer requests on a BMC with hundreds of sensors.
    sdr_types: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"ipmi.port {self.port} is not a TCP/UDP port (1-65535)")


@dataclass
class RedfishConfig:
    enabled: bool = True
    #: ``https://bmc.example`` (the service root ``/redfish/v1`` is appended); empty: source off.
    url: str = ""
    username: str = ""
    password: str = ""
    password_env: str = "REDFISH_PASSWORD"
    auth: Literal["session", "basic"] = "session"
    #: false accepts any certificate (BMCs ship self-signed ones); prefer ``ca_file``.
    verify: bool = True
    ca_file: str = ""
    #: Chassis ids to read; empty means every member of ``/redfish/v1/Chassis``.
    chassis: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"redfish.url {self.url!r} must start with https:// (or http://)")


@dataclass
class NutConfig:
    enabled: bool = True
    #: upsd address; empty: source off.
    host: str = ""
    port: int = 3493
    #: UPS names on that upsd; empty means every UPS it lists (LIST UPS).
    ups: list[str] = field(default_factory=list)
    username: str = ""
    password: str = ""
    password_env: str = "NUT_PASSWORD"


@dataclass
class PowerConfig:
    rapl: KernelSourceConfig = field(default_factory=KernelSourceConfig)
    hwmon: KernelSourceConfig = field(default_factory=KernelSourceConfig)
    power_supply: KernelSourceConfig = field(default_factory=KernelSourceConfig)
    acpi: KernelSourceConfig = field(default_factory=KernelSourceConfig)
    ipmi: IpmiConfig = field(default_factory=IpmiConfig)
    redfish: RedfishConfig = field(default_factory=RedfishConfig)
    nut: NutConfig = field(default_factory=NutConfig)
    #: Deadline of each source in one collection; keep it below the plugin's ``timeout``.
    source_timeout: float = 5.0
    #: Longest gap between two power readings that energy integration bridges.
    energy_max_gap: float = 300.0
    #: Seconds between rescans of the kernel sources' sysfs classes (new supplies, hwmon chips,
    #: RAPL zones). A kernel hot-plug event or a vanished file rescans at once.
    rescan_interval: float = 300.0

    def validate(self) -> None:
        if self.source_timeout <= 0:
            raise ValueError("source_timeout must be positive (seconds)")
        if self.energy_max_gap <= 0:
            raise ValueError("energy_max_gap must be positive (seconds)")
        if self.rescan_interval <= 0:
            raise ValueError("rescan_interval must be positive (seconds)")
