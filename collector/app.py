"""The collector process: gRPC ingest, embedded store, alert engine, HTTP API, sinks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from alerts.engine import AlertEngine
from alerts.errors import AlertsError
from alerts.model import Alert, NodeStatus, Notifier
from alerts.notifiers import build_notifiers
from collector.config import CollectorConfig
from collector.errors import ConfigError
from collector.http import start_http
from collector.ingest import Decoded, GroupWriter, Ingestor, NodeInfo, StreamSession
from collector.server import TelemetryService
from collector.spool import Spool, build_sinks
from collector.storage.base import HealthSample
from collector.storage.sqlite import SqliteStore, StoreReader
from collector.view import CollectorCounters, NodeRow, Transition

log = logging.getLogger("fleetmon.collector")

T = TypeVar("T")


class Collector:
    """The running collector; also the read-only :class:`collector.view.CollectorView` of the HTTP API."""

    def __init__(self, cfg: CollectorConfig) -> None:
        self.cfg = cfg
        self.store = SqliteStore(cfg.data_dir / "fleetmon.sqlite", cfg.retention)
        self.writer = GroupWriter(self.store)
        self.notifiers: list[Notifier] = []
        self.engine: AlertEngine | None = None
        if cfg.alerting.notifiers:
            try:
                self.notifiers = build_notifiers(cfg.alerting.notifiers, "alerting.notifiers")
            except AlertsError as err:
                raise ConfigError(str(err)) from err
        if cfg.alerting.rules:
            try:
                self.engine = AlertEngine.from_files(
                    cfg.alerting.rules, self.notifiers, external_labels=cfg.alerting.external_labels,
                    resend_delay=cfg.alerting.resend_delay)
            except AlertsError as err:
                raise ConfigError(str(err)) from err
        self.sinks = build_sinks(cfg.sinks)
        self.spool = Spool(self.store, self.sinks, cfg.spool_max_bytes) if self.sinks else None
        engine = self.engine
        self.ingestor = Ingestor(self.store, self.writer, cfg.limits,
                                 wants=engine.wants if engine is not None else (lambda _n: False),
                                 spool=self.spool is not None, on_batch=self._on_batch, on_node=self._on_node,
                                 backpressure=self.spool.wait_for_room if self.spool else None)
        self.service = TelemetryService(self.ingestor)
        self._transitions: deque[Transition] = deque(maxlen=1000)
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetmon-read")
        self._reader: StoreReader | None = None
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._http: Any = None
        self.grpc_port = 0
        self.http_port = 0
        self._down: set[str] = set()

    # --- callbacks from the stream handler -----------------------------------------------
    def _on_batch(self, _session: StreamSession, decoded: Decoded) -> None:
        if self.engine is not None:
            ingest = self.engine.ingest
            # A sample stamped ahead of our clock (agent clock skew) would stay invisible to
            # the rules until we caught up; clamp it to now (the store keeps the agent's time).
            now = time.time()
            for block in decoded.live:
                ts = min(block.ts_s, now)
                for info, value in zip(block.series, block.values, strict=True):
                    ingest(info.name, info.labels, ts, value)
        for notice in decoded.events:
            for n in self.notifiers:
                n.send_event(notice)

    def _on_node(self, node: NodeInfo, online: bool) -> None:
        status = NodeStatus(node=node.node, online=online, ts=time.time(), labels=dict(node.labels))
        for n in self.notifiers:
            n.send_node_status(status)

    # --- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self.writer.start()
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", self.cfg.limits.max_message_bytes),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ])
        server.add_generic_rpc_handlers((self.service.handler(),))
        self.grpc_port = server.add_insecure_port(self.cfg.listen)
        if self.grpc_port == 0:
            raise ConfigError(f"listen: cannot bind {self.cfg.listen}")
        await server.start()
        self._server = server
        if self.engine is not None:
            await self.engine.start()
        else:
            for n in self.notifiers:
                await n.start()
        if self.spool is not None:
            await self.spool.start()
        if self.cfg.http:
            self._http, self.http_port = await start_http(self, self.cfg.http)
        self._tasks = [asyncio.create_task(self._evaluate_loop(), name="evaluate"),
                       asyncio.create_task(self._housekeeping(), name="housekeeping")]
        log.info("collector listening on %s (gRPC) and %s (HTTP), store %s", self.grpc_port, self.http_port,
                 self.store.path)

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful: stop taking streams, let in-flight batches commit, flush notifiers."""
        if self._server is not None:
            await self._server.stop(grace)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._http is not None:
            await self._http.cleanup()
        if self.spool is not None:
            await self.spool.stop()
        await self.writer.stop()
        self._reads.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
        if self.engine is not None:
            await self.engine.aclose()
        else:
            for n in self.notifiers:
                await n.aclose()
        self.store.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # --- periodic work -------------------------------------------------------------------
    def node_up(self, now: float) -> dict[str, bool]:
        """Streaming, and a batch arrived within the node timeout (or it connected just now)."""
        timeout = self.cfg.node_timeout
        return {n: (i.connected and now - max(i.last_batch_at, i.connected_at) < timeout)
                for n, i in self.ingestor.nodes.items()}

    async def _evaluate_loop(self) -> None:
        interval = self.cfg.alerting.evaluation_interval
        while True:
            await asyncio.sleep(interval - (time.time() % interval))
            now = time.time()
            self._rate.append((now, self.ingestor.counters.samples))
            if self.engine is None:
                continue
            for node, up in self.node_up(now).items():
                info = self.ingestor.nodes[node]
                if not up and node not in self._down:
                    # Like Prometheus for a vanished target: the node's series end now, so
                    # device rules stop evaluating stale values (NodeAgentSilent covers it).
                    self.engine.mark_stale({"node": node}, now)
                    self._down.add(node)
                elif up:
                    self._down.discard(node)
                labels = {**info.labels, "node": node}
                if self.engine.wants("fleetmon_node_up"):
                    self.engine.ingest("fleetmon_node_up", labels, now, 1.0 if up else 0.0)
                if self.engine.wants("fleetmon_node_clock_skew_seconds") and info.connected:
                    self.engine.ingest("fleetmon_node_clock_skew_seconds", labels, now, info.clock_skew)
            try:
                for alert in self.engine.evaluate(now):
                    # Snapshot: the engine keeps mutating its Alert objects as states move on.
                    self._transitions.append(Transition(now, dataclasses.replace(
                        alert, labels=dict(alert.labels), annotations=dict(alert.annotations))))
            except Exception as err:  # supervision boundary: one bad evaluation never stops the loop
                log.exception("rule evaluation failed: %s", err)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(300)
            try:
                n = await self.writer.run_in_thread(self.store.apply_retention)
                if n:
                    log.info("retention removed %d samples older than %.0fs", n, self.cfg.retention)
            except Exception as err:  # noqa: BLE001 - supervision boundary: retention retries next round
                log.error("store %s: retention failed: %s", self.store.path, err)

    # --- the read-only view (collector/view.py) ---------------------------------------------
    def nodes(self, now: float) -> list[NodeRow]:
        up = self.node_up(now)
        return [NodeRow(n, up[n], i.connected, dict(i.labels), i.samples, i.batches, i.last_batch_at, i.clock_skew,
                        i.agent_version, tuple(i.plugins)) for n, i in self.ingestor.nodes.items()]

    def counters(self) -> CollectorCounters:
        i = self.ingestor.counters
        return CollectorCounters(i.samples, i.duplicates, self.store.duplicate_samples, i.refused_batches,
                                 i.refused_streams)

    def active_alerts(self) -> list[Alert]:
        return self.engine.active() if self.engine is not None else []

    def transitions(self, since: float) -> list[Transition]:
        return [t for t in self._transitions if t.time > since]

    def health(self) -> list[HealthSample]:
        return self.spool.health() if self.spool is not None else []

    async def read_store(self, fn: Callable[[StoreReader], T]) -> T:
        def run() -> T:
            if self._reader is None:
                self._reader = StoreReader(self.store.path)
            return fn(self._reader)

        return await asyncio.get_running_loop().run_in_executor(self._reads, run)

    def samples_per_second(self) -> float:
        if len(self._rate) < 2:
            return 0.0
        recent = [r for r in self._rate if r[0] >= self._rate[-1][0] - 10] or list(self._rate)
        (t0, s0), (t1, s1) = recent[0], self._rate[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0
