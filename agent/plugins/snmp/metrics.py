"""Every metric family the snmp plugin emits from its built-in MIB readers, declared once.

Units are base units (amperes, volts, watts, volt-amperes, joules, seconds, ratios 0-1); each
reader converts at its edge and names the MIB's raw unit next to the conversion. Mapping
profiles (``profiles.py``) declare their own families from YAML.
"""

from __future__ import annotations

from agent.model import counter, gauge, info

# --- every device (SNMPv2-MIB system group) -----------------------------------------------------
# `<kind>_up` carries the device's own label (pdu, ups or sensor), so rules select by kind.
PDU_UP = gauge("pdu_up", "1 if the PDU answered SNMP within its deadline in the last collection, else 0")
UPS_UP = gauge("ups_up", "1 if the UPS answered (SNMP: within its deadline; NUT: upsd serves fresh data), else 0")
SENSOR_UP = gauge("sensor_up", "1 if the environmental sensor answered SNMP within its deadline, else 0")
DEVICE_INFO = info("snmp_device_info", "SNMP identity: sysObjectID, sysName, and vendor model/serial where known")
UPTIME = gauge("snmp_uptime_seconds", "Agent uptime (SNMPv2-MIB sysUpTime, hundredths of a second)", "seconds",
               measurement="snmp")
POLL_DURATION = gauge("snmp_poll_duration_seconds", "Time the last poll of this device took", "seconds",
                      measurement="snmp")

# --- rack PDUs (APC PowerNet-MIB rPDU2 / rPDU) -----------------------------------------------------
PDU_INFO = info("pdu_info", "PDU identity: model, serial, firmware, name")
PDU_POWER = gauge("pdu_power_watts", "Active power drawn through the whole PDU", "watts")
PDU_PEAK_POWER = gauge("pdu_peak_power_watts", "Peak active power since the PDU's peak was last reset", "watts")
PDU_APPARENT = gauge("pdu_apparent_power_voltamperes", "Apparent power through the whole PDU", "voltamperes")
PDU_PF = gauge("pdu_power_factor_ratio", "Power factor of the whole PDU (0-1)", "ratio")
PDU_ENERGY = counter("pdu_energy_joules_total",
                     "Energy through the PDU since its meter was last reset (resettable: a drop is a reset)",
                     "joules")
PDU_RATING = gauge("pdu_current_rating_amperes", "Rated current of the PDU per input phase", "amperes")
PDU_PHASE_CURRENT = gauge("pdu_phase_current_amperes", "Current on one input phase", "amperes")
PDU_PHASE_PEAK_CURRENT = gauge("pdu_phase_peak_current_amperes", "Peak current on one input phase", "amperes")
PDU_PHASE_VOLTAGE = gauge("pdu_phase_voltage_volts", "Voltage of one input phase", "volts")
PDU_PHASE_POWER = gauge("pdu_phase_power_watts", "Active power on one input phase", "watts")
PDU_PHASE_APPARENT = gauge("pdu_phase_apparent_power_voltamperes", "Apparent power on one input phase",
                           "voltamperes")
PDU_PHASE_PF = gauge("pdu_phase_power_factor_ratio", "Power factor of one input phase (0-1)", "ratio")
PDU_PHASE_RATING = gauge("pdu_phase_current_rating_amperes", "Rated current of one input phase", "amperes")
PDU_PHASE_LOAD = gauge("pdu_phase_load_ratio", "Phase current relative to its rating (0-1; above 1 trips)",
                       "ratio")
PDU_PHASE_THRESHOLD = gauge("pdu_phase_threshold_amperes",
                            "The PDU's own phase current threshold (level: low, near_overload, overload)", "amperes")
PDU_PHASE_STATE = gauge("pdu_phase_load_state",
                        "The PDU's own verdict on the phase load: 0 low, 1 normal, 2 near overload, 3 overload")
PDU_BANK_CURRENT = gauge("pdu_bank_current_amperes", "Current through one breaker bank", "amperes")
PDU_BANK_PEAK_CURRENT = gauge("pdu_bank_peak_current_amperes", "Peak current through one breaker bank", "amperes")
PDU_BANK_RATING = gauge("pdu_bank_current_rating_amperes", "Rating of the bank's breaker", "amperes")
PDU_BANK_LOAD = gauge("pdu_bank_load_ratio", "Bank current relative to its breaker rating (0-1)", "ratio")
PDU_BANK_THRESHOLD = gauge("pdu_bank_threshold_amperes",
                           "The PDU's own bank current threshold (level: low, near_overload, overload)", "amperes")
