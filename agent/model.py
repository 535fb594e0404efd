"""Samples, events and metric specifications: what plugins hand to the agent.

A metric name is ``<measurement>_<field>`` (DESIGN.md, Metrics); the two halves are kept apart
so the InfluxDB mapping is natural (measurement ``gpu``, field ``temperature_celsius``).
Plugins declare their metrics once as :class:`Metric` constants and emit samples from them.
"""

from __future__ import annotations

import enum
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

Labels = Mapping[str, str]


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


@dataclass(slots=True)
class Sample:
    """One value of one series. ``ts`` is unix seconds; None means "the collection's time"."""

    metric: Metric
    value: float
    labels: dict[str, str]
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


@dataclass(slots=True)
class Collection:
    """What one plugin run produced."""

    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def add(self, metric: Metric, value: float | None, labels: Labels | None = None) -> None:
        """Append a sample; ``None`` means unsupported and is omitted, never invented."""
        if value is None:
            return
        self.samples.append(metric.sample(value, labels))

    def extend(self, other: Collection) -> None:
        self.samples.extend(other.samples)
        self.events.extend(other.events)


def check_label_name(name: str) -> bool:
    return bool(_LABEL_RE.match(name)) and not name.startswith("__")
