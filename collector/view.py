"""The read-only view of a running collector that the HTTP API and dashboard are built on.

``collector/http.py`` sees nothing else of the collector: it can neither change ingest state
nor reach the writer. :class:`collector.app.Collector` implements :class:`CollectorView`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

from alerts.engine import GroupHealth
from alerts.model import Alert
from alerts.notifiers.base import NotifierHealth
from alerts.rulefile import AlertingRule
from collector.fleet import Accelerator
from collector.ingest import PluginState
from collector.promquery import PromQuerySync
from collector.storage.base import HealthSample
from collector.storage.logreader import LogStoreReader

if TYPE_CHECKING:  # collector.query imports the store readers this module's users see
    from collector.query import SeriesReader

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

    async def read_series(self, since: float, until: float, fn: Callable[[SeriesReader], T]) -> T:
        """Run ``fn`` with the reader of samples over ``[since, until]``, off the event loop: the
        shared TSDB's query API when one is configured (the whole fleet, whole histories),
        else (or while it does not answer) the embedded store."""
        ...

    async def read_promql(self, fn: Callable[[PromQuerySync], T]) -> T:
        """Run ``fn`` with the query API's client, off the event loop; QueryError when none is configured."""
        ...

    async def read_store(self, fn: Callable[[LogStoreReader], T]) -> T:
        """Run ``fn`` with a read-only store reader, off the event loop."""
        ...
