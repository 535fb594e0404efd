"""A fake NVML binding with pynvml's function names, constants, structures and error classes.

It answers with the numbers nvidia-smi recorded on real data-center GPUs
(``../shared/fixtures/nvidia-smi/*.xml``: A100 SXM4 80GB with MIG on, A10G, T4), so the plugin's
real code runs against real values; only the hardware is absent. Errors are raised exactly as
pynvml raises them (``pynvml.NVMLError(code)``, which maps itself to ``NVMLError_NotSupported``
and friends), so the plugin's error mapping is exercised, not bypassed.

Nodes (``reset(node)`` or the ``FAKENVML_NODE`` environment variable, read at ``nvmlInit``;
``FAKENVML_LATENCY_US`` sets ``state.latency_s`` the same way, for benchmarks of a real agent process):

- ``a100``, ``a10g``, ``t4``: one GPU each, straight from its XML.
- ``h100x8``: an 8-GPU H100-style HGX node *derived* from the recordings: the A100 record with
  the name ``NVIDIA H100 80GB HBM3``, MIG off, utilisation from the T4 record (0 %), row remapping
  from the A10G record, retired pages from the T4 record, PCIe gen 5, 18 active NVLinks with zero
  error counters, and an energy counter of one day at the recorded power draw (nvidia-smi's XML
  has none). Identity (uuid, serial, PCI address) differs per GPU; every number is the same.

Field values: the counters nvidia-smi recorded, every NVLink's state and error counters (per-link
ids for links 0-11, scoped replay/recovery for every link), and the power fields (185-192). Those
answer only for records from driver 530 or newer (here the A100's 535; the 515 recordings, A10G
and T4, then exercise the older per-function calls). ``nvmlDeviceGetPowerUsage`` answers the
1 s average on Ampere-or-newer GPUs other than GA100 and the instant power elsewhere (nvml.h), so
the recorded draw is the POWER_AVERAGE field (A10G, the H100 node) or POWER_INSTANT (A100, T4);
the other one was not recorded and answers NOT_SUPPORTED.

Faults, for error-path tests: ``state.not_supported`` ({(gpu index or None, function)}),
``state.missing`` (functions answering FUNCTION_NOT_FOUND), ``state.lost`` (GPU indexes answering
GPU_IS_LOST), ``state.hang`` ({index: threading.Event}: calls on that GPU block until it is set),
``post_event(index, event_type, data)``, ``state.init_error`` (an NVML return code for nvmlInit).
"""

from __future__ import annotations

import copy
import ctypes
import functools
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml as _pynvml

from tests.fakenvml.smi import GpuRecord, NvLinkRecord, parse

# Re-export pynvml's constants, error classes and ctypes structures under the same names.
for _name in dir(_pynvml):
    if _name.startswith(("NVML", "nvmlEventType", "nvmlClocks", "c_nvml", "nvmlMemory_v")):
        globals()[_name] = getattr(_pynvml, _name)
NVMLError = _pynvml.NVMLError

FIXTURES = Path(os.environ.get("FLEETMON_SHARED", Path(__file__).resolve().parents[2].parent / "shared")) / "fixtures"
SMI_DIR = FIXTURES / "nvidia-smi"
HANG_CAP_S = 60.0  # a hung call gives up after this, so a broken test cannot hang pytest forever


def _raise(code: int) -> None:
    raise _pynvml.NVMLError(code)


@dataclass(eq=False)
class Device:
    index: int
    rec: GpuRecord


@dataclass(eq=False)
class MigDevice:
    parent: Device
    slot: int


@dataclass
class FakeState:
    devices: list[Device] | None = None
    node: str = ""
    initialized: int = 0
    not_supported: set[tuple[int | None, str]] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    hang: dict[int, threading.Event] = field(default_factory=dict)
    #: Calls that entered a hang, per GPU index, and how many of them are blocked right now: a
    #: test tells "the collection returned while the call was still stuck" without a clock.
    hung_calls: Counter[int] = field(default_factory=Counter)
    blocked: Counter[int] = field(default_factory=Counter)
    init_error: int | None = None
    calls: Counter[str] = field(default_factory=Counter)
    events: queue.Queue[tuple[Device, int, int]] = field(default_factory=queue.Queue)
    registered: dict[int, int] = field(default_factory=dict)  # id(device) -> event mask
    #: Simulated driver time per call (seconds slept, GIL released, as ctypes releases it around
    #: the real ioctl); benchmarks use it to show what per-GPU threads overlap.
    latency_s: float = 0.0
    #: CPU seconds spent inside the fake's functions (benchmarks subtract it to get fleetmon's own cost).
    seconds_inside: float = 0.0
    #: Field-value answers per device, request and injected faults (see ``_fill_fields``).
    field_answers: dict[int, dict[Any, bytes]] = field(default_factory=dict)


