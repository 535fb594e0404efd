"""What every power source shares: its error type and the small interfaces the plugin drives.

Each source (RAPL, hwmon, power_supply, ACPI, IPMI, Redfish, NUT) is optional and fails on
its own: a failure costs that source's samples and one log line, never the others'.

- :class:`LocalSource` (the kernel's sysfs): ``scan()`` finds the files once (and again on a
  hot-plug signal or the rescan timer), ``read()`` reads them (on descriptors held from one
  read to the next, :mod:`agent.attrfiles`). The plugin reads every local source in one pass on
  one worker thread, under one deadline.
- :class:`Source` (a BMC, a UPS daemon): ``async collect()`` on the event loop, each under its
  own deadline, concurrently.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from agent.attrfiles import HeldFiles
from agent.errors import PluginError
from agent.model import Collection, Labels
from agent.plugin import PluginContext
from agent.plugins.power import metrics as m
from agent.plugins.power.energy import PowerIntegrator, WrappingCounter


class SourceError(PluginError):
    """One source failed one collection; the message names the source and what to do."""


@dataclass
class Env:
    """State the sources share across collections (energy counters live for the agent's life)."""

    ctx: PluginContext
    log: logging.Logger
    integrator: PowerIntegrator
    counters: WrappingCounter = field(default_factory=WrappingCounter)

    def node_power(self, col: Collection, source: str, watts: float | None, now: float,
                   labels: Labels | None = None) -> None:
        """Add ``node_power_watts`` and its integral ``node_energy_joules_total``."""
        if watts is None or not 0 <= watts < math.inf:
            return  # no power a node draws: it would also run the energy counter backwards
        lab = {"source": source, **(labels or {})}
        col.add(m.NODE_POWER, watts, lab)
        key = "\x00".join(f"{k}={v}" for k, v in sorted(lab.items()))
        col.add(m.NODE_ENERGY, self.integrator.update(key, watts, now), lab)


class SourceBase:
    """What both kinds of source share."""

    name = ""

    def __init__(self, env: Env) -> None:
        self.env = env

    @property
    def target(self) -> str:
        """What the source talks to, for log lines (never with credentials)."""
        return ""

    def absent_reason(self) -> str | None:
        """None when the source applies to this node, else why not (cheap checks only)."""
        return None

    def close(self) -> None:
        """Release what the source holds (a BMC session); safe twice and without collect."""


class Source(SourceBase, ABC):
    """A network source: ``collect`` fills a Collection on the event loop or raises :class:`SourceError`."""

    @abstractmethod
    async def collect(self, col: Collection, now: float) -> None:
        """Add this source's samples to ``col``; raise SourceError when it cannot."""


class LocalSource(SourceBase, ABC):
    """A kernel source under ``--sysfs-root``: blocking file reads, off the event loop."""

    #: Set by ``read`` when a planned file vanished (a device unplugged): the plugin rescans.
    stale = False
    _files: HeldFiles | None = None

    @property
    def files(self) -> HeldFiles:
        """The planned files, held open between reads (released by :meth:`close` and before a rescan)."""
        if self._files is None:
            self._files = HeldFiles()
        return self._files

    def close(self) -> None:
        if self._files is not None:
            self._files.release()

    @abstractmethod
    def scan(self) -> None:
        """Find this source's devices and files (blocking; at discovery and on rescans)."""

    @abstractmethod
    def read(self, col: Collection, now: float) -> None:
        """Read the planned files once and add the samples; raise SourceError when it cannot."""
