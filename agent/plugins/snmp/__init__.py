"""Rack PDUs, UPSs and environmental sensors over SNMP v2c/v3 (pysnmp, asyncio)."""

from agent.plugins.snmp.plugin import SnmpPlugin

__all__ = ["SnmpPlugin"]
