"""Every metric family the power plugin emits, declared once (names: DESIGN.md, power row).

Units are base units (watts, joules, volts, amperes, seconds, ratios 0-1); each source converts
at its edge and says what the raw unit was.
"""

from __future__ import annotations

from agent.model import counter, gauge

# --- node level, any source (label ``source``: acpi, dcmi, redfish) ---------------------------
NODE_POWER = gauge("node_power_watts", "Power drawn by the whole node, per source", "watts")
NODE_POWER_CAP = gauge("node_power_cap_watts", "Power limit (cap) set for the node, per source", "watts")
NODE_ENERGY = counter(
    "node_energy_joules_total",
    "Energy drawn by the node since the agent started, integrated from node_power_watts (trapezoid)",
    "joules",
)
SOURCE_UP = gauge(
    "power_source_up", "1 if the power source answered in the last collection, else 0", measurement="power",
)

# --- PSUs (Redfish, IPMI) ---------------------------------------------------------------------
PSU_UP = gauge("psu_up", "1 if the PSU is present, enabled and not failed, else 0")
PSU_PRESENT = gauge("psu_present", "1 if the PSU bay holds a PSU, else 0")
PSU_HEALTH = gauge("psu_health", "PSU health: 0 OK, 1 Warning, 2 Critical (Redfish Status.Health)")
PSU_INPUT_POWER = gauge("psu_input_power_watts", "PSU input power", "watts")
PSU_OUTPUT_POWER = gauge("psu_output_power_watts", "PSU output power", "watts")
PSU_INPUT_VOLTAGE = gauge("psu_input_voltage_volts", "PSU line input voltage", "volts")
PSU_CAPACITY = gauge("psu_capacity_watts", "PSU rated output capacity", "watts")
PSU_ENERGY = counter("psu_energy_joules_total", "Energy through the PSU as its BMC counts it", "joules")
PSU_REDUNDANCY_OK = gauge(
    "psu_redundancy_ok", "1 if the PSU redundancy group is in effect and healthy, else 0", measurement="psu",
)

# --- RAPL (powercap) --------------------------------------------------------------------------
RAPL_ENERGY = counter("rapl_energy_joules_total", "RAPL zone energy, unwrapped across counter wraps", "joules")
RAPL_POWER = gauge("rapl_power_watts", "RAPL zone power, from the energy delta between collections", "watts")
RAPL_LIMIT = gauge("rapl_power_limit_watts", "RAPL zone power limit per constraint", "watts")

# --- hwmon ------------------------------------------------------------------------------------
HWMON_POWER = gauge("hwmon_power_watts", "hwmon power sensor", "watts")
HWMON_ENERGY = counter("hwmon_energy_joules_total", "hwmon energy sensor", "joules")
HWMON_VOLTAGE = gauge("hwmon_voltage_volts", "hwmon voltage sensor", "volts")
HWMON_CURRENT = gauge("hwmon_current_amperes", "hwmon current sensor", "amperes")

# --- class/power_supply -----------------------------------------------------------------------
_PS = "power_supply"
PS_ONLINE = gauge("power_supply_online", "1 if the supply (mains adapter) is online", measurement=_PS)
PS_PRESENT = gauge("power_supply_present", "1 if the supply (battery) is present", measurement=_PS)
PS_STATUS = gauge(
    "power_supply_status", "1 for the supply's current status (label status)", measurement=_PS,
)
PS_POWER = gauge("power_supply_power_watts", "Power flowing into or out of the supply", "watts", measurement=_PS)
PS_ENERGY = gauge("power_supply_energy_joules", "Energy stored now", "joules", measurement=_PS)
PS_ENERGY_FULL = gauge("power_supply_energy_full_joules", "Energy stored when full", "joules", measurement=_PS)
PS_ENERGY_DESIGN = gauge(
    "power_supply_energy_full_design_joules", "Energy stored when full, as designed", "joules", measurement=_PS,
)
PS_CHARGE = gauge("power_supply_charge_coulombs", "Charge stored now", "coulombs", measurement=_PS)
PS_CAPACITY = gauge("power_supply_capacity_ratio", "State of charge (0-1)", "ratio", measurement=_PS)
PS_VOLTAGE = gauge("power_supply_voltage_volts", "Voltage now", "volts", measurement=_PS)
PS_CURRENT = gauge("power_supply_current_amperes", "Current now", "amperes", measurement=_PS)

# --- IPMI -------------------------------------------------------------------------------------
IPMI_POWER = gauge("ipmi_power_watts", "DCMI power reading (stat: instant, minimum, maximum, average)", "watts")
IPMI_SENSOR_WATTS = gauge("ipmi_sensor_watts", "IPMI SDR sensor reading in watts", "watts")
IPMI_SENSOR_AMPERES = gauge("ipmi_sensor_amperes", "IPMI SDR sensor reading in amperes", "amperes")
IPMI_SENSOR_VOLTS = gauge("ipmi_sensor_volts", "IPMI SDR sensor reading in volts", "volts")

# --- UPS (NUT) --------------------------------------------------------------------------------
UPS_UP = gauge("ups_up", "1 if upsd serves fresh data for the UPS, else 0")
UPS_ON_BATTERY = gauge("ups_on_battery", "1 if the UPS runs on battery (status OB), else 0")
UPS_LOW_BATTERY = gauge("ups_low_battery", "1 if the UPS reports low battery (status LB), else 0")
UPS_CHARGE = gauge("ups_battery_charge_ratio", "Battery charge (0-1)", "ratio")
UPS_RUNTIME = gauge("ups_battery_runtime_seconds", "Battery runtime left at the present load", "seconds")
UPS_BATTERY_VOLTAGE = gauge("ups_battery_voltage_volts", "Battery voltage", "volts")
UPS_LOAD = gauge("ups_load_ratio", "Load relative to the UPS capacity (0-1)", "ratio")
UPS_INPUT_VOLTAGE = gauge("ups_input_voltage_volts", "Input (utility) voltage", "volts")
UPS_OUTPUT_VOLTAGE = gauge("ups_output_voltage_volts", "Output voltage", "volts")
UPS_REAL_POWER = gauge("ups_real_power_watts", "Output real power", "watts")
UPS_REAL_POWER_NOMINAL = gauge("ups_real_power_nominal_watts", "Nominal real power capacity", "watts")
UPS_STATUS_FLAG = gauge("ups_status_flag", "1 if the NUT ups.status flag is set, else 0")
