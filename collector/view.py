"""The read-only view of a running collector that the HTTP API and dashboard are built on.

``collector/http.py`` sees nothing else of the collector: it can neither change ingest state
nor reach the writer. :class:`collector.app.Collector` implements :class:`CollectorView`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from alerts.engine import GroupHealth
from alerts.model import Alert
from alerts.notifiers.base import NotifierHealth
from alerts.rulefile import AlertingRule
from collector.fleet import Accelerator
from collector.history import HistoryReader
from collector.ingest import PluginState
from collector.storage.base import HealthSample
from collector.storage.logreader import LogStoreReader

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node as the API lists it (a snapshot)."""

    node: str
    up: bool
    connected: bool
    labels: dict[str, str]
    samples: int
    batches: int
    last_batch_at: float  # 0: none yet
    clock_skew: float
    agent_version: str
    plugins: tuple[PluginState, ...]


@dataclass(frozen=True, slots=True)
class CollectorCounters:
    samples: int
    duplicates: int  # replayed batches (a sequence already held)
    duplicate_samples: int  # samples whose (series, timestamp) the store already held
    refused_batches: int
    refused_streams: int
    streams: int = 0  # open agent streams


class Transition(NamedTuple):
    """An alert as it was when it changed state at ``time`` (a snapshot)."""

    time: float
    alert: Alert


class CollectorView(Protocol):
    def nodes(self, now: float) -> list[NodeRow]: ...

    def counters(self) -> CollectorCounters: ...

    def samples_per_second(self) -> float: ...

    def active_alerts(self) -> list[Alert]: ...

    def alert_rules(self) -> list[AlertingRule]:
        """The loaded alerting rules (for an alert's ``for``)."""
        ...

    def accelerators(self, node: str, now: float, *, streaming: bool = True) -> list[Accelerator]:
        """The node's accelerators as their latest ``gpu_up`` says (collector/fleet.py)."""
        ...

    def notifier_health(self) -> list[NotifierHealth]:
        """Every notifier target's queue and delivery counters."""
        ...

    def rule_groups(self) -> list[GroupHealth]:
        """Every rule group's evaluation counters."""
        ...

    def transitions(self, since: float) -> list[Transition]: ...

    def health(self) -> list[HealthSample]:
        """Extra ``/metrics`` samples (sinks, spool, limits)."""
        ...

    def history(self, reader: LogStoreReader) -> HistoryReader:
        """What PromQL over history and the stored-samples API read, on the read thread given the
        store's reader: the shared TSDB's query API when one is configured (the whole fleet,
        whole histories; the store while it does not answer), else the embedded store."""
        ...

    async def read_store(self, fn: Callable[[LogStoreReader], T]) -> T:
        """Run ``fn`` with a read-only store reader, off the event loop."""
        ...
