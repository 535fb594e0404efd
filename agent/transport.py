"""gRPC client: one long-lived stream to a collector, fed from the WAL.

- Collectors are ordered by rendezvous hash of the node id (DESIGN.md, Scale); the agent uses
  the first that answers and fails over in order.
- Reconnect with exponential back-off and jitter; one log line per outage, one on recovery.
- A collector that vanished without closing the connection (host down, process paused) is
  noticed by HTTP/2 keepalive pings within 4 s (agent/rpc.py, ``KEEPALIVE``); one
  that does not finish the TLS handshake within ``CONNECT_TIMEOUT`` is skipped.
- While streaming to a collector that is not the first of its order, the agent watches the ones
  above it and moves back, staggered, when one is healthy again (agent/failback.py).
- After (re)connecting, new batches go first ("live"); the gap is backfilled oldest-first at
  ``backfill_rate`` batches per batch interval. Only acks delete batches from the WAL.
- Batches are sent as their WAL bytes plus the series definitions this stream has not seen
  yet, concatenated (protobuf merges concatenated messages): no re-serialisation.
- A batch just written is handed over in memory (:meth:`Transport.offer`); the WAL is read
  only for what memory does not hold (backfill, a gap after a reconnect). Acks are noted in
  memory and deleted by the WAL's next write, so a streaming second costs one WAL transaction.
  Every WAL call runs on the WAL's thread; a WAL that cannot be written (a full disk) costs a
  log line, never the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from agent import __version__
from agent.codec import SeriesTable
from agent.failback import FailbackConfig, MovingBack, watch
from agent.rpc import Call, RpcError
from agent.tls import ChannelSecurity
from agent.wal import ACKS_PER_DELETE, Wal, WalEntry, WalError, WalFull
from proto import telemetry_pb2 as pb

log = logging.getLogger("fleetmon.agent.transport")

METHOD = "/fleetmon.v1.Telemetry/Stream"
#: TCP, TLS and HTTP/2 set-up with a collector; a paused one accepts TCP (the kernel does) and
#: then answers nothing.
CONNECT_TIMEOUT = 5.0
#: Batch intervals after an ack before it gets a WAL transaction of its own (see _acks_pending).
ACK_TIMER_BATCHES = 5


def rendezvous_order(node: str, collectors: list[str]) -> list[str]:
    """Highest-random-weight order: each node picks its own first choice, stable under changes."""
    def weight(addr: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{node}|{addr}".encode()).digest()[:8], "big")

    return sorted(collectors, key=weight, reverse=True)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def frame_batch(batch_bytes: bytes) -> bytes:
    """AgentMessage{batch = <bytes>} without building the message: field 2, length-delimited."""
    return b"\x12" + _varint(len(batch_bytes)) + batch_bytes


class StreamClosed(Exception):
    """The collector ended the stream; the message carries its status."""


@dataclass
class TransportStats:
    connected: bool = False
    collector: str = ""
    sent_batches: int = 0
    acked_batches: int = 0
    refused_batches: int = 0
    reconnects: int = 0
    moves_back: int = 0
    last_ack_at: float = 0.0
    outage_started: float | None = None
    history: list[str] = field(default_factory=list)


class Transport:
    def __init__(self, node: str, labels: dict[str, str], collectors: list[str], wal: Wal, table: SeriesTable,
                 *, batch_interval: float, backfill_rate: float,
                 plugin_status: Callable[[], list[pb.PluginStatus]] = list,
                 on_connected: Callable[[], None] = lambda: None,
                 max_inflight: int = 256, security: ChannelSecurity | None = None,
                 failback: FailbackConfig | None = None) -> None:
        self.node = node
        self.labels = labels
        self.order = rendezvous_order(node, collectors)
        self.wal = wal
        self.table = table
        self.batch_interval = batch_interval
        self.backfill_rate = backfill_rate
        self.plugin_status = plugin_status
        self.on_connected = on_connected
        self.max_inflight = max_inflight
        self.security = security or ChannelSecurity(None, None)
        self.stats = TransportStats()
        self._wake = asyncio.Event()
        self.failback = failback or FailbackConfig()
        #: Set when a collector ranked above the current one is healthy again: (its index, drain deadline).
        self._leaving: tuple[int, float] | None = None
        #: Batches just written, newest last: sent from memory while the stream keeps up (a few
        #: only: a stream that falls behind reads the WAL, so memory stays small).
        self._live: deque[WalEntry] = deque(maxlen=8)
        self._acks_due: asyncio.TimerHandle | None = None
        self._ack_error = ""
        self._acks_task: asyncio.Task[None] | None = None

    def offer(self, entry: WalEntry) -> None:
        """A batch is in the WAL (this is it): send it."""
        if self.stats.connected:
            self._live.append(entry)
        self._wake.set()

    def notify(self) -> None:
        """A new batch is in the WAL (read it from there)."""
        self._wake.set()

    async def run(self) -> None:
        attempt = 0
        first = 0  # where a round starts: the top of the order, or the collector moved back to
        while True:
            for i in range(first, len(self.order)):
                addr = self.order[i]
                started = time.monotonic()
                try:
                    await self._session(i, addr)
                except asyncio.CancelledError:
                    raise
                except MovingBack as move:
                    first = move.index
                    self.stats.moves_back += 1
                    log.info("node %s: collector %s is healthy again; moving back to it from %s", self.node,
                             move.addr, addr)
                    break
                except (RpcError, StreamClosed, OSError, TimeoutError, WalError) as err:
                    self._lost(addr, self.security.explain(_describe(err)))
                if time.monotonic() - started > 10:
                    attempt = 0  # a session that lived resets the back-off
            else:
                first = 0
                attempt += 1
                delay = min(30.0, 0.5 * 2 ** min(attempt, 10))
                await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))  # equal jitter

    async def _watch_preferred(self, index: int) -> None:
        """While streaming to ``order[index]``: when one ranked above is healthy again, drain and leave."""
        target = await watch(self.order, index, self.security, self.failback)
        self._leaving = (target, time.monotonic() + self.failback.drain_timeout)
        self._wake.set()

    def _leave_now(self, inflight: set[int]) -> bool:
        """Moving back: True once nothing is in flight (or the drain took too long)."""
        assert self._leaving is not None
        return not inflight or time.monotonic() > self._leaving[1]

    def _lost(self, addr: str, why: str) -> None:
        was = self.stats.connected
        self.stats.connected = False
        if self.stats.outage_started is None:
            self.stats.outage_started = time.time()
            log.warning("node %s: collector %s unavailable (%s); buffering in the WAL and retrying with back-off",
                        self.node, addr, why)
        elif was:
            log.warning("node %s: stream to collector %s ended (%s)", self.node, addr, why)
        else:
            log.debug("node %s: collector %s still unavailable: %s", self.node, addr, why)

    def _hello(self) -> pb.Hello:
        return pb.Hello(node=self.node, labels=self.labels, agent_version=__version__,
                        plugins=self.plugin_status(), instance_id=_INSTANCE, sent_at_ms=int(time.time() * 1000),
                        wal_id=self.wal.wal_id, oldest_sequence=self.wal.oldest)

    async def _session(self, index: int, addr: str) -> None:
        conn = await self.security.connect(addr, CONNECT_TIMEOUT)
        try:
            call = conn.open(METHOD, self.security.metadata() or ())
            await call.write(pb.AgentMessage(hello=self._hello()).SerializeToString())
            first = _message(await asyncio.wait_for(call.read(), 15))
            if first is None or not first.HasField("welcome"):
                raise StreamClosed(call.status_text())
            await self._stream(index, addr, call, first.welcome.last_durable_sequence)
        finally:
            await conn.aclose()

    async def _stream(self, index: int, addr: str, call: Call, durable: int) -> None:
        """The stream is open and welcomed: note the collector's durable point, then pump."""
        try:
            await self.wal.run(self.wal.ack_upto, durable)
        except WalError as err:  # not deleted now: the next write or ack retries; nothing is lost
            log.warning("node %s: %s", self.node, err)
        if self.stats.outage_started is not None:
            log.warning("node %s: streaming to collector %s again after %.0fs", self.node, addr,
                        time.time() - self.stats.outage_started)
            self.stats.reconnects += 1
        self.stats.outage_started = None
        self.stats.connected, self.stats.collector = True, addr
        try:
            self.on_connected()
        except Exception as err:  # noqa: BLE001 - supervision boundary: a hook never ends the stream
            log.warning("node %s: after connecting: %s", self.node, err)
        self._leaving = None
        watcher = asyncio.create_task(self._watch_preferred(index)) if index > 0 else None
        try:
            await self._pump(call, durable)
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _pump(self, call: Call, durable: int) -> None:
        defined: set[int] = set()
        inflight: set[int] = set()
        live_from = self.wal.newest()  # everything newer is live; older unacked is backfill
        live_cursor = live_from
        back_cursor = durable
        tokens = 0.0
        last = time.monotonic()
        reader = asyncio.create_task(self._read_acks(call, inflight))
        reader.add_done_callback(lambda _task: self._wake.set())  # the stream ended: stop waiting
        try:
            while True:
                if reader.done():
                    reader.result()
                    raise StreamClosed(call.status_text())
                if self._leaving is not None:  # moving back: send nothing more, leave once drained
                    if self._leave_now(inflight):
                        raise MovingBack(self._leaving[0], self.order[self._leaving[0]])
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.1)
                    continue
                room = self.max_inflight - len(inflight)
                if room > 0 and live_cursor < self.wal.newest():
                    for e in await self._live_entries(live_cursor, room):
                        await self._send(call, e, defined, inflight)
                        live_cursor = e.seq
                now = time.monotonic()
                tokens = min(self.backfill_rate, tokens + (now - last) / self.batch_interval * self.backfill_rate)
                last = now
                room = self.max_inflight - len(inflight)
                if back_cursor < live_from and tokens >= 1 and room > 0:
                    n = int(min(tokens, room))
                    entries = await self.wal.run(self.wal.read, back_cursor, live_from, n)
                    if not entries:
                        back_cursor = live_from
                    for e in entries:
                        await self._send(call, e, defined, inflight)
                        back_cursor = e.seq
                        tokens -= 1
                self._wake.clear()
                if back_cursor < live_from:  # backfilling: come back when the next token is due
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.02)
                else:  # live: parked until a batch is offered or an ack frees room
                    await self._wake.wait()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, RpcError, StreamClosed):
                await reader
            call.cancel()

    async def _live_entries(self, after: int, limit: int) -> list[WalEntry]:
        """The batches after ``after``, from memory when it holds them all, else from the WAL."""
        live = self._live
        while live and live[0].seq <= after:
            live.popleft()
        if live and live[0].seq == after + 1:
            out: list[WalEntry] = []
            while live and len(out) < limit:
                out.append(live.popleft())
            return out
        return await self.wal.run(self.wal.read, after, self.wal.newest(), limit)

    async def _send(self, call: Call, e: WalEntry, defined: set[int],
                    inflight: set[int]) -> None:
        # Every series this agent knows is defined on this stream already (the steady state):
        # nothing to look up among the batch's ids.
        missing = [i for i in e.ids if i not in defined] if len(defined) < len(self.table) else []
        extra = pb.Batch(series=[self.table.definition(i) for i in missing], oldest_sequence=self.wal.oldest)
        await call.write(frame_batch(e.body + extra.SerializeToString()))
        defined.update(missing)
        inflight.add(e.seq)
        self.stats.sent_batches += 1

    async def _read_acks(self, call: Call, inflight: set[int]) -> None:
        while True:
            msg = _message(await call.read())
            if msg is None:
                return
            if not msg.HasField("ack"):
                continue
            ack = msg.ack
            if ack.refused:
                self.stats.refused_batches += 1
                log.error("node %s: collector refused batch %d: %s (dropped from the WAL)",
                          self.node, ack.sequence, ack.refused)
            self.wal.ack(ack.sequence)  # noted in memory; the WAL deletes it with its next write
            self._acks_pending()
            was_full = len(inflight) >= self.max_inflight
            inflight.discard(ack.sequence)
            self.stats.acked_batches += 1
            self.stats.last_ack_at = time.time()
            if was_full:
                self._wake.set()  # room to send again (a backfill comes back by itself, live sends are offered)

    def _acks_pending(self) -> None:
        """Make sure noted acks reach the file: many at once now, else after a few batch
        intervals (the batcher's next write deletes them long before: the timer is for an agent
        that stopped writing, and does not wake the loop every second)."""
        if self._acks_task is not None and not self._acks_task.done():
            return
        if self.wal.acks_waiting >= ACKS_PER_DELETE:
            self._acks_task = asyncio.create_task(self._apply_acks())
        elif self._acks_due is None:
            delay = ACK_TIMER_BATCHES * self.batch_interval
            self._acks_due = asyncio.get_running_loop().call_later(delay, self._acks_timer)

    def _acks_timer(self) -> None:
        self._acks_due = None
        if self.wal.acks_waiting and (self._acks_task is None or self._acks_task.done()):
            self._acks_task = asyncio.create_task(self._apply_acks())

    async def _apply_acks(self) -> None:
        try:
            await self.wal.run(self.wal.apply_acks)
        except WalFull:
            pass  # the WAL said "disk full" once; the acks stay noted and go with a later write
        except WalError as err:  # kept in memory; deleted by a later write
            if str(err) != self._ack_error:
                log.warning("node %s: %s", self.node, err)
            self._ack_error = str(err)
        else:
            self._ack_error = ""


def _message(body: bytes | None) -> pb.CollectorMessage | None:
    """A message from the collector, None at the end of the stream."""
    if body is None:
        return None
    try:
        return pb.CollectorMessage.FromString(body)
    except DecodeError as err:
        raise StreamClosed(f"undecodable message from the collector ({len(body)} bytes): {err}") from err


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__


_INSTANCE = hashlib.sha256(f"{time.time_ns()}{random.random()}".encode()).hexdigest()[:16]
