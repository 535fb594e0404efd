"""The collector's spool: acked data waits here until every external sink confirmed it.

Spool rows live in the embedded store's SQLite file and are written in the same transaction
that stores the batch and advances the node's sequence — so "acked" implies "spooled". Each
sink has a cursor; a row is deleted once every sink's cursor passed it. When the spool holds
more than ``max_bytes``, new batches wait before they are acked (``wait_for_room``), which
reaches the agents as back-pressure on their streams: memory stays bounded, their WALs hold
the rest.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import struct
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from collector.errors import ConfigError, SinkError
from collector.storage.base import HealthSample, Point, Sink, SinkBatch, StoredEvent
from collector.storage.embedded import EmbeddedStore, EventRow, SampleColumns, SeriesMeta
from collector.storage.influx_factory import SINK_TYPES, build_sink
from collector.storage.retry import Backoff

log = logging.getLogger("fleetmon.collector.spool")

_HEADER = struct.Struct("<I")


class SpoolBody(NamedTuple):
    """A decoded spool row: sample columns and events as stored."""

    samples: SampleColumns
    events: list[EventRow]


def encode_spool(samples: SampleColumns, events: Sequence[EventRow]) -> bytes:
    """Sample columns (series id, ts ms, value) and events → compact bytes: three columns + JSON events."""
    sids = array.array("q", samples.series_ids)
    ts = array.array("q", samples.ts_ms)
    vals = array.array("d", samples.values)
    if sys.byteorder == "big":
        for a in (sids, ts, vals):
            a.byteswap()
    ev = json.dumps(events).encode() if events else b""
    return _HEADER.pack(len(samples)) + sids.tobytes() + ts.tobytes() + vals.tobytes() + ev


def decode_spool(body: bytes) -> SpoolBody:
    (n,) = _HEADER.unpack_from(body)
    off = _HEADER.size
    cols: list[array.array[Any]] = []
    for code in ("q", "q", "d"):
        a = array.array(code)
        a.frombytes(body[off:off + 8 * n])
        if sys.byteorder == "big":
            a.byteswap()
        cols.append(a)
        off += 8 * n
    events = [EventRow(*e) for e in json.loads(body[off:])] if off < len(body) else []
    return SpoolBody(SampleColumns(cols[0].tolist(), cols[1].tolist(), cols[2].tolist()), events)


def build_sinks(section: Mapping[str, Any] | None) -> list[Sink]:
    """``sinks: {name: {type: influxdb_v1|influxdb_v2, ...}}``; a name that is a type may omit it."""
    if not section:
        return []
    sinks = []
    for name, raw in section.items():
        body = dict(raw or {})
        kind = body.pop("type", name)
        if kind not in SINK_TYPES:
            raise ConfigError(f"sinks.{name}.type: {kind!r} is not one of {', '.join(SINK_TYPES)}")
        body.setdefault("name", str(name))
        sinks.append(build_sink(kind, body, f"sinks.{name}"))
    return sinks


class Spool:
    def __init__(self, store: EmbeddedStore, sinks: list[Sink], max_bytes: int, rows_per_read: int = 16) -> None:
        self.store = store
        self.sinks = sinks
        self.max_bytes = max_bytes
        self.rows_per_read = rows_per_read
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped: dict[str, int] = {s.name: 0 for s in sinks}
        self._series: dict[int, SeriesMeta] = {}
        self._bytes = 0
        self.waiting = 0
        self._backoff = Backoff(initial=0.5, maximum=30.0)

    async def start(self) -> None:
        for s in self.sinks:
            await s.start()
        self._bytes = self.store.spool_depth().size_bytes
        self._tasks = [asyncio.create_task(self._worker(s), name=f"sink-{s.name}") for s in self.sinks]
        self._tasks.append(asyncio.create_task(self._ticker(), name="spool-ticker"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for s in self.sinks:
            await s.aclose()

    def notify(self) -> None:
        self._wake.set()

    async def wait_for_room(self) -> None:
        """Called before a batch is committed: hold it while the spool is over its bound."""
        self._wake.set()
        if self._bytes < self.max_bytes:
            return
        self.waiting += 1
        try:
            while self._bytes >= self.max_bytes:
                await asyncio.sleep(0.2)
        finally:
            self.waiting -= 1

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._bytes = (await asyncio.to_thread(self.store.spool_depth)).size_bytes
            self._wake.set()

    def _meta(self, sid: int) -> SeriesMeta:
        meta = self._series.get(sid)
        if meta is None:
            meta = self._series[sid] = self.store.series_meta(sid)
        return meta

    def to_batch(self, spool_id: int, body: bytes) -> SinkBatch:
        decoded = decode_spool(body)
        batch = SinkBatch(spool_id)
        s = decoded.samples
        for sid, t, v in zip(s.series_ids, s.ts_ms, s.values, strict=True):
            meta = self._meta(sid)
            batch.points.append(Point(meta.measurement, meta.field, meta.tags, v, t * 1_000_000))
        for e in decoded.events:
            lab = json.loads(e.labels_json)
            batch.events.append(StoredEvent(lab.get("node", ""), e.kind, e.severity, e.message, e.action,
                                            tuple(sorted(lab.items())), int(e.ts_ms) * 1_000_000))
        return batch

    async def _worker(self, sink: Sink) -> None:
        names = [s.name for s in self.sinks]
        cursor = await asyncio.to_thread(self.store.sink_cursor, sink.name)
        attempt = 0
        while True:
            rows = await asyncio.to_thread(self.store.spool_read, cursor, self.rows_per_read)
            if not rows:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            merged = SinkBatch(rows[-1].spool_id)
            for spool_id, body in rows:
                b = await asyncio.to_thread(self.to_batch, spool_id, body)
                merged.points.extend(b.points)
                merged.events.extend(b.events)
            try:
                await sink.write(merged)
                attempt = 0
            except SinkError as err:
                if not err.retryable:
                    n = len(merged.points) + len(merged.events)
                    self.dropped[sink.name] += n
                    log.error("sink %s refused %d points/events for good, dropping them: %s", sink.name, n, err)
                else:
                    attempt += 1
                    delay = self._backoff.delay(attempt, err.retry_after)  # never shorter than Retry-After
                    if attempt == 1:
                        log.warning("sink %s unavailable (%s); spooling and retrying", sink.name, err)
                    await asyncio.sleep(delay)
                    continue
            cursor = merged.spool_id
            await asyncio.to_thread(self.store.set_sink_cursor, sink.name, cursor, names)

    def health(self) -> list[HealthSample]:
        out: list[HealthSample] = []
        for s in self.sinks:
            out.extend(s.health())
            out.append(HealthSample("fleetmon_sink_dropped_points_total", (("sink", s.name),),
                                    float(self.dropped[s.name])))
        out.append(HealthSample("fleetmon_spool_bytes", (), float(self._bytes)))
        out.append(HealthSample("fleetmon_spool_waiting_batches", (), float(self.waiting)))
        return out


__all__ = ["Spool", "SpoolBody", "build_sinks", "decode_spool", "encode_spool"]
