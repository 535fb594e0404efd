"""Turn readings into samples (pure): IB ports, network interfaces, transceiver modules."""

from __future__ import annotations

from agent.model import Collection
from agent.plugins.optics import metrics as m
from agent.plugins.optics.reading import LEVELS, QUANTITIES, ModuleReading, mw_to_dbm
from agent.plugins.optics.sysfs import IbDevice, IbPort, NetInterface


def ib_device_samples(col: Collection, dev: IbDevice) -> None:
    hca = {"device": dev.name}
    for key, value in (("hca_type", dev.hca_type), ("fw_version", dev.fw_ver), ("board_id", dev.board_id)):
        if value:
            hca[key] = value
    col.add(m.IB_HCA_INFO, 1, hca)
    for port in dev.ports:
        ib_port_samples(col, port)


def ib_port_samples(col: Collection, port: IbPort) -> None:
    labels = {"device": port.device, "port": port.port}
    col.add(m.IB_STATE, port.state, labels)
    col.add(m.IB_PHYS_STATE, port.phys_state, labels)
    col.add(m.IB_RATE, port.rate, labels)
    if port.link_layer:
        col.add(m.IB_INFO, 1, {**labels, "link_layer": port.link_layer})
    for name, raw in port.counters.items():
        metric, mult = m.ib_counter_metric(name)
        col.add(metric, raw * mult, labels)
        bits = m.IB_COUNTER_BITS.get(name)
        if bits is not None:
            col.add(m.IB_SATURATED, 1 if raw >= (1 << bits) - 1 else 0, {**labels, "counter": name})
    for name, raw in port.hw_counters.items():
        metric, scale = m.ib_hw_metric(name)
        col.add(metric, raw * scale, labels)


def net_samples(col: Collection, nic: NetInterface) -> None:
    labels = {"interface": nic.name}
    if nic.operstate is not None:
        col.add(m.NET_UP, 1 if nic.operstate == "up" else 0, labels)
    col.add(m.NET_CARRIER, nic.carrier, labels)
    col.add(m.NET_CARRIER_CHANGES, nic.carrier_changes, labels)
    col.add(m.NET_CARRIER_UP, nic.carrier_up, labels)
    col.add(m.NET_CARRIER_DOWN, nic.carrier_down, labels)
    col.add(m.NET_SPEED, nic.speed, labels)
    col.add(m.NET_MTU, nic.mtu, labels)


def _dbm(mw: float | None) -> float | None:
    return None if mw is None else mw_to_dbm(mw)


def _threshold_value(quantity: str, value: float) -> float:
    # Power thresholds are kept in mW until here, like the readings (0 mW -> -inf dBm).
    return mw_to_dbm(value) if quantity in ("tx_power", "rx_power") else value


def module_samples(col: Collection, interface: str, r: ModuleReading) -> None:
    base = {"interface": interface}
    ident = {**base, "vendor": r.vendor, "part_number": r.part_number, "serial": r.serial,
             "type": r.type, "standard": r.standard}
    if r.revision:
        ident["revision"] = r.revision
    if r.wavelength_nm is not None:
        ident["wavelength_nm"] = f"{r.wavelength_nm:g}"
    col.add(m.OPT_INFO, 1, ident)
    col.add(m.OPT_TEMP, r.temperature_c, base)
    col.add(m.OPT_VOLT, r.voltage_v, base)
    col.add(m.OPT_STATE, r.module_state, base)
    for quantity in QUANTITIES:
        for level in LEVELS:
            value = r.thresholds.get((quantity, level))
            if value is not None:
                col.add(m.OPT_THRESHOLD, _threshold_value(quantity, value),
                        {**base, "quantity": quantity, "level": level})
            flag = r.alarms.get((quantity, level))
            if flag is not None:
                col.add(m.OPT_ALARM, int(flag), {**base, "quantity": quantity, "level": level})
    for lane in r.lanes:
        labels = {**base, "lane": str(lane.lane)}
        col.add(m.OPT_BIAS, lane.tx_bias_a, labels)
        col.add(m.OPT_TX, _dbm(lane.tx_power_mw), labels)
        col.add(m.OPT_RX, _dbm(lane.rx_power_mw), labels)
        for metric, flag in ((m.OPT_RX_LOS, lane.rx_los), (m.OPT_TX_FAULT, lane.tx_fault),
                             (m.OPT_RX_LOL, lane.rx_lol), (m.OPT_TX_LOL, lane.tx_lol)):
            col.add(metric, None if flag is None else int(flag), labels)
        for (quantity, level), flag in lane.alarms.items():
            col.add(m.OPT_ALARM, int(flag), {**labels, "quantity": quantity, "level": level})
