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
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from collector.errors import ConfigError, SinkError, StoreError
from collector.storage.base import (
    Float64Array,
    HealthSample,
    Int64Array,
    Samples,
    SeriesCatalog,
    SeriesKey,
    Sink,
    SinkBatch,
    StoredEvent,
)
from collector.storage.embedded import EmbeddedStore, EventRow, SampleColumns, SpoolRow
from collector.storage.influx_factory import SINK_TYPES, build_sink
from collector.storage.retry import Backoff

log = logging.getLogger("fleetmon.collector.spool")

_HEADER = struct.Struct("<I")
#: Samples a sink gets in one write at most (unless it says otherwise as ``write_samples``); the
#: sink cuts them into requests of its own size.
DEFAULT_WRITE_SAMPLES = 100_000
#: Series the spool's catalog remembers before it starts a new one (the sinks' per-series caches
#: follow the catalog), so label churn cannot grow them without bound.
MAX_CATALOG = 1_000_000
#: Store series ids up to this are looked up in an array (8 bytes each); larger ones in a dict.
_MAX_LUT = 50_000_000


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


def decode_spool_columns(body: bytes) -> tuple[Int64Array, Int64Array, Float64Array, list[EventRow]]:
    """:func:`decode_spool` as numpy columns (views of ``body``; the columns are stored little-endian)."""
    (n,) = _HEADER.unpack_from(body)
    off = _HEADER.size
    sids = np.frombuffer(body, "<i8", n, off).astype(np.int64, copy=False)
    ts = np.frombuffer(body, "<i8", n, off + 8 * n).astype(np.int64, copy=False)
    vals = np.frombuffer(body, "<f8", n, off + 16 * n).astype(np.float64, copy=False)
    off += 24 * n
    events = [EventRow(*e) for e in json.loads(body[off:])] if off < len(body) else []
    return sids, ts, vals, events


def build_sinks(section: Mapping[str, Any] | None) -> list[Sink]:
    """``sinks: {name: {type: influxdb_v1|influxdb_v2, ...}}``; a name that is a type may omit it.
    Every sink's problems are reported together (one ConfigError, a line each)."""
    if not section:
        return []
    sinks = []
    problems: list[str] = []
    for name, raw in section.items():
        if raw is not None and not isinstance(raw, Mapping):
            problems.append(f"sinks.{name}: expected a mapping of settings, got {type(raw).__name__}")
            continue
        body = dict(raw or {})
        kind = body.pop("type", name)
        if kind not in SINK_TYPES:
            problems.append(f"sinks.{name}.type: {kind!r} is not one of {', '.join(SINK_TYPES)}")
            continue
        body.setdefault("name", str(name))
        try:
            sinks.append(build_sink(kind, body, f"sinks.{name}"))
        except ConfigError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError("\n".join(problems))
    return sinks


