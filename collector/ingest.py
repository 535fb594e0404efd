"""Validate and decode agent batches, commit them durably, feed the live windows.

One :class:`Ingestor` serves every stream and owns every node's live and sequence state: the
gRPC server (collector/server.py) only frames messages and maps the exceptions raised here
to statuses. Its API is the stream's life cycle:

- :meth:`Ingestor.open_stream` checks a Hello and returns the stream's :class:`StreamSession`
  (with the sequence to put in the Welcome);
- :meth:`Ingestor.receive` takes one batch and returns its Ack (stored, duplicate or refused);
- :meth:`Ingestor.close_stream` ends it.

Batches from all streams are committed by one writer in groups (one store transaction for
whatever is waiting), so many agents cost few fsyncs; a stream is acked only after its
batch's transaction committed, and its node's sequence state moves only then
(collector/sequence.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from alerts.model import EventNotice
from collector.config import Limits
from collector.errors import IdentityError, IngestError, LimitError, StoreError, StreamSuperseded
from collector.rulefeed import NO_REF, RuleFeed
from collector.security import PeerIdentity
from collector.sequence import NodeState, SequenceLimits
from collector.seriesdefs import SeriesColumns, canonical_labels, definition_hashes, label_name_ok
from collector.storage.codec import Block
from collector.storage.embedded import EmbeddedStore, EventRow, NewSeries, SampleColumns, WriteItem
from fleetmon_common.logs import Throttled
from proto import telemetry_pb2 as pb

log = logging.getLogger("fleetmon.collector.ingest")

#: The wire's Severity enum by name: the one map (storage, notifications and the API use these names).
SEVERITY_NAMES: dict[int, str] = {pb.SEVERITY_INFO: "info", pb.SEVERITY_WARNING: "warning",
                                  pb.SEVERITY_CRITICAL: "critical"}


def severity_name(value: int) -> str:
    """An unknown severity (a newer agent) is a warning, never dropped."""
    return SEVERITY_NAMES.get(value, "warning")


class PluginState(NamedTuple):
    """A plugin as the agent's Hello reports it."""

    name: str
    enabled: bool
    detail: str


@dataclass
class NodeInfo:
    """What the collector knows of one node, live. Written only by the :class:`Ingestor`."""

    node: str
    labels: dict[str, str] = field(default_factory=dict)
    labels_json: str = "{}"
    state: NodeState | None = None
    known: bool = False  # the store holds something of it (else it is forgotten when its stream ends)
    stream: StreamSession | None = None  # the newest stream; older ones are superseded
    connected: bool = False
    last_batch_at: float = 0.0
    connected_at: float = 0.0
    samples: int = 0
    batches: int = 0
    clock_skew: float = 0.0
    agent_version: str = ""
    plugins: list[PluginState] = field(default_factory=list)
    streams: int = 0  # open streams (superseded ones included until they end)
    event_tokens: float = -1.0  # token bucket for limits.max_events_per_second (-1: full)
    event_tokens_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: What this node's streams defined (reused, unchecked, when a new stream sends the same
    #: definition bytes again: a reconnect storm), and the node labels they were resolved under.
    defs: SeriesColumns = field(default_factory=SeriesColumns)
    defs_labels: str = ""


@dataclass(slots=True)
class LiveBlock:
    """Samples for the rule engine: one timestamp, the engine's refs (NO_REF: no rule reads
    that series), the values."""

    ts_ms: int
    refs: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


@dataclass
class Decoded:
    item: WriteItem
    live: list[LiveBlock]
    events: list[EventNotice]
    samples: int
    #: Samples of the series ``watch`` selects (name, labels, ts s, value): the fleet roll-up.
    watched: list[tuple[str, dict[str, str], float, float]] = field(default_factory=list)


class StreamSession:
    """Per-stream state: the series this stream defined (ids are the agent's), and the
    oldest sequence the agent says its WAL still holds."""

    def __init__(self, node: NodeInfo, peer: str, oldest: int = 0,
                 interrupt: Callable[[], None] = lambda: None) -> None:
        self.node = node
        self.peer = peer
        self.who = f"node {node.node} ({peer})"
        self.cols = SeriesColumns()  # what this stream defined
        self.oldest = oldest
        self.welcome_sequence = 0
        self.announced = False  # the node was reported online for this stream
        self.interrupt = interrupt  # ends a read in progress on this stream (the server's)

    @property
    def superseded(self) -> bool:
        return self.node.stream is not self


