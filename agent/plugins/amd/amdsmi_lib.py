"""The ``amdsmi`` Python library (ROCm 6+), behind one choke point (STYLE 6).

Every library call goes through :meth:`AmdSmiLib.call`, which maps the library's exceptions,
remembers calls a device does not support (so they are not retried every cycle) and returns
``None`` for them. :func:`reading_from_answers` is the pure half: it turns the dicts the
library returned into a reading, and is what the tests exercise (the library and its hardware
are absent on CI machines).
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from agent.errors import DeviceLost, PluginUnavailable
from agent.plugins.accel import AccelReading, EccCount, pcie_generation

_MIB = 1 << 20


class AmdSmiLib:
    def __init__(self, module: Any) -> None:
        self.m = module
        # (device, function, arguments): one sensor being absent says nothing about the others.
        self._unsupported: set[tuple[int, str, tuple[Any, ...]]] = set()

    @classmethod
    def load(cls) -> AmdSmiLib:
        try:
            module = importlib.import_module("amdsmi")
        except ImportError as err:
            raise PluginUnavailable(f"the amdsmi Python library is not installed ({err})") from err
        try:
            module.amdsmi_init()
        except Exception as err:  # the library's own exception type; boundary to our family
            raise PluginUnavailable(f"amdsmi_init failed: {err}") from err
        return cls(module)

    def call(self, dev: int, handle: Any, fn: str, *args: Any) -> Any:
        key = (dev, fn, tuple(str(a) for a in args))
        if key in self._unsupported:
            return None
        try:
            return getattr(self.m, fn)(handle, *args)
        except self.m.AmdSmiLibraryException as err:
            code = getattr(err, "get_error_code", lambda: None)()
            not_supported = getattr(getattr(self.m, "amdsmi_wrapper", None), "AMDSMI_STATUS_NOT_SUPPORTED", 2)
            if code == not_supported:
                self._unsupported.add(key)
                return None
            raise DeviceLost(f"amdsmi {fn} on GPU {dev} failed: {err}") from err

    def answers(self, dev: int, h: Any) -> dict[str, Any]:
        m = self.m
        temp = m.AmdSmiTemperatureType
        cur = m.AmdSmiTemperatureMetric.CURRENT
        return {
            "uuid": self.call(dev, h, "amdsmi_get_gpu_device_uuid"),
            "bdf": self.call(dev, h, "amdsmi_get_gpu_device_bdf"),
            "asic": self.call(dev, h, "amdsmi_get_gpu_asic_info"),
            "activity": self.call(dev, h, "amdsmi_get_gpu_activity"),
            "vram": self.call(dev, h, "amdsmi_get_gpu_vram_usage"),
            "temp_edge": self.call(dev, h, "amdsmi_get_temp_metric", temp.EDGE, cur),
            "temp_hotspot": self.call(dev, h, "amdsmi_get_temp_metric", temp.HOTSPOT, cur),
            "temp_vram": self.call(dev, h, "amdsmi_get_temp_metric", temp.VRAM, cur),
            "power": self.call(dev, h, "amdsmi_get_power_info"),
            "energy": self.call(dev, h, "amdsmi_get_energy_count"),
            "gfx_clock": self.call(dev, h, "amdsmi_get_clock_info", m.AmdSmiClkType.GFX),
            "mem_clock": self.call(dev, h, "amdsmi_get_clock_info", m.AmdSmiClkType.MEM),
            "ecc": self.call(dev, h, "amdsmi_get_gpu_total_ecc_count"),
            "pcie": self.call(dev, h, "amdsmi_get_pcie_info"),
        }

    def close(self) -> None:
        # Closing must not raise (plugin contract); a second shut-down is the library's error.
        with contextlib.suppress(self.m.AmdSmiLibraryException):
            self.m.amdsmi_shut_down()


def _num(d: Any, *keys: str) -> float | None:
    for key in keys:
        if isinstance(d, dict):
            d = d.get(key)
    if isinstance(d, bool) or d is None or d == "N/A":
        return None
    return float(d) if isinstance(d, (int, float)) else None


def reading_from_answers(index: int, a: dict[str, Any]) -> AccelReading:
    """Pure: the dicts the amdsmi calls returned (None = unsupported) -> one reading."""
    r = AccelReading(
        index=str(index), vendor="amd", kind="GPU",
        model=str((a.get("asic") or {}).get("market_name") or ""), uuid=str(a.get("uuid") or ""),
    )
    r.info = {"pci_bus": str(a.get("bdf") or "")}
    gfx, umc = _num(a.get("activity"), "gfx_activity"), _num(a.get("activity"), "umc_activity")
    r.utilization = None if gfx is None else gfx / 100.0  # percent
    r.memory_utilization = None if umc is None else umc / 100.0
    total, used = _num(a.get("vram"), "vram_total"), _num(a.get("vram"), "vram_used")
    r.memory_total_bytes = None if total is None else total * _MIB  # amdsmi reports MB (MiB)
    r.memory_used_bytes = None if used is None else used * _MIB
    edge, hotspot = _num(a.get("temp_edge")), _num(a.get("temp_hotspot"))
    r.temperature = edge if edge is not None else hotspot
    r.junction_temperature = hotspot
    r.memory_temperature = _num(a.get("temp_vram"))
    power = a.get("power")
    r.power_watts = _num(power, "current_socket_power")
    if r.power_watts is None:
        r.power_watts = _num(power, "average_socket_power")
    acc, res = _num(a.get("energy"), "energy_accumulator"), _num(a.get("energy"), "counter_resolution")
    if acc is not None and res is not None:
        r.energy_joules = acc * res * 1e-6  # accumulator ticks x resolution in microjoules
    gclk, mclk = _num(a.get("gfx_clock"), "clk"), _num(a.get("mem_clock"), "clk")
    r.sm_clock_hz = None if gclk is None else gclk * 1e6  # MHz
    r.memory_clock_hz = None if mclk is None else mclk * 1e6
    for kind in ("correctable", "uncorrectable"):
        value = _num(a.get("ecc"), f"{kind}_count")
        if value is not None:
            r.ecc.append(EccCount(kind, value))
    pcie = a.get("pcie") or {}
    width = _num(pcie, "pcie_metric", "pcie_width")
    speed = _num(pcie, "pcie_metric", "pcie_speed")  # MT/s
    r.pcie_width = width
    if speed is not None:
        gen = pcie_generation(speed / 1000.0)
        r.pcie_generation = None if gen is None else float(gen)
    r.pcie_width_max = _num(pcie, "pcie_static", "max_pcie_width")
    max_speed = _num(pcie, "pcie_static", "max_pcie_speed")
    if max_speed is not None:
        gen = pcie_generation(max_speed / 1000.0)
        r.pcie_generation_max = None if gen is None else float(gen)
    r.pcie_replays = _num(pcie, "pcie_metric", "pcie_replay_count")
    return r


class AmdSmiLibSource:
    name = "amdsmi"

    def __init__(self, lib: AmdSmiLib) -> None:
        self.lib = lib
        try:
            self.handles = list(lib.m.amdsmi_get_processor_handles())
        except lib.m.AmdSmiLibraryException as err:
            lib.close()
            raise PluginUnavailable(f"amdsmi lists no GPUs: {err}") from err

    @classmethod
    def open(cls) -> AmdSmiLibSource:
        return cls(AmdSmiLib.load())

    def read(self) -> list[AccelReading]:
        return [reading_from_answers(i, self.lib.answers(i, h)) for i, h in enumerate(self.handles)]

    def close(self) -> None:
        self.lib.close()
