"""One accelerator vocabulary for every vendor (DESIGN.md, Metrics; issue 8).

The AMD, Ascend and Hygon plugins parse very different tools, but they all end in an
:class:`AccelReading` per device and emit it through :func:`to_collection`, so a series is named
and labelled the same whoever made the chip: ``gpu_temperature_celsius{gpu,uuid,vendor,model}``
fires the same rule on an Ascend NPU as on an NVIDIA GPU. The names and units are those of the
NVIDIA plugin; the device-kind word (GPU, NPU, DCU) travels in ``gpu_info{kind}``.

Vendor extras that have no NVIDIA equivalent are declared by their plugin under a vendor prefix
(``ascend_hbm_used_bytes``) and ride along in :attr:`AccelReading.extra`.

Fields left ``None`` are unsupported by the device or the tool version and are omitted,
never reported as zero (STYLE 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.model import Collection, Metric, counter, gauge, info

GPU_UP = gauge("gpu_up", "1 when the device answers and reports itself healthy, 0 otherwise")
GPU_INFO = info("gpu_info", "Device identity; value 1, the identity is in the labels (kind: GPU, NPU, DCU)")
UTILIZATION = gauge("gpu_utilization_ratio", "Share of time the compute engines were busy (0-1)", "ratio")
MEMORY_UTILIZATION = gauge(
    "gpu_memory_utilization_ratio", "Share of time device memory was being read or written (0-1)", "ratio"
)
MEMORY_USED = gauge("gpu_memory_used_bytes", "Device memory in use", "bytes")
MEMORY_TOTAL = gauge("gpu_memory_total_bytes", "Device memory installed", "bytes")
TEMPERATURE = gauge(
    "gpu_temperature_celsius",
    "Main die temperature (AMD/Hygon: edge sensor, or junction where there is no edge sensor; Ascend: chip)",
    "celsius",
)
JUNCTION_TEMPERATURE = gauge("gpu_junction_temperature_celsius", "Hottest-spot (junction) temperature", "celsius")
MEMORY_TEMPERATURE = gauge("gpu_memory_temperature_celsius", "Device memory (HBM/VRAM) temperature", "celsius")
POWER = gauge("gpu_power_watts", "Power draw", "watts")
POWER_LIMIT = gauge("gpu_power_limit_watts", "Power management limit (the configured cap)", "watts")
ENERGY = counter("gpu_energy_joules_total", "Energy consumed since the driver loaded", "joules")
SM_CLOCK = gauge("gpu_sm_clock_hertz", "Compute clock (NVIDIA SM, AMD sclk, Ascend AI core)", "hertz")
MEMORY_CLOCK = gauge("gpu_memory_clock_hertz", "Memory clock", "hertz")
FAN_SPEED = gauge("gpu_fan_speed_ratio", "Fan speed as a share of its maximum (0-1)", "ratio")
ECC_ERRORS = counter("gpu_ecc_errors_total", "ECC errors by type (correctable, uncorrectable), scope and block")
PCIE_GEN = gauge("gpu_pcie_link_generation", "Current PCIe link generation")
PCIE_WIDTH = gauge("gpu_pcie_link_width", "Current PCIe link width (lanes)")
PCIE_GEN_MAX = gauge("gpu_pcie_link_generation_max", "Highest PCIe link generation the device supports")
PCIE_WIDTH_MAX = gauge("gpu_pcie_link_width_max", "Widest PCIe link the device supports (lanes)")
PCIE_REPLAY = counter("gpu_pcie_replay_total", "PCIe replays (link-level retransmissions)")
XGMI_ERRORS = counter("gpu_xgmi_errors_total", "AMD XGMI (Infinity Fabric) link errors")
CLOCK_EVENT = gauge(
    "gpu_clock_event_active", "1 while clocks are held down for the reason in the label (throttle/violation)"
)

#: PCIe transfer rate per lane (GT/s) -> generation (PCI Express Base Spec, per-generation rates).
_GTS_TO_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}


def pcie_generation(gts: float) -> int | None:
    """2.5 GT/s -> 1 ... 64 GT/s -> 6; an unknown rate is unsupported, not guessed."""
    return _GTS_TO_GEN.get(round(gts, 1))


@dataclass(frozen=True, slots=True)
class EccCount:
    type: str  # "correctable" | "uncorrectable" | "deferred"
    value: float
    scope: str = "aggregate"
    block: str = ""  # AMD RAS block (UMC, GFX, SDMA, ...); empty for the whole device


@dataclass(frozen=True, slots=True)
class Extra:
    """A vendor-specific sample: its metric, value and any labels beyond the device's."""

    metric: Metric
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class AccelReading:
    """What one collection learned about one accelerator; ``None`` = not reported."""

    index: str
    vendor: str  # "amd", "huawei", "hygon", ...
    kind: str  # "GPU", "NPU", "DCU"
    model: str
    uuid: str = ""  # omitted from the labels when the tool gives none
    up: bool = True
    info: dict[str, str] = field(default_factory=dict)  # extra gpu_info labels (pci_bus, serial, ...)
    utilization: float | None = None  # ratio 0-1
    memory_utilization: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    temperature: float | None = None
    junction_temperature: float | None = None
    memory_temperature: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    energy_joules: float | None = None
    sm_clock_hz: float | None = None
    memory_clock_hz: float | None = None
    fan_ratio: float | None = None
    pcie_generation: float | None = None
    pcie_width: float | None = None
    pcie_generation_max: float | None = None
    pcie_width_max: float | None = None
    pcie_replays: float | None = None
    xgmi_errors: float | None = None
    ecc: list[EccCount] = field(default_factory=list)
    clock_events: dict[str, bool] = field(default_factory=dict)
    extra: list[Extra] = field(default_factory=list)

    def labels(self) -> dict[str, str]:
        out = {"gpu": self.index, "vendor": self.vendor, "model": self.model}
        if self.uuid:
            out["uuid"] = self.uuid
        return out