@dataclass
class IngestCounters:
    samples: int = 0
    duplicates: int = 0
    refused_batches: int = 0
    refused_streams: int = 0
    #: (what, reason) -> count, what being "stream" or "batch" (fleetmon_collector_refusals_total).
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)


def check_hello(hello: pb.Hello, peer: str, limits: Limits) -> None:
    """IngestError naming what is wrong with a Hello (before anything is looked up for it)."""
    if not hello.node:
        raise IngestError(f"hello from {peer} has no node name", "hello")
    if len(hello.node) > 253 or any(not c.isprintable() for c in hello.node):
        raise IngestError(f"hello from {peer}: node name {hello.node[:64]!r} is not a valid node id", "hello")
    if len(hello.wal_id) > 128:
        raise IngestError(f"hello from {peer}: wal_id is longer than 128 characters", "hello")
    if len(hello.labels) > limits.max_labels:
        raise IngestError(f"node {hello.node}: {len(hello.labels)} identity labels, more than "
                          f"{limits.max_labels}", "max_labels")
    for k, v in hello.labels.items():
        if not label_name_ok(k) or k == "node":
            raise IngestError(f"node {hello.node}: identity label name {k[:64]!r} is not valid", "hello")
        if len(v.encode()) > limits.max_label_value_bytes:
            raise IngestError(f"node {hello.node}: identity label {k} is longer than "
                              f"{limits.max_label_value_bytes} bytes", "max_label_value_bytes")


class GroupWriter:
    """Commits WriteItems in groups from one thread; ``submit`` resolves when durable."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetmon-store")
        self._queue: list[tuple[WriteItem, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a store call on the store's thread (every store call blocks)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def submit(self, item: WriteItem) -> None:
        """Resolves once ``item`` is durable; StoreError if its group's commit failed."""
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
                    failure = err if isinstance(err, StoreError) else StoreError(f"store commit failed: {err}")
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(failure)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=True)


def _ignore_batch(_session: StreamSession, _decoded: Decoded) -> None:
    return None


def _ignore_node(_node: NodeInfo, _online: bool) -> None:
    return None


