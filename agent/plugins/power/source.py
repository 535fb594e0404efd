"""What every power source shares: its error type and the small interface the plugin drives.

Each source (RAPL, hwmon, power_supply, ACPI, IPMI, Redfish, NUT) is optional and fails on
its own: the plugin runs them concurrently, each under its own deadline, and a failure costs
that source's samples and one log line, never the others'.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

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


class Source(ABC):
    """Base class; ``collect`` fills a Collection or raises :class:`SourceError`."""

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

    @abstractmethod
    async def collect(self, col: Collection, now: float) -> None:
        """Add this source's samples to ``col``; raise SourceError when it cannot."""

    def close(self) -> None:
        """Release what the source holds (a BMC session); safe twice and without collect."""
