"""One GPU: what is read once at discovery, and what each collection asks NVML.

Static facts (identity, thresholds, maximum clocks, PCIe maxima, the NVLink list) are read once.
Each collection then asks:

- **one** ``nvmlDeviceGetFieldValues`` for everything that has a field id (energy, memory
  temperature, power and its limits, ECC, retired pages, row remapping, PCIe replays, every
  NVLink's state and error counters), where the driver answers it;
- the three questions no field id covers that change from second to second: utilization,
  memory, temperature;
- every ``detail_interval`` seconds only (and at the first collection), the slower or secondary
  ones: clocks and clock event reasons, performance state, encoder/decoder utilization, fan, PCIe
  link and throughput, MIG state and the static facts. Their series then have one sample per
  ``detail_interval``, not one per cycle (the rule pack's throttling alerts wait a minute anyway;
  ``detail_interval: 0`` asks everything every time);
- with the details, at most every ``nvlink_crc_interval`` seconds, the NVLink CRC counters that
  have no field id (links 12 and up: one call per link and counter, 12 of an H100's 24 detail
  calls; the rule pack's CRC alert looks at a 5-minute rate).

Each series is resolved once per GPU (:class:`GpuSeries`), so a collection appends values only.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.errors import NotSupported
from agent.model import Collection, Metric, Series
from agent.plugins.nvidia import metrics as m
from agent.plugins.nvidia.nvml import FieldKey, FieldRequest, Nvml, Variant, text

log = logging.getLogger("fleetmon.agent.nvidia")
T = TypeVar("T")

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
# Per-link, scoped by link (``scopeId``): replay and recovery counters for every link, and the
# link state (driver R525+). Older drivers: nvmlDeviceGetNvLinkErrorCounter/State per link.
FI_NVLINK_DL_REPLAY, FI_NVLINK_DL_RECOVERY = 161, 162
FI_NVLINK_GET_STATE = 165
# Power (nvml.h): 185 "GPU power averaged over 1 sec interval, supported on Ampere (except GA100)
# or newer", 186 "current GPU power, supported on all architectures", 190 "limit currently enforced
# (includes limits set elsewhere, e.g. out-of-band)", 192 "power limit requested by NVML or any other
# userspace client". nvmlDeviceGetPowerUsage answers the 1 s average where there is one and the
# instant power elsewhere, so 185, else 186, is the same reading. All in milliwatts.
FI_POWER_AVERAGE, FI_POWER_INSTANT = 185, 186
FI_POWER_CURRENT_LIMIT, FI_POWER_REQUESTED_LIMIT = 190, 192
# Per-link NVLink CRC counters exist as fields for links 0-11 only (L0-L5 and L6-L11 are two
# separate id ranges); the CRC counters of later links are read with nvmlDeviceGetNvLinkErrorCounter.
_NVLINK_FIELD_BASE = {  # type -> (first id for L0-L5, first id for L6-L11)
    "crc_flit": (32, 96),
    "crc_data": (39, 102),
    "replay": (46, 108),
    "recovery": (53, 114),
}
_NVLINK_SCOPED = {"replay": FI_NVLINK_DL_REPLAY, "recovery": FI_NVLINK_DL_RECOVERY}
_NVLINK_COUNTER = {"replay": 0, "recovery": 1, "crc_flit": 2, "crc_data": 3}  # nvmlNvLinkErrorCounter_t
NVLINK_TYPES = tuple(_NVLINK_FIELD_BASE)
NVLINK_FIELD_LINKS = 12

def nvlink_field(kind: str, link: int) -> int:
    low, high = _NVLINK_FIELD_BASE[kind]
    return low + link if link < 6 else high + link - 6


def nvlink_key(kind: str, link: int) -> FieldKey | None:
    """The field that answers this counter of this link, or None (a per-link call is needed)."""
    if link < NVLINK_FIELD_LINKS:
        return nvlink_field(kind, link)
    scoped = _NVLINK_SCOPED.get(kind)
    return (scoped, link) if scoped is not None else None


BASE_FIELDS: list[FieldKey] = [
    FI_TOTAL_ENERGY, FI_MEMORY_TEMP, FI_PCIE_REPLAY,
    FI_ECC_SBE_VOL, FI_ECC_DBE_VOL, FI_ECC_SBE_AGG, FI_ECC_DBE_AGG,
    FI_RETIRED_SBE, FI_RETIRED_DBE, FI_RETIRED_PENDING,
    FI_REMAPPED_COR, FI_REMAPPED_UNC, FI_REMAPPED_PENDING, FI_REMAPPED_FAILURE,
    FI_POWER_AVERAGE, FI_POWER_INSTANT, FI_POWER_CURRENT_LIMIT, FI_POWER_REQUESTED_LIMIT,
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
_ECC = ((FI_ECC_SBE_VOL, "correctable", "volatile"), (FI_ECC_DBE_VOL, "uncorrectable", "volatile"),
        (FI_ECC_SBE_AGG, "correctable", "aggregate"), (FI_ECC_DBE_AGG, "uncorrectable", "aggregate"))


class GpuSeries:
    """Every series of one GPU, resolved once: a collection only appends values."""

    def __init__(self, labels: dict[str, str], info_labels: dict[str, str], links: Sequence[int]) -> None:
        self.labels = labels

        def s(metric: Metric, **extra: str) -> Series:
            return metric.series({**labels, **extra} if extra else labels)

        self.up = s(m.UP)
        self.info = s(m.INFO, **info_labels)
        self.util, self.mem_util = s(m.UTIL), s(m.MEM_UTIL)
        self.enc_util, self.dec_util = s(m.ENC_UTIL), s(m.DEC_UTIL)
        self.mem_used, self.mem_total, self.mem_reserved = s(m.MEM_USED), s(m.MEM_TOTAL), s(m.MEM_RESERVED)
        self.temp, self.mem_temp = s(m.TEMP), s(m.MEM_TEMP)
        self.power, self.power_limit, self.power_enforced = s(m.POWER), s(m.POWER_LIMIT), s(m.POWER_ENFORCED)
        self.energy = s(m.ENERGY)
        self.sm_clock, self.mem_clock, self.gr_clock = s(m.SM_CLOCK), s(m.MEM_CLOCK), s(m.GR_CLOCK)
        self.fan, self.pstate = s(m.FAN), s(m.PSTATE)
        self.reasons = [(bit, s(m.CLOCK_EVENT, reason=name)) for name, bit in CLOCK_EVENT_REASONS]
        self.pcie_gen, self.pcie_width = s(m.PCIE_GEN), s(m.PCIE_WIDTH)
        self.pcie_tx, self.pcie_rx = s(m.PCIE_TX), s(m.PCIE_RX)
        self.pcie_replay = s(m.PCIE_REPLAY)
        self.ecc = [(fid, s(m.ECC, type=etype, scope=scope)) for fid, etype, scope in _ECC]
        self.retired_sbe, self.retired_dbe = s(m.RETIRED, cause="single_bit"), s(m.RETIRED, cause="double_bit")
        self.retired_pending = s(m.RETIRED_PENDING)
        self.remapped_cor, self.remapped_unc = s(m.REMAPPED, type="correctable"), s(m.REMAPPED, type="uncorrectable")
        self.remap_pending, self.remap_failed = s(m.REMAP_PENDING), s(m.REMAP_FAILED)
        self.nvlink_up = {link: s(m.NVLINK_UP, link=str(link)) for link in links}
        self.nvlink_errors = {(link, kind): s(m.NVLINK_ERRORS, link=str(link), type=kind)
                              for link in links for kind in NVLINK_TYPES}
        self.mig_mode, self.mig_mode_pending = s(m.MIG_MODE), s(m.MIG_MODE_PENDING)


@dataclass
class Gpu:
    """One GPU as discovered; ``labels`` go on every series."""

    index: int
    handle: Any
    uuid: str = ""
    pci: str = ""
    model: str = ""
    info_labels: dict[str, str] = field(default_factory=dict)
    #: Static facts, read at discovery; emitted with the detail questions.
    static: Collection = field(default_factory=Collection)
    links: list[int] = field(default_factory=list)
    #: Questions this device answered "not supported": not asked again until MIG mode changes.
    unsupported: set[Hashable] = field(default_factory=set)
    mig_mode: int | None = None
    #: The field-value request and where each answer goes, built at discovery.
    fields: FieldRequest | None = None
    plan: FieldPlan | None = None
    series: GpuSeries | None = None
    #: The NVLink answers last sent (``FieldPlan.links_at`` on), to send them again only on a change.
    links_sent: list[float | None] | None = None

    @property
    def labels(self) -> dict[str, str]:
        return {"gpu": str(self.index), "uuid": self.uuid, "vendor": "nvidia", "model": self.model}


def answer(gpu: Gpu, key: Hashable, question: Callable[[], T], *, remember: bool = True) -> T | None:
    """The one place an NVML question may be unsupported: None (omitted, never invented) when the
    device or driver cannot answer it, remembered under ``key`` so it is not asked again (unless
    ``remember`` is false: an answer that may appear later, such as a MIG slot). DeviceLost and
    other errors propagate."""
    if key in gpu.unsupported:
        return None
    try:
        return question()
    except NotSupported:
        if remember:
            gpu.unsupported.add(key)
        return None


def ask(nvml: Nvml, gpu: Gpu, key: Hashable, variants: Sequence[Variant], *, remember: bool = True) -> Any:
    """The first variant the driver has (see :func:`answer`)."""
    return answer(gpu, key, lambda: nvml.first(variants), remember=remember)


def ask1(nvml: Nvml, gpu: Gpu, fname: str, *args: Any) -> Any:
    """One plain per-device question (see :func:`ask`)."""
    return ask(nvml, gpu, (fname, *args), (Variant(fname, (gpu.handle, *args)),))


def discover_gpu(nvml: Nvml, index: int, driver: str, cuda: str) -> Gpu:
    """Read the static facts of GPU ``index``; DeviceLost propagates (the caller marks it down)."""
    handle = nvml.call("nvmlDeviceGetHandleByIndex", index)
    gpu = Gpu(index, handle)
    gpu.uuid = text(ask1(nvml, gpu, "nvmlDeviceGetUUID") or "")
    gpu.model = text(ask1(nvml, gpu, "nvmlDeviceGetName") or "")
    pci = ask(nvml, gpu, "pci", [Variant(f"nvmlDeviceGetPciInfo{v}", (handle,)) for v in ("_v3", "_v2", "")])
    gpu.pci = text(pci.busId) if pci is not None else ""
    info = {"uuid": gpu.uuid, "pci": gpu.pci, "driver": driver, "cuda": cuda}
    for label, fname in (("serial", "nvmlDeviceGetSerial"), ("board_part", "nvmlDeviceGetBoardPartNumber"),
                         ("vbios", "nvmlDeviceGetVbiosVersion")):
        value = ask1(nvml, gpu, fname)
        if value is not None:
            info[label] = text(value)
    gpu.info_labels = {k: v for k, v in info.items() if v}

    labels = gpu.labels
    static = gpu.static
    static.add(m.TEMP_SLOWDOWN, ask1(nvml, gpu, "nvmlDeviceGetTemperatureThreshold", THRESHOLD_SLOWDOWN), labels)
    static.add(m.TEMP_SHUTDOWN, ask1(nvml, gpu, "nvmlDeviceGetTemperatureThreshold", THRESHOLD_SHUTDOWN), labels)
    static.add(m.PCIE_GEN_MAX, ask1(nvml, gpu, "nvmlDeviceGetMaxPcieLinkGeneration"), labels)
    static.add(m.PCIE_WIDTH_MAX, ask1(nvml, gpu, "nvmlDeviceGetMaxPcieLinkWidth"), labels)
    for metric, clock in ((m.SM_CLOCK_MAX, CLOCK_SM), (m.MEM_CLOCK_MAX, CLOCK_MEM), (m.GR_CLOCK_MAX, CLOCK_GRAPHICS)):
        mhz = ask1(nvml, gpu, "nvmlDeviceGetMaxClockInfo", clock)
        static.add(metric, mhz * MHZ if mhz is not None else None, labels)  # NVML reports MHz

    # NVLink: keep the links that answer at all (a disabled link answers "inactive", a GPU
    # without NVLink answers not-supported for every link). Not remembered: probing only.
    gpu.links = [link for link in range(NVLINK_MAX_LINKS)
                 if ask(nvml, gpu, None, (Variant("nvmlDeviceGetNvLinkState", (handle, link)),), remember=False)
                 is not None]
    gpu.series = GpuSeries(labels, {**labels, **gpu.info_labels}, gpu.links)
    gpu.plan = FieldPlan(gpu.series, gpu.links)
    gpu.fields = nvml.field_request(gpu.plan.keys)
    return gpu


def collect_gpu(nvml: Nvml, gpu: Gpu, *, detail: bool, use_fields: bool, pcie_throughput: bool,
                crc: bool) -> Collection:
    """What changes, for one GPU (the slow and static part only when ``detail``, the NVLink CRC
    counters without a field id only when ``crc``).

    Raises DeviceLost when the GPU stops answering.
    """
    assert gpu.series is not None, "collect_gpu before discover_gpu"
    s = gpu.series
    col = Collection()
    put = col.put

    util = ask1(nvml, gpu, "nvmlDeviceGetUtilizationRates")
    if util is not None:
        put(s.util, util.gpu / 100.0)  # NVML reports percent
        put(s.mem_util, util.memory / 100.0)
    _memory(nvml, gpu, gpu.handle, col, used=s.mem_used, total=s.mem_total, reserved=s.mem_reserved)
    temp = ask(nvml, gpu, "temperature", (
        # nvmlDeviceGetTemperature is deprecated (removed in CUDA 14's NVML); V is its successor.
        Variant("nvmlDeviceGetTemperatureV", (gpu.handle, TEMPERATURE_GPU)),
        Variant("nvmlDeviceGetTemperature", (gpu.handle, TEMPERATURE_GPU)),
    ))
    put(s.temp, temp)

    values = _field_values(nvml, gpu) if use_fields else None
    if values is not None:
        _from_fields(nvml, gpu, col, values, detail=detail, crc=crc)
    else:
        _one_by_one(nvml, gpu, col, crc)

    if detail:
        _details(nvml, gpu, col, pcie_throughput)
    return col


def _field_values(nvml: Nvml, gpu: Gpu) -> list[float | None] | None:
    """The one field-value call of this GPU and cycle; None where the driver has no such call."""
    request = gpu.fields
    if request is None or not nvml.has("nvmlDeviceGetFieldValues"):
        return None
    return answer(gpu, "fields", lambda: nvml.read_fields(gpu.handle, request))


def _memory(nvml: Nvml, gpu: Gpu, handle: Any, col: Collection, *, used: Series, total: Series,
            reserved: Series | None, key: Hashable = "memory") -> None:
    """Memory of the GPU, or of a MIG device (``key`` None: not remembered, the slot may change)."""
    mem = ask(nvml, gpu, key, (
        # v2 adds ``reserved`` and, unlike v1, does not count it as used (driver 510+).
        Variant("nvmlDeviceGetMemoryInfo", (handle,), {"version": MEMORY_V2}, "nvmlDeviceGetMemoryInfo_v2"),
        Variant("nvmlDeviceGetMemoryInfo", (handle,)),
    ), remember=key is not None)
    if mem is None:
        return
    col.put(used, mem.used)
    col.put(total, mem.total)
    if reserved is not None:
        col.put(reserved, getattr(mem, "reserved", None))


def _milli(value: float | None) -> float | None:
    return value / 1000.0 if value is not None else None


def _flag(value: float | None) -> float | None:
    return None if value is None else 1.0 if value else 0.0


class FieldPlan:
    """Which field ids one GPU asks for, and where each answer goes (built once per GPU)."""

    def __init__(self, s: GpuSeries, links: Sequence[int]) -> None:
        self.keys: list[FieldKey] = list(BASE_FIELDS)
        at = {key: i for i, key in enumerate(self.keys)}
        self.energy = at[FI_TOTAL_ENERGY]
        self.power_avg, self.power_instant = at[FI_POWER_AVERAGE], at[FI_POWER_INSTANT]
        self.limit, self.enforced = at[FI_POWER_REQUESTED_LIMIT], at[FI_POWER_CURRENT_LIMIT]
        self.flags = [(at[FI_RETIRED_PENDING], s.retired_pending), (at[FI_REMAPPED_PENDING], s.remap_pending),
                      (at[FI_REMAPPED_FAILURE], s.remap_failed)]
        #: Answers emitted as they are: positions in the answer list, and their series.
        self.direct: list[int] = [at[fid] for fid in (FI_MEMORY_TEMP, FI_PCIE_REPLAY)]
        self.direct += [at[fid] for fid, _series in s.ecc]
        self.direct += [at[fid] for fid in (FI_RETIRED_SBE, FI_RETIRED_DBE, FI_REMAPPED_COR, FI_REMAPPED_UNC)]
        self.series: list[Series] = [s.mem_temp, s.pcie_replay, *(series for _fid, series in s.ecc),
                                     s.retired_sbe, s.retired_dbe, s.remapped_cor, s.remapped_unc]
        #: Direct answers an older driver may lack (per-link scoped fields, R525+), by their place in
        #: ``direct``, with the per-link call that answers instead.
        self.fallback: dict[int, Variant] = {}
        #: NVLink CRC counters without a field id: asked every ``nvlink_crc_interval``.
        self.detail_calls: list[tuple[Series, Variant]] = []
        #: Where the NVLink answers start in ``direct`` (states and error counters, most of a
        #: GPU's samples): they are sent when one of them changes or with the details.
        self.links_at = len(self.direct)
        for link in links:
            self._direct(FI_NVLINK_GET_STATE, link, s.nvlink_up[link], Variant("nvmlDeviceGetNvLinkState", (link,)))
            for kind in NVLINK_TYPES:
                series, key = s.nvlink_errors[(link, kind)], nvlink_key(kind, link)
                call = Variant("nvmlDeviceGetNvLinkErrorCounter", (link, _NVLINK_COUNTER[kind]))
                if key is None:
                    self.detail_calls.append((series, call))
                elif isinstance(key, tuple):  # scoped: R525+
                    self._direct(key[0], key[1], series, call)
                else:
                    self._direct(key, None, series, None)

    def _direct(self, fid: int, scope: int | None, series: Series, fallback: Variant | None) -> None:
        if fallback is not None:
            self.fallback[len(self.direct)] = fallback
        self.direct.append(len(self.keys))
        self.series.append(series)
        self.keys.append((fid, scope) if scope is not None else fid)


def _from_fields(nvml: Nvml, gpu: Gpu, col: Collection, v: list[float | None], *, detail: bool, crc: bool) -> None:
    assert gpu.series is not None and gpu.plan is not None
    s, plan, put = gpu.series, gpu.plan, col.put
    # Power and its limits (milliwatts); a driver without the fields answers the older calls.
    power = v[plan.power_avg]
    if power is None:
        power = v[plan.power_instant]
    if power is None:
        power = ask1(nvml, gpu, "nvmlDeviceGetPowerUsage")
    put(s.power, _milli(power))
    limit = v[plan.limit]
    put(s.power_limit, _milli(limit if limit is not None else ask1(nvml, gpu, "nvmlDeviceGetPowerManagementLimit")))
    enforced = v[plan.enforced]
    put(s.power_enforced, _milli(enforced if enforced is not None
                                 else ask1(nvml, gpu, "nvmlDeviceGetEnforcedPowerLimit")))
    put(s.energy, _milli(v[plan.energy]))  # NVML reports millijoules
    for i, series in plan.flags:
        put(series, _flag(v[i]))
    values = [v[i] for i in plan.direct]
    complete = None not in values  # the usual case: every field answered
    if not complete:
        for j, call in plan.fallback.items():
            if values[j] is None:
                values[j] = ask1(nvml, gpu, call.fname, *call.args)
    targets = plan.series
    links = values[plan.links_at:]
    if detail or links != gpu.links_sent:
        gpu.links_sent = links
    else:  # no NVLink state or counter changed since they were last sent: not again until one does
        targets, values = targets[:plan.links_at], values[:plan.links_at]
    if complete:
        col.series.extend(targets)
        col.values.extend(values)  # type: ignore[arg-type]  # no None, checked above
    else:
        present = [value is not None for value in values]
        col.series.extend(itertools.compress(targets, present))
        col.values.extend(itertools.compress(values, present))  # type: ignore[arg-type]  # None left out
    if crc:  # counters no field covers (CRC of links past the field range): one call each
        for series, call in plan.detail_calls:
            put(series, ask1(nvml, gpu, call.fname, *call.args))


def _one_by_one(nvml: Nvml, gpu: Gpu, col: Collection, crc: bool) -> None:
    """The same counters for drivers without nvmlDeviceGetFieldValues (pre-R418), or when configured."""
    assert gpu.series is not None
    s, put = gpu.series, col.put
    put(s.power, _milli(ask1(nvml, gpu, "nvmlDeviceGetPowerUsage")))  # milliwatts
    put(s.power_limit, _milli(ask1(nvml, gpu, "nvmlDeviceGetPowerManagementLimit")))
    put(s.power_enforced, _milli(ask1(nvml, gpu, "nvmlDeviceGetEnforcedPowerLimit")))
    put(s.energy, _milli(ask1(nvml, gpu, "nvmlDeviceGetTotalEnergyConsumption")))  # millijoules
    put(s.pcie_replay, ask1(nvml, gpu, "nvmlDeviceGetPcieReplayCounter"))
    ecc_args = ((ECC_CORRECTED, ECC_VOLATILE), (ECC_UNCORRECTED, ECC_VOLATILE),
                (ECC_CORRECTED, ECC_AGGREGATE), (ECC_UNCORRECTED, ECC_AGGREGATE))
    for (_fid, series), (etype, scope) in zip(s.ecc, ecc_args, strict=True):
        put(series, ask1(nvml, gpu, "nvmlDeviceGetTotalEccErrors", etype, scope))
    sbe = ask1(nvml, gpu, "nvmlDeviceGetRetiredPages", RETIRE_SBE)
    dbe = ask1(nvml, gpu, "nvmlDeviceGetRetiredPages", RETIRE_DBE)
    put(s.retired_sbe, len(sbe) if sbe is not None else None)
    put(s.retired_dbe, len(dbe) if dbe is not None else None)
    put(s.retired_pending, _flag(ask1(nvml, gpu, "nvmlDeviceGetRetiredPagesPendingStatus")))
    rows = ask1(nvml, gpu, "nvmlDeviceGetRemappedRows")
    if rows is not None:
        cor, unc, pending, failed = rows
        put(s.remapped_cor, cor)
        put(s.remapped_unc, unc)
        put(s.remap_pending, _flag(pending))
        put(s.remap_failed, _flag(failed))
    for link in gpu.links:
        put(s.nvlink_up[link], ask1(nvml, gpu, "nvmlDeviceGetNvLinkState", link))
        for kind, counter_id in _NVLINK_COUNTER.items():
            if crc or nvlink_key(kind, link) is not None:  # the same cadence as with fields
                put(s.nvlink_errors[(link, kind)],
                    ask1(nvml, gpu, "nvmlDeviceGetNvLinkErrorCounter", link, counter_id))


def _details(nvml: Nvml, gpu: Gpu, col: Collection, pcie_throughput: bool) -> None:
    """Slow-changing and secondary questions, asked every ``detail_interval``."""
    assert gpu.series is not None
    s, put = gpu.series, col.put
    for series, fname in ((s.enc_util, "nvmlDeviceGetEncoderUtilization"),
                          (s.dec_util, "nvmlDeviceGetDecoderUtilization")):
        value = ask1(nvml, gpu, fname)
        if value is not None:
            put(series, value[0] / 100.0)  # [percent, sampling period in µs]
    for series, clock in ((s.sm_clock, CLOCK_SM), (s.mem_clock, CLOCK_MEM), (s.gr_clock, CLOCK_GRAPHICS)):
        mhz = ask1(nvml, gpu, "nvmlDeviceGetClockInfo", clock)
        put(series, mhz * MHZ if mhz is not None else None)  # NVML reports MHz
    reasons = ask(nvml, gpu, "reasons", (
        # Renamed from "throttle reasons" to "clock event reasons" in driver 535.
        Variant("nvmlDeviceGetCurrentClocksEventReasons", (gpu.handle,)),
        Variant("nvmlDeviceGetCurrentClocksThrottleReasons", (gpu.handle,)),
    ))
    if reasons is not None:
        for bit, series in s.reasons:
            put(series, 1.0 if int(reasons) & bit else 0.0)
    fan = ask1(nvml, gpu, "nvmlDeviceGetFanSpeed")
    put(s.fan, fan / 100.0 if fan is not None else None)  # percent of maximum
    pstate = ask1(nvml, gpu, "nvmlDeviceGetPerformanceState")
    put(s.pstate, pstate if pstate is not None and pstate <= 15 else None)  # 32 = unknown
    put(s.pcie_gen, ask1(nvml, gpu, "nvmlDeviceGetCurrPcieLinkGeneration"))
    put(s.pcie_width, ask1(nvml, gpu, "nvmlDeviceGetCurrPcieLinkWidth"))
    if pcie_throughput:
        # Each call samples the link for 20 ms inside the driver (nvml.h); per-GPU threads
        # overlap those waits across GPUs.
        for series, counter_id in ((s.pcie_tx, PCIE_UTIL_TX), (s.pcie_rx, PCIE_UTIL_RX)):
            kb = ask1(nvml, gpu, "nvmlDeviceGetPcieThroughput", counter_id)
            put(series, kb * 1000.0 if kb is not None else None)  # NVML reports KB/s
    _mig(nvml, gpu, col)
    col.extend(gpu.static)


def _mig(nvml: Nvml, gpu: Gpu, col: Collection) -> None:
    assert gpu.series is not None
    mode = ask1(nvml, gpu, "nvmlDeviceGetMigMode")
    if mode is None:
        return
    current, pending = int(mode[0]), int(mode[1])
    col.put(gpu.series.mig_mode, current)
    col.put(gpu.series.mig_mode_pending, pending)
    if gpu.mig_mode is not None and gpu.mig_mode != current:
        # What the GPU supports changes with MIG mode (e.g. utilization is N/A under MIG).
        gpu.unsupported.clear()
    gpu.mig_mode = current
    if current != 1:
        return
    count = ask1(nvml, gpu, "nvmlDeviceGetMaxMigDeviceCount") or 0
    labels = gpu.series.labels
    for i in range(int(count)):
        # Instances come and go without a change of MIG mode: per-slot answers are not remembered.
        mig = ask(nvml, gpu, None, (Variant("nvmlDeviceGetMigDeviceHandleByIndex", (gpu.handle, i)),), remember=False)
        if mig is None:  # NOT_FOUND: no MIG device in this slot
            continue
        gi = ask(nvml, gpu, None, (Variant("nvmlDeviceGetGpuInstanceId", (mig,)),), remember=False)
        ci = ask(nvml, gpu, None, (Variant("nvmlDeviceGetComputeInstanceId", (mig,)),), remember=False)
        mig_labels = {**labels, "mig": str(i)}
        if gi is not None:
            mig_labels["gpu_instance"] = str(gi)
        if ci is not None:
            mig_labels["compute_instance"] = str(ci)
        _memory(nvml, gpu, mig, col, used=m.MIG_MEM_USED.series(mig_labels), total=m.MIG_MEM_TOTAL.series(mig_labels),
                reserved=None, key=None)
        # NVML answers utilization on MIG handles with NOT_SUPPORTED on A100/H100 (per-instance
        # activity needs DCGM profiling or GPM); the metric appears where a driver reports it.
        util = ask(nvml, gpu, "mig_util", (Variant("nvmlDeviceGetUtilizationRates", (mig,)),))
        if util is not None:
            col.add(m.MIG_UTIL, util.gpu / 100.0, mig_labels)  # percent
