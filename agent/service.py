"""The long-running agent: scheduler → batcher → WAL → transport."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

from agent.codec import SeriesTable, build_batch, unpack_values
from agent.config import AgentConfig
from agent.exposition import Exposition
from agent.model import Collection, Event, Metric, MetricType, Sample, Severity
from agent.scheduler import EventBuffer, Scheduler, build_runners, make_context
from agent.tls import ChannelSecurity
from agent.transport import Transport
from agent.wal import Wal
from proto import telemetry_pb2 as pb

log = logging.getLogger("fleetmon.agent")

WAL_BYTES = Metric("fleetmon_agent", "wal_bytes", MetricType.GAUGE, "Bytes of unacked batches in the WAL", "bytes")
WAL_BATCHES = Metric("fleetmon_agent", "wal_batches", MetricType.GAUGE, "Unacked batches in the WAL")
DROPPED = Metric("fleetmon_agent", "dropped_samples_total", MetricType.COUNTER,
                 "Samples dropped because the WAL was full (oldest first)")
SERIES = Metric("fleetmon_agent", "series", MetricType.GAUGE, "Series the agent has defined")
CONNECTED = Metric("fleetmon_agent", "connected", MetricType.GAUGE, "1 while streaming to a collector")


class Batcher:
    """Collects plugin output and writes one batch per ``batch_interval`` to the WAL."""

    def __init__(self, cfg: AgentConfig, wal: Wal, table: SeriesTable, transport: Transport | None) -> None:
        self.cfg = cfg
        self.wal = wal
        self.table = table
        self.transport = transport
        self._pending: list[tuple[float, list[Sample]]] = []
        self._events: list[Event] = []
        self._urgent = asyncio.Event()
        self.batches = 0
        self.samples = 0

    async def sink(self, ts: float, col: Collection) -> None:
        if col.samples:
            self._pending.append((ts, col.samples))
        if col.events:
            # A hardware event (an XID, a link down, a PSU fault) leaves now, with the samples
            # collected with it, instead of waiting for the next batch tick.
            self._events.extend(col.events)
            self._urgent.set()

    def self_metrics(self) -> list[Sample]:
        connected = self.transport.stats.connected if self.transport else False
        return [
            WAL_BYTES.sample(self.wal.bytes), WAL_BATCHES.sample(self.wal.count),
            DROPPED.sample(self.wal.dropped_samples), SERIES.sample(len(self.table)),
            CONNECTED.sample(1 if connected else 0),
        ]

    async def flush(self) -> int | None:
        if not self._pending and not self._events:
            return None
        items, events = self._pending, self._events
        self._pending, self._events = [], []
        items.append((time.time(), self.self_metrics()))
        batch, ids = build_batch(self.table, items, events)
        new_defs = self.table.take_new()
        n = sum(len(b.series_ids) for b in batch.blocks)
        seq = await asyncio.to_thread(self.wal.append, batch, ids, new_defs, n, int(time.time() * 1000))
        if self.cfg.audit_log is not None:
            await asyncio.to_thread(self._audit, batch)
        self.batches += 1
        self.samples += n
        if self.transport is not None:
            self.transport.notify()
        return seq

    def _audit(self, batch: pb.Batch) -> None:
        assert self.cfg.audit_log is not None
        lines = []
        for block in batch.blocks:
            for sid, value in zip(block.series_ids, unpack_values(block.values), strict=True):
                d = self.table.definition(sid)
                lines.append(json.dumps({"seq": batch.sequence, "name": f"{d.measurement}_{d.field}",
                                         "labels": dict(d.labels), "ts_ms": block.timestamp_ms, "value": value}))
        with open(self.cfg.audit_log, "a") as f:
            f.write("\n".join(lines) + "\n")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.batch_interval
        next_at = loop.time() + interval
        while True:
            with contextlib.suppress(asyncio.TimeoutError):  # the builtin TimeoutError only from 3.11
                await asyncio.wait_for(self._urgent.wait(), max(0.0, next_at - loop.time()))
            if self._urgent.is_set():
                self._urgent.clear()  # an early batch; the regular ticks keep their phase
            else:
                next_at += interval
            try:
                await self.flush()
            except Exception as err:  # noqa: BLE001 - supervision boundary: a WAL error must not stop collection
                log.error("node %s: could not write a batch to the WAL %s: %s", self.cfg.node, self.wal.path, err)


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
                              message=f"{dropped} samples were dropped while the collector was unreachable "
                                      f"(WAL full at {cfg.wal.max_bytes} bytes)",
                              action="raise wal.max_bytes or restore the collector sooner"))

    security = ChannelSecurity(cfg.tls, cfg.auth_token)
    security.check()
    transport = Transport(cfg.node, dict(cfg.labels), cfg.collectors, wal, table,
                          batch_interval=cfg.batch_interval, backfill_rate=cfg.wal.backfill_rate,
                          plugin_status=plugin_status, on_connected=on_connected, security=security,
                          failback=cfg.failback)
    batcher = Batcher(cfg, wal, table, transport)
    # Opt-in /metrics (agent/exposition.py): keeps each plugin's last collection on the way to the WAL.
    exposition = Exposition({**cfg.labels, "node": cfg.node}, cfg.prometheus.names, batcher.self_metrics)
    if cfg.prometheus.listen:
        await exposition.start(cfg.prometheus.listen)
    scheduler = Scheduler(runners, events, exposition.tee(batcher.sink) if cfg.prometheus.listen else batcher.sink)
    await scheduler.start()
    log.info("node %s: agent started with plugins %s, WAL %s, collectors %s", cfg.node,
             ",".join(r.name for r in runners if r.enabled), wal.path, ",".join(transport.order))
    tasks = [asyncio.create_task(batcher.run(), name="batcher"), asyncio.create_task(transport.run(), name="transport")]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await scheduler.stop()
        await exposition.close()
        with contextlib.suppress(Exception):
            await batcher.flush()
        wal.close()
    return 0
