"""The plugin contract (STYLE 3): discover, collect, close.

A plugin is a class with a ``name``, a ``Config`` dataclass (its YAML section, validated by
``agent.config.build``) and three methods. It derives from one of two bases, and the scheduler
dispatches on which (``isinstance``, never by inspecting the function at run time):

- :class:`Plugin` (blocking): ``collect()`` runs off the event loop with a deadline, so it may
  block on sysfs, ioctl or a vendor library. The blocking plugins due in a cycle run in turn on
  one worker thread (the scheduler's lane, agent/scheduler.py); one that holds it for more than
  half its interval (or its deadline) collects on a thread of its own from then on. A slow
  collection (a tool that takes a large part of the interval) delays the ones after it in the
  turn until then: keep it short.
- :class:`AsyncPlugin`: ``async def collect()`` is awaited on the agent's event loop with a
  deadline. For plugins that wait on the network (Redfish, NUT, SNMP, Modbus): they wait
  without parking a thread. It must never block the loop; a short blocking step (a batch of
  local file reads) goes through one ``asyncio.to_thread`` per collection.

For both:

- ``discover()`` finds the hardware. It raises :class:`~agent.errors.PluginUnavailable` when the
  node has none (no driver, no library, no permission): the agent disables the plugin with one
  log line and goes on. It may block (it runs off the event loop, on a thread of its own, with a
  deadline; the plugins discover side by side), and it runs once: ``collect`` never calls it
  again on the loop.
- ``close()`` releases what ``discover`` took. Safe to call twice and without ``discover``.

Plugins that watch something continuously (NVML events, the kernel log) start their own thread
in ``discover`` and push events through ``ctx.emit``; the scheduler drains them into the stream.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from agent.model import Collection, Event, Sample


@dataclass
class GpuRef:
    """What the GPU plugin knows of one device, so other plugins can name it."""

    index: str
    uuid: str = ""
    model: str = ""
    vendor: str = ""


class NodeDirectory:
    """Facts plugins share on one node (thread-safe).

    The kernel-log reader maps a PCI address to the GPU index/uuid that the NVIDIA plugin
    found, and both report XIDs: ``first_sighting`` lets the same XID seen twice within a
    window count once.
    """

    def __init__(self, dedupe_window_s: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._gpus_by_pci: dict[str, GpuRef] = {}
        self._recent: dict[tuple[str, ...], float] = {}
        self._window = dedupe_window_s

    @staticmethod
    def normalize_pci(addr: str) -> str:
        """``00000000:3B:00.0`` / ``0000:3b:00.0`` / ``3b:00.0`` → ``0000:3b:00.0``."""
        addr = addr.strip().lower()
        parts = addr.split(":")
        if len(parts) == 2:
            parts.insert(0, "0000")
        dom = parts[0][-4:].rjust(4, "0")
        return ":".join([dom, *parts[1:]])

    def register_gpu(self, pci: str, ref: GpuRef) -> None:
        with self._lock:
            self._gpus_by_pci[self.normalize_pci(pci)] = ref

    def gpu_by_pci(self, pci: str) -> GpuRef | None:
        with self._lock:
            return self._gpus_by_pci.get(self.normalize_pci(pci))

    def first_sighting(self, key: tuple[str, ...], ts: float) -> bool:
        """True unless the same key was seen within the window around ``ts``."""
        with self._lock:
            last = self._recent.get(key)
            self._recent[key] = ts
            if len(self._recent) > 4096:
                cutoff = ts - 60
                self._recent = {k: v for k, v in self._recent.items() if v >= cutoff}
            return last is None or abs(ts - last) > self._window


@dataclass
class PluginContext:
    """What a plugin may use: injected roots (STYLE 5), its logger, the event sink."""

    node: str
    sysfs_root: Path = Path("/sys")
    procfs_root: Path = Path("/proc")
    dev_root: Path = Path("/dev")
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("fleetmon.agent"))
    directory: NodeDirectory = field(default_factory=NodeDirectory)
    emit: Callable[[Event], None] = lambda _e: None
    emit_samples: Callable[[list[Sample]], None] = lambda _s: None

    def sysfs(self, *parts: str) -> Path:
        return self.sysfs_root.joinpath(*parts)

    def procfs(self, *parts: str) -> Path:
        return self.procfs_root.joinpath(*parts)

    def dev(self, *parts: str) -> Path:
        return self.dev_root.joinpath(*parts)


@dataclass
class NoConfig:
    """For plugins without settings of their own."""


class PluginBase:
    """What both plugin kinds share; derive from :class:`Plugin` or :class:`AsyncPlugin`, not from this."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[Any]] = NoConfig
    #: Default collection interval in seconds (overridable per plugin in the agent config).
    default_interval: ClassVar[float] = 10.0

    def __init__(self, ctx: PluginContext, config: Any) -> None:
        self.ctx = ctx
        self.config = config
        self.log = ctx.logger.getChild(self.name)

    def discover(self) -> None:
        """Find the hardware; raise PluginUnavailable when there is none. Runs off the loop."""

    def close(self) -> None:
        """Release resources; safe twice and without discover."""


class Plugin(PluginBase, ABC):
    """A blocking plugin: ``collect`` runs off the loop with a deadline (on the lane, in turn)."""

    @abstractmethod
    def collect(self) -> Collection:
        """One collection; may block (sysfs, ioctl, a vendor library)."""


class AsyncPlugin(PluginBase, ABC):
    """A plugin that waits on the network: ``collect`` is awaited on the event loop with a deadline."""

    @abstractmethod
    async def collect(self) -> Collection:
        """One collection; must not block the loop (hand blocking reads to ``asyncio.to_thread``)."""

    def blocking_collect(self) -> Callable[[], Collection] | None:
        """This cycle's collection as a blocking call, when it has nothing to await; else None.

        A plugin whose sources are all local this time (the power plugin without a BMC or UPS
        to ask: file reads only) returns a function that collects the same samples as
        :meth:`collect`. The scheduler then runs it on the lane, in turn with the blocking
        plugins, with no task on the loop and no thread hop of its own. Should it hold the lane
        past its share, the plugin collects with :meth:`collect` from then on.
        """
        return None


#: Either kind, as the registry hands them out and the scheduler runs them.
AnyPlugin = Plugin | AsyncPlugin


class FailureEpisodes:
    """What a plugin with many devices or sources logs about them: a failure once per episode,
    again only when its reason changes (a PDU or BMC that stays down must not flood the log every
    interval; the up gauge tells rules every time), and the recovery once."""

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}

    def failed(self, key: str, reason: str) -> bool:
        """Record that ``key`` failed for ``reason``; True when that is news worth a log line."""
        news = self._reasons.get(key) != reason
        self._reasons[key] = reason
        return news

    def recovered(self, key: str) -> bool:
        """Record that ``key`` works; True when it had been failing."""
        return self._reasons.pop(key, None) is not None