class Spool:
    def __init__(self, store: EmbeddedStore, sinks: list[Sink], max_bytes: int, rows_per_read: int = 64) -> None:
        self.store = store
        self.sinks = sinks
        self.max_bytes = max_bytes
        self.rows_per_read = rows_per_read
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped: dict[str, int] = {s.name: 0 for s in sinks}
        # Store series id → id in the catalog the sinks see (their caches are kept per catalog id).
        self._catalog = SeriesCatalog()
        self._catalog_ids: dict[int, int] = {}
        self._lut = np.full(0, -1, np.int64)  # the same, as an array indexed by store series id
        self._bytes = 0
        self._rows = 0
        self.waiting = 0
        #: sink -> when it first read the oldest batch it has not confirmed (None: caught up).
        #: Rows are read in order, so that batch is the sink's lag (fleetmon_sink_lag_seconds).
        self.pending_since: dict[str, float | None] = {s.name: None for s in sinks}
        self._backoff = Backoff(initial=0.5, maximum=30.0)
        self.retry_s = 5.0  # after the spool itself failed (not the sink)

    async def start(self) -> None:
        for s in self.sinks:
            await s.start()
        depth = self.store.spool_depth()
        self._bytes, self._rows = depth.size_bytes, depth.rows
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
            depth = await asyncio.to_thread(self.store.spool_depth)
            self._bytes, self._rows = depth.size_bytes, depth.rows
            self._wake.set()

    def to_batch(self, rows: Sequence[SpoolRow]) -> SinkBatch:
        """Spool rows as one batch: the samples as columns over the spool's series catalog."""
        sid_cols, ts_cols, val_cols, events = [], [], [], []
        for _, body in rows:
            sids, ts, vals, evs = decode_spool_columns(body)
            sid_cols.append(sids)
            ts_cols.append(ts)
            val_cols.append(vals)
            events.extend(evs)
        sids, ts, vals = np.concatenate(sid_cols), np.concatenate(ts_cols), np.concatenate(val_cols)
        if len(self._catalog) > MAX_CATALOG:
            self._catalog, self._catalog_ids = SeriesCatalog(), {}
            self._lut = np.full(0, -1, np.int64)
        batch = SinkBatch(rows[-1].spool_id, samples=Samples(self._catalog, self._catalog_ids_of(sids),
                                                             ts * 1_000_000, vals))
        for e in events:
            lab = json.loads(e.labels_json)
            batch.events.append(StoredEvent(lab.get("node", ""), e.kind, e.severity, e.message, e.action,
                                            tuple(sorted(lab.items())), int(e.ts_ms) * 1_000_000))
        return batch

    def _catalog_ids_of(self, sids: Int64Array) -> Int64Array:
        """Catalog ids of store series ids: one numpy lookup (store ids are small dense integers,
        SQLite row ids), the store asked only about series the spool has not seen."""
        if len(sids) == 0:
            return sids
        top = int(sids.max())
        if int(sids.min()) < 0 or top > _MAX_LUT:  # not dense: one dict lookup per distinct series
            store_ids, where = np.unique(sids, return_inverse=True)
            ids = np.fromiter(map(self._catalog_id, store_ids.tolist()), np.int64, len(store_ids))
            return ids[where.reshape(-1)]
        if top >= len(self._lut):
            grown = np.full(max(top + 1, 2 * len(self._lut)), -1, np.int64)
            grown[: len(self._lut)] = self._lut
            self._lut = grown
        ids = self._lut[sids]
        unknown = ids < 0
        if unknown.any():
            for sid in np.unique(sids[unknown]).tolist():
                self._lut[sid] = self._catalog_id(sid)
            ids = self._lut[sids]
        return ids

    def _catalog_id(self, sid: int) -> int:
        found = self._catalog_ids.get(sid)
        if found is None:
            meta = self.store.series_meta(sid)
            found = self._catalog_ids[sid] = self._catalog.intern(SeriesKey(meta.measurement, meta.field, meta.tags))
        return found

    async def _gather(self, sink: Sink, cursor: int) -> list[SpoolRow]:
        """The spool rows after ``cursor`` for one write: what is there, up to the sink's
        ``write_samples``. A sink with a ``flush_interval`` waits up to that long (from the first
        row it saw) for more rows while it has fewer: each series then carries several samples per
        request, which a TSDB ingests several times cheaper (docs/capacity.md)."""
        budget = max(1, int(getattr(sink, "write_samples", DEFAULT_WRITE_SAMPLES)))
        linger = float(getattr(sink, "flush_interval", 0.0))
        rows: list[SpoolRow] = []
        samples = 0
        first_seen = 0.0
        while True:
            more = await asyncio.to_thread(self.store.spool_read, rows[-1].spool_id if rows else cursor,
                                          self.rows_per_read)
            if more:
                if not rows:
                    first_seen = time.monotonic()
                if self.pending_since[sink.name] is None:
                    self.pending_since[sink.name] = time.time()
                rows += more
                samples += sum(_HEADER.unpack_from(row.body)[0] for row in more)
                if samples >= budget:
                    return rows
                continue  # read on while there is a backlog
            waited = time.monotonic() - first_seen
            if rows and waited >= linger:
                return rows
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(1.0, linger - waited) if rows else 1.0)

    async def _worker(self, sink: Sink) -> None:
        while True:
            try:
                await self._drain(sink)
            except StoreError as err:  # the store failed under us: say so, retry, never die silently
                log.error("sink %s: reading the spool failed (%s); retrying in %gs", sink.name, err, self.retry_s)
                await asyncio.sleep(self.retry_s)
            except Exception:  # a bug: a sink that stopped for good would only show as a growing spool
                log.exception("sink %s: the spool worker failed; retrying in %gs", sink.name, self.retry_s)
                await asyncio.sleep(self.retry_s)

    async def _drain(self, sink: Sink) -> None:
        names = [s.name for s in self.sinks]
        cursor = await asyncio.to_thread(self.store.sink_cursor, sink.name)
        attempt = 0
        while True:
            rows = await self._gather(sink, cursor)
            merged = await asyncio.to_thread(self.to_batch, rows)
            try:
                await sink.write(merged)
                attempt = 0
            except SinkError as err:
                if not err.retryable:
                    n = merged.n_points + len(merged.events)
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
            self.pending_since[sink.name] = None

    def health(self) -> list[HealthSample]:
        out: list[HealthSample] = []
        now = time.time()
        for s in self.sinks:
            out.extend(s.health())
            out.append(HealthSample("fleetmon_sink_dropped_points_total", (("sink", s.name),),
                                    float(self.dropped[s.name])))
            since = self.pending_since[s.name]
            out.append(HealthSample("fleetmon_sink_lag_seconds", (("sink", s.name),),
                                    0.0 if since is None else max(0.0, now - since)))
        out.append(HealthSample("fleetmon_spool_bytes", (), float(self._bytes)))
        out.append(HealthSample("fleetmon_spool_batches", (), float(self._rows)))
        out.append(HealthSample("fleetmon_spool_waiting_batches", (), float(self.waiting)))
        return out


__all__ = ["Spool", "SpoolBody", "build_sinks", "decode_spool", "decode_spool_columns", "encode_spool"]