state = FakeState()


@functools.cache
def _records(name: str) -> tuple[GpuRecord, ...]:
    return tuple(parse(SMI_DIR / name))


def build_node(node: str) -> list[Device]:
    if node == "a100":
        return [Device(0, copy.deepcopy(_records("a100-sxm4-v12.xml")[0]))]
    if node == "a10g":
        return [Device(0, copy.deepcopy(_records("a10g.xml")[0]))]
    if node == "t4":
        return [Device(0, copy.deepcopy(_records("tesla-t4.xml")[0]))]
    if node == "h100x8":
        return [Device(i, _h100(i)) for i in range(8)]
    raise ValueError(f"fakenvml: unknown node {node!r}; use a100, a10g, t4 or h100x8")


# PCI addresses of an HGX H100 8-GPU baseboard as commonly enumerated.
H100_BUSES = ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")


def _h100(i: int) -> GpuRecord:
    a100 = _records("a100-sxm4-v12.xml")[0]
    t4 = _records("tesla-t4.xml")[0]
    a10g = _records("a10g.xml")[0]
    rec = copy.deepcopy(a100)
    rec.source = "derived: a100-sxm4-v12.xml + tesla-t4.xml + a10g.xml"
    rec.name = "NVIDIA H100 80GB HBM3"
    rec.uuid = f"GPU-513536b6-7d19-9063-b049-1e69664bb2{i:02d}"
    rec.serial = str(int(a100.serial or "0") + i)
    rec.pci_bus_id = f"00000000:{H100_BUSES[i].upper()}:00.0"
    rec.pcie_gen = rec.pcie_gen_max = 5.0
    rec.mig_current = rec.mig_pending = 0
    rec.migs = []
    rec.util_gpu, rec.util_mem, rec.util_enc, rec.util_dec = t4.util_gpu, t4.util_mem, t4.util_enc, t4.util_dec
    rec.remap_cor, rec.remap_unc = a10g.remap_cor, a10g.remap_unc
    rec.remap_pending, rec.remap_failure = a10g.remap_pending, a10g.remap_failure
    rec.retired_sbe, rec.retired_dbe, rec.retired_pending = t4.retired_sbe, t4.retired_dbe, t4.retired_pending
    rec.energy_mj = round((a100.power_w or 0.0) * 86400 * 1000)  # one day at the recorded draw, in mJ
    rec.nvlinks = [NvLinkRecord(active=1) for _ in range(18)]
    return rec


def reset(node: str | None = None) -> FakeState:
    """Fresh state (faults cleared); ``node`` defaults to $FAKENVML_NODE or h100x8."""
    global state
    for ev in state.hang.values():
        ev.set()  # release anything a previous test left hanging
    state = FakeState()
    state.node = node or os.environ.get("FAKENVML_NODE", "h100x8")
    state.latency_s = float(os.environ.get("FAKENVML_LATENCY_US", "0") or 0) / 1e6
    state.devices = build_node(state.node)
    return state


def post_event(index: int, event_type: int, data: int) -> None:
    assert state.devices is not None
    state.events.put((state.devices[index], event_type, data))


# -- the API -----------------------------------------------------------------------------------

_TIMING_LOCK = threading.Lock()


def _api(fn: Callable[..., Any]) -> Callable[..., Any]:
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        st = state
        st.calls[name] += 1
        t0 = time.thread_time()  # CPU of this thread: GIL waits under concurrency do not count
        try:
            return _checked(st, name, fn, args, kwargs)
        finally:
            with _TIMING_LOCK:
                st.seconds_inside += time.thread_time() - t0

    return wrapper


