"""Metric families of the optics plugin (names per DESIGN.md: InfiniBand, optics, network).

Counters read from ``counters/`` and ``hw_counters/`` whose names are not listed here get a
family built from the file name (``ib_port_hw_<name>_total``), cached by :func:`dynamic`.
"""

from __future__ import annotations

import re
import threading
from typing import NamedTuple

from agent.model import Metric, counter, gauge, info

# --- InfiniBand / RoCE ports -------------------------------------------------------------
IB_STATE = gauge("ib_port_state", "IB port logical state (1 DOWN, 2 INIT, 3 ARMED, 4 ACTIVE, 5 ACTIVE_DEFER)",
                 measurement="ib_port")
IB_PHYS_STATE = gauge("ib_port_physical_state", "IB port physical state (5 LinkUp, 3 Disabled, 2 Polling, ...)",
                      measurement="ib_port")
IB_RATE = gauge("ib_port_rate_bytes_per_second", "IB port signalling rate (sysfs rate, Gb/s / 8)", "bytes/s",
                measurement="ib_port")
IB_INFO = info("ib_port_info", "IB port link layer (InfiniBand or Ethernet for RoCE)", measurement="ib_port")
IB_HCA_INFO = info("ib_hca_info", "HCA type, firmware and board id", measurement="ib_hca")
# Named without "counter" in the metric name: promtool's lint rejects that for a gauge; the
# saturated sysfs counter is the ``counter`` label.
IB_SATURATED = gauge("ib_port_saturated",
                     "1 when a fixed-width PMA counter sits at its maximum (it stops, it does not wrap)",
                     measurement="ib_port")

#: sysfs ``counters/`` file -> (metric field without ``ib_port_``, multiplier, help).
IB_COUNTERS: dict[str, tuple[str, int, str]] = {
    "symbol_error": ("symbol_errors_total", 1, "Minor link errors (PortCounters SymbolErrorCounter)"),
    "link_error_recovery": ("link_error_recovery_total", 1, "Successful link error recoveries"),
    "link_downed": ("link_downed_total", 1, "Times the link went down after error recovery failed"),
    "port_rcv_errors": ("receive_errors_total", 1, "Packets received with errors"),
    "port_rcv_remote_physical_errors": ("receive_remote_physical_errors_total", 1,
                                        "Packets received marked with EBP (remote physical error)"),
    "port_rcv_switch_relay_errors": ("receive_switch_relay_errors_total", 1, "Packets discarded: could not be relayed"),
    "port_xmit_discards": ("transmit_discards_total", 1, "Outbound packets discarded (port down or congestion)"),
    "port_xmit_constraint_errors": ("transmit_constraint_errors_total", 1, "Packets not sent: constraint errors"),
    "port_rcv_constraint_errors": ("receive_constraint_errors_total", 1, "Packets received and discarded: constraints"),
    "local_link_integrity_errors": ("local_link_integrity_errors_total", 1,
                                    "Times local physical errors exceeded the threshold"),
    "excessive_buffer_overrun_errors": ("excessive_buffer_overrun_errors_total", 1,
                                        "Consecutive receive buffer overrun events"),
    "VL15_dropped": ("vl15_dropped_total", 1, "Incoming VL15 (management) packets dropped"),
    # PortXmitData/PortRcvData count 32-bit words (IBA 16.1.3.5): times 4 for bytes.
    "port_xmit_data": ("transmit_bytes_total", 4, "Bytes transmitted (sysfs port_xmit_data x 4)"),
    "port_rcv_data": ("receive_bytes_total", 4, "Bytes received (sysfs port_rcv_data x 4)"),
    "port_xmit_packets": ("transmit_packets_total", 1, "Packets transmitted"),
    "port_rcv_packets": ("receive_packets_total", 1, "Packets received"),
    "port_xmit_wait": ("transmit_wait_ticks_total", 1, "Ticks with data to send but no flow-control credits"),
    "unicast_xmit_packets": ("transmit_unicast_packets_total", 1, "Unicast packets transmitted"),
    "unicast_rcv_packets": ("receive_unicast_packets_total", 1, "Unicast packets received"),
    "multicast_xmit_packets": ("transmit_multicast_packets_total", 1, "Multicast packets transmitted"),
    "multicast_rcv_packets": ("receive_multicast_packets_total", 1, "Multicast packets received"),
    "port_rcv_discards": ("receive_discards_total", 1, "Received packets discarded (mlx4)"),
}

#: Width in bits of the PortCounters attribute fields (IBA vol 1, table 247 "PortCounters");
#: the kernel exposes these (drivers/infiniband/core/sysfs.c) with the same width. Data and
#: packet counters come from PortCountersExtended (64-bit) on every modern HCA, so only these
#: can realistically sit at their maximum. A saturated counter stops; it does not wrap.
IB_COUNTER_BITS: dict[str, int] = {
    "symbol_error": 16,
    "link_error_recovery": 8,
    "link_downed": 8,
    "port_rcv_errors": 16,
    "port_rcv_remote_physical_errors": 16,
    "port_rcv_switch_relay_errors": 16,
    "port_xmit_discards": 16,
    "port_xmit_constraint_errors": 8,
    "port_rcv_constraint_errors": 8,
    "local_link_integrity_errors": 4,
    "excessive_buffer_overrun_errors": 4,
    "VL15_dropped": 16,
    "port_xmit_wait": 32,
}

