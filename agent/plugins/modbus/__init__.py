"""Battery storage (SunSpec 802-805) and DER inverters (SunSpec 701) over Modbus TCP (pymodbus)."""

from agent.plugins.modbus.plugin import ModbusPlugin

__all__ = ["ModbusPlugin"]
