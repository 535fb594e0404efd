"""Samples, events and metric specifications: what plugins hand to the agent.

A metric name is ``<measurement>_<field>`` (DESIGN.md, Metrics); the two halves are kept apart
so the InfluxDB mapping is natural (measurement ``gpu``, field ``temperature_celsius``).
Plugins declare their metrics once as :class:`Metric` constants and emit samples from them.

A :class:`Collection` is columnar: one list of :class:`Series` (a metric with its labels,
interned, so a series seen every cycle is one object for the agent's life) and one list of
values. Adding a sample costs two list appends, and the batch encoder maps a series to its wire
id with one identity lookup: no per-sample Python object between a plugin and the WAL. Hot
plugins resolve their series once (``metric.series(labels)``) and add with ``col.put``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

Labels = Mapping[str, str]
#: measurement, field, labels sorted by name: what makes two series the same.
SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]
#: Interned series per metric beyond which the cache starts again (a plugin whose labels churn
#: must not grow it without bound; the series table keeps the ids either way).
_SERIES_CACHE_MAX = 65_536


class MetricType(enum.IntEnum):
    """Same numbers as ``fleetmon.v1.MetricType`` on the wire."""

    GAUGE = 0
    COUNTER = 1
    INFO = 2  # value 1, the payload is in the labels (Prometheus "_info" convention)


class Severity(enum.IntEnum):
    """Same numbers as ``fleetmon.v1.Severity`` on the wire."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError as err:
            raise ValueError(f"unknown severity {text!r}; use info, warning or critical") from err


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric family declared by a plugin."""

    measurement: str
    field: str
    type: MetricType
    help: str
    unit: str = ""
    _series: dict[tuple[tuple[str, str], ...], Series] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.measurement) or not _NAME_RE.match(self.field):
            raise ValueError(f"invalid metric name {self.measurement!r}/{self.field!r}")
        if self.type is MetricType.COUNTER and not self.field.endswith("_total"):
            raise ValueError(f"counter {self.name} must end in _total")

    @property
    def name(self) -> str:
        return f"{self.measurement}_{self.field}"

    def sample(self, value: float, labels: Labels | None = None, ts: float | None = None) -> Sample:
        return Sample(self, float(value), dict(labels) if labels else {}, ts)

    def series(self, labels: Labels | None = None) -> Series:
        """The interned series of this metric with these labels (the same object every time)."""
        items = tuple(labels.items()) if labels else ()
        found = self._series.get(items)
        if found is None:
            if len(self._series) >= _SERIES_CACHE_MAX:
                self._series.clear()
            found = self._series[items] = Series(self, labels or {})
        return found


def gauge(name: str, help: str, unit: str = "", *, measurement: str | None = None) -> Metric:
    """Declare a gauge from its full name; the measurement is the first word unless given."""
    m, f = _split(name, measurement)
    return Metric(m, f, MetricType.GAUGE, help, unit)


def counter(name: str, help: str, unit: str = "", *, measurement: str | None = None) -> Metric:
    m, f = _split(name, measurement)
    return Metric(m, f, MetricType.COUNTER, help, unit)


def info(name: str, help: str, *, measurement: str | None = None) -> Metric:
    m, f = _split(name, measurement)
    return Metric(m, f, MetricType.INFO, help)


def _split(name: str, measurement: str | None) -> tuple[str, str]:
    if measurement is None:
        measurement, _, rest = name.partition("_")
    else:
        if not name.startswith(measurement + "_"):
            raise ValueError(f"metric {name!r} does not start with measurement {measurement!r}")
        rest = name[len(measurement) + 1 :]
    if not rest:
        raise ValueError(f"metric {name!r} has no field part")
    return measurement, rest


class Series:
    """One metric with one set of labels; compared and hashed by identity (see ``Metric.series``).

    Only the sorted label pairs are kept (``key``); ``labels`` builds a dict when asked, which the
    hot path never does.
    """

    __slots__ = ("key", "metric")

    def __init__(self, metric: Metric, labels: Labels) -> None:
        self.metric = metric
        self.key: SeriesKey = (metric.measurement, metric.field, tuple(sorted(labels.items())))

    @property
    def labels(self) -> Mapping[str, str]:
        """A read-only view (the series is shared: relabel by adding a new sample, not in place)."""
        return MappingProxyType(dict(self.key[2]))

    def __repr__(self) -> str:
        return f"Series({self.metric.name}{self.labels})"


@dataclass(slots=True)
class Sample:
    """One value of one series. ``ts`` is unix seconds; None means "the collection's time"."""

    metric: Metric
    value: float
    labels: Mapping[str, str]
    ts: float | None = None

    @property
    def name(self) -> str:
        return self.metric.name

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.metric.name, tuple(sorted(self.labels.items()))

    def is_finite(self) -> bool:
        return math.isfinite(self.value)


@dataclass(slots=True)
class Event:
    """A discrete hardware happening (an XID, an AER, a link flap, a PSU fault)."""

    kind: str  # dotted, e.g. "gpu.xid"
    severity: Severity
    message: str
    labels: dict[str, str] = field(default_factory=dict)
    action: str = ""
    ts: float = field(default_factory=time.time)


class Collection:
    """What one plugin run produced: columnar samples (series, value) and events.

    Samples stamped with their own time (rare: a counter's zero just before its first event) are
    kept apart in ``stamped``. ``samples`` materialises everything as :class:`Sample` objects for
    readers that want them (``--once`` output, tests); the hot path never builds them.
    """

    __slots__ = ("events", "series", "stamped", "values")

    def __init__(self, samples: Iterable[Sample] = (), events: list[Event] | None = None) -> None:
        self.series: list[Series] = []
        self.values: list[float] = []
        self.stamped: list[Sample] = []
        self.events: list[Event] = events if events is not None else []
        for smp in samples:
            self.append(smp)

    def add(self, metric: Metric, value: float | None, labels: Labels | None = None) -> None:
        """Append a sample; ``None`` means unsupported and is omitted, never invented."""
        if value is None:
            return
        self.series.append(metric.series(labels))
        self.values.append(float(value))

    def put(self, series: Series, value: float | None) -> None:
        """Append a sample of a series resolved beforehand (``metric.series(labels)``)."""
        if value is None:
            return
        self.series.append(series)
        self.values.append(float(value))

    def append(self, sample: Sample) -> None:
        if sample.ts is None:
            self.add(sample.metric, sample.value, sample.labels)
        else:
            self.stamped.append(sample)

    def extend(self, other: Collection) -> None:
        self.series.extend(other.series)
        self.values.extend(other.values)
        self.stamped.extend(other.stamped)
        self.events.extend(other.events)

    def __len__(self) -> int:
        """Samples held (events not counted)."""
        return len(self.series) + len(self.stamped)

    def pairs(self) -> Iterable[tuple[Series, float]]:
        """(series, value) of the samples without their own time."""
        return zip(self.series, self.values, strict=True)

    @property
    def samples(self) -> tuple[Sample, ...]:
        """Every sample as a :class:`Sample` (a copy: add through ``add``/``put``/``append``).

        Stamped samples come first: they are stamped before the collection (a counter's zero
        just before its first event), so readers that ingest in order see time move forward.
        """
        out = [Sample(s.metric, v, s.labels) for s, v in zip(self.series, self.values, strict=True)]
        return (*self.stamped, *out)


class Stamped(NamedTuple):
    """A plugin's collection and the time it was taken (its samples' time unless they carry one)."""

    ts: float
    collection: Collection


def check_label_name(name: str) -> bool:
    return bool(_LABEL_RE.match(name)) and not name.startswith("__")