PDU_BANK_STATE = gauge("pdu_bank_load_state", "The PDU's verdict on the bank load: 0 low, 1 normal, 2 near overload, "
                       "3 overload")
PDU_OUTLET_INFO = info("pdu_outlet_info", "Outlet name as configured in the PDU")
PDU_OUTLET_ON = gauge("pdu_outlet_on", "1 if the switched outlet is on, else 0")
PDU_OUTLET_CURRENT = gauge("pdu_outlet_current_amperes", "Current through one metered outlet", "amperes")
PDU_OUTLET_POWER = gauge("pdu_outlet_power_watts", "Active power through one metered outlet", "watts")
PDU_OUTLET_PEAK_POWER = gauge("pdu_outlet_peak_power_watts", "Peak active power through one metered outlet", "watts")
PDU_OUTLET_ENERGY = counter("pdu_outlet_energy_joules_total",
                            "Energy through one metered outlet since its meter was last reset", "joules")
PDU_OUTLET_RATING = gauge("pdu_outlet_power_rating_watts", "Power rating of one metered outlet", "watts")
PDU_OUTLET_LOAD = gauge("pdu_outlet_load_ratio", "Outlet power relative to its rating (0-1)", "ratio")

# --- UPSs (UPS-MIB, RFC 1628); names shared with the power plugin's NUT source -------------------
UPS_INFO = info("ups_info", "UPS identity: manufacturer, model, software version, name")
UPS_ON_BATTERY = gauge("ups_on_battery", "1 if the UPS runs on battery, else 0")
UPS_LOW_BATTERY = gauge("ups_low_battery", "1 if the UPS reports low or depleted battery, else 0")
UPS_OUTPUT_SOURCE = gauge("ups_output_source",
                          "UPS-MIB upsOutputSource: 1 other, 2 none, 3 normal, 4 bypass, 5 battery, 6 booster, "
                          "7 reducer")
UPS_SECONDS_ON_BATTERY = gauge("ups_seconds_on_battery", "Time since the UPS switched to battery (0 on mains)",
                               "seconds")
UPS_CHARGE = gauge("ups_battery_charge_ratio", "Battery charge (0-1)", "ratio")
UPS_RUNTIME = gauge("ups_battery_runtime_seconds", "Battery runtime left at the present load", "seconds")
UPS_BATTERY_VOLTAGE = gauge("ups_battery_voltage_volts", "Battery voltage", "volts")
UPS_BATTERY_CURRENT = gauge("ups_battery_current_amperes", "Battery current", "amperes")
UPS_BATTERY_TEMPERATURE = gauge("ups_battery_temperature_celsius", "Battery temperature", "celsius")
UPS_LOAD = gauge("ups_load_ratio", "Load relative to the UPS capacity (0-1); the highest output line", "ratio")
UPS_INPUT_VOLTAGE = gauge("ups_input_voltage_volts", "Input (utility) voltage, per input line", "volts")
UPS_INPUT_CURRENT = gauge("ups_input_current_amperes", "Input current, per input line", "amperes")
UPS_INPUT_POWER = gauge("ups_input_power_watts", "Input true power, per input line", "watts")
UPS_INPUT_FREQUENCY = gauge("ups_input_frequency_hertz", "Input frequency, per input line", "hertz")
UPS_OUTPUT_VOLTAGE = gauge("ups_output_voltage_volts", "Output voltage, per output line", "volts")
UPS_OUTPUT_CURRENT = gauge("ups_output_current_amperes", "Output current, per output line", "amperes")
UPS_OUTPUT_POWER = gauge("ups_output_power_watts", "Output true power, per output line", "watts")
UPS_OUTPUT_LOAD = gauge("ups_output_load_ratio", "Output load relative to capacity, per output line (0-1)", "ratio")
UPS_OUTPUT_FREQUENCY = gauge("ups_output_frequency_hertz", "Output frequency", "hertz")
UPS_REAL_POWER = gauge("ups_real_power_watts", "Output real power (sum of the output lines)", "watts")
UPS_REAL_POWER_NOMINAL = gauge("ups_real_power_nominal_watts", "Nominal real power capacity", "watts")
UPS_ALARMS = gauge("ups_alarms_present", "Number of alarms the UPS reports active")