#: hw_counters entries that are settings, not counters: file -> (field, help, unit, scale).
#: mlx5 ``lifespan`` is how long the driver caches hw counter values, in milliseconds.
IB_HW_GAUGES: dict[str, tuple[str, str, str, float]] = {
    "lifespan": ("hw_lifespan_seconds", "hw_counters cache lifetime set in the driver", "seconds", 1e-3),
}

# --- network interfaces --------------------------------------------------------------------
NET_UP = gauge("net_up", "1 when the interface operstate is up")
NET_CARRIER = gauge("net_carrier", "1 when the physical link has carrier")
NET_CARRIER_CHANGES = counter("net_carrier_changes_total", "Link carrier changes (flaps) since the driver loaded")
NET_CARRIER_UP = counter("net_carrier_up_total", "Carrier up transitions")
NET_CARRIER_DOWN = counter("net_carrier_down_total", "Carrier down transitions")
NET_SPEED = gauge("net_speed_bytes_per_second", "Negotiated link speed (sysfs speed, Mb/s x 125000)", "bytes/s")
NET_MTU = gauge("net_mtu_bytes", "Interface MTU", "bytes")

# --- transceivers ---------------------------------------------------------------------------
OPT_TEMP = gauge("optical_temperature_celsius", "Module temperature", "celsius")
OPT_VOLT = gauge("optical_voltage_volts", "Module supply voltage", "volts")
OPT_BIAS = gauge("optical_tx_bias_amperes", "Laser bias current per lane", "amperes")
OPT_TX = gauge("optical_tx_power_dbm", "Transmit optical power per lane (-Inf at 0 mW)", "dBm")
OPT_RX = gauge("optical_rx_power_dbm", "Receive optical power per lane (-Inf at 0 mW)", "dBm")
OPT_THRESHOLD = gauge("optical_threshold",
                      "Module's own alarm/warning threshold, in the unit of the quantity's metric "
                      "(celsius, volts, amperes, dBm)")
OPT_ALARM = gauge("optical_alarm", "1 while the module raises this alarm or warning flag")
OPT_RX_LOS = gauge("optical_rx_los", "1 on receiver loss of signal")
OPT_TX_FAULT = gauge("optical_tx_fault", "1 on transmitter fault")
OPT_RX_LOL = gauge("optical_rx_lol", "1 on receive CDR loss of lock")
OPT_TX_LOL = gauge("optical_tx_lol", "1 on transmit CDR loss of lock")
OPT_STATE = gauge("optical_module_state",
                  "CMIS module state (1 LowPwr, 2 PwrUp, 3 Ready, 4 PwrDn, 5 Fault)")
OPT_INFO = info("optical_module_info", "Module identity: vendor, part number, serial, type, wavelength")

_SANITIZE = re.compile(r"[^a-z0-9_]+")
_lock = threading.Lock()
_dynamic: dict[str, Metric] = {}


def dynamic(field: str, help: str, unit: str = "", kind: str = "counter") -> Metric:
    """An ``ib_port`` family named from a sysfs file (e.g. mlx5 ``hw_counters``), made once."""
    field = _SANITIZE.sub("_", field.lower()).strip("_")
    name = f"ib_port_{field}"
    with _lock:
        metric = _dynamic.get(name)
        if metric is None:
            make = counter if kind == "counter" else gauge
            metric = make(name, help, unit, measurement="ib_port")
            _dynamic[name] = metric
        return metric


class CounterSpec(NamedTuple):
    """The family a sysfs counter file feeds, and what its raw value is multiplied by."""

    metric: Metric
    scale: float


_by_counter: dict[str, CounterSpec] = {}
_by_hw: dict[str, CounterSpec] = {}


def ib_counter_metric(file: str) -> CounterSpec:
    """The family and multiplier of a ``counters/`` file (looked up once per file name)."""
    found = _by_counter.get(file)
    if found is None:
        known = IB_COUNTERS.get(file)
        if known is not None:
            field, mult, help = known
            found = CounterSpec(dynamic(field, help), mult)
        else:
            found = CounterSpec(dynamic(f"{file}_total", f"sysfs counters/{file}"), 1)
        _by_counter[file] = found
    return found


def ib_hw_metric(file: str) -> CounterSpec:
    """The family and scale of a ``hw_counters/`` file (looked up once per file name)."""
    found = _by_hw.get(file)
    if found is None:
        gauge_spec = IB_HW_GAUGES.get(file)
        if gauge_spec is not None:
            field, help, unit, scale = gauge_spec
            found = CounterSpec(dynamic(field, help, unit, kind="gauge"), scale)
        else:
            found = CounterSpec(dynamic(f"hw_{file}_total", f"Driver hw_counters/{file}"), 1.0)
        _by_hw[file] = found
    return found
