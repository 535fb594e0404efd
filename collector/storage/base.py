"""What every storage sink takes: typed points and events, never untyped dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Point:
    """One sample, with the series' full label set (node identity labels included)."""

    measurement: str
    field: str
    tags: tuple[tuple[str, str], ...]  # sorted
    value: float
    ts_ns: int

    @property
    def name(self) -> str:
        return f"{self.measurement}_{self.field}"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    node: str
    kind: str
    severity: str
    message: str
    action: str
    tags: tuple[tuple[str, str], ...]
    ts_ns: int


@dataclass
class SinkBatch:
    """A unit of delivery from the spool: ``spool_id`` is its position, increasing."""

    spool_id: int
    points: list[Point] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HealthSample:
    """A sink's own health metric, e.g. ("fleetmon_sink_written_points_total", {...}, 1234.0)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


class Sink(Protocol):
    """A storage destination. ``write`` returns only when the batch is durable there, and
    raises :class:`collector.errors.SinkError` otherwise (``retryable`` tells the spool whether
    to try again). Writing the same batch twice must not store points twice (InfluxDB
    overwrites identical series+timestamp; SQLite uses a primary key)."""

    name: str

    async def start(self) -> None: ...

    async def write(self, batch: SinkBatch) -> None: ...

    def health(self) -> list[HealthSample]: ...

    async def aclose(self) -> None: ...
