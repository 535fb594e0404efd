"""One GPU: what is read once at discovery, and what each collection asks NVML.

Static facts (identity, thresholds, maximum clocks, PCIe maxima, the NVLink list) are read once;
a collection asks only for what changes, batching counters into one ``nvmlDeviceGetFieldValues``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from agent.errors import NotSupported
from agent.model import Collection, Metric
from agent.plugins.nvidia import metrics as m
from agent.plugins.nvidia.nvml import Nvml, text

log = logging.getLogger("fleetmon.agent.nvidia")

MIB = 1024 * 1024
MHZ = 1_000_000

# nvml.h constants, by number so a binding that lacks a name costs nothing.
TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU
THRESHOLD_SHUTDOWN = 0  # NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
THRESHOLD_SLOWDOWN = 1  # NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
CLOCK_GRAPHICS, CLOCK_SM, CLOCK_MEM = 0, 1, 2  # nvmlClockType_t
PCIE_UTIL_TX, PCIE_UTIL_RX = 0, 1  # nvmlPcieUtilCounter_t
ECC_CORRECTED, ECC_UNCORRECTED = 0, 1  # nvmlMemoryErrorType_t
ECC_VOLATILE, ECC_AGGREGATE = 0, 1  # nvmlEccCounterType_t
RETIRE_SBE, RETIRE_DBE = 0, 1  # nvmlPageRetirementCause_t
NVLINK_MAX_LINKS = 18  # NVML_NVLINK_MAX_LINKS is 36 in recent headers; H100/B200 expose 18 per GPU
MEMORY_V2 = 0x02000028  # nvmlMemory_v2 (adds ``reserved``)

# nvmlDeviceGetFieldValues ids (nvml.h NVML_FI_DEV_*).
FI_ECC_SBE_VOL, FI_ECC_DBE_VOL, FI_ECC_SBE_AGG, FI_ECC_DBE_AGG = 3, 4, 5, 6
FI_RETIRED_SBE, FI_RETIRED_DBE, FI_RETIRED_PENDING = 29, 30, 31
FI_MEMORY_TEMP = 82
FI_TOTAL_ENERGY = 83  # millijoules since the driver was loaded
FI_PCIE_REPLAY = 94
FI_REMAPPED_COR, FI_REMAPPED_UNC, FI_REMAPPED_PENDING, FI_REMAPPED_FAILURE = 142, 143, 144, 145
FI_NVLINK_GET_STATE = 165  # scoped by link (driver R525+); older drivers: nvmlDeviceGetNvLinkState per link
# Per-link NVLink error counters exist as fields for links 0-11 only (L0-L5 and L6-L11 are two
# separate id ranges); later links are read with nvmlDeviceGetNvLinkErrorCounter.
_NVLINK_FIELD_BASE = {  # type -> (first id for L0-L5, first id for L6-L11)
    "crc_flit": (32, 96),
    "crc_data": (39, 102),
    "replay": (46, 108),
    "recovery": (53, 114),
}
_NVLINK_COUNTER = {"replay": 0, "recovery": 1, "crc_flit": 2, "crc_data": 3}  # nvmlNvLinkErrorCounter_t
NVLINK_FIELD_LINKS = 12


def nvlink_field(kind: str, link: int) -> int:
    low, high = _NVLINK_FIELD_BASE[kind]
    return low + link if link < 6 else high + link - 6


BASE_FIELDS = [
    FI_TOTAL_ENERGY, FI_MEMORY_TEMP, FI_PCIE_REPLAY,
    FI_ECC_SBE_VOL, FI_ECC_DBE_VOL, FI_ECC_SBE_AGG, FI_ECC_DBE_AGG,
    FI_RETIRED_SBE, FI_RETIRED_DBE, FI_RETIRED_PENDING,
    FI_REMAPPED_COR, FI_REMAPPED_UNC, FI_REMAPPED_PENDING, FI_REMAPPED_FAILURE,
]

# nvmlClocksEventReason* bits (nvml.h), named as nvidia-smi names them.
CLOCK_EVENT_REASONS = (
    ("gpu_idle", 0x1),
    ("applications_clocks_setting", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal_slowdown", 0x20),
    ("hw_thermal_slowdown", 0x40),
    ("hw_power_brake_slowdown", 0x80),
    ("display_clock_setting", 0x100),
)


@dataclass
class Gpu:
    """One GPU as discovered; ``labels`` go on every series."""

    index: int
    handle: Any
    uuid: str = ""
    pci: str = ""
    model: str = ""
    info_labels: dict[str, str] = field(default_factory=dict)
    static: list[tuple[Metric, float]] = field(default_factory=list)
    links: list[int] = field(default_factory=list)
    #: Per-device questions answered "not supported": not asked again until MIG mode changes.
    unsupported: set[tuple[Any, ...]] = field(default_factory=set)
    mig_mode: int | None = None

    @property
    def labels(self) -> dict[str, str]:
        return {"gpu": str(self.index), "uuid": self.uuid, "vendor": "nvidia", "model": self.model}


def _ask(nvml: Nvml, gpu: Gpu, fname: str, *args: Any) -> Any:
    """One per-metric question: None (omitted) when unsupported; DeviceLost propagates."""
    key = (fname, *args)
    if key in gpu.unsupported:
        return None
    try:
        return nvml.call(fname, gpu.handle, *args)
    except NotSupported:
        gpu.unsupported.add(key)
        return None


def discover_gpu(nvml: Nvml, index: int, driver: str, cuda: str) -> Gpu:
    """Read the static facts of GPU ``index``; DeviceLost propagates (the caller marks it down)."""
    handle = nvml.call("nvmlDeviceGetHandleByIndex", index)
    gpu = Gpu(index, handle)
    gpu.uuid = text(_ask(nvml, gpu, "nvmlDeviceGetUUID") or "")
    gpu.model = text(_ask(nvml, gpu, "nvmlDeviceGetName") or "")
    try:
        pci = nvml.first([
            ("nvmlDeviceGetPciInfo_v3", (handle,), {}),
            ("nvmlDeviceGetPciInfo_v2", (handle,), {}),
            ("nvmlDeviceGetPciInfo", (handle,), {}),
        ])
        gpu.pci = text(pci.busId)
    except NotSupported:
        gpu.pci = ""
    info = {"uuid": gpu.uuid, "pci": gpu.pci, "driver": driver, "cuda": cuda}
    for label, fname in (("serial", "nvmlDeviceGetSerial"), ("board_part", "nvmlDeviceGetBoardPartNumber"),
                         ("vbios", "nvmlDeviceGetVbiosVersion")):
        value = _ask(nvml, gpu, fname)
        if value is not None:
            info[label] = text(value)
    gpu.info_labels = {k: v for k, v in info.items() if v}

    static: list[tuple[Metric, float | None]] = [
        (m.TEMP_SLOWDOWN, _ask(nvml, gpu, "nvmlDeviceGetTemperatureThreshold", THRESHOLD_SLOWDOWN)),
        (m.TEMP_SHUTDOWN, _ask(nvml, gpu, "nvmlDeviceGetTemperatureThreshold", THRESHOLD_SHUTDOWN)),
        (m.PCIE_GEN_MAX, _ask(nvml, gpu, "nvmlDeviceGetMaxPcieLinkGeneration")),
        (m.PCIE_WIDTH_MAX, _ask(nvml, gpu, "nvmlDeviceGetMaxPcieLinkWidth")),
    ]
    for metric, clock in ((m.SM_CLOCK_MAX, CLOCK_SM), (m.MEM_CLOCK_MAX, CLOCK_MEM), (m.GR_CLOCK_MAX, CLOCK_GRAPHICS)):
        mhz = _ask(nvml, gpu, "nvmlDeviceGetMaxClockInfo", clock)
        static.append((metric, mhz * MHZ if mhz is not None else None))  # NVML reports MHz
    gpu.static = [(metric, float(v)) for metric, v in static if v is not None]

    # NVLink: keep the links that answer at all (a disabled link answers "inactive", a GPU
    # without NVLink answers not-supported for every link).
    for link in range(NVLINK_MAX_LINKS):
        try:
            nvml.call("nvmlDeviceGetNvLinkState", handle, link)
        except NotSupported:
            continue
        gpu.links.append(link)
    return gpu


def collect_gpu(nvml: Nvml, gpu: Gpu, use_fields: bool, pcie_throughput: bool) -> Collection:
    """Everything that changes, for one GPU. Raises DeviceLost when the GPU stops answering."""
    col = Collection()
    labels = gpu.labels
    add = col.add

    util = _ask(nvml, gpu, "nvmlDeviceGetUtilizationRates")
    if util is not None:
        add(m.UTIL, util.gpu / 100.0, labels)  # NVML reports percent
        add(m.MEM_UTIL, util.memory / 100.0, labels)
    for metric, fname in ((m.ENC_UTIL, "nvmlDeviceGetEncoderUtilization"),
                          (m.DEC_UTIL, "nvmlDeviceGetDecoderUtilization")):
        value = _ask(nvml, gpu, fname)
        if value is not None:
            add(metric, value[0] / 100.0, labels)  # [percent, sampling period in µs]

    _memory(nvml, gpu, gpu.handle, col, labels, used=m.MEM_USED, total=m.MEM_TOTAL, reserved=m.MEM_RESERVED)

    add(m.TEMP, _temperature(nvml, gpu), labels)
    power = _ask(nvml, gpu, "nvmlDeviceGetPowerUsage")
    add(m.POWER, power / 1000.0 if power is not None else None, labels)  # NVML reports milliwatts
    limit = _ask(nvml, gpu, "nvmlDeviceGetPowerManagementLimit")
    add(m.POWER_LIMIT, limit / 1000.0 if limit is not None else None, labels)  # milliwatts
    enforced = _ask(nvml, gpu, "nvmlDeviceGetEnforcedPowerLimit")
    add(m.POWER_ENFORCED, enforced / 1000.0 if enforced is not None else None, labels)  # milliwatts

    for metric, clock in ((m.SM_CLOCK, CLOCK_SM), (m.MEM_CLOCK, CLOCK_MEM), (m.GR_CLOCK, CLOCK_GRAPHICS)):
        mhz = _ask(nvml, gpu, "nvmlDeviceGetClockInfo", clock)
        add(metric, mhz * MHZ if mhz is not None else None, labels)  # NVML reports MHz

    fan = _ask(nvml, gpu, "nvmlDeviceGetFanSpeed")
    add(m.FAN, fan / 100.0 if fan is not None else None, labels)  # percent of maximum
    pstate = _ask(nvml, gpu, "nvmlDeviceGetPerformanceState")
    add(m.PSTATE, pstate if pstate is not None and pstate <= 15 else None, labels)  # 32 = unknown

    reasons = _clock_event_reasons(nvml, gpu)
    if reasons is not None:
        for name, bit in CLOCK_EVENT_REASONS:
            add(m.CLOCK_EVENT, 1.0 if reasons & bit else 0.0, {**labels, "reason": name})

    add(m.PCIE_GEN, _ask(nvml, gpu, "nvmlDeviceGetCurrPcieLinkGeneration"), labels)
    add(m.PCIE_WIDTH, _ask(nvml, gpu, "nvmlDeviceGetCurrPcieLinkWidth"), labels)
    if pcie_throughput:
        # Each call samples the link for 20 ms inside the driver (nvml.h); per-GPU threads
        # overlap those waits across GPUs.
        for metric, counter_id in ((m.PCIE_TX, PCIE_UTIL_TX), (m.PCIE_RX, PCIE_UTIL_RX)):
            kb = _ask(nvml, gpu, "nvmlDeviceGetPcieThroughput", counter_id)
            add(metric, kb * 1000.0 if kb is not None else None, labels)  # NVML reports KB/s

    if use_fields and nvml.has("nvmlDeviceGetFieldValues"):
        _counters_from_fields(nvml, gpu, col, labels)
    else:
        _counters_one_by_one(nvml, gpu, col, labels)

    _mig(nvml, gpu, col, labels)
    for metric, value in gpu.static:
        add(metric, value, labels)
    return col


def _memory(nvml: Nvml, gpu: Gpu, handle: Any, col: Collection, labels: dict[str, str], *,
            used: Metric, total: Metric, reserved: Metric | None) -> None:
    key = ("memory", id(handle))
    if key in gpu.unsupported:
        return
    try:
        # v2 adds ``reserved`` and, unlike v1, does not count it as used (driver 510+).
        mem = nvml.first([
            ("nvmlDeviceGetMemoryInfo", (handle,), {"version": MEMORY_V2}, "nvmlDeviceGetMemoryInfo_v2"),
            ("nvmlDeviceGetMemoryInfo", (handle,), {}),
        ])
    except NotSupported:
        gpu.unsupported.add(key)
        return
    col.add(used, mem.used, labels)
    col.add(total, mem.total, labels)
    if reserved is not None:
        col.add(reserved, getattr(mem, "reserved", None), labels)


def _temperature(nvml: Nvml, gpu: Gpu) -> float | None:
    if ("temperature",) in gpu.unsupported:
        return None
    try:
        # nvmlDeviceGetTemperature is deprecated (removed in CUDA 14's NVML); V is its successor.
        return float(nvml.first([
            ("nvmlDeviceGetTemperatureV", (gpu.handle, TEMPERATURE_GPU), {}),
            ("nvmlDeviceGetTemperature", (gpu.handle, TEMPERATURE_GPU), {}),
        ]))
    except NotSupported:
        gpu.unsupported.add(("temperature",))
        return None


def _clock_event_reasons(nvml: Nvml, gpu: Gpu) -> int | None:
    if ("reasons",) in gpu.unsupported:
        return None
    try:
        # Renamed from "throttle reasons" to "clock event reasons" in driver 535.
        return int(nvml.first([
            ("nvmlDeviceGetCurrentClocksEventReasons", (gpu.handle,), {}),
            ("nvmlDeviceGetCurrentClocksThrottleReasons", (gpu.handle,), {}),
        ]))
    except NotSupported:
        gpu.unsupported.add(("reasons",))
        return None


def _counters_from_fields(nvml: Nvml, gpu: Gpu, col: Collection, labels: dict[str, str]) -> None:
    ids: list[int | tuple[int, int]] = list(BASE_FIELDS)
    field_links = [link for link in gpu.links if link < NVLINK_FIELD_LINKS]
    for link in field_links:
        ids.extend(nvlink_field(kind, link) for kind in _NVLINK_FIELD_BASE)
    state_by_field = ("nvlink_state_field",) not in gpu.unsupported
    if state_by_field:
        ids.extend((FI_NVLINK_GET_STATE, link) for link in gpu.links)
    try:
        v = nvml.field_values(gpu.handle, ids)
    except NotSupported:
        _counters_one_by_one(nvml, gpu, col, labels)
        return
    _emit_counters(
        col, labels, energy_mj=v.get(FI_TOTAL_ENERGY), mem_temp=v.get(FI_MEMORY_TEMP), replay=v.get(FI_PCIE_REPLAY),
        ecc=(v.get(FI_ECC_SBE_VOL), v.get(FI_ECC_DBE_VOL), v.get(FI_ECC_SBE_AGG), v.get(FI_ECC_DBE_AGG)),
        retired=(v.get(FI_RETIRED_SBE), v.get(FI_RETIRED_DBE), v.get(FI_RETIRED_PENDING)),
        remap=(v.get(FI_REMAPPED_COR), v.get(FI_REMAPPED_UNC), v.get(FI_REMAPPED_PENDING), v.get(FI_REMAPPED_FAILURE)),
    )
    for link in gpu.links:
        link_labels = {**labels, "link": str(link)}
        up = v.get((FI_NVLINK_GET_STATE, link)) if state_by_field else None
        if up is None:
            if state_by_field:  # the driver predates the field: ask per link from now on
                gpu.unsupported.add(("nvlink_state_field",))
            up = _ask(nvml, gpu, "nvmlDeviceGetNvLinkState", link)
        col.add(m.NVLINK_UP, up, link_labels)
        for kind in _NVLINK_FIELD_BASE:
            if link < NVLINK_FIELD_LINKS:
                value = v.get(nvlink_field(kind, link))
            else:
                value = _ask(nvml, gpu, "nvmlDeviceGetNvLinkErrorCounter", link, _NVLINK_COUNTER[kind])
            col.add(m.NVLINK_ERRORS, value, {**link_labels, "type": kind})


def _counters_one_by_one(nvml: Nvml, gpu: Gpu, col: Collection, labels: dict[str, str]) -> None:
    """The same counters for drivers without nvmlDeviceGetFieldValues (pre-R418)."""
    energy = _ask(nvml, gpu, "nvmlDeviceGetTotalEnergyConsumption")
    replay = _ask(nvml, gpu, "nvmlDeviceGetPcieReplayCounter")
    ecc = tuple(
        _ask(nvml, gpu, "nvmlDeviceGetTotalEccErrors", etype, scope)
        for scope in (ECC_VOLATILE, ECC_AGGREGATE) for etype in (ECC_CORRECTED, ECC_UNCORRECTED)
    )
    sbe = _ask(nvml, gpu, "nvmlDeviceGetRetiredPages", RETIRE_SBE)
    dbe = _ask(nvml, gpu, "nvmlDeviceGetRetiredPages", RETIRE_DBE)
    pending = _ask(nvml, gpu, "nvmlDeviceGetRetiredPagesPendingStatus")
    rows = _ask(nvml, gpu, "nvmlDeviceGetRemappedRows")
    _emit_counters(
        col, labels, energy_mj=energy, mem_temp=None, replay=replay, ecc=ecc,
        retired=(len(sbe) if sbe is not None else None, len(dbe) if dbe is not None else None, pending),
        remap=tuple(rows) if rows is not None else (None, None, None, None),
    )
    for link in gpu.links:
        link_labels = {**labels, "link": str(link)}
        col.add(m.NVLINK_UP, _ask(nvml, gpu, "nvmlDeviceGetNvLinkState", link), link_labels)
        for kind, counter_id in _NVLINK_COUNTER.items():
            value = _ask(nvml, gpu, "nvmlDeviceGetNvLinkErrorCounter", link, counter_id)
            col.add(m.NVLINK_ERRORS, value, {**link_labels, "type": kind})


def _emit_counters(col: Collection, labels: dict[str, str], *, energy_mj: float | None, mem_temp: float | None,
                   replay: float | None, ecc: tuple[Any, ...], retired: tuple[Any, ...],
                   remap: tuple[Any, ...]) -> None:
    add = col.add
    add(m.ENERGY, energy_mj / 1000.0 if energy_mj is not None else None, labels)  # NVML reports millijoules
    add(m.MEM_TEMP, mem_temp, labels)
    add(m.PCIE_REPLAY, replay, labels)
    sbe_vol, dbe_vol, sbe_agg, dbe_agg = ecc
    for value, etype, scope in ((sbe_vol, "correctable", "volatile"), (dbe_vol, "uncorrectable", "volatile"),
                                (sbe_agg, "correctable", "aggregate"), (dbe_agg, "uncorrectable", "aggregate")):
        add(m.ECC, value, {**labels, "type": etype, "scope": scope})
    sbe, dbe, pending = retired
    add(m.RETIRED, sbe, {**labels, "cause": "single_bit"})
    add(m.RETIRED, dbe, {**labels, "cause": "double_bit"})
    add(m.RETIRED_PENDING, 1.0 if pending else 0.0 if pending is not None else None, labels)
    cor, unc, rpending, failed = remap
    add(m.REMAPPED, cor, {**labels, "type": "correctable"})
    add(m.REMAPPED, unc, {**labels, "type": "uncorrectable"})
    add(m.REMAP_PENDING, 1.0 if rpending else 0.0 if rpending is not None else None, labels)
    add(m.REMAP_FAILED, 1.0 if failed else 0.0 if failed is not None else None, labels)


def _mig(nvml: Nvml, gpu: Gpu, col: Collection, labels: dict[str, str]) -> None:
    mode = _ask(nvml, gpu, "nvmlDeviceGetMigMode")
    if mode is None:
        return
    current, pending = int(mode[0]), int(mode[1])
    col.add(m.MIG_MODE, current, labels)
    col.add(m.MIG_MODE_PENDING, pending, labels)
    if gpu.mig_mode is not None and gpu.mig_mode != current:
        # What the GPU supports changes with MIG mode (e.g. utilization is N/A under MIG).
        gpu.unsupported.clear()
    gpu.mig_mode = current
    if current != 1:
        return
    count = _ask(nvml, gpu, "nvmlDeviceGetMaxMigDeviceCount") or 0
    for i in range(int(count)):
        try:
            mig = nvml.call("nvmlDeviceGetMigDeviceHandleByIndex", gpu.handle, i)
        except NotSupported:  # NOT_FOUND: no MIG device in this slot
            continue
        gi = _mig_ask(nvml, "nvmlDeviceGetGpuInstanceId", mig)
        ci = _mig_ask(nvml, "nvmlDeviceGetComputeInstanceId", mig)
        mig_labels = {**labels, "mig": str(i)}
        if gi is not None:
            mig_labels["gpu_instance"] = str(gi)
        if ci is not None:
            mig_labels["compute_instance"] = str(ci)
        _memory(nvml, gpu, mig, col, mig_labels, used=m.MIG_MEM_USED, total=m.MIG_MEM_TOTAL, reserved=None)
        # NVML answers utilization on MIG handles with NOT_SUPPORTED on A100/H100 (per-instance
        # activity needs DCGM profiling or GPM); the metric appears where a driver reports it.
        if ("mig_util",) not in gpu.unsupported:
            util = _mig_ask(nvml, "nvmlDeviceGetUtilizationRates", mig)
            if util is None:
                gpu.unsupported.add(("mig_util",))
            else:
                col.add(m.MIG_UTIL, util.gpu / 100.0, mig_labels)  # percent


def _mig_ask(nvml: Nvml, fname: str, handle: Any) -> Any:
    try:
        return nvml.call(fname, handle)
    except NotSupported:
        return None
