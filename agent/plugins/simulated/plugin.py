"""Simulated node: plausible, slowly varying hardware values with DESIGN.md metric names.

It goes through the same scheduler, wire and collector path as the real plugins; only the
labels (``model`` says "simulated") tell it apart. Values are smooth functions of time with a
per-node phase, so a fleet looks alive without random jumps that would trip rules.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.model import Collection, Event, Severity, counter, gauge
from agent.plugin import Plugin
from agent.plugins.accel import CLOCK_EVENT as GPU_CLOCK_EVENT
from agent.plugins.accel import ECC_ERRORS as GPU_ECC
from agent.plugins.accel import ENERGY as GPU_ENERGY
from agent.plugins.accel import GPU_INFO, GPU_UP
from agent.plugins.accel import MEMORY_TEMPERATURE as GPU_MEM_TEMP
from agent.plugins.accel import MEMORY_TOTAL as GPU_MEM_TOTAL
from agent.plugins.accel import MEMORY_USED as GPU_MEM_USED
from agent.plugins.accel import PCIE_GEN as GPU_PCIE_GEN
from agent.plugins.accel import PCIE_GEN_MAX as GPU_PCIE_GEN_MAX
from agent.plugins.accel import PCIE_WIDTH as GPU_PCIE_WIDTH
from agent.plugins.accel import PCIE_WIDTH_MAX as GPU_PCIE_WIDTH_MAX
from agent.plugins.accel import POWER as GPU_POWER
from agent.plugins.accel import POWER_LIMIT as GPU_POWER_LIMIT
from agent.plugins.accel import SM_CLOCK as GPU_SM_CLOCK
from agent.plugins.accel import TEMPERATURE as GPU_TEMP
from agent.plugins.accel import UTILIZATION as GPU_UTIL
from agent.plugins.modbus import metrics as bess_m
from agent.plugins.simulated.faults import Fault, load_faults, parse_faults
from agent.plugins.snmp import metrics as pdu_m

# GPU: the shared accelerator vocabulary (agent/plugins/accel.py), so a simulated series has the
# same type, unit and help as a real one; only what accel lacks is declared here.
GPU_NVLINK_UP = gauge("gpu_nvlink_up", "1 if the NVLink is active")
GPU_XID = counter("gpu_xid_errors_total", "XID errors reported by the driver")
# InfiniBand
IB_STATE = gauge("ib_port_state", "IB port logical state (4 = ACTIVE)", measurement="ib_port")
IB_PHYS = gauge("ib_port_physical_state", "IB port physical state (5 = LinkUp)", measurement="ib_port")
IB_RATE = gauge("ib_port_rate_bytes_per_second", "IB port rate", "bytes", measurement="ib_port")
IB_SYMBOL = counter("ib_port_symbol_errors_total", "Symbol errors", measurement="ib_port")
IB_DOWNED = counter("ib_port_link_downed_total", "Times the link went down", measurement="ib_port")
IB_RECOVERY = counter("ib_port_link_error_recovery_total", "Link error recoveries", measurement="ib_port")
IB_RCV_ERR = counter("ib_port_receive_errors_total", "Receive errors", measurement="ib_port")
IB_XMIT_DISCARDS = counter("ib_port_transmit_discards_total", "Transmit discards", measurement="ib_port")
IB_RX_BYTES = counter("ib_port_receive_bytes_total", "Bytes received", "bytes", measurement="ib_port")
IB_TX_BYTES = counter("ib_port_transmit_bytes_total", "Bytes sent", "bytes", measurement="ib_port")
# Optics
OPT_TEMP = gauge("optical_temperature_celsius", "Module temperature", "celsius")
OPT_VOLT = gauge("optical_voltage_volts", "Module supply voltage", "volts")
OPT_BIAS = gauge("optical_tx_bias_amperes", "Laser bias current per lane", "amperes")
OPT_TX = gauge("optical_tx_power_dbm", "Transmit optical power per lane", "dBm")
OPT_RX = gauge("optical_rx_power_dbm", "Receive optical power per lane", "dBm")
OPT_THRESHOLD = gauge("optical_threshold", "The module's own alarm/warning threshold, in the quantity's unit")
OPT_LOS = gauge("optical_rx_los", "1 while the lane reports loss of signal")
OPT_FAULT = gauge("optical_tx_fault", "1 while the lane reports a transmitter fault")
# Power
PSU_UP = gauge("psu_up", "1 if the power supply is healthy and delivering")
PSU_IN = gauge("psu_input_power_watts", "PSU input power", "watts")
PSU_REDUNDANCY = gauge("psu_redundancy_ok", "1 while the PSUs are redundant")
NODE_POWER = gauge("node_power_watts", "Node power", "watts")
NODE_CAP = gauge("node_power_cap_watts", "Node power cap", "watts")
NODE_ENERGY = counter("node_energy_joules_total", "Node energy", "joules")
UPS_ON_BATT = gauge("ups_on_battery", "1 while the UPS runs on battery")
UPS_CHARGE = gauge("ups_battery_charge_ratio", "Battery charge (0-1)")
UPS_RUNTIME = gauge("ups_battery_runtime_seconds", "Estimated runtime on battery", "seconds")
UPS_LOAD = gauge("ups_load_ratio", "UPS load (0-1)")

_MODEL = "NVIDIA H100 80GB HBM3 (simulated)"
_CLOCK_REASONS = ("sw_power_cap", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
# Module thresholds as a 400G SR4-class module states them (SFF-8636 page 03h style).
_THRESHOLDS = {
    ("temperature", "high_alarm"): 75.0, ("temperature", "high_warning"): 70.0,
    ("temperature", "low_warning"): 0.0, ("temperature", "low_alarm"): -5.0,
    ("voltage", "high_alarm"): 3.6, ("voltage", "high_warning"): 3.5,
    ("voltage", "low_warning"): 3.1, ("voltage", "low_alarm"): 3.0,
    ("tx_bias", "high_alarm"): 0.012, ("tx_bias", "high_warning"): 0.011,
    ("tx_bias", "low_warning"): 0.004, ("tx_bias", "low_alarm"): 0.003,
    ("tx_power", "high_alarm"): 5.0, ("tx_power", "high_warning"): 4.0,
    ("tx_power", "low_warning"): -6.4, ("tx_power", "low_alarm"): -8.4,
    ("rx_power", "high_alarm"): 5.0, ("rx_power", "high_warning"): 4.0,
    ("rx_power", "low_warning"): -9.4, ("rx_power", "low_alarm"): -11.4,
}
# XIDs the simulator can raise, with the catalog's meaning (shared/xid-catalog.csv).
_XID_SEVERITY = {79: Severity.CRITICAL, 48: Severity.CRITICAL, 94: Severity.WARNING, 13: Severity.WARNING}


@dataclass
class SimulatedConfig:
    gpus: int = 8
    ib_ports: int = 4
    lanes: int = 4
    psus: int = 2
    ups: bool = True
    #: The node's rack PDU (the series a facility poller's snmp plugin would report).
    pdu: bool = True
    pdu_phases: int = 3
    pdu_rating_amps: float = 32.0
    #: A battery energy storage system (as the modbus plugin reports one); one per site is plenty.
    bess: bool = False
    #: Fault script: a YAML file, or the list inline.
    faults_file: Path | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)
    #: Simulated seconds per real second (tests run faults faster).
    time_scale: float = 1.0
    seed: str = ""

    def validate(self) -> None:
        for name in ("gpus", "ib_ports", "lanes", "psus"):
            if not 0 <= getattr(self, name) <= 1024:
                raise ValueError(f"{name} must be between 0 and 1024")
        if not 1 <= self.pdu_phases <= 3 or self.pdu_rating_amps <= 0:
            raise ValueError("pdu_phases must be 1-3 and pdu_rating_amps positive")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")


class SimulatedPlugin(Plugin):
    name = "simulated"
    Config = SimulatedConfig
    default_interval = 1.0
    config: SimulatedConfig

    def __init__(self, ctx: Any, config: SimulatedConfig) -> None:
        super().__init__(ctx, config)
        self.faults: list[Fault] = parse_faults(config.faults, "plugins.simulated.faults")
        if config.faults_file is not None:
            self.faults += load_faults(config.faults_file)
        seed = config.seed or ctx.node
        self._phase = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") / 2**32 * 2 * math.pi
        self._rng = random.Random(seed)
        self._start = time.time()
        self._last_t: float | None = None
        self._last_now: float | None = None  # wall time of the previous collect()
        self._energy = [self._rng.uniform(1e6, 5e6) for _ in range(config.gpus)]
        self._node_energy = self._rng.uniform(1e8, 2e8)
        self._pdu_energy = self._rng.uniform(1e9, 5e9)
        self._soc = 0.8
        self._fired: set[int] = set()
        self._xids: dict[tuple[int, int], int] = {}
        self._downed = [0] * config.ib_ports
        self._ecc_uncorr = [0] * config.gpus
        self._uuids = [
            "GPU-" + hashlib.md5(f"{seed}/{i}".encode()).hexdigest()[:8] + "-sim" for i in range(config.gpus)
        ]

    def discover(self) -> None:
        self._start = time.time()
        c = self.config
        if c.gpus == 0 and c.ib_ports == 0 and c.psus == 0 and not (c.ups or c.pdu or c.bess):
            raise ConfigError("plugins.simulated: nothing to simulate (all counts are 0)")

    def _wave(self, t: float, period: float, k: int) -> float:
        return math.sin(2 * math.pi * t / period + self._phase + k * 0.7)

    def _active(self, t: float, kind: str, **target: int) -> Fault | None:
        for f in self.faults:
            if f.kind == kind and f.active(t) and all(getattr(f, k) == v for k, v in target.items()):
                return f
        return None

    def collect(self) -> Collection:
        now = time.time()
        t = (now - self._start) * self.config.time_scale
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        col = Collection()
        # Before this collection's timestamp, which the scheduler took before calling collect().
        before = self._last_now if self._last_now is not None else self._start
        self._last_now = now
        self._fire_events(t, now, before, col)
        total_gpu_power = self._gpus(t, dt, col)
        self._ib(t, col)
        node_power = self._power(t, dt, total_gpu_power, col)
        if self.config.pdu:
            self._pdu(t, dt, node_power, col)
        if self.config.bess:
            self._bess(t, dt, col)
        return col

    def _fire_events(self, t: float, now: float, before: float, col: Collection) -> None:
        for i, f in enumerate(self.faults):
            if i in self._fired or t < f.at:
                continue
            self._fired.add(i)
            if f.kind == "xid":
                key = (f.gpu, f.xid)
                if key not in self._xids:
                    # The counter existed at 0 before its first XID: say so at the previous
                    # collection, so increase()/changes() see the step (a series born at 1 shows
                    # none). Not "now - 1ms": the collection's own timestamp was taken before
                    # collect() ran, and a slow run put the 0 after the 1 (a counter reset).
                    col.append(GPU_XID.sample(0, self._gpu_labels(f.gpu) | {"xid": str(f.xid)}, before))
                self._xids[key] = self._xids.get(key, 0) + 1
                col.events.append(Event(
                    kind="gpu.xid", severity=_XID_SEVERITY.get(f.xid, Severity.WARNING),
                    message=f"XID {f.xid} on GPU {f.gpu} (simulated)",
                    labels=self._gpu_labels(f.gpu) | {"xid": str(f.xid)},
                    action="drain the node and reset the GPU" if f.xid in (79, 48) else "inspect the application",
                    ts=now,
                ))
            elif f.kind == "ecc_uncorrectable":
                self._ecc_uncorr[f.gpu] += 1
            elif f.kind == "link_down":
                self._downed[f.port] += 1
                col.events.append(Event(kind="ib.link_flap", severity=Severity.WARNING,
                                        message=f"IB port mlx5_{f.port}/1 went down (simulated)",
                                        labels={"device": f"mlx5_{f.port}", "port": "1"}, ts=now))
            elif f.kind == "psu_fail":
                col.events.append(Event(kind="psu.fault", severity=Severity.CRITICAL,
                                        message=f"PSU {f.psu} failed (simulated)", labels={"psu": str(f.psu)},
                                        action="replace the power supply", ts=now))

    def _gpu_labels(self, i: int) -> dict[str, str]:
        return {"gpu": str(i), "uuid": self._uuids[i] if 0 <= i < len(self._uuids) else "", "vendor": "nvidia",
                "model": _MODEL}

    def _gpus(self, t: float, dt: float, col: Collection) -> float:
        total = 0.0
        for i in range(self.config.gpus):
            labels = self._gpu_labels(i)
            lost = any(
                f.kind == "xid" and f.xid == 79 and f.gpu == i and f.active(t) for f in self.faults
            )
            col.add(GPU_UP, 0 if lost else 1, labels)
            col.add(GPU_INFO, 1, labels | {"driver": "550.54.15",
                                           "cuda": "12.4", "serial": f"SIM{i:09d}"})
            for (gpu, xid), n in self._xids.items():
                if gpu == i:
                    col.add(GPU_XID, n, labels | {"xid": str(xid)})
            if lost:
                continue  # a lost GPU answers nothing else
            util = 0.75 + 0.2 * self._wave(t, 300, i)
            hot = self._active(t, "gpu_temperature", gpu=i)
            temp = hot.value if hot else 55 + 15 * util + 1.5 * self._wave(t, 120, i + 3)
            power = 120 + 560 * util
            self._energy[i] += power * dt
            total += power
            col.add(GPU_UTIL, round(util, 4), labels)
            col.add(GPU_MEM_USED, int(80e9 * (0.5 + 0.3 * util)), labels)
            col.add(GPU_MEM_TOTAL, 85899345920, labels)
            col.add(GPU_TEMP, round(temp, 1), labels)
            col.add(GPU_MEM_TEMP, round(temp + 4, 1), labels)
            col.add(GPU_POWER, round(power, 2), labels)
            col.add(GPU_POWER_LIMIT, 700, labels)
            col.add(GPU_ENERGY, round(self._energy[i], 3), labels)
            col.add(GPU_SM_CLOCK, (1410e6 if temp < 87 else 1155e6), labels)
            for reason in _CLOCK_REASONS:
                active = reason == "sw_thermal_slowdown" and temp >= 87
                col.add(GPU_CLOCK_EVENT, int(active), labels | {"reason": reason})
            for typ in ("correctable", "uncorrectable"):
                n = self._ecc_uncorr[i] if typ == "uncorrectable" else 0
                col.add(GPU_ECC, n, labels | {"type": typ, "scope": "volatile"})
            col.add(GPU_PCIE_GEN, 5, labels)
            col.add(GPU_PCIE_GEN_MAX, 5, labels)
            col.add(GPU_PCIE_WIDTH, 16, labels)
            col.add(GPU_PCIE_WIDTH_MAX, 16, labels)
            for link in range(2):
                col.add(GPU_NVLINK_UP, 1, labels | {"link": str(link)})
        return total

    def _ib(self, t: float, col: Collection) -> None:
        for p in range(self.config.ib_ports):
            dev = {"device": f"mlx5_{p}", "port": "1"}
            down = self._active(t, "link_down", port=p)
            col.add(IB_STATE, 1 if down else 4, dev)
            col.add(IB_PHYS, 3 if down else 5, dev)
            col.add(IB_RATE, 50e9, dev)  # 400 Gb/s NDR
            col.add(IB_SYMBOL, 0, dev)
            col.add(IB_DOWNED, self._downed[p], dev)
            col.add(IB_RECOVERY, 0, dev)
            col.add(IB_RCV_ERR, 0, dev)
            col.add(IB_XMIT_DISCARDS, 0, dev)
            traffic = int((t + 10_000) * 20e9 * (1 + 0.1 * p))
            col.add(IB_RX_BYTES, traffic, dev)
            col.add(IB_TX_BYTES, traffic + 1024 * p, dev)
            iface = {"interface": f"ibp{p}s0"}
            col.add(OPT_TEMP, round(45 + 3 * self._wave(t, 600, p), 2), iface)
            col.add(OPT_VOLT, round(3.3 + 0.01 * self._wave(t, 900, p), 4), iface)
            for (quantity, level), value in _THRESHOLDS.items():
                col.add(OPT_THRESHOLD, value, iface | {"quantity": quantity, "level": level})
            for lane in range(1, self.config.lanes + 1):  # lanes count from 1, as SFF-8636/CMIS do
                labels = iface | {"lane": str(lane)}
                sag = self._active(t, "rx_power", port=p, lane=lane)
                rx = sag.value if sag else -1.5 + 0.3 * self._wave(t, 240, p * 8 + lane)
                col.add(OPT_BIAS, round(0.0075 + 0.0003 * self._wave(t, 500, lane), 6), labels)
                col.add(OPT_TX, round(0.8 + 0.2 * self._wave(t, 700, lane), 3), labels)
                col.add(OPT_RX, round(rx, 3), labels)
                col.add(OPT_LOS, 1 if down else 0, labels)
                col.add(OPT_FAULT, 0, labels)

    def _power(self, t: float, dt: float, gpu_power: float, col: Collection) -> float:
        node_power = gpu_power + 900 + 50 * self._wave(t, 200, 99)
        healthy = 0
        for p in range(self.config.psus):
            failed = self._active(t, "psu_fail", psu=p) is not None
            healthy += 0 if failed else 1
        for p in range(self.config.psus):
            failed = self._active(t, "psu_fail", psu=p) is not None
            col.add(PSU_UP, 0 if failed else 1, {"psu": str(p)})
            col.add(PSU_IN, 0 if failed else round(node_power / max(healthy, 1) / 0.94, 1), {"psu": str(p)})
        if self.config.psus:
            col.add(PSU_REDUNDANCY, 1 if healthy == self.config.psus and healthy > 1 else 0, {"chassis": "0"})
        self._node_energy += node_power * dt
        col.add(NODE_POWER, round(node_power, 1), {"source": "psu"})
        col.add(NODE_CAP, 10200)
        col.add(NODE_ENERGY, round(self._node_energy, 1), {"source": "psu"})
        if self.config.ups:
            on_batt = self._active(t, "ups_on_battery") is not None
            ups = {"ups": "ups0"}
            col.add(UPS_ON_BATT, 1 if on_batt else 0, ups)
            col.add(UPS_CHARGE, 0.8 if on_batt else 1.0, ups)
            col.add(UPS_RUNTIME, 900 if on_batt else 2400, ups)
            col.add(UPS_LOAD, round(0.45 + 0.05 * self._wave(t, 200, 98), 3), ups)
        return node_power

    def _pdu(self, t: float, dt: float, node_power: float, col: Collection) -> None:
        """The rack PDU feeding this node: its load split over the phases at ~230 V."""
        c = self.config
        pdu = {"pdu": f"{self.ctx.node}-pdu"}
        total = 0.0
        for phase in range(1, c.pdu_phases + 1):
            lab = pdu | {"phase": str(phase)}
            volts = round(230 + 2 * self._wave(t, 400, 40 + phase), 1)
            over = self._active(t, "pdu_overload", phase=phase)
            amps = over.value * c.pdu_rating_amps if over else node_power / c.pdu_phases / volts
            watts = amps * volts * 0.97  # power factor of a server PSU farm
            total += watts
            col.add(pdu_m.PDU_PHASE_CURRENT, round(amps, 2), lab)
            col.add(pdu_m.PDU_PHASE_VOLTAGE, volts, lab)
            col.add(pdu_m.PDU_PHASE_POWER, round(watts, 1), lab)
            col.add(pdu_m.PDU_PHASE_RATING, c.pdu_rating_amps, lab)
            col.add(pdu_m.PDU_PHASE_LOAD, round(amps / c.pdu_rating_amps, 4), lab)
        self._pdu_energy += total * dt
        col.add(pdu_m.PDU_POWER, round(total, 1), pdu)
        col.add(pdu_m.PDU_ENERGY, round(self._pdu_energy, 1), pdu)
        col.add(pdu_m.PDU_UP, 1, pdu)

    def _bess(self, t: float, dt: float, col: Collection) -> None:
        """A battery storage system: idles at 80 % charge, discharges while a fault says so
        (at the scripted rate, demo-fast), then recharges at 2 %/s."""
        bess = {"bess": f"{self.ctx.node}-bess"}
        drain = self._active(t, "bess_discharge")
        if drain:
            self._soc = max(0.05, self._soc - drain.value / 100 * dt)
            status, watts = 3, 250e3  # ChaSt discharging; positive power = delivered
        elif self._soc < 0.8:
            self._soc = min(0.8, self._soc + 0.02 * dt)
            status, watts = 4, -50e3  # charging
        else:
            status, watts = 6, 0.0  # holding
        col.add(bess_m.SOC, round(self._soc, 4), bess)
        col.add(bess_m.SOH, 0.97, bess)
        col.add(bess_m.CHARGE_STATUS, status, bess)
        col.add(bess_m.STATE, 3, bess)  # connected
        col.add(bess_m.POWER, watts, bess)
        col.add(bess_m.CHARGE_POWER, max(0.0, -watts), bess)
        col.add(bess_m.DISCHARGE_POWER, max(0.0, watts), bess)
        col.add(bess_m.VOLTAGE, round(1331 + 20 * (self._soc - 0.5), 1), bess)
        col.add(bess_m.CELL_V_MAX, round(3.34 + 0.005 * self._wave(t, 300, 60), 4), bess)
        col.add(bess_m.CELL_V_MIN, round(3.31 + 0.005 * self._wave(t, 300, 61), 4), bess)
        col.add(bess_m.MOD_T_MAX, round(28 + (6 if drain else 0) + self._wave(t, 500, 62), 1), bess)
