"""Metric families of the modbus plugin (SunSpec battery storage and DER inverters)."""

from __future__ import annotations

from agent.model import counter, gauge, info

UP = gauge("modbus_device_up", "1 if the Modbus device answered within its deadline in the last collection, else 0",
           measurement="modbus")
MODELS = info("sunspec_model_info", "A SunSpec model the device implements (label model, address, length)",
              measurement="sunspec")
POLL_DURATION = gauge("modbus_poll_duration_seconds", "Time the last poll of this device took", "seconds",
                      measurement="modbus")

# --- battery storage (models 802-805) -----------------------------------------------------------
BESS_INFO = info("bess_info", "Battery identity from SunSpec model 1 and 802: manufacturer, model, serial, type")
SOC = gauge("bess_state_of_charge_ratio", "State of charge (0-1)", "ratio")
SOH = gauge("bess_state_of_health_ratio", "State of health: battery life remaining (0-1)", "ratio")
DOD = gauge("bess_depth_of_discharge_ratio", "Depth of discharge (0-1)", "ratio")
CYCLES = counter("bess_charge_cycles_total", "Charge/discharge cycles executed", "cycles")
CHARGE_STATUS = gauge("bess_charge_status",
                      "SunSpec ChaSt: 1 off, 2 empty, 3 discharging, 4 charging, 5 full, 6 holding, 7 testing")
STATE = gauge("bess_state",
              "SunSpec State: 1 disconnected, 2 initializing, 3 connected, 4 standby, 5 SoC protection, "
              "6 suspending, 99 fault")
VOLTAGE = gauge("bess_voltage_volts", "DC bus voltage of the battery", "volts")
CURRENT = gauge("bess_current_amperes", "DC current to (negative) or from (positive) the battery", "amperes")
POWER = gauge("bess_power_watts", "DC power: positive discharging, negative charging", "watts")
CHARGE_POWER = gauge("bess_charge_power_watts", "DC power flowing into the battery (0 while discharging)", "watts")
DISCHARGE_POWER = gauge("bess_discharge_power_watts", "DC power flowing out of the battery (0 while charging)",
                        "watts")
CAPACITY = gauge("bess_energy_capacity_joules", "Nameplate energy capacity", "joules")
MAX_CHARGE = gauge("bess_max_charge_power_watts", "Nameplate maximum charge rate", "watts")
MAX_DISCHARGE = gauge("bess_max_discharge_power_watts", "Nameplate maximum discharge rate", "watts")
CELL_V_MAX = gauge("bess_cell_voltage_max_volts", "Highest cell voltage in the battery", "volts")
CELL_V_MIN = gauge("bess_cell_voltage_min_volts", "Lowest cell voltage in the battery", "volts")
CELL_V_AVG = gauge("bess_cell_voltage_avg_volts", "Average cell voltage in the battery", "volts")
ALARM = gauge("bess_alarm", "1 while the battery raises this event (SunSpec Evt1 bit), else 0")
STRINGS = gauge("bess_strings", "Strings in the lithium-ion bank")
STRINGS_CONNECTED = gauge("bess_strings_connected", "Strings connected to the bus")
MOD_T_MAX = gauge("bess_module_temperature_max_celsius", "Highest module temperature in the bank", "celsius")
MOD_T_MIN = gauge("bess_module_temperature_min_celsius", "Lowest module temperature in the bank", "celsius")
MOD_T_AVG = gauge("bess_module_temperature_avg_celsius", "Average module temperature in the bank", "celsius")
STR_SOC = gauge("bess_string_state_of_charge_ratio", "State of charge of one string (0-1)", "ratio")
STR_SOH = gauge("bess_string_state_of_health_ratio", "State of health of one string (0-1)", "ratio")
STR_A = gauge("bess_string_current_amperes", "Current of one string", "amperes")
STR_V = gauge("bess_string_voltage_volts", "Voltage of one string", "volts")
STR_CELL_V_MAX = gauge("bess_string_cell_voltage_max_volts", "Highest cell voltage in one string", "volts")
STR_CELL_V_MIN = gauge("bess_string_cell_voltage_min_volts", "Lowest cell voltage in one string", "volts")
STR_T_MAX = gauge("bess_string_module_temperature_max_celsius", "Highest module temperature in one string",
                  "celsius")
