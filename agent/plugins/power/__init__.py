"""The power chain: RAPL, hwmon, power_supply, ACPI meter, IPMI, Redfish BMCs and UPSes (NUT)."""

from agent.plugins.power.plugin import PowerPlugin

__all__ = ["PowerPlugin"]
