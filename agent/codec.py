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

from agent.model import Collection, Event, MetricType, Sample, Series, SeriesKey
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


class SeriesTable:
    """Series key → small dense id, and the definitions to send for each id.

    Lookups go by the interned :class:`~agent.model.Series` object (identity), so a series seen
    every cycle costs one dict probe; the key decides identity across restarts and duplicates.
    """

    def __init__(self) -> None:
        self._ids: dict[SeriesKey, int] = {}
        self._defs: dict[int, pb.SeriesDef] = {}
        self._by_series: dict[Series, int] = {}
        self.new: list[pb.SeriesDef] = []  # defined since the last take_new(): to persist

    def __len__(self) -> int:
        return len(self._ids)

    def load(self, defs: Iterable[pb.SeriesDef]) -> None:
        for d in defs:
            key = (d.measurement, d.field, tuple(sorted(d.labels.items())))
            self._ids[key] = d.id
            self._defs[d.id] = d

    def sid(self, series: Series) -> int:
        found = self._by_series.get(series)
        return found if found is not None else self._define(series)

    def _define(self, series: Series) -> int:
        sid = self._ids.get(series.key)
        if sid is None:
            m = series.metric
            sid = len(self._defs) + 1
            while sid in self._defs:
                sid += 1
            d = pb.SeriesDef(id=sid, measurement=m.measurement, field=m.field, labels=series.labels,
                             type=_WIRE_TYPE[m.type], help=m.help, unit=m.unit)
            self._ids[series.key] = sid
            self._defs[sid] = d
            self.new.append(d)
        if len(self._by_series) > 2 * len(self._ids) + 4096:
            self._by_series.clear()  # series objects that were re-created (a plugin's churning labels)
        self._by_series[series] = sid
        return sid

    def id_for(self, sample: Sample) -> int:
        return self.sid(sample.metric.series(sample.labels))

    def definition(self, sid: int) -> pb.SeriesDef:
        return self._defs[sid]

    def take_new(self) -> list[pb.SeriesDef]:
        out, self.new = self.new, []
        return out


class Stamped(NamedTuple):
    """A plugin's collection and the time it was taken (its samples' time unless they carry one)."""

    ts: float
    collection: Collection


def event_to_pb(e: Event) -> pb.Event:
    return pb.Event(timestamp_ms=int(e.ts * 1000), kind=e.kind, labels=e.labels,
                    severity=_SEVERITY[int(e.severity)], message=e.message, action=e.action)


def build_batch(table: SeriesTable, items: Sequence[Stamped], events: Sequence[Event]) -> tuple[pb.Batch, list[int]]:
    """One batch (sequence unset) from timed collections; returns the ids used, sorted.

    Samples of one collection share its instant and become one block; the per-sample work is one
    id lookup. A series given twice at one instant keeps its last value.
    """
    by_ts: dict[int, tuple[list[int], list[float]]] = {}
    sid = table.sid
    for ts, col in items:
        if col.series:
            ids, vals = by_ts.setdefault(int(ts * 1000), ([], []))
            ids.extend([sid(s) for s in col.series])
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


def def_to_json(d: pb.SeriesDef) -> str:
    return json.dumps({"m": d.measurement, "f": d.field, "l": dict(d.labels), "t": int(d.type),
                       "h": d.help, "u": d.unit}, sort_keys=True)


def def_from_json(sid: int, text: str) -> pb.SeriesDef:
    o = json.loads(text)
    return pb.SeriesDef(id=sid, measurement=o["m"], field=o["f"], labels=o["l"], type=o["t"],
                        help=o.get("h", ""), unit=o.get("u", ""))


def count_samples(batch: pb.Batch) -> int:
    return sum(len(b.series_ids) for b in batch.blocks)


__all__ = ["MetricType", "SeriesTable", "Stamped", "build_batch", "count_samples", "pack_values"]