STR_T_MIN = gauge("bess_string_module_temperature_min_celsius", "Lowest module temperature in one string",
                  "celsius")
STR_FAIL = gauge("bess_string_connection_failure",
                 "SunSpec StrConFail: 0 none, 1 button pushed, 2 ground fault, 3 outside voltage range, "
                 "4 not enabled, 5 fuse open, 6 contactor failure, 7 precharge failure, 8 string fault")
STR_ALARM = gauge("bess_string_alarm", "1 while the string raises this event (SunSpec StrEvt1 bit), else 0")
MOD_SOC = gauge("bess_module_state_of_charge_ratio", "State of charge of one module (0-1)", "ratio")
MOD_SOH = gauge("bess_module_state_of_health_ratio", "State of health of one module (0-1)", "ratio")
MOD_CELL_V_MAX = gauge("bess_module_cell_voltage_max_volts", "Highest cell voltage in one module", "volts")
MOD_CELL_V_MIN = gauge("bess_module_cell_voltage_min_volts", "Lowest cell voltage in one module", "volts")
MOD_CELL_T_MAX = gauge("bess_module_cell_temperature_max_celsius", "Highest cell temperature in one module",
                       "celsius")
MOD_CELL_T_MIN = gauge("bess_module_cell_temperature_min_celsius", "Lowest cell temperature in one module",
                       "celsius")
CELL_V = gauge("bess_cell_voltage_volts", "Voltage of one cell", "volts")
CELL_T = gauge("bess_cell_temperature_celsius", "Temperature of one cell", "celsius")

# --- DER / inverters (model 701) -------------------------------------------------------------------
INV_INFO = info("inverter_info", "Inverter identity from SunSpec model 1: manufacturer, model, serial, version")
INV_POWER = gauge("inverter_power_watts", "AC active power (positive: injected into the grid)", "watts")
INV_VA = gauge("inverter_apparent_power_voltamperes", "AC apparent power", "voltamperes")
INV_VAR = gauge("inverter_reactive_power_var", "AC reactive power", "var")
INV_PF = gauge("inverter_power_factor_ratio", "AC power factor (-1..1)", "ratio")
INV_A = gauge("inverter_current_amperes", "AC current, total", "amperes")
INV_V = gauge("inverter_voltage_volts", "AC voltage (kind: line_to_line, line_to_neutral), average", "volts")
INV_HZ = gauge("inverter_frequency_hertz", "AC frequency", "hertz")
INV_E_INJ = counter("inverter_energy_injected_joules_total", "AC energy injected into the grid", "joules")
INV_E_ABS = counter("inverter_energy_absorbed_joules_total", "AC energy absorbed from the grid", "joules")
INV_TEMP = gauge("inverter_temperature_celsius",
                 "Temperature (sensor: ambient, cabinet, heatsink, transformer, switch, other)", "celsius")
INV_STATE = gauge("inverter_state", "SunSpec InvSt: 0 off, 1 sleeping, 2 starting, 3 running, 4 throttled, "
                  "5 shutting down, 6 fault, 7 standby")
INV_ON = gauge("inverter_on", "SunSpec St: 1 if the DER is on, else 0")
INV_GRID = gauge("inverter_grid_connected", "SunSpec ConnSt: 1 if connected to the grid, else 0")
INV_ALARM = gauge("inverter_alarm", "1 while the inverter raises this alarm (SunSpec Alrm bit), else 0")
INV_PH_W = gauge("inverter_phase_power_watts", "AC active power of one phase", "watts")
INV_PH_A = gauge("inverter_phase_current_amperes", "AC current of one phase", "amperes")
INV_PH_V = gauge("inverter_phase_voltage_volts", "AC line-to-neutral voltage of one phase", "volts")
INV_THROTTLE = gauge("inverter_throttle_ratio", "Output throttled to this share of the maximum (0-1)", "ratio")
