"""The long-running agent: scheduler → batcher → WAL → transport."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.attrfiles import HeldFiles
from agent.codec import SeriesTable, Stamped, build_batch, unpack_values
from agent.config import AgentConfig
from agent.model import Collection, Event, Metric, MetricType, Severity
from agent.scheduler import EventBuffer, Scheduler, Sink, build_runners, make_context
from agent.tls import ChannelSecurity
from agent.transport import Transport
from agent.wal import Wal, WalError, WalFull
from fleetmon_common import memory
from proto import telemetry_pb2 as pb

if TYPE_CHECKING:
    from agent.exposition import Exposition

log = logging.getLogger("fleetmon.agent")

WAL_BYTES = Metric("fleetmon_agent", "wal_bytes", MetricType.GAUGE, "Bytes of unacked batches in the WAL", "bytes")
WAL_BATCHES = Metric("fleetmon_agent", "wal_batches", MetricType.GAUGE, "Unacked batches in the WAL")
DROPPED = Metric("fleetmon_agent", "dropped_samples_total", MetricType.COUNTER,
                 "Samples dropped because the WAL was full (oldest first)")
SERIES = Metric("fleetmon_agent", "series", MetricType.GAUGE, "Series the agent has defined")
CONNECTED = Metric("fleetmon_agent", "connected", MetricType.GAUGE, "1 while streaming to a collector")
CPU = Metric("fleetmon_agent", "cpu_seconds_total", MetricType.COUNTER,
             "CPU time the agent process has used, user and system, all its threads", "seconds")
RESIDENT = Metric("fleetmon_agent", "resident_bytes", MetricType.GAUGE, "Resident memory of the agent process",
                  "bytes")


class Footprint:
    """What the agent itself costs its node, sent with every batch: the operator of 5,000 nodes
    sees it on each (``rate(fleetmon_agent_cpu_seconds_total[5m])``), not only on a benchmark.

    CPU from ``times()`` (the kernel's count for the whole process, as ``/proc/<pid>/stat``
    has it); resident memory from ``/proc/self/statm``, held open and read with one ``pread``.
    Where that file is absent (not Linux) the memory is omitted, not guessed."""

    def __init__(self) -> None:
        self._files = HeldFiles()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def add_to(self, col: Collection) -> None:
        t = os.times()
        col.add(CPU, t.user + t.system)
        text = self._files.text("/proc/self/statm")  # "size resident shared text lib data dt", in pages
        fields = text.split() if text else []
        if len(fields) > 1 and fields[1].isdigit():
            col.add(RESIDENT, int(fields[1]) * self._page)


class Batcher:
    """Collects plugin output and writes one batch per ``batch_interval`` to the WAL; a batch
    with events is written at once, so an XID reaches the collector without waiting.

    The batch is written when a collection cycle ends (:meth:`cycle_done`, called by the
    scheduler once every plugin of the cycle has delivered) whose time reaches the next
    wall-clock multiple of ``batch_interval``: at 1 Hz with a 1 s batch that is right after each
    cycle, with no timer of its own; plugins faster than the batch interval have several
    cycles in one batch.
    """

    def __init__(self, cfg: AgentConfig, wal: Wal, table: SeriesTable, transport: Transport | None) -> None:
        self.cfg = cfg
        self.wal = wal
        self.table = table
        self.transport = transport
        self._pending: list[Stamped] = []
        self._events: list[Event] = []
        self._wake = asyncio.Event()
        self._next_batch = 0.0  # wall-clock time from which a cycle's end writes a batch
        self._flushing = asyncio.Lock()  # cycles and events both write: one batch at a time, in order
        self._last_error = ""
        self.batches = 0
        self.samples = 0
        self.footprint = Footprint()

    async def sink(self, ts: float, col: Collection) -> None:
        if len(col):
            self._pending.append(Stamped(ts, col))
        if col.events:
            # A hardware event (an XID, a link down, a PSU fault) leaves now, with the samples
            # collected with it, instead of waiting for the next batch tick.
            self._events.extend(col.events)
            self._wake.set()

    async def cycle_done(self, ts: float) -> None:
        """The plugins of the cycle that started at ``ts`` have all delivered."""
        if ts < self._next_batch - 0.001:
            return
        interval = self.cfg.batch_interval
        self._next_batch = (ts // interval + 1) * interval
        await self._flush_logged()

    def self_metrics(self) -> Collection:
        connected = self.transport.stats.connected if self.transport else False
        col = Collection()
        col.add(WAL_BYTES, self.wal.bytes)
        col.add(WAL_BATCHES, self.wal.count)
        col.add(DROPPED, self.wal.dropped_samples)
        col.add(SERIES, len(self.table))
        col.add(CONNECTED, 1 if connected else 0)
        self.footprint.add_to(col)
        return col

    async def flush(self) -> int | None:
        """Write what is pending as one batch; its sequence, or None when there was nothing.

        Raises WalError (WalFull on a full disk) when the batch could not be stored; its series
        definitions are kept for the next batch, so no id is ever sent without its definition.
        """
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> int | None:
        if not self._pending and not self._events:
            return None
        items, events = self._pending, self._events
        self._pending, self._events = [], []
        items.append(Stamped(time.time(), self.self_metrics()))
        batch, ids = build_batch(self.table, items, events)
        new_defs = self.table.take_new()
        n = sum(len(b.series_ids) for b in batch.blocks)
        try:
            entry = await self.wal.run(self.wal.append, batch, ids, new_defs, n, int(time.time() * 1000))
        except WalError:
            self.table.restore_new(new_defs)
            raise
        if self.cfg.audit_log is not None:
            await asyncio.to_thread(self._audit, batch)
        self.batches += 1
        self.samples += n
        if self.transport is not None:
            self.transport.offer(entry)
        return entry.seq

    def _audit(self, batch: pb.Batch) -> None:
        assert self.cfg.audit_log is not None
        lines = []
        for block in batch.blocks:
            for sid, value in zip(block.series_ids, unpack_values(block.values), strict=True):
                s = self.table.series(sid)
                lines.append(json.dumps({"seq": batch.sequence, "name": s.metric.name,
                                         "labels": dict(s.key[2]), "ts_ms": block.timestamp_ms, "value": value}))
        with open(self.cfg.audit_log, "a") as f:
            f.write("\n".join(lines) + "\n")

    async def run(self) -> None:
        """Write a batch at once whenever an event comes (the cycles write the others)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except WalFull:
            pass  # the WAL said "disk full" once for the episode and counts what it drops
        except Exception as err:  # noqa: BLE001 - supervision boundary: a WAL error must not stop collection
            text = str(err)
            if text != self._last_error:  # once per reason, not once a second
                log.error("node %s: could not write a batch to the WAL %s: %s", self.cfg.node, self.wal.path, err)
            self._last_error = text
        else:
            self._last_error = ""