def _checked(st: FakeState, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if st.latency_s and not name.startswith("nvmlEventSetWait"):
        time.sleep(st.latency_s)
    if name in st.missing:
        _raise(_pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    if not st.initialized and name not in ("nvmlInit", "nvmlInitWithFlags"):
        _raise(_pynvml.NVML_ERROR_UNINITIALIZED)
    dev = args[0] if args and isinstance(args[0], (Device, MigDevice)) else None
    if dev is not None:
        gpu = dev if isinstance(dev, Device) else dev.parent
        if gpu.index in st.hang:
            with _TIMING_LOCK:
                st.hung_calls[gpu.index] += 1
                st.blocked[gpu.index] += 1
            try:
                st.hang[gpu.index].wait(HANG_CAP_S)
            finally:
                with _TIMING_LOCK:
                    st.blocked[gpu.index] -= 1
        if gpu.index in st.lost:
            _raise(_pynvml.NVML_ERROR_GPU_IS_LOST)
        if (gpu.index, name) in st.not_supported or (None, name) in st.not_supported:
            _raise(_pynvml.NVML_ERROR_NOT_SUPPORTED)
    return fn(*args, **kwargs)


def _need(value: Any) -> Any:
    if value is None:
        _raise(_pynvml.NVML_ERROR_NOT_SUPPORTED)
    return value


@_api
def nvmlInit() -> None:
    if state.devices is None:
        reset()
    if state.init_error is not None:
        _raise(state.init_error)
    state.initialized += 1


@_api
def nvmlInitWithFlags(flags: int) -> None:
    return nvmlInit()


@_api
def nvmlShutdown() -> None:
    state.initialized = max(0, state.initialized - 1)


@_api
def nvmlSystemGetDriverVersion() -> str:
    assert state.devices
    return state.devices[0].rec.driver


@_api
def nvmlSystemGetCudaDriverVersion() -> int:
    assert state.devices
    major, _, minor = state.devices[0].rec.cuda.partition(".")
    return int(major) * 1000 + int(minor or 0) * 10


@_api
def nvmlSystemGetCudaDriverVersion_v2() -> int:
    return nvmlSystemGetCudaDriverVersion.__wrapped__()  # type: ignore[attr-defined,no-any-return]


@_api
def nvmlDeviceGetCount() -> int:
    return len(state.devices or [])


@_api
def nvmlDeviceGetHandleByIndex(index: int) -> Device:
    devices = state.devices or []
    if not 0 <= index < len(devices):
        _raise(_pynvml.NVML_ERROR_INVALID_ARGUMENT)
    if index in state.lost:
        _raise(_pynvml.NVML_ERROR_GPU_IS_LOST)
    return devices[index]


@_api
def nvmlDeviceGetUUID(h: Device) -> str:
    return h.rec.uuid


@_api
def nvmlDeviceGetName(h: Device) -> str:
    return h.rec.name


@_api
def nvmlDeviceGetSerial(h: Device) -> str:
    return _need(h.rec.serial)


@_api
def nvmlDeviceGetBoardPartNumber(h: Device) -> str:
    return _need(h.rec.board_part)


@_api
def nvmlDeviceGetVbiosVersion(h: Device) -> str:
    return _need(h.rec.vbios)


@_api
def nvmlDeviceGetPciInfo_v3(h: Device) -> Any:
    info = _pynvml.nvmlPciInfo_t()
    info.busId = h.rec.pci_bus_id.encode()
    info.busIdLegacy = h.rec.pci_bus_id[-12:].encode()
    return info


@_api
def nvmlDeviceGetPciInfo(h: Device) -> Any:
    return nvmlDeviceGetPciInfo_v3.__wrapped__(h)  # type: ignore[attr-defined]


@_api
def nvmlDeviceGetTemperatureThreshold(h: Device, threshold: int) -> int:
    values = {_pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: h.rec.temp_shutdown,
              _pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: h.rec.temp_slowdown}
    return int(_need(values.get(threshold)))


@_api
def nvmlDeviceGetTemperature(h: Device, sensor: int) -> int:
    return int(_need(h.rec.temp))


@_api
def nvmlDeviceGetTemperatureV(h: Device, sensor: int) -> int:
    return int(_need(h.rec.temp))


@_api
def nvmlDeviceGetMaxPcieLinkGeneration(h: Device) -> int:
    return int(_need(h.rec.pcie_gen_max))


@_api
def nvmlDeviceGetMaxPcieLinkWidth(h: Device) -> int:
    return int(_need(h.rec.pcie_width_max))


@_api
def nvmlDeviceGetCurrPcieLinkGeneration(h: Device) -> int:
    return int(_need(h.rec.pcie_gen))


@_api
def nvmlDeviceGetCurrPcieLinkWidth(h: Device) -> int:
    return int(_need(h.rec.pcie_width))


@_api
def nvmlDeviceGetPcieThroughput(h: Device, counter: int) -> int:
    value = h.rec.pcie_tx_kb if counter == _pynvml.NVML_PCIE_UTIL_TX_BYTES else h.rec.pcie_rx_kb
    return int(_need(value))


@_api
def nvmlDeviceGetPcieReplayCounter(h: Device) -> int:
    return int(_need(h.rec.pcie_replay))


_CLOCK_KEYS = {_pynvml.NVML_CLOCK_GRAPHICS: "graphics", _pynvml.NVML_CLOCK_SM: "sm", _pynvml.NVML_CLOCK_MEM: "mem"}


@_api
def nvmlDeviceGetClockInfo(h: Device, clock: int) -> int:
    return int(_need(h.rec.clocks.get(_CLOCK_KEYS.get(clock, ""))))


@_api
def nvmlDeviceGetMaxClockInfo(h: Device, clock: int) -> int:
    return int(_need(h.rec.max_clocks.get(_CLOCK_KEYS.get(clock, ""))))


@_api
def nvmlDeviceGetUtilizationRates(h: Device | MigDevice) -> Any:
    if isinstance(h, MigDevice) or h.rec.util_gpu is None:
        _raise(_pynvml.NVML_ERROR_NOT_SUPPORTED)  # as the A100 answered under MIG
    assert isinstance(h, Device)
    util = _pynvml.c_nvmlUtilization_t()
    util.gpu = int(h.rec.util_gpu or 0)
    util.memory = int(_need(h.rec.util_mem))
    return util


@_api
def nvmlDeviceGetEncoderUtilization(h: Device) -> list[int]:
    return [int(_need(h.rec.util_enc)), 167000]


@_api
def nvmlDeviceGetDecoderUtilization(h: Device) -> list[int]:
    return [int(_need(h.rec.util_dec)), 167000]


MIB = 1024 * 1024


@_api
def nvmlDeviceGetMemoryInfo(h: Device | MigDevice, version: int | None = None) -> Any:
    if isinstance(h, MigDevice):
        mig = h.parent.rec.migs[h.slot]
        total, used, reserved = mig.total_mib, mig.used_mib, 0.0
    else:
        total, used = _need(h.rec.fb_total_mib), _need(h.rec.fb_used_mib)
        reserved = h.rec.fb_reserved_mib or 0.0
    if version:
        mem = _pynvml.c_nvmlMemory_v2_t()
        mem.version = version
        mem.reserved = int(reserved * MIB)
    else:
        mem = _pynvml.c_nvmlMemory_t()
    mem.total = int(total * MIB)
    mem.used = int(used * MIB)
    mem.free = int((total - used - (reserved if version else 0)) * MIB)
    return mem


@_api
def nvmlDeviceGetPowerUsage(h: Device) -> int:
    return round(_need(h.rec.power_w) * 1000)  # milliwatts


@_api
def nvmlDeviceGetPowerManagementLimit(h: Device) -> int:
    return round(_need(h.rec.power_limit_w) * 1000)


@_api
def nvmlDeviceGetEnforcedPowerLimit(h: Device) -> int:
    return round(_need(h.rec.power_enforced_w) * 1000)


@_api
def nvmlDeviceGetTotalEnergyConsumption(h: Device) -> int:
    return int(_need(h.rec.energy_mj))


@_api
def nvmlDeviceGetFanSpeed(h: Device) -> int:
    return int(_need(h.rec.fan_percent))


@_api
def nvmlDeviceGetPerformanceState(h: Device) -> int:
    return int(_need(h.rec.pstate))


@_api
def nvmlDeviceGetCurrentClocksEventReasons(h: Device) -> int:
    return int(_need(h.rec.reasons))


@_api
def nvmlDeviceGetCurrentClocksThrottleReasons(h: Device) -> int:
    return int(_need(h.rec.reasons))


_ECC_KEYS = {
    (_pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, _pynvml.NVML_VOLATILE_ECC): ("volatile", "correctable"),
    (_pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, _pynvml.NVML_VOLATILE_ECC): ("volatile", "uncorrectable"),
    (_pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, _pynvml.NVML_AGGREGATE_ECC): ("aggregate", "correctable"),
    (_pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, _pynvml.NVML_AGGREGATE_ECC): ("aggregate", "uncorrectable"),
}


@_api
def nvmlDeviceGetTotalEccErrors(h: Device, error_type: int, counter_type: int) -> int:
    return int(_need(h.rec.ecc.get(_ECC_KEYS[(error_type, counter_type)])))


@_api
def nvmlDeviceGetRetiredPages(h: Device, cause: int) -> list[int]:
    count = h.rec.retired_sbe if cause == 0 else h.rec.retired_dbe
    return [0x1000 * (i + 1) for i in range(int(_need(count)))]


@_api
def nvmlDeviceGetRetiredPagesPendingStatus(h: Device) -> int:
    return int(_need(h.rec.retired_pending))


@_api
def nvmlDeviceGetRemappedRows(h: Device) -> tuple[int, int, int, int]:
    r = h.rec
    return (int(_need(r.remap_cor)), int(_need(r.remap_unc)), int(_need(r.remap_pending)),
            int(_need(r.remap_failure)))


def _link(h: Device, link: int) -> NvLinkRecord:
    if not h.rec.nvlinks:
        _raise(_pynvml.NVML_ERROR_NOT_SUPPORTED)
    if not 0 <= link < len(h.rec.nvlinks):
        _raise(_pynvml.NVML_ERROR_INVALID_ARGUMENT)
    return h.rec.nvlinks[link]


@_api
def nvmlDeviceGetNvLinkState(h: Device, link: int) -> int:
    return _link(h, link).active


_NVLINK_COUNTERS = {0: "replay", 1: "recovery", 2: "crc_flit", 3: "crc_data"}


@_api
def nvmlDeviceGetNvLinkErrorCounter(h: Device, link: int, counter: int) -> int:
    return int(getattr(_link(h, link), _NVLINK_COUNTERS[counter]))


# nvmlDeviceGetFieldValues: field id -> (value type, getter). Value types from nvml.h.
def _field_getters() -> dict[int, tuple[int, Callable[[GpuRecord], Any]]]:
    p = _pynvml
    ull, ui = p.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, p.NVML_VALUE_TYPE_UNSIGNED_INT
    table: dict[int, tuple[int, Callable[[GpuRecord], Any]]] = {
        p.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: (ull, lambda r: r.energy_mj),
        p.NVML_FI_DEV_MEMORY_TEMP: (ui, lambda r: r.mem_temp),
        p.NVML_FI_DEV_PCIE_REPLAY_COUNTER: (ull, lambda r: r.pcie_replay),
        p.NVML_FI_DEV_ECC_SBE_VOL_TOTAL: (ull, lambda r: r.ecc[("volatile", "correctable")]),
        p.NVML_FI_DEV_ECC_DBE_VOL_TOTAL: (ull, lambda r: r.ecc[("volatile", "uncorrectable")]),
        p.NVML_FI_DEV_ECC_SBE_AGG_TOTAL: (ull, lambda r: r.ecc[("aggregate", "correctable")]),
        p.NVML_FI_DEV_ECC_DBE_AGG_TOTAL: (ull, lambda r: r.ecc[("aggregate", "uncorrectable")]),
        p.NVML_FI_DEV_RETIRED_SBE: (ull, lambda r: r.retired_sbe),
        p.NVML_FI_DEV_RETIRED_DBE: (ull, lambda r: r.retired_dbe),
        p.NVML_FI_DEV_RETIRED_PENDING: (ull, lambda r: r.retired_pending),
        p.NVML_FI_DEV_REMAPPED_COR: (ui, lambda r: r.remap_cor),
        p.NVML_FI_DEV_REMAPPED_UNC: (ui, lambda r: r.remap_unc),
        p.NVML_FI_DEV_REMAPPED_PENDING: (ui, lambda r: r.remap_pending),
        p.NVML_FI_DEV_REMAPPED_FAILURE: (ui, lambda r: r.remap_failure),
    }
    bases = {"crc_flit": (32, 96), "crc_data": (39, 102), "replay": (46, 108), "recovery": (53, 114)}
    for kind, (low, high) in bases.items():
        for link in range(12):
            fid = low + link if link < 6 else high + link - 6

            def get(r: GpuRecord, link: int = link, kind: str = kind) -> Any:
                return getattr(r.nvlinks[link], kind) if link < len(r.nvlinks) else None

            table[fid] = (ull, get)
    _power_fields(table)
    return table


def _instant_power(r: GpuRecord) -> bool:
    """Whether nvmlDeviceGetPowerUsage (the recorded draw) is the instant power: GA100 and pre-Ampere."""
    return "A100" in r.name or "T4" in r.name


def _power_fields(table: dict[int, tuple[int, Callable[[GpuRecord], Any]]]) -> None:
    p = _pynvml
    ui = p.NVML_VALUE_TYPE_UNSIGNED_INT

    def since_530(get: Callable[[GpuRecord], Any]) -> Callable[[GpuRecord], Any]:
        return lambda r: get(r) if int(r.driver.split(".")[0] or 0) >= 530 else None

    table[p.NVML_FI_DEV_POWER_AVERAGE] = (ui, since_530(
        lambda r: None if _instant_power(r) or r.power_w is None else round(r.power_w * 1000)))
    table[p.NVML_FI_DEV_POWER_INSTANT] = (ui, since_530(
        lambda r: round(r.power_w * 1000) if _instant_power(r) and r.power_w is not None else None))
    table[p.NVML_FI_DEV_POWER_REQUESTED_LIMIT] = (ui, since_530(
        lambda r: None if r.power_limit_w is None else round(r.power_limit_w * 1000)))
    table[p.NVML_FI_DEV_POWER_CURRENT_LIMIT] = (ui, since_530(
        lambda r: None if r.power_enforced_w is None else round(r.power_enforced_w * 1000)))


_SCOPED_NVLINK = {165: "active", 161: "replay", 162: "recovery"}  # NVLINK_GET_STATE, ERROR_DL_REPLAY, _RECOVERY


def _scoped_field(rec: GpuRecord, fid: int, scope: int) -> tuple[int, Any]:
    attr = _SCOPED_NVLINK.get(fid)
    if attr is None or scope >= len(rec.nvlinks):
        return 0, None
    vtype = _pynvml.NVML_VALUE_TYPE_UNSIGNED_INT if attr == "active" else _pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    return vtype, getattr(rec.nvlinks[scope], attr)


_FIELDS = _field_getters()


def _fill_fields(h: Device, values: Any) -> None:
    """Answer every entry of an nvmlFieldValue_t array whose fieldId/scopeId are set, in place.

    Answers are computed once per device, request and set of injected faults, then copied into
    the array: the fake's own Python cost stays out of the agent's figures in benchmarks.
    """
    words = memoryview(values).cast("B").cast("I")  # 10 uint32 per 40-byte entry: fieldId, scopeId, ...
    faults = frozenset(f for f in state.not_supported if f[0] == h.index and f[1].startswith("field:"))
    key = (words[0::10].tobytes(), words[1::10].tobytes(), faults)
    cache = state.field_answers.setdefault(id(h), {})
    answer = cache.get(key)
    if answer is None:
        ids = tuple(zip(words[0::10].tolist(), words[1::10].tolist(), strict=True))
        answer = cache[key] = _compute_fields(h, ids, faults)
    ctypes.memmove(ctypes.addressof(values), answer, len(answer))


def _compute_fields(h: Device, ids: tuple[tuple[int, int], ...], faults: frozenset[tuple[int | None, str]]) -> bytes:
    values = (_pynvml.c_nvmlFieldValue_t * len(ids))()
    for i, (fid, scope) in enumerate(ids):
        values[i].fieldId, values[i].scopeId = fid, scope
        entry = _FIELDS.get(fid)
        scoped = fid in _SCOPED_NVLINK
        if scoped:
            vtype, value = _scoped_field(h.rec, fid, scope)
        else:
            vtype, value = (entry[0], entry[1](h.rec)) if entry else (0, None)
        if (h.index, f"field:{fid}") in faults:
            value = None
        if value is None:
            values[i].nvmlReturn = _pynvml.NVML_ERROR_NOT_SUPPORTED
            continue
        values[i].nvmlReturn = _pynvml.NVML_SUCCESS
        values[i].valueType = vtype
        if vtype == _pynvml.NVML_VALUE_TYPE_UNSIGNED_INT:
            values[i].value.uiVal = int(value)
        else:
            values[i].value.ullVal = int(value)
    return bytes(memoryview(values).cast("B"))


@_api
def nvmlDeviceGetFieldValues(h: Device, field_ids: list[Any]) -> Any:
    """pynvml's wrapper: a fresh array from a list of ids or (id, scope) pairs."""
    values = (_pynvml.c_nvmlFieldValue_t * len(field_ids))()
    for i, requested in enumerate(field_ids):
        values[i].fieldId, values[i].scopeId = requested if isinstance(requested, tuple) else (requested, 0)
    _fill_fields(h, values)
    return values


def _raw_field_values(h: Device, count: Any, ref: Any) -> int:
    """The C function as ``_nvmlGetFunctionPointer`` hands it out: fills the caller's array, returns a code."""
    try:
        _raw_checked(h, ref._obj)
    except _pynvml.NVMLError as err:
        return int(err.value)
    return _pynvml.NVML_SUCCESS


def _raw_fill(h: Device, values: Any) -> None:
    _fill_fields(h, values)


_raw_fill.__name__ = "nvmlDeviceGetFieldValues"  # counted, delayed and faulted under the C name
_raw_checked = _api(_raw_fill)


def _nvmlGetFunctionPointer(name: str) -> Callable[..., int]:
    """pynvml's symbol lookup, for the callers that bypass its Python wrappers (prebuilt arrays)."""
    if name != "nvmlDeviceGetFieldValues":
        _raise(_pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    return _raw_field_values


@_api
def nvmlDeviceGetMigMode(h: Device) -> list[int]:
    if h.rec.mig_current is None:
        _raise(_pynvml.NVML_ERROR_NOT_SUPPORTED)  # A10G, T4: no MIG
    return [int(h.rec.mig_current), int(h.rec.mig_pending or 0)]


@_api
def nvmlDeviceGetMaxMigDeviceCount(h: Device) -> int:
    return 7 if h.rec.mig_current is not None else 0  # A100/H100: up to 7 GPU instances


@_api
def nvmlDeviceGetMigDeviceHandleByIndex(h: Device, index: int) -> MigDevice:
    if index >= len(h.rec.migs):
        _raise(_pynvml.NVML_ERROR_NOT_FOUND)
    return MigDevice(h, index)


@_api
def nvmlDeviceGetGpuInstanceId(h: MigDevice) -> int:
    return h.parent.rec.migs[h.slot].gpu_instance


@_api
def nvmlDeviceGetComputeInstanceId(h: MigDevice) -> int:
    return h.parent.rec.migs[h.slot].compute_instance


# -- events ------------------------------------------------------------------------------------

class _EventSet:
    pass


@dataclass
class EventData:
    device: Any
    eventType: int  # pynvml c_nvmlEventData_t field names
    eventData: int
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


@_api
def nvmlEventSetCreate() -> _EventSet:
    return _EventSet()


@_api
def nvmlDeviceGetSupportedEventTypes(h: Device) -> int:
    p = _pynvml
    return (p.nvmlEventTypeXidCriticalError | p.nvmlEventTypeDoubleBitEccError | p.nvmlEventTypeSingleBitEccError
            | p.nvmlEventTypePState | p.nvmlEventTypeClock)


@_api
def nvmlDeviceRegisterEvents(h: Device, mask: int, event_set: _EventSet) -> None:
    state.registered[id(h)] = mask


def _wait(event_set: _EventSet, timeout_ms: int) -> EventData:
    try:
        dev, etype, data = state.events.get(timeout=timeout_ms / 1000.0)
    except queue.Empty:
        _raise(_pynvml.NVML_ERROR_TIMEOUT)
        raise AssertionError("unreachable") from None
    return EventData(dev, etype, data)


@_api
def nvmlEventSetWait_v2(event_set: _EventSet, timeout_ms: int) -> EventData:
    return _wait(event_set, timeout_ms)


@_api
def nvmlEventSetWait(event_set: _EventSet, timeout_ms: int) -> EventData:
    return _wait(event_set, timeout_ms)


@_api
def nvmlEventSetFree(event_set: _EventSet) -> None:
    return None


def handle_key(h: Any) -> Any:
    """Test helper: what the plugin uses to map event handles back to GPUs."""
    try:
        return ctypes.cast(h, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return id(h)
