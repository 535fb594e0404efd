"""Validate and decode agent batches, commit them durably, feed the live windows.

One :class:`Ingestor` serves every stream. Batches from all streams are committed by one
writer in groups (one SQLite transaction for whatever is waiting), so many agents cost few
fsyncs; a stream is acked only after its batch's transaction committed.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from collector.config import Limits
from collector.errors import IngestError
from collector.spool import encode_spool
from collector.storage.sqlite import NodeState, SqliteStore, WriteItem
from proto import telemetry_pb2 as pb

log = logging.getLogger("fleetmon.collector.ingest")

_LABEL_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SEVERITY = {pb.SEVERITY_INFO: "info", pb.SEVERITY_WARNING: "warning", pb.SEVERITY_CRITICAL: "critical"}


def _label_name_ok(name: str) -> bool:
    return bool(name) and not name[0].isdigit() and set(name) <= _LABEL_OK and not name.startswith("__")


def unpack_values(data: bytes) -> list[float]:
    arr = array.array("d")
    arr.frombytes(data)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tolist()


@dataclass(slots=True)
class SeriesInfo:
    sid: int
    name: str
    measurement: str
    field: str
    labels: dict[str, str]
    counter: bool
    alert: bool  # a loaded rule selects this name


@dataclass
class NodeInfo:
    """What the collector knows of one node, live."""

    node: str
    labels: dict[str, str] = field(default_factory=dict)
    state: NodeState | None = None
    connected: bool = False
    last_batch_at: float = 0.0
    connected_at: float = 0.0
    samples: int = 0
    batches: int = 0
    clock_skew: float = 0.0
    agent_version: str = ""
    plugins: list[tuple[str, bool, str]] = field(default_factory=list)
    stream_token: object | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Decoded:
    item: WriteItem
    live: list[tuple[SeriesInfo, float, float]]  # for the alert windows: series, ts s, value
    events: list[pb.Event]
    samples: int


class StreamSession:
    """Per-stream state: the series this stream defined (ids are the agent's)."""

    def __init__(self, node: NodeInfo, peer: str) -> None:
        self.node = node
        self.peer = peer
        self.series: dict[int, SeriesInfo] = {}


class GroupWriter:
    """Commits WriteItems in groups from one thread; ``submit`` resolves when durable."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetmon-store")
        self._queue: list[tuple[WriteItem, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def submit(self, item: WriteItem) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        self._wake.set()
        await fut

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                group, self._queue = self._queue[:256], self._queue[256:]
                try:
                    await self.run_in_thread(self.store.commit, [it for it, _ in group])
                    self.commits += 1
                    for _, fut in group:
                        if not fut.done():
                            fut.set_result(None)
                except Exception as err:  # noqa: BLE001 - supervision boundary: fail these batches, keep serving
                    log.error("store %s: commit of %d batches failed: %s", self.store.path, len(group), err)
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(IngestError(f"store commit failed: {err}"))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=True)


class Ingestor:
    def __init__(self, store: SqliteStore, writer: GroupWriter, limits: Limits,
                 wants: Callable[[str], bool] = lambda _n: False, spool: bool = False) -> None:
        self.store = store
        self.writer = writer
        self.limits = limits
        self.wants = wants
        self.spool = spool
        self.nodes: dict[str, NodeInfo] = {}
        self.samples_total = 0
        self.refused_total = 0
        self.duplicates_total = 0

    def node(self, name: str) -> NodeInfo:
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name)
        return info

    def check_hello(self, hello: pb.Hello, peer: str) -> None:
        if not hello.node:
            raise IngestError(f"hello from {peer} has no node name")
        if len(hello.node) > 253 or any(c in hello.node for c in "\n\r\0"):
            raise IngestError(f"hello from {peer}: node name {hello.node[:64]!r} is not a valid node id")
        if len(hello.labels) > self.limits.max_labels:
            raise IngestError(f"node {hello.node}: {len(hello.labels)} identity labels, more than "
                              f"{self.limits.max_labels}")
        for k, v in hello.labels.items():
            if not _label_name_ok(k) or k == "node":
                raise IngestError(f"node {hello.node}: identity label name {k!r} is not valid")
            if len(v.encode()) > self.limits.max_label_value_bytes:
                raise IngestError(f"node {hello.node}: identity label {k} is longer than "
                                  f"{self.limits.max_label_value_bytes} bytes")

    def decode(self, session: StreamSession, batch: pb.Batch, now: float) -> Decoded:
        """Validate and resolve one batch whose series are defined (``define``); IngestError
        refuses it (the stream goes on)."""
        node = session.node
        if batch.sequence == 0:
            raise IngestError("batch has no sequence number")
        lo = (now - self.limits.max_past_seconds) * 1000
        hi = (now + self.limits.max_future_seconds) * 1000
        rows: list[tuple[int, int, float]] = []
        live: list[tuple[SeriesInfo, float, float]] = []
        series = session.series
        for block in batch.blocks:
            ts = block.timestamp_ms
            if not lo <= ts <= hi:
                off = ts / 1000 - now
                raise IngestError(f"block timestamp {ts} is {abs(off):.0f}s in the "
                                  f"{'future' if off > 0 else 'past'}, outside the accepted window (agent clock?)")
            ids = block.series_ids
            if len(block.values) != 8 * len(ids):
                raise IngestError(f"block at {ts}: {len(ids)} series ids but {len(block.values)} value bytes "
                                  "(need 8 per id)")
            values = unpack_values(block.values)
            ts_s = ts / 1000
            for sid, value in zip(ids, values, strict=True):
                info = series.get(sid)
                if info is None:
                    raise IngestError(f"block at {ts} uses series id {sid}, never defined on this stream")
                if math.isnan(value) or (info.counter and (math.isinf(value) or value < 0)):
                    raise IngestError(f"series {info.name} {info.labels}: value {value} is not allowed "
                                      f"for a {'counter' if info.counter else 'gauge'}")
                rows.append((info.sid, ts, value))
                if info.alert:
                    live.append((info, ts_s, value))
        events = []
        node_labels = {**node.labels, "node": node.node}
        for e in batch.events:
            if not e.kind or len(e.kind) > 128:
                raise IngestError("event without a valid kind")
            lab = {**dict(e.labels), **node_labels}
            events.append((e.timestamp_ms, e.kind, _SEVERITY.get(e.severity, "warning"), e.message[:4096],
                           e.action[:1024], json.dumps(lab, sort_keys=True)))
        assert node.state is not None
        item = WriteItem(node.node, node.state, batch.sequence, rows, events,
                         spool_body=encode_spool(rows, events) if self.spool else None)
        return Decoded(item, live, list(batch.events), len(rows))

    def define(self, session: StreamSession, defs: Sequence[pb.SeriesDef]) -> None:
        """Check and register a batch's series definitions (one store transaction for new ones)."""
        if not defs:
            return
        node = session.node.node
        node_labels = {**session.node.labels, "node": node}
        checked = []
        new = sum(1 for d in defs if d.id not in session.series)
        if len(session.series) + new > self.limits.max_series_per_node:
            raise IngestError(f"node {node} defined more than {self.limits.max_series_per_node} series "
                              "(label bomb?); raise limits.max_series_per_node if this is real")
        for d in defs:
            if not d.measurement or not d.field:
                raise IngestError(f"series id {d.id} has no measurement or field")
            if len(d.labels) > self.limits.max_labels:
                raise IngestError(f"series {d.measurement}_{d.field} has {len(d.labels)} labels, more than "
                                  f"{self.limits.max_labels} (label bomb?)")
            for k, v in d.labels.items():
                if not _label_name_ok(k):
                    raise IngestError(f"series {d.measurement}_{d.field}: label name {k!r} is not valid")
                if len(v.encode()) > self.limits.max_label_value_bytes:
                    raise IngestError(f"series {d.measurement}_{d.field}: label {k} is longer than "
                                      f"{self.limits.max_label_value_bytes} bytes")
            name = f"{d.measurement}_{d.field}"
            checked.append((name, d.measurement, d.field, {**dict(d.labels), **node_labels}, int(d.type), d.help))
        sids = self.store.series_ids(node, checked)
        for d, sid, (name, measurement, field_, labels, _t, _h) in zip(defs, sids, checked, strict=True):
            session.series[d.id] = SeriesInfo(sid, name, measurement, field_, labels, d.type == pb.COUNTER,
                                              self.wants(name))