class Ingestor:
    """The one owner of node and sequence state (see the module doc for its API)."""

    def __init__(self, store: EmbeddedStore, writer: GroupWriter, limits: Limits, *,
                 feed: RuleFeed | None = None, watch: Callable[[str], bool] = lambda _n: False,
                 spool: bool = False,
                 on_batch: Callable[[StreamSession, Decoded], None] = _ignore_batch,
                 on_node: Callable[[NodeInfo, bool], None] = _ignore_node,
                 backpressure: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.writer = writer
        self.limits = limits
        self.sequence_limits = SequenceLimits(limits.max_sequence_jump, limits.max_sequence_ranges)
        self.feed = feed
        self.watch = watch
        self.watched: dict[int, tuple[str, dict[str, str]]] = {}  # store id -> series, of watched names
        self._watched_ids = np.zeros(0, np.int64)
        self.spool = spool
        self.on_batch = on_batch
        self.on_node = on_node
        self.backpressure = backpressure
        self.nodes: dict[str, NodeInfo] = {}
        self.counters = IngestCounters()
        self.streams = 0
        #: What a remote party can make the collector log is rate-limited per reason (issue 12:
        #: hostile input once produced 10.7 MB of logs in 3 minutes).
        self._log = Throttled(log, burst=10, per=60.0)

    # --- the stream life cycle -----------------------------------------------------------------
    def stream_refused(self, who: str, why: str, reason: str) -> None:
        """A stream ended refused (framing, identity, a limit...): counted and logged, rate-limited."""
        self.counters.refused_streams += 1
        self.counters.refusals["stream", reason] += 1
        self._log.warning(f"stream:{reason}", "refused stream from %s: %s", who, why)

    async def open_stream(self, hello: pb.Hello, peer: str, identity: PeerIdentity | None = None, *,
                          interrupt: Callable[[], None] = lambda: None) -> StreamSession:
        """Check the Hello against the peer's identity and load the node's durable state; the
        returned session supersedes any older stream of the same node (``interrupt`` ends this
        one's reads when a newer one does the same). IngestError: refuse the stream."""
        self.check_hello(hello, peer)
        if identity is not None and not identity.allows(hello.node):
            names = ", ".join(sorted(identity.names or ())) or "none"
            raise IdentityError(f"hello from {peer} claims node {hello.node[:253]!r}, but its client certificate "
                                f"names {names} (subjectAltName DNS); each node needs its own certificate")
        node = self._node(hello.node)
        if node.streams >= self.limits.max_streams_per_node:
            raise LimitError(f"node {hello.node} has {node.streams} open streams (limits.max_streams_per_node)",
                             "max_streams_per_node")
        session = StreamSession(node, peer, hello.oldest_sequence, interrupt)
        older, node.stream = node.stream, session  # a newer stream for the same node supersedes the older one
        node.streams += 1
        self.streams += 1
        if older is not None:
            older.interrupt()
        try:
            async with node.lock:
                state = await self.writer.run_in_thread(self.store.load_node, hello.node)
                node.known = node.known or bool(state.wal_id)
                if state.wal_id != hello.wal_id:
                    if state.wal_id:
                        log.warning("node %s: new agent WAL %s (was %s); its sequences start again",
                                    hello.node, hello.wal_id[:64], state.wal_id)
                    state = NodeState.new_wal(hello.node, hello.wal_id)
                node.state = state
                node.labels = dict(hello.labels)
                node.labels_json = json.dumps(node.labels, sort_keys=True)
                session.welcome_sequence = state.contiguous
        except BaseException:
            self.close_stream(session)
            raise
        node.connected = True
        node.connected_at = time.time()
        node.agent_version = hello.agent_version[:128]
        node.plugins = [PluginState(p.name[:128], p.enabled, p.detail[:1024]) for p in hello.plugins[:256]]
        if hello.sent_at_ms:
            node.clock_skew = hello.sent_at_ms / 1000 - time.time()
        self._log.info("connect", "node %s connected from %s (agent %s, durable up to %d)", hello.node, peer,
                        node.agent_version, state.contiguous)
        return session

    def _take_events(self, node: NodeInfo, n: int, now: float) -> None:
        """Token bucket of limits.max_events_per_second per node; LimitError when it is empty."""
        rate, burst = self.limits.max_events_per_second, float(self.limits.max_event_burst)
        tokens = burst if node.event_tokens < 0 else min(burst, node.event_tokens + (now - node.event_tokens_at) * rate)
        node.event_tokens_at = now
        if tokens < n:
            node.event_tokens = tokens
            raise LimitError(f"node {node.node} sent {n} events faster than limits.max_events_per_second "
                             f"({rate:g}/s, burst {burst:g}); the agent resends them after its back-off",
                             "max_events_per_second")
        node.event_tokens = tokens - n

    async def receive(self, session: StreamSession, batch: pb.Batch) -> pb.Ack:
        """Store one batch (or recognise a replay, or refuse it) and say so in the Ack.

        StreamSuperseded: a newer stream of the node took over. StoreError: the batch was valid
        but could not be made durable; it is not acked (the agent keeps and resends it)."""
        node = session.node
        seq = batch.sequence
        async with node.lock:
            if session.superseded:
                raise StreamSuperseded("superseded by a newer stream from the same node")
            state = node.state
            assert state is not None
            session.oldest = max(session.oldest, batch.oldest_sequence)
            if seq and state.has(seq):
                self.counters.duplicates += 1
                # Still learn its definitions: later batches on this stream may use them.
                if batch.series:
                    with contextlib.suppress(IngestError):
                        await self.writer.run_in_thread(self.define, session, batch.series)
                return pb.Ack(sequence=seq, contiguous=state.contiguous)
            try:
                state.check(seq, self.sequence_limits)
            except IngestError as err:  # a bogus sequence: refused, and not settled
                return self._refused(session, seq, err)
            now = time.time()
            try:
                if len(batch.events) > self.limits.max_event_burst:
                    raise IngestError(f"{len(batch.events)} events in one batch, more than limits.max_event_burst "
                                      f"({self.limits.max_event_burst})", "max_event_burst")
                if batch.series:
                    # New series are inserted in one transaction with an fsync: do it on the
                    # store's thread, not on the event loop that serves every other stream.
                    await self.writer.run_in_thread(self.define, session, batch.series)
                decoded = self.decode(session, batch, now)
            except IngestError as err:
                await self._settle_refused(session, seq)
                return self._refused(session, seq, err)
            if batch.events:
                self._take_events(node, len(batch.events), now)  # LimitError: the stream ends, nothing acked
            if self.backpressure is not None:
                await self.backpressure()
            await self.writer.submit(decoded.item)
            state.apply(decoded.item.update)
            node.known = True
            node.samples += decoded.samples
            node.batches += 1
            node.last_batch_at = time.time()
            self.counters.samples += decoded.samples
        if not session.announced and not session.superseded:
            session.announced = True
            self.on_node(node, True)
        self.on_batch(session, decoded)
        return pb.Ack(sequence=seq, contiguous=state.contiguous)

    def _refused(self, session: StreamSession, seq: int, err: IngestError) -> pb.Ack:
        self.counters.refused_batches += 1
        self.counters.refusals["batch", err.reason] += 1
        self._log.warning(f"batch:{err.reason}", "%s: refused batch %d: %s", session.who, seq, err)
        state = session.node.state
        assert state is not None
        return pb.Ack(sequence=seq, contiguous=state.contiguous, refused=str(err))

    async def _settle_refused(self, session: StreamSession, seq: int) -> None:
        """A batch refused for its content will never come back acceptable (the agent drops
        it): settle its sequence so that ``contiguous`` does not wait for it."""
        node = session.node
        state = node.state
        assert state is not None
        try:
            update = state.plan(seq, session.oldest, self.sequence_limits)
        except IngestError:
            return  # too many gaps already: leave this one open
        await self.writer.submit(WriteItem(update, node.labels_json, SampleColumns(), []))
        state.apply(update)

    def close_stream(self, session: StreamSession) -> None:
        """The stream ended (any way). A node that never stored anything is forgotten."""
        self.streams -= 1
        node = session.node
        node.streams -= 1
        if not session.superseded:
            node.stream = None
            node.connected = False
            if session.announced:
                self.on_node(node, False)
            self._log.info("disconnect", "node %s disconnected", node.node)
        if node.stream is None and node.streams == 0 and not node.known and self.nodes.get(node.node) is node:
            # Said Hello, stored nothing, ever: not a node to list as down (phantoms, probes).
            del self.nodes[node.node]

    def _node(self, name: str) -> NodeInfo:
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name)
        return info

    # --- validation and decoding -----------------------------------------------------------------
    def check_hello(self, hello: pb.Hello, peer: str) -> None:
        check_hello(hello, peer, self.limits)

    def decode(self, session: StreamSession, batch: pb.Batch, now: float) -> Decoded:
        """Validate and resolve one batch whose series are defined (``define``); IngestError
        refuses it (the stream goes on)."""
        node = session.node
        state = node.state
        assert state is not None
        lo = (now - self.limits.max_past_seconds) * 1000
        hi = (now + self.limits.max_future_seconds) * 1000
        blocks: list[Block] = []
        live: list[LiveBlock] = []
        nsamples = 0
        cols = session.cols
        for block in batch.blocks:
            ts = block.timestamp_ms
            if not lo <= ts <= hi:
                off = ts / 1000 - now
                raise IngestError(f"block timestamp {ts} is {abs(off):.0f}s in the "
                                  f"{'future' if off > 0 else 'past'}, outside the accepted window (agent clock?)",
                                  "timestamp")
            ids = np.array(block.series_ids, np.int64)
            if len(block.values) != 8 * len(ids):
                raise IngestError(f"block at {ts}: {len(ids)} series ids but {len(block.values)} value bytes "
                                  "(need 8 per id)", "values")
            if not len(ids):
                continue
            # By column: one lookup for the block's ids, one check of its values.
            values = np.frombuffer(block.values, "<f8")
            pos, known = cols.find(ids)
            if not known.all():
                bad = int(ids[np.argmin(known)])
                raise IngestError(f"block at {ts} uses series id {bad}, never defined on this stream",
                                  "unknown_series")
            counters = cols.counters[pos]
            with np.errstate(invalid="ignore"):
                wrong = np.isnan(values) | (counters & (np.isinf(values) | (values < 0)))
            if wrong.any():
                i = int(np.argmax(wrong))
                raise IngestError(f"series {self._describe(int(cols.sids[pos[i]]), int(ids[i]))}: value "
                                  f"{float(values[i])} is not allowed for a {'counter' if counters[i] else 'gauge'}",
                                  "values")
            blocks.append(Block(ts, cols.sids[pos], values))
            nsamples += len(ids)
            refs = cols.refs[pos]
            if (refs != NO_REF).any():
                live.append(LiveBlock(ts, refs, values))
        rows: list[EventRow] = []
        notices: list[EventNotice] = []
        for e in batch.events:
            if not e.kind or len(e.kind) > 128:
                raise IngestError("event without a valid kind", "events")
            if not lo <= e.timestamp_ms <= hi:
                off = e.timestamp_ms / 1000 - now
                raise IngestError(f"event {e.kind[:128]} is stamped {abs(off):.0f}s in the "
                                  f"{'future' if off > 0 else 'past'}, outside the window samples are accepted in "
                                  "(agent clock?)", "timestamp")
            if len(e.labels) > self.limits.max_labels:
                raise IngestError(f"event {e.kind}: {len(e.labels)} labels, more than {self.limits.max_labels}",
                                  "max_labels")
            for k, v in e.labels.items():
                if not label_name_ok(k) or len(v.encode()) > self.limits.max_label_value_bytes:
                    raise IngestError(f"event {e.kind}: label {k[:64]!r} is not valid or its value is longer than "
                                      f"{self.limits.max_label_value_bytes} bytes", "events")
            lab = {**node.labels, **e.labels, "node": node.node}  # see define(): own labels win but node
            severity = severity_name(e.severity)
            message, action = e.message[:4096], e.action[:1024]
            rows.append(EventRow(e.timestamp_ms, e.kind, severity, message, action, json.dumps(lab, sort_keys=True)))
            notices.append(EventNotice(node=node.node, kind=e.kind, severity=severity, message=message,
                                       ts=e.timestamp_ms / 1000, labels=lab, action=action))
        update = state.plan(batch.sequence, session.oldest, self.sequence_limits)
        # The store's append log is the sinks' spool too: no separate spool body.
        item = WriteItem(update, node.labels_json, SampleColumns(), rows, blocks=blocks)
        return Decoded(item, live, notices, nsamples, self._watched_samples(blocks))

    def _watched_samples(self, blocks: Sequence[Block]) -> list[tuple[str, dict[str, str], float, float]]:
        if not self.watched:
            return []
        if len(self._watched_ids) != len(self.watched):
            self._watched_ids = np.array(sorted(self.watched), np.int64)
        out = []
        watched = self._watched_ids
        for b in blocks:
            # A binary search per sample in the sorted watched ids: np.isin would sort the
            # block and the fleet's watched ids on every batch (a quarter of ingest at 2,500 nodes).
            pos = np.minimum(np.searchsorted(watched, b.sids), len(watched) - 1)
            hit = np.flatnonzero(watched[pos] == b.sids)
            for i in hit.tolist():
                name, labels = self.watched[int(b.sids[i])]
                out.append((name, labels, b.ts_ms / 1000, float(b.values[i])))
        return out

    def _describe(self, sid: int, agent_id: int) -> str:
        """A series by name and labels for an error message (its id if the store cannot say)."""
        try:
            meta = self.store.series_meta(sid)
        except (KeyError, StoreError):
            return f"id {agent_id}"
        return f"{meta.measurement}_{meta.field} {dict(meta.tags)}"

    def define(self, session: StreamSession, defs: Sequence[pb.SeriesDef]) -> None:
        """Check and register a batch's series definitions. A definition this node sent before,
        byte for byte, is reused as it was resolved; new ones are validated and resolved in bulk
        (collector/seriesdefs.py)."""
        if not defs:
            return
        info = session.node
        node = info.node
        node_labels = {**info.labels, "node": node}
        sig = canonical_labels(node_labels)
        if info.defs_labels != sig:  # identity labels changed: every series is another one
            info.defs, info.defs_labels = SeriesColumns(), sig
        lim = self.limits
        if len(defs) > lim.max_series_per_node:
            raise IngestError(f"node {node}: {len(defs)} series defined in one batch, more than "
                              f"limits.max_series_per_node ({lim.max_series_per_node})", "max_series_per_node")
        ids = np.fromiter((d.id for d in defs), np.int64, len(defs))
        hashes = definition_hashes(defs)
        fresh = np.flatnonzero(~info.defs.same(ids, hashes))
        if len(fresh):
            checked: list[NewSeries] = []
            for i in fresh.tolist():
                d = defs[i]
                if not d.measurement or not d.field or len(d.measurement) + len(d.field) > 256:
                    raise IngestError(f"series id {d.id} has no measurement or field, or they are too long",
                                      "series")
                lab = dict(d.labels)
                if len(lab) > lim.max_labels:
                    raise IngestError(f"series {d.measurement}_{d.field} has {len(lab)} labels, more than "
                                      f"{lim.max_labels} (label bomb?)", "max_labels")
                for k, v in lab.items():
                    if not label_name_ok(k):
                        raise IngestError(f"series {d.measurement}_{d.field}: label name {k[:64]!r} is not valid",
                                          "series")
                    if len(v) * 4 > lim.max_label_value_bytes and len(v.encode()) > lim.max_label_value_bytes:
                        raise IngestError(f"series {d.measurement}_{d.field}: label {k} is longer than "
                                          f"{lim.max_label_value_bytes} bytes", "max_label_value_bytes")
                # The series' own labels win over the node's identity labels of the same name (a
                # management node polling another rack's PDU labels it with that rack); `node` is the
                # stream's identity, never a series'.
                lab = {**info.labels, **lab, "node": node}
                checked.append(NewSeries(f"{d.measurement}_{d.field}", d.measurement, d.field, lab, int(d.type),
                                         d.help[:1024]))
            new = sum(1 for sid in self.store.known_series(checked) if sid is None)
            if new:
                have = self.store.node_series_count(node)
                if have + new > lim.max_series_per_node:
                    raise IngestError(f"node {node} has {have} series and this batch defines {new} more: over "
                                      f"limits.max_series_per_node ({lim.max_series_per_node}); label bomb? Raise "
                                      "the limit if this is real", "max_series_per_node")
                total = self.store.series_count()
                if total + new > lim.max_series_total:
                    raise IngestError(f"the store holds {total} series; {new} more from node {node} would pass "
                                      f"limits.max_series_total ({lim.max_series_total})", "max_series_total")
            sids = np.array(self.store.series_ids(node, checked), np.int64)
            feed, watch = self.feed, self.watch
            refs = np.array([feed.ref(c.name, c.labels) for c in checked] if feed is not None
                            else [NO_REF] * len(checked), np.int64)
            watched = np.array([watch(c.name) for c in checked], bool)
            for c, sid, w in zip(checked, sids.tolist(), watched.tolist(), strict=True):
                if w:
                    self.watched[sid] = (c.name, c.labels)
            counters = np.array([defs[i].type == pb.COUNTER for i in fresh.tolist()], bool)
            info.defs.merge(ids[fresh], hashes[fresh], sids, refs, counters)
        if not len(session.cols) and len(ids) == len(info.defs) and np.array_equal(np.sort(ids), info.defs.ids):
            # The usual first batch of a stream: it defines all the node has. Share the columns
            # (half the memory at 2,500 nodes); later definitions on this stream go to both alike.
            session.cols = info.defs
        elif session.cols is not info.defs:
            session.cols.merge(ids, *info.defs.rows(ids))
