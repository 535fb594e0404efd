"""What every storage sink takes: typed samples and events, never untyped dicts.

Samples travel to the sinks as columns (:class:`Samples`: series ids, timestamps, values in numpy
arrays) over a long-lived :class:`SeriesCatalog`, so a sink encodes a batch without one Python
object per sample and remembers its per-series work (escaped line-protocol prefixes, remote-write
label bytes) by series id across batches. :class:`Point` remains for callers that build a few
samples by hand (tests, tools); :meth:`SinkBatch.columns` turns them into columns once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

Tags = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Point:
    """One sample, with the series' full label set (node identity labels included)."""

    measurement: str
    field: str
    tags: Tags  # sorted
    value: float
    ts_ns: int

    @property
    def name(self) -> str:
        # A field-less series (``ALERTS``, which the remote-write sink alone carries) is its measurement.
        return f"{self.measurement}_{self.field}" if self.field else self.measurement


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """A series as the sinks see it: InfluxDB measurement and field, and the sorted tags."""

    measurement: str
    field: str
    tags: Tags

    @property
    def name(self) -> str:
        # A field-less series (``ALERTS``, which the remote-write sink alone carries) is its measurement.
        return f"{self.measurement}_{self.field}" if self.field else self.measurement


class SeriesCatalog:
    """Dense ids (0, 1, 2, …) for the series a source hands to the sinks.

    Append-only: an id keeps its key for the catalog's life, so a sink may cache what it derived
    from a series (by id, in arrays) as long as it holds the same catalog. A source that must bound
    its memory starts a new catalog; the sinks' caches of the old one go with it (they are keyed
    by the catalog object, weakly).
    """

    def __init__(self) -> None:
        self.keys: list[SeriesKey] = []
        self._ids: dict[SeriesKey, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def intern(self, key: SeriesKey) -> int:
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.keys)
            self.keys.append(key)
        return found


Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Samples:
    """Samples as three equally long columns: ``series`` (ids in ``catalog``), ``ts_ns``, ``values``."""

    catalog: SeriesCatalog
    series: Int64Array
    ts_ns: Int64Array
    values: Float64Array

    def __post_init__(self) -> None:
        n = len(self.series)
        if len(self.ts_ns) != n or len(self.values) != n:
            raise ValueError(f"Samples columns differ in length: series {n}, ts_ns {len(self.ts_ns)}, "
                             f"values {len(self.values)}")
        if n and (int(self.series.min()) < 0 or int(self.series.max()) >= len(self.catalog)):
            raise ValueError(f"Samples refer to series ids outside their catalog of {len(self.catalog)}")

    def __len__(self) -> int:
        return len(self.series)

    @classmethod
    def empty(cls, catalog: SeriesCatalog | None = None) -> Samples:
        return cls(SeriesCatalog() if catalog is None else catalog, np.empty(0, np.int64), np.empty(0, np.int64),
                   np.empty(0, np.float64))

    @classmethod
    def from_points(cls, points: Iterable[Point], catalog: SeriesCatalog | None = None) -> Samples:
        catalog = SeriesCatalog() if catalog is None else catalog
        ids: list[int] = []
        ts: list[int] = []
        vals: list[float] = []
        for p in points:
            ids.append(catalog.intern(SeriesKey(p.measurement, p.field, p.tags)))
            ts.append(p.ts_ns)
            vals.append(p.value)
        return cls(catalog, np.array(ids, np.int64), np.array(ts, np.int64), np.array(vals, np.float64))

    @classmethod
    def concat(cls, parts: Sequence[Samples]) -> Samples:
        """One column set from several over the same catalog (the spool merges its rows so)."""
        if not parts:
            return cls.empty()
        catalog = parts[0].catalog
        if any(p.catalog is not catalog for p in parts):
            raise ValueError("Samples.concat: the parts use different catalogs")
        if len(parts) == 1:
            return parts[0]
        return cls(catalog, np.concatenate([p.series for p in parts]), np.concatenate([p.ts_ns for p in parts]),
                   np.concatenate([p.values for p in parts]))

    def points(self) -> list[Point]:
        """One :class:`Point` per sample: for tests and tools, not for the write path."""
        keys = self.catalog.keys
        out = []
        for sid, ts, v in zip(self.series.tolist(), self.ts_ns.tolist(), self.values.tolist(), strict=True):
            k = keys[sid]
            out.append(Point(k.measurement, k.field, k.tags, v, ts))
        return out


@dataclass(frozen=True, slots=True)
class StoredEvent:
    node: str
    kind: str
    severity: str
    message: str
    action: str
    tags: Tags
    ts_ns: int


@dataclass
class SinkBatch:
    """A unit of delivery from the spool: ``spool_id`` is its position, increasing.

    The samples come either as ``samples`` (columns; what the spool sends) or as ``points``
    (built by hand), not both; :meth:`columns` gives them as columns in either case.
    """

    spool_id: int
    points: list[Point] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    samples: Samples | None = None
    _from_points: Samples | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.points and self.samples is not None:
            raise ValueError("SinkBatch takes points or samples, not both")

    def columns(self) -> Samples:
        if self.samples is not None:
            return self.samples
        if self._from_points is None or len(self._from_points) != len(self.points):
            # Converted once: a retried batch is encoded again, but not converted again.
            self._from_points = Samples.from_points(self.points)
        return self._from_points

    @property
    def n_points(self) -> int:
        return len(self.samples) if self.samples is not None else len(self.points)


@dataclass(frozen=True, slots=True)
class HealthSample:
    """A sink's own health metric, e.g. ("fleetmon_sink_written_points_total", {...}, 1234.0)."""

    name: str
    labels: Tags
    value: float


class Sink(Protocol):
    """A storage destination. ``write`` returns only when the batch is durable there, and
    raises :class:`collector.errors.SinkError` otherwise (``retryable`` tells the spool whether
    to try again). Writing the same batch twice must not store points twice (InfluxDB and
    the Prometheus remote-write receivers overwrite or de-duplicate identical series+timestamp;
    SQLite uses a primary key)."""

    name: str

    async def start(self) -> None: ...

    async def write(self, batch: SinkBatch) -> None: ...

    def health(self) -> list[HealthSample]: ...

    async def aclose(self) -> None: ...
