"""Turn collections into ``fleetmon.v1`` batches: stable series ids, columnar blocks.

Series ids are agent-wide and persisted with the WAL, so a batch written before a restart is
still meaningful after it; definitions travel once per stream (see ``agent.transport``).
"""

from __future__ import annotations

import array
import json
import sys
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from agent.model import Event, Metric, MetricType, Sample, Series, SeriesKey, Stamped
from proto import telemetry_pb2 as pb

_WIRE_TYPE = {MetricType.GAUGE: pb.GAUGE, MetricType.COUNTER: pb.COUNTER, MetricType.INFO: pb.INFO}
_SEVERITY = {0: pb.SEVERITY_INFO, 1: pb.SEVERITY_WARNING, 2: pb.SEVERITY_CRITICAL}


def pack_values(values: list[float]) -> bytes:
    """Little-endian float64, as the schema says (see the measurement in telemetry.proto)."""
    arr = array.array("d", values)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tobytes()


def unpack_values(data: bytes) -> list[float]:
    arr = array.array("d")
    arr.frombytes(data)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tolist()


class SeriesRow(NamedTuple):
    """One series definition as the WAL keeps it."""

    sid: int
    series: Series


class SeriesTable:
    """Series key → small dense id, and the definitions to send for each id.

    Lookups go by the interned :class:`~agent.model.Series` object (identity), so a series seen
    every cycle costs one dict probe; the key decides identity across restarts and duplicates.
    Definitions are kept as the series objects themselves and built as wire messages only when
    a stream needs them (once per stream and series), not held as a second copy.
    """

    def __init__(self) -> None:
        self._ids: dict[SeriesKey, int] = {}
        self._series: dict[int, Series] = {}
        self._by_series: dict[Series, int] = {}
        self.new: list[SeriesRow] = []  # defined since the last take_new(): to persist

    def __len__(self) -> int:
        return len(self._ids)

    def load(self, rows: Iterable[SeriesRow]) -> None:
        for sid, series in rows:
            self._ids[series.key] = sid
            self._series[sid] = series

    def sid(self, series: Series) -> int:
        found = self._by_series.get(series)
        return found if found is not None else self._define(series)

    def sids(self, series: list[Series]) -> list[int]:
        """The ids of many series: one C-level lookup each, new ones defined on the way."""
        found = list(map(self._by_series.get, series))
        if None in found:
            return [sid if sid is not None else self._define(s) for sid, s in zip(found, series, strict=True)]
        return found  # type: ignore[return-value]  # no None, checked above

    def _define(self, series: Series) -> int:
        sid = self._ids.get(series.key)
        if sid is None:
            sid = len(self._series) + 1
            while sid in self._series:
                sid += 1
            self._ids[series.key] = sid
            self.new.append(SeriesRow(sid, series))
        self._series[sid] = series  # a plugin's own object replaces one loaded from the WAL
        if len(self._by_series) > 2 * len(self._ids) + 4096:
            self._by_series.clear()  # series objects that were re-created (a plugin's churning labels)
        self._by_series[series] = sid
        return sid

    def id_for(self, sample: Sample) -> int:
        return self.sid(sample.metric.series(sample.labels))

    def series(self, sid: int) -> Series:
        return self._series[sid]

    def definition(self, sid: int) -> pb.SeriesDef:
        s = self._series[sid]
        m = s.metric
        return pb.SeriesDef(id=sid, measurement=m.measurement, field=m.field, labels=dict(s.key[2]),
                            type=_WIRE_TYPE[m.type], help=m.help, unit=m.unit)

    def take_new(self) -> list[SeriesRow]:
        out, self.new = self.new, []
        return out

    def restore_new(self, rows: list[SeriesRow]) -> None:
        """Definitions taken for a batch that was not stored: persist them with the next one."""
        self.new[:0] = rows


def event_to_pb(e: Event) -> pb.Event:
    return pb.Event(timestamp_ms=int(e.ts * 1000), kind=e.kind, labels=e.labels,
                    severity=_SEVERITY[int(e.severity)], message=e.message, action=e.action)


def build_batch(table: SeriesTable, items: Sequence[Stamped], events: Sequence[Event]) -> tuple[pb.Batch, list[int]]:
    """One batch (sequence unset) from timed collections; returns the ids used, sorted.

    Samples of one collection share its instant and become one block; the per-sample work is one
    id lookup. A series given twice at one instant keeps its last value.
    """
    by_ts: dict[int, tuple[list[int], list[float]]] = {}
    for ts, col in items:
        if col.series:
            ids, vals = by_ts.setdefault(int(ts * 1000), ([], []))
            ids.extend(table.sids(col.series))
            vals.extend(col.values)
        for smp in col.stamped:
            ids, vals = by_ts.setdefault(int((smp.ts if smp.ts is not None else ts) * 1000), ([], []))
            ids.append(table.id_for(smp))
            vals.append(smp.value)
    batch = pb.Batch()
    used: set[int] = set()
    for t_ms in sorted(by_ts):
        ids, vals = by_ts[t_ms]
        unique = set(ids)
        if len(unique) != len(ids):
            dedup = dict(zip(ids, vals, strict=True))
            ids, vals = list(dedup), list(dedup.values())
        batch.blocks.add(timestamp_ms=t_ms, series_ids=ids, values=pack_values(vals))
        used |= unique
    for e in events:
        batch.events.append(event_to_pb(e))
    return batch, sorted(used)


def series_to_json(series: Series) -> str:
    m = series.metric
    return json.dumps({"m": m.measurement, "f": m.field, "l": dict(series.key[2]), "t": int(m.type),
                       "h": m.help, "u": m.unit}, sort_keys=True)


_METRICS: dict[tuple[str, str, int, str, str], Metric] = {}


def series_from_json(text: str) -> Series:
    """A series the WAL persisted; raises ValueError (or KeyError) when the text is not one."""
    o = json.loads(text)
    key = (o["m"], o["f"], int(o["t"]), o.get("h", ""), o.get("u", ""))
    metric = _METRICS.get(key)
    if metric is None:
        metric = _METRICS[key] = Metric(key[0], key[1], MetricType(key[2]), key[3], key[4])
    return metric.series({str(k): str(v) for k, v in o["l"].items()})


def count_samples(batch: pb.Batch) -> int:
    return sum(len(b.series_ids) for b in batch.blocks)


__all__ = ["MetricType", "SeriesRow", "SeriesTable", "Stamped", "build_batch", "count_samples", "pack_values"]