async def _settle_memory() -> None:
    """Once the agent has run a while (every plugin collected, batches sent), and every hour
    after: collect the garbage and give the C heap's free pages back to the system. Start-up
    (imports, discovery, the first batches) leaves freed memory behind in the heap that glibc
    keeps for reuse; an agent that runs for years at a steady size never needs it again."""
    await asyncio.sleep(30)
    while True:
        gc.collect()
        memory.trim()
        await asyncio.sleep(3600)


def wal_path(cfg: AgentConfig) -> Path:
    return cfg.wal.path if cfg.wal.path is not None else Path(cfg.data_dir) / "wal.sqlite"


async def run_agent(cfg: AgentConfig, only: list[str] | None = None) -> int:
    events = EventBuffer()
    ctx = make_context(cfg, events)
    runners = build_runners(cfg, ctx, only)
    wal = Wal(wal_path(cfg), cfg.wal.max_bytes)
    table = SeriesTable()
    table.load(wal.load_series())
    scheduler: Scheduler | None = None

    def plugin_status() -> list[pb.PluginStatus]:
        if scheduler is None:
            return []
        return [pb.PluginStatus(name=s.name, enabled=s.enabled, detail=s.detail) for s in scheduler.status()]

    def on_connected() -> None:
        dropped = wal.take_unreported_drops()
        if dropped:
            events.push(Event(kind="agent.wal_dropped", severity=Severity.WARNING,
                              message=f"{dropped} samples were dropped before they could be sent: the WAL "
                                      f"{wal.path} reached wal.max_bytes ({cfg.wal.max_bytes} bytes) or its disk "
                                      f"was full",
                              action="raise wal.max_bytes, free disk space, or restore the collector sooner"))

    security = ChannelSecurity(cfg.tls, cfg.auth_token)
    security.check()
    transport = Transport(cfg.node, dict(cfg.labels), cfg.collectors, wal, table,
                          batch_interval=cfg.batch_interval, backfill_rate=cfg.wal.backfill_rate,
                          plugin_status=plugin_status, on_connected=on_connected, security=security,
                          failback=cfg.failback)
    batcher = Batcher(cfg, wal, table, transport)
    sink: Sink = batcher.sink
    exposition: Exposition | None = None
    if cfg.prometheus.listen:
        # Opt-in /metrics: keeps each plugin's last collection on the way to the WAL (imported
        # only then).
        from agent.exposition import Exposition  # noqa: PLC0415

        exposition = Exposition({**cfg.labels, "node": cfg.node}, cfg.prometheus.names,
                                lambda: list(batcher.self_metrics().samples))
        await exposition.start(cfg.prometheus.listen)
        sink = exposition.tee(batcher.sink)
    scheduler = Scheduler(runners, events, sink, batcher.cycle_done)
    await scheduler.start()
    log.info("node %s: agent started with plugins %s, WAL %s, collectors %s", cfg.node,
             ",".join(r.name for r in runners if r.enabled), wal.path, ",".join(transport.order))
    tasks = [asyncio.create_task(batcher.run(), name="batcher"), asyncio.create_task(transport.run(), name="transport"),
             asyncio.create_task(_settle_memory(), name="memory")]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await scheduler.stop()
        if exposition is not None:
            await exposition.close()
        with contextlib.suppress(Exception):
            await batcher.flush()
        wal.close()
    return 0