def to_collection(readings: list[AccelReading], col: Collection | None = None) -> Collection:
    """Emit every reading with the shared names; unsupported values are left out."""
    col = col if col is not None else Collection()
    for r in readings:
        base = r.labels()
        col.add(GPU_UP, 1.0 if r.up else 0.0, base)
        col.add(GPU_INFO, 1.0, {**base, "kind": r.kind, **{k: v for k, v in r.info.items() if v}})
        col.add(UTILIZATION, r.utilization, base)
        col.add(MEMORY_UTILIZATION, r.memory_utilization, base)
        col.add(MEMORY_USED, r.memory_used_bytes, base)
        col.add(MEMORY_TOTAL, r.memory_total_bytes, base)
        col.add(TEMPERATURE, r.temperature, base)
        col.add(JUNCTION_TEMPERATURE, r.junction_temperature, base)
        col.add(MEMORY_TEMPERATURE, r.memory_temperature, base)
        col.add(POWER, r.power_watts, base)
        col.add(POWER_LIMIT, r.power_limit_watts, base)
        col.add(ENERGY, r.energy_joules, base)
        col.add(SM_CLOCK, r.sm_clock_hz, base)
        col.add(MEMORY_CLOCK, r.memory_clock_hz, base)
        col.add(FAN_SPEED, r.fan_ratio, base)
        col.add(PCIE_GEN, r.pcie_generation, base)
        col.add(PCIE_WIDTH, r.pcie_width, base)
        col.add(PCIE_GEN_MAX, r.pcie_generation_max, base)
        col.add(PCIE_WIDTH_MAX, r.pcie_width_max, base)
        col.add(PCIE_REPLAY, r.pcie_replays, base)
        col.add(XGMI_ERRORS, r.xgmi_errors, base)
        for e in r.ecc:
            labels = {**base, "type": e.type, "scope": e.scope}
            if e.block:
                labels["block"] = e.block
            col.add(ECC_ERRORS, e.value, labels)
        for reason, active in sorted(r.clock_events.items()):
            col.add(CLOCK_EVENT, 1.0 if active else 0.0, {**base, "reason": reason})
        for x in r.extra:
            col.add(x.metric, x.value, {**base, **dict(x.labels)})
    return col
