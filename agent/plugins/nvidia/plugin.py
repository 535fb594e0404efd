"""NVIDIA GPUs through NVML: health telemetry per GPU, XID and other events from an NVML event set.

Isolation (measured, see README "Why threads"): the GPUs are collected one after another on a
worker thread, each under its own deadline (``gpu_timeout``, below the plugin's own). A GPU whose
call hangs is reported ``gpu_up 0`` with an event, the GPUs after it go on at once on a fresh
worker, and the stuck one is skipped until its call returns. In the steady state that is one
thread and one hand-off per collection, whatever the number of GPUs.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from agent.errors import DeviceLost, PluginError, PluginUnavailable
from agent.model import Collection, Event, Severity
from agent.plugin import GpuRef, Plugin, PluginContext
from agent.plugins.nvidia import metrics as m
from agent.plugins.nvidia.device import Gpu, collect_gpu, discover_gpu
from agent.plugins.nvidia.events import (
    EVENT_DBE,
    EVENT_FATAL_POISON,
    EVENT_GPU_UNAVAILABLE,
    EVENT_NONFATAL_POISON,
    EVENT_ROW_REMAP,
    EVENT_ROW_REMAP_FAILURE,
    EVENT_XID,
    EventWatcher,
    NvmlEvent,
)
from agent.plugins.nvidia.nvml import Nvml, Variant, load_module, text
from agent.plugins.nvidia.xid import XID_FALLEN_OFF_BUS, XidLedger, add_appearing_counter, describe, ledger_for

# Health events other than XIDs: (kind, severity, message, suggested action).
_OTHER_EVENTS = {
    EVENT_DBE: ("gpu.ecc_dbe", Severity.CRITICAL, "double-bit ECC error", "reboot_then_inspect"),
    EVENT_ROW_REMAP: ("gpu.row_remap", Severity.WARNING, "memory row remapped; takes effect after reset", "reset_gpu"),
    EVENT_ROW_REMAP_FAILURE: (
        "gpu.row_remap_failure", Severity.CRITICAL, "memory row remap failed", "inspect_hardware"),
    EVENT_NONFATAL_POISON: ("gpu.poison", Severity.WARNING, "non-fatal poison error", "restart_application"),
    EVENT_FATAL_POISON: ("gpu.poison", Severity.CRITICAL, "fatal poison error", "reset_gpu"),
    EVENT_GPU_UNAVAILABLE: ("gpu.unavailable", Severity.CRITICAL, "GPU unavailable", "reset_gpu"),
}


@dataclass
class NvidiaConfig:
    #: Import path of the NVML binding (nvidia-ml-py's ``pynvml``; tests use ``tests.fakenvml``).
    library: str = "pynvml"
    #: Seconds one GPU may take before it is reported unresponsive; keep it below the plugin timeout.
    gpu_timeout: float = 3.0
    #: How a hung GPU is kept from stalling the others: ``chain`` (default) collects the GPUs in
    #: turn on one worker thread and moves the rest to a fresh one when a GPU misses
    #: ``gpu_timeout``; ``thread_per_gpu`` collects them concurrently, one worker each (lower wall
    #: time, more threads and wake-ups); ``none`` collects them on the plugin's own thread, where
    #: only the plugin deadline bounds a hung call.
    isolation: Literal["chain", "thread_per_gpu", "none"] = "chain"
    #: Listen to the NVML event set (XIDs) on a background thread.
    events: bool = True
    #: Milliseconds each nvmlEventSetWait blocks (events come at once either way); bounds how long
    #: close() waits for the thread, and is how often the idle thread wakes.
    event_wait_ms: int = 1000
    #: PCIe TX/RX throughput (each costs a 20 ms sampling wait in the driver per GPU).
    pcie_throughput: bool = True
    #: Batch counters into nvmlDeviceGetFieldValues (False: one call per counter, for comparison).
    field_values: bool = True
    #: Seconds between readings of the slower or secondary values (clocks and clock event reasons,
    #: P-state, encoder/decoder, fan, PCIe link and throughput, MIG, static facts); 0 reads them
    #: every collection.
    detail_interval: float = 10.0
    #: Seconds between readings of the NVLink CRC counters no field id covers (links 12 and up:
    #: one driver call per link and counter, 12 a GPU on H100), read with the details; 0 reads
    #: them with every detailed collection.
    nvlink_crc_interval: float = 60.0

    def validate(self) -> None:
        if self.gpu_timeout <= 0:
            raise ValueError("gpu_timeout must be positive (seconds)")
        if self.detail_interval < 0:
            raise ValueError("detail_interval must be 0 (every collection) or a number of seconds")
        if self.nvlink_crc_interval < 0:
            raise ValueError("nvlink_crc_interval must be 0 (with every detailed collection) or a number of seconds")
        if not 10 <= self.event_wait_ms <= 10_000:
            raise ValueError("event_wait_ms must be between 10 and 10000")


@dataclass
class _GpuState:
    gpu: Gpu
    busy: cf.Future[Collection] | None = None
    down_reason: str = ""  # why gpu_up is 0; "" while it answers
    announced: bool = False  # the outage's event was emitted (one event per outage)
    detail_at: float = float("-inf")  # monotonic time of the last detailed collection
    crc_at: float = float("-inf")  # and of the last that read the CRC counters without a field id


class NvidiaPlugin(Plugin):
    name = "nvidia"
    Config = NvidiaConfig
    default_interval = 10.0
    config: NvidiaConfig

    def __init__(self, ctx: PluginContext, config: NvidiaConfig) -> None:
        super().__init__(ctx, config)
        self.nvml: Nvml | None = None
        self.gpus: list[_GpuState] = []
        self._by_handle: dict[Any, _GpuState] = {}
        self._pool: cf.ThreadPoolExecutor | None = None
        self._watcher: EventWatcher | None = None
        self._ledger: XidLedger = ledger_for(ctx.directory)
        self._reported: set[tuple[str, ...]] = set()

    # -- discover / close ------------------------------------------------------------------

    def discover(self) -> None:
        nvml = Nvml(load_module(self.config.library))
        nvml.init()
        self.nvml = nvml
        try:
            count = int(nvml.call("nvmlDeviceGetCount"))
        except PluginError as err:
            self.close()
            raise PluginUnavailable(f"NVML cannot count GPUs: {err}") from err
        if count == 0:
            self.close()
            raise PluginUnavailable("NVML found no NVIDIA GPU on this node")
        driver = self._system_text("nvmlSystemGetDriverVersion")
        cuda = self._cuda_version()
        for index in range(count):
            try:
                gpu = discover_gpu(nvml, index, driver, cuda)
                state = _GpuState(gpu)
            except PluginError as err:  # lost at start: keep it visible as gpu_up 0
                state = _GpuState(Gpu(index, None), down_reason=f"lost at discovery: {err}")
                self.log.warning("GPU %d did not answer at discovery: %s", index, err)
            self.gpus.append(state)
            if state.gpu.handle is not None:
                self._by_handle[_handle_key(state.gpu.handle)] = state
            if state.gpu.pci:
                self.ctx.directory.register_gpu(
                    state.gpu.pci, GpuRef(str(index), state.gpu.uuid, state.gpu.model, "nvidia"))
        self._ledger.claim(self.name, 0)
        # Even one GPU gets its worker: a hung call then costs gpu_up 0, not the whole collection.
        # The pool makes a thread only when no idle one is left: a chain uses one, plus one per stuck GPU.
        if self.config.isolation != "none":
            self._pool = cf.ThreadPoolExecutor(max_workers=len(self.gpus) + 1, thread_name_prefix="fleetmon-nvidia-gpu")
        if self.config.events:
            handles = [s.gpu.handle for s in self.gpus if s.gpu.handle is not None]
            self._watcher = EventWatcher(nvml, handles, self._on_event, self.config.event_wait_ms)
            self._watcher.start()
        self.log.info("NVML: %d GPU(s), driver %s, CUDA %s", count, driver or "?", cuda or "?")

    def _system_text(self, fname: str) -> str:
        assert self.nvml is not None
        try:
            return text(self.nvml.call(fname))
        except PluginError:
            return ""

    def _cuda_version(self) -> str:
        assert self.nvml is not None
        try:
            v = int(self.nvml.first([Variant("nvmlSystemGetCudaDriverVersion_v2"),
                                     Variant("nvmlSystemGetCudaDriverVersion")]))
        except PluginError:
            return ""
        return f"{v // 1000}.{v % 1000 // 10}"  # NVML encodes 12.2 as 12020

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._ledger.release(self.name)
        if self.nvml is not None:
            if not any(s.busy is not None and not s.busy.done() for s in self.gpus):
                self.nvml.shutdown()  # never shut NVML down under a thread still inside it
            self.nvml = None

    # -- collect ---------------------------------------------------------------------------

    def collect(self) -> Collection:
        if self.nvml is None:
            raise PluginError("nvidia plugin used before discover()")
        started = time.time()
        col = Collection()
        running: list[_GpuState] = []
        for state in self.gpus:
            gpu = state.gpu
            if gpu.handle is None:
                self._down(col, state, state.down_reason or "not found at discovery")
                continue
            if self._ledger.fallen(gpu.pci):
                # XID 79 (NVML or kernel log): the GPU needs a reboot; asking it would only hang.
                # Its gpu.xid event already announced the outage: no second event for it.
                self._down(col, state, "fell off the bus (XID 79)", announce=False)
                continue
            if state.busy is not None and not state.busy.done():
                self._down(col, state, "a previous NVML call is still stuck")
                continue
            running.append(state)
        jobs = [(state, self._job(state)) for state in running]
        if self.config.isolation == "chain":
            self._run_chain(jobs)
        else:
            self._run_each(jobs)
        for state in running:
            assert state.busy is not None
            fut = state.busy
            if not fut.done():
                self._down(col, state, f"no answer within {self.config.gpu_timeout:g}s")
                continue
            err = fut.exception()
            if err is None:
                col.extend(fut.result())
                self._up(col, state)
            elif isinstance(err, DeviceLost):
                self._down(col, state, f"NVML reports it lost: {err}")
            elif isinstance(err, PluginError):
                self._down(col, state, f"collection failed: {err}")
            else:
                raise err
        self._xid_counters(col, started)
        return col

    def _job(self, state: _GpuState) -> Callable[[], Collection]:
        assert self.nvml is not None
        now = time.monotonic()
        detail = now - state.detail_at >= self.config.detail_interval
        if detail:
            state.detail_at = now
        crc = detail and now - state.crc_at >= self.config.nvlink_crc_interval
        if crc:
            state.crc_at = now
        return functools.partial(collect_gpu, self.nvml, state.gpu, detail=detail, crc=crc,
                                 use_fields=self.config.field_values, pcie_throughput=self.config.pcie_throughput)

    def _run_each(self, jobs: list[tuple[_GpuState, Callable[[], Collection]]]) -> None:
        """``thread_per_gpu``: every GPU on its own worker at once; ``none``: here, one after another."""
        for state, job in jobs:
            if self._pool is not None:
                state.busy = self._pool.submit(job)
            else:
                state.busy = cf.Future()
                _settle(state.busy, job)
        if jobs and self._pool is not None:
            cf.wait([state.busy for state, _ in jobs if state.busy is not None], timeout=self.config.gpu_timeout)

    def _run_chain(self, jobs: list[tuple[_GpuState, Callable[[], Collection]]]) -> None:
        """The GPUs in turn on one worker; each must answer within ``gpu_timeout`` of its turn.

        The collector waits for the whole turn at once (one wake-up per collection). When one
        GPU does not answer in time, the worker is left to it (its stop flag makes it quit once
        the call returns) and the GPUs after it continue on a fresh worker.
        """
        assert self._pool is not None
        timeout = self.config.gpu_timeout
        work = [_Turn(state, cf.Future(), job) for state, job in jobs]
        for turn in work:
            turn.state.busy = turn.fut
        start = 0
        while start < len(work):
            stop = threading.Event()
            self._pool.submit(_chain, work[start:], stop)
            pending = [turn.fut for turn in work[start:]]
            while cf.wait(pending, timeout=timeout).not_done:
                # The first GPU not done is the one the worker is on: give it its full turn.
                i = next(k for k in range(start, len(work)) if not work[k].fut.done())
                began = work[i].began
                left = timeout - (time.monotonic() - began) if began is not None else timeout
                if left > 0 and cf.wait([work[i].fut], timeout=left).done:
                    continue
                stop.set()  # stuck: the worker ends after this GPU's call returns
                start = i + 1
                break
            else:
                start = len(work)

    def _up(self, col: Collection, state: _GpuState) -> None:
        gpu = state.gpu
        assert gpu.series is not None
        col.put(gpu.series.up, 1.0)
        col.put(gpu.series.info, 1.0)
        if state.announced:
            self.log.warning("GPU %d (%s) answers again", gpu.index, gpu.uuid)
            col.events.append(Event("gpu.recovered", Severity.INFO, f"GPU {gpu.index} answers NVML again",
                                    self._event_labels(gpu), "none"))
            state.down_reason = ""
            state.announced = False

    def _down(self, col: Collection, state: _GpuState, reason: str, *, announce: bool = True) -> None:
        gpu = state.gpu
        col.add(m.UP, 0.0, gpu.labels if gpu.uuid else {"gpu": str(gpu.index), "vendor": "nvidia"})
        if not announce:
            state.announced = True
        if not state.announced:
            self.log.warning("GPU %d (%s) down: %s", gpu.index, gpu.uuid or "?", reason)
            col.events.append(Event("gpu.lost", Severity.CRITICAL, f"GPU {gpu.index} {gpu.pci}: {reason}".strip(),
                                    self._event_labels(gpu), "reboot_then_inspect"))
            state.announced = True
        state.down_reason = state.down_reason or reason

    def _event_labels(self, gpu: Gpu) -> dict[str, str]:
        labels = {"gpu": str(gpu.index), "vendor": "nvidia"}
        if gpu.uuid:
            labels["uuid"] = gpu.uuid
        if gpu.pci:
            labels["pci"] = gpu.pci
        return labels

    def _xid_counters(self, col: Collection, started: float) -> None:
        if not self._ledger.reports(self.name):
            return
        for (bus, xid), (n, first_ts) in sorted(self._ledger.counts().items()):
            add_appearing_counter(col, m.XID, n, {**self._ledger.labels(bus), "xid": str(xid)},
                                  first_ts=first_ts, started=started, seen=self._reported)

    # -- events (background thread) --------------------------------------------------------

    def _on_event(self, ev: NvmlEvent) -> None:
        state = self._by_handle.get(_handle_key(ev.handle))
        gpu = state.gpu if state is not None else None
        labels = self._event_labels(gpu) if gpu is not None else {"vendor": "nvidia"}
        if ev.event_type & EVENT_XID:
            self.handle_xid(gpu, ev.data, ev.ts, labels)
            return
        for bit, (kind, severity, what, action) in _OTHER_EVENTS.items():
            if ev.event_type & bit:
                where = f"GPU {gpu.index} {gpu.pci}" if gpu is not None else "a GPU"
                self.ctx.emit(Event(kind, severity, f"{where}: {what}", labels, action, ev.ts))

    def handle_xid(self, gpu: Gpu | None, xid: int, ts: float, labels: dict[str, str]) -> None:
        """Count an XID the NVML event set reported; emit its event unless the kernel log was first."""
        if gpu is None or not gpu.pci:
            self.log.warning("XID %d from an NVML device this plugin does not know", xid)
            return
        if not self._ledger.record("nvml", gpu.pci, xid, ts):
            return
        entry = describe(xid)
        message = f"XID {xid} ({entry.name}) on GPU {gpu.index} {gpu.pci}"
        self.ctx.emit(Event("gpu.xid", entry.severity, message, {**labels, "xid": str(xid)}, entry.action, ts))
        if xid == XID_FALLEN_OFF_BUS:
            self.log.error("GPU %d (%s) fell off the bus (XID 79)", gpu.index, gpu.uuid)


def _settle(fut: cf.Future[Collection], job: Callable[[], Collection]) -> None:
    """Run ``job`` into ``fut``, as a pool's worker does."""
    if not fut.set_running_or_notify_cancel():
        return
    try:
        fut.set_result(job())
    except Exception as err:  # noqa: BLE001 - handed to the caller through the future, as the pool does
        fut.set_exception(err)


@dataclass
class _Turn:
    """One GPU's place in a chained collection."""

    state: _GpuState
    fut: cf.Future[Collection]
    job: Callable[[], Collection]
    began: float | None = None  # monotonic time the worker started on it


def _chain(work: list[_Turn], stop: threading.Event) -> None:
    """One worker's turn: the GPUs in order, until the collector moves the rest elsewhere."""
    for turn in work:
        if stop.is_set():
            return
        turn.began = time.monotonic()
        _settle(turn.fut, turn.job)


def _handle_key(handle: Any) -> Any:
    """Event data carries a new ctypes pointer to the same device: compare addresses, not objects."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return id(handle)

