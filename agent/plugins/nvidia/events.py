"""NVML event set on its own thread: XIDs and the other health events the driver posts.

``nvmlEventSetWait`` blocks in the driver; it is called with a short timeout in a loop so
``stop()`` ends the thread within one timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.errors import DeviceLost, NotSupported, PluginError
from agent.plugins.nvidia.nvml import Nvml

log = logging.getLogger("fleetmon.agent.nvidia")

# nvmlEventType* bits (nvml.h).
EVENT_XID = 0x8  # nvmlEventTypeXidCriticalError; eventData is the XID
EVENT_DBE = 0x2  # nvmlEventTypeDoubleBitEccError
EVENT_ROW_REMAP = 0x400  # nvmlEventTypeDramRetirementEvent
EVENT_ROW_REMAP_FAILURE = 0x800  # nvmlEventTypeDramRetirementFailure
EVENT_NONFATAL_POISON = 0x1000  # nvmlEventTypeNonFatalPoisonError
EVENT_FATAL_POISON = 0x2000  # nvmlEventTypeFatalPoisonError
EVENT_GPU_UNAVAILABLE = 0x4000  # nvmlEventTypeGpuUnavailableError
#: What we listen for; single-bit ECC, P-state and clock events are too chatty to be events
#: (their counters and gauges are collected instead).
WANTED = (EVENT_XID | EVENT_DBE | EVENT_ROW_REMAP | EVENT_ROW_REMAP_FAILURE | EVENT_NONFATAL_POISON
          | EVENT_FATAL_POISON | EVENT_GPU_UNAVAILABLE)


@dataclass
class NvmlEvent:
    handle: Any
    event_type: int
    data: int
    ts: float


class EventWatcher:
    """Registers ``handles`` in one event set and forwards what arrives to ``on_event``."""

    def __init__(self, nvml: Nvml, handles: list[Any], on_event: Callable[[NvmlEvent], None],
                 wait_ms: int = 500) -> None:
        self.nvml = nvml
        self.on_event = on_event
        self.wait_ms = wait_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._set: Any = None
        self.registered = 0
        self._setup(handles)

    def _setup(self, handles: list[Any]) -> None:
        try:
            self._set = self.nvml.call("nvmlEventSetCreate")
        except PluginError as err:
            log.info("NVML events unavailable (%s); XIDs come from the kernel log only", err)
            return
        for handle in handles:
            try:
                supported = int(self.nvml.call("nvmlDeviceGetSupportedEventTypes", handle))
                mask = supported & WANTED
                if mask:
                    self.nvml.call("nvmlDeviceRegisterEvents", handle, mask, self._set)
                    self.registered += 1
            except PluginError as err:  # one GPU without events must not cost the others theirs
                log.info("NVML events not registered for a GPU: %s", err)

    def start(self) -> None:
        if self._set is None or not self.registered:
            return
        self._thread = threading.Thread(target=self._run, name="fleetmon-nvidia-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                data = self.nvml.wait_event(self._set, self.wait_ms)
            except (DeviceLost, PluginError, NotSupported) as err:
                # A lost GPU makes the wait fail until it is gone from the set; back off so the
                # thread does not spin, and say so once.
                failures += 1
                if failures == 1:
                    log.warning("NVML event wait failed: %s", err)
                self._stop.wait(min(5.0, 0.5 * failures))
                continue
            failures = 0
            if data is None:
                continue
            try:
                self.on_event(NvmlEvent(data.device, int(data.eventType), int(data.eventData), time.time()))
            except Exception as err:  # supervision boundary: a bad event never ends the watcher
                log.exception("NVML event handling failed: %s", err)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("NVML event thread did not stop within %gs", timeout)
                return  # freeing the set under a thread still inside the driver is unsafe
            self._thread = None
        if self._set is not None:
            try:
                self.nvml.call("nvmlEventSetFree", self._set)
            except PluginError as err:
                log.debug("nvmlEventSetFree: %s", err)
            self._set = None
