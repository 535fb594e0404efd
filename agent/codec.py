"""Turn collections into ``fleetmon.v1`` batches: stable series ids, columnar blocks.

Series ids are agent-wide and persisted with the WAL, so a batch written before a restart is
still meaningful after it; definitions travel once per stream (see ``agent.transport``).
"""

from __future__ import annotations

import array
import json
import sys
from collections.abc import Iterable

from agent.model import Event, MetricType, Sample
from proto import telemetry_pb2 as pb

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]  # measurement, field, sorted labels

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
    """Series key → small dense id, and the definitions to send for each id."""

    def __init__(self) -> None:
        self._ids: dict[SeriesKey, int] = {}
        self._defs: dict[int, pb.SeriesDef] = {}
        self.new: list[pb.SeriesDef] = []  # defined since the last take_new(): to persist

    def __len__(self) -> int:
        return len(self._ids)

    def load(self, defs: Iterable[pb.SeriesDef]) -> None:
        for d in defs:
            key = (d.measurement, d.field, tuple(sorted(d.labels.items())))
            self._ids[key] = d.id
            self._defs[d.id] = d

    def id_for(self, sample: Sample) -> int:
        m = sample.metric
        key = (m.measurement, m.field, tuple(sorted(sample.labels.items())))
        sid = self._ids.get(key)
        if sid is None:
            sid = len(self._defs) + 1
            while sid in self._defs:
                sid += 1
            d = pb.SeriesDef(id=sid, measurement=m.measurement, field=m.field, labels=sample.labels,
                             type=_WIRE_TYPE[m.type], help=m.help, unit=m.unit)
            self._ids[key] = sid
            self._defs[sid] = d
            self.new.append(d)
        return sid

    def definition(self, sid: int) -> pb.SeriesDef:
        return self._defs[sid]

    def take_new(self) -> list[pb.SeriesDef]:
        out, self.new = self.new, []
        return out


def event_to_pb(e: Event) -> pb.Event:
    return pb.Event(timestamp_ms=int(e.ts * 1000), kind=e.kind, labels=e.labels,
                    severity=_SEVERITY[int(e.severity)], message=e.message, action=e.action)


def build_batch(
    table: SeriesTable, items: list[tuple[float, list[Sample]]], events: list[Event]
) -> tuple[pb.Batch, list[int]]:
    """One batch (sequence unset) from (collection time, samples) pairs; returns the ids used."""
    by_ts: dict[int, tuple[list[int], list[float]]] = {}
    for ts, samples in items:
        for s in samples:
            t_ms = int((s.ts if s.ts is not None else ts) * 1000)
            ids, vals = by_ts.setdefault(t_ms, ([], []))
            ids.append(table.id_for(s))
            vals.append(s.value)
    batch = pb.Batch()
    used: set[int] = set()
    for t_ms in sorted(by_ts):
        ids, vals = by_ts[t_ms]
        # One series once per instant: a later sample for the same series wins.
        if len(set(ids)) != len(ids):
            dedup = dict(zip(ids, vals, strict=True))
            ids, vals = list(dedup), list(dedup.values())
        batch.blocks.add(timestamp_ms=t_ms, series_ids=ids, values=pack_values(vals))
        used.update(ids)
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


__all__ = ["MetricType", "SeriesTable", "build_batch", "count_samples", "pack_values"]
