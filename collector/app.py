"""The collector process: gRPC ingest, embedded store, alert engine, HTTP API, sinks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from alerts.engine import AlertEngine, GroupHealth
from alerts.errors import AlertsError
from alerts.model import Alert, AlertState, NodeStatus, Notifier
from alerts.notifiers import build_notifiers
from alerts.notifiers.base import NotifierBase, NotifierHealth
from alerts.rulefile import AlertingRule, RuleGroup, load_files
from alerts.rules import default_rule_files
from collector.alertstate import AlertStateKeeper
from collector.config import CollectorConfig, is_loopback
from collector.errors import ConfigError
from collector.fleet import Accelerator, Accelerators
from collector.handover import Handover, sources_for
from collector.history import EmbeddedHistory, HistoryReader
from collector.http import start_http
from collector.ingest import Decoded, GroupWriter, Ingestor, NodeInfo, StreamSession
from collector.liveness import NodeLiveness
from collector.promquery import PromQueryClient, PromQuerySync
from collector.remote_read import FallbackHistory, RemoteHistory
from collector.rulefeed import RuleFeed
from collector.rulesproc import read_group_health, read_health, read_notifier_health, read_released, read_state
from collector.security import Authenticator, ReloadingSslContext, grpc_server_credentials
from collector.server import TelemetryService, health_handler
from collector.spool import Spool, build_sinks
from collector.storage.base import HealthSample
from collector.storage.compactor import CompactorThread
from collector.storage.logreader import LogStoreReader
from collector.storage.logstore import open_log_store
from collector.storage.remote_write import RemoteWriteSink
from collector.view import CollectorCounters, NodeRow, Transition

log = logging.getLogger("fleetmon.collector")

T = TypeVar("T")


class Collector:
    """The running collector; also the read-only :class:`collector.view.CollectorView` of the HTTP API."""

    def __init__(self, cfg: CollectorConfig) -> None:
        self.cfg = cfg
        self.store = open_log_store(cfg.data_dir, cfg.retention, check=cfg.store_check, on_corrupt=cfg.corrupt_store)
        self.writer = GroupWriter(self.store)
        self.notifiers: list[Notifier] = []
        self.engine: AlertEngine | None = None
        if cfg.alerting.notifiers:
            try:
                self.notifiers = build_notifiers(cfg.alerting.notifiers, "alerting.notifiers")
            except AlertsError as err:
                raise ConfigError(str(err)) from err
        rules = default_rule_files() if cfg.alerting.rules is None else cfg.alerting.rules
        #: Rules (and their notifiers) in a child process fed by the append log (collector/rulesproc.py).
        self.rules_process = bool(rules) and cfg.alerting.process
        self._rule_groups: list[RuleGroup] = []
        if self.rules_process:
            self.notifiers = []  # they live in the rules process (built here once: config errors)
            try:
                self._rule_groups = load_files(rules)  # for the API's rule metadata (and config errors)
            except AlertsError as err:
                raise ConfigError(str(err)) from err
        if rules and not self.rules_process:
            try:
                self.engine = AlertEngine.from_files(
                    rules, self.notifiers, external_labels=cfg.alerting.external_labels,
                    resend_delay=cfg.alerting.resend_delay, for_grace_period=cfg.alerting.for_grace_period,
                    for_outage_tolerance=cfg.alerting.for_outage_tolerance)
            except AlertsError as err:
                raise ConfigError(str(err)) from err
        self.sinks = build_sinks(cfg.sinks)
        #: The shared TSDB's query API (cfg.query), when there is one.
        self.query = PromQueryClient(cfg.query) if cfg.query.enabled else None
        # Alert state across restarts and moves (collector/handover.py): kept after each
        # evaluation, locally and in the TSDB through the remote-write sinks.
        self.keeper: AlertStateKeeper | None = None
        self.handover: Handover | None = None
        if self.engine is not None:
            tolerance = cfg.alerting.for_outage_tolerance
            remote_write = [s.config for s in self.sinks if isinstance(s, RemoteWriteSink)]
            self.keeper = AlertStateKeeper(cfg.data_dir, remote_write, tolerance)
            sources, tsdb = sources_for(self.keeper, self.read_store, self.query, tolerance)
            self.handover = Handover(self.engine, self.keeper, sources, hold=cfg.node_timeout, tsdb=tsdb)
        self._last_sample_ms: dict[str, int] = {}
        self._sync_query: PromQuerySync | None = None
        self.store.set_sinks([s.name for s in self.sinks])
        self.spool = Spool(self.store, self.sinks, cfg.spool_max_bytes) if self.sinks else None
        self.feed = RuleFeed(self.engine) if self.engine is not None else None
        # gpu_up always reaches _on_batch, for the node health roll-up (collector/fleet.py).
        self.fleet = Accelerators()
        self.ingestor = Ingestor(self.store, self.writer, cfg.limits, feed=self.feed, watch=self.fleet.wants,
                                 spool=self.spool is not None, on_batch=self._on_batch, on_node=self._on_node,
                                 backpressure=self.spool.wait_for_room if self.spool else None)
        self.service = TelemetryService(self.ingestor, Authenticator(
            token=cfg.auth_token, mutual_tls=cfg.tls.client_ca is not None))
        # Read the certificates now: a bad file is a config error at start, naming the key.
        self._grpc_creds = grpc_server_credentials(cfg.tls) if cfg.tls.enabled else None
        http_tls = cfg.http_auth.tls
        self._http_ssl = ReloadingSslContext(http_tls, "http_auth.tls") if cfg.http and http_tls.enabled else None
        self._transitions: deque[Transition] = deque(maxlen=1000)
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetmon-read")
        self._reader: LogStoreReader | None = None
        self._compactor: subprocess.Popen[bytes] | CompactorThread | None = None
        self._rules: subprocess.Popen[bytes] | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._http: Any = None
        self.grpc_port = 0
        self.http_port = 0
        self._liveness = NodeLiveness(cfg.node_timeout)
        self._serving = False  # the gRPC health check's answer: taking streams

    # --- callbacks from the stream handler -----------------------------------------------
    def _on_batch(self, session: StreamSession, decoded: Decoded) -> None:
        fleet = self.fleet
        newest = newest_sample_ms(decoded)
        if newest > self._last_sample_ms.get(session.node.node, 0):  # what the hand-over compares the TSDB's with
            self._last_sample_ms[session.node.node] = newest
        for _name, labels, ts_s, value in decoded.watched:
            fleet.update(session.node.node, labels, ts_s, value)
        if self.feed is not None and self.engine is not None:
            now = time.time()
            for block in decoded.live:
                self.feed.block(block.refs, block.ts_ms, block.values, now)
            if decoded.events:
                # A hardware event: the rules that read what came with it run now, not at the next tick.
                names = self.feed.names(r for block in decoded.live for r in block.refs.tolist())
                try:
                    self._record(now, self.engine.evaluate_urgent(now, names))
                except Exception as err:  # supervision boundary: evaluation must never fail a batch
                    log.exception("urgent rule evaluation failed: %s", err)
        for notice in decoded.events:
            for n in self.notifiers:
                n.send_event(notice)

    def _on_node(self, node: NodeInfo, online: bool) -> None:
        status = NodeStatus(node=node.node, online=online, ts=time.time(), labels=dict(node.labels))
        if self.handover is not None:
            if online:
                self.handover.online(node.node, status.ts)
            else:
                self.handover.offline(node.node, self._last_sample_ms.get(node.node, 0), status.ts)
        if self.rules_process:
            # The rules process learns it from the log, in order with the node's batches.
            task = asyncio.ensure_future(self.writer.run_in_thread(
                self.store.note_node, node.node, online, status.labels, node.clock_skew))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        for n in self.notifiers:
            n.send_node_status(status)

    # --- life cycle -------------------------------------------------------------------------
    def _start_compactor(self) -> None:
        """Compaction runs beside ingest: a process of its own (another core) unless configured
        as a thread."""
        if self.cfg.compactor == "thread":
            thread = CompactorThread(self.cfg.data_dir, self.cfg.retention)
            thread.start()
            self._compactor = thread
            return
        self._compactor = subprocess.Popen(
            [sys.executable, "-m", "collector.storage.compactor", "--data-dir", str(self.cfg.data_dir),
             "--retention", str(self.cfg.retention), "--parent", str(os.getpid())])

    def _stop_compactor(self) -> None:
        c, self._compactor = self._compactor, None
        if isinstance(c, CompactorThread):
            c.stop()
        elif c is not None:
            _stop_child(c)

    def _start_rules(self) -> None:
        body = json.dumps(dataclasses.asdict(self.cfg), default=str).encode()
        # From the log's end as it is now: what it holds already is history (the series defined
        # in it, the process reads from the store).
        self._rules = subprocess.Popen([sys.executable, "-m", "collector.rulesproc", "--config-json", "-",
                                        "--parent", str(os.getpid()), "--start", str(self.store.log.end())],
                                       stdin=subprocess.PIPE)
        assert self._rules.stdin is not None
        self._rules.stdin.write(body)  # not on the command line: notifier settings may hold secrets
        self._rules.stdin.close()

    async def start(self) -> None:
        self._start_compactor()
        if self.rules_process:
            self._start_rules()
        self.writer.start()
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", self.cfg.limits.max_message_bytes),
            ("grpc.keepalive_permit_without_calls", 1),
            # Agents ping after 2 s of silence to notice a dead collector host within 5 s (agent/rpc.py,
            # KEEPALIVE); pings closer than this are strikes, and two strikes end the connection.
            ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
            # Find agents that vanished without closing (a half-open stream holds a node's slot)
            # within 15 s, pinging between acks however long an agent's batch interval.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.ping_timeout_ms", 5_000),  # what gRPC core >= 1.5x times an unanswered ping with
            ("grpc.http2.max_pings_without_data", 0),
            # No bandwidth-delay probing: an agent's stream carries a batch a second (a backfill, 20 a
            # second), far below what the initial window moves per round trip, and each probe is a
            # PING the agent must wake to answer: a quarter of the wake-ups the collector cost it.
            ("grpc.http2.bdp_probe", 0),
        ])
        server.add_generic_rpc_handlers((self.service.handler(), health_handler(lambda: self._serving)))
        if self._grpc_creds is not None:
            self.grpc_port = server.add_secure_port(self.cfg.listen, self._grpc_creds)
        else:
            self.grpc_port = server.add_insecure_port(self.cfg.listen)
        if self.grpc_port == 0:
            raise ConfigError(f"listen: cannot bind {self.cfg.listen}")
        self._warn_insecure()
        await server.start()
        self._server = server
        self._serving = True
        if self.engine is not None:
            await self.engine.start()
        else:
            for n in self.notifiers:
                await n.start()
        if self.keeper is not None and self.handover is not None:
            await self.keeper.start()
            await self.handover.start()
        if self.spool is not None:
            await self.spool.start()
        if self.cfg.http:
            self._http, self.http_port = await start_http(
                self, self.cfg.http, token=self.cfg.http_auth.token,
                ssl_context=self._http_ssl.context if self._http_ssl is not None else None)
        self._tasks = [asyncio.create_task(self._evaluate_loop(), name="evaluate"),
                       asyncio.create_task(self._housekeeping(), name="housekeeping")]
        log.info("collector listening on %s (gRPC) and %s (HTTP), store %s", self.grpc_port, self.http_port,
                 self.store.path)

    def _warn_insecure(self) -> None:
        cfg = self.cfg
        if not is_loopback(cfg.listen) and not (cfg.tls.client_ca or cfg.auth_token):
            log.warning("INSECURE: gRPC on %s takes agents without authentication (insecure: true): anyone who "
                        "reaches this port can write any node's data and cut its stream. Set tls with client_ca "
                        "(fleetmon certs) or auth_token.", cfg.listen)
        elif not is_loopback(cfg.listen) and not cfg.tls.enabled:
            log.warning("INSECURE: gRPC on %s without TLS (insecure: true): the bearer token and all data travel "
                        "in clear", cfg.listen)
        if cfg.http and not is_loopback(cfg.http) and not (cfg.http_auth.token or cfg.http_auth.tls.client_ca):
            log.warning("INSECURE: the HTTP API on %s answers anyone (insecure: true). Set http_auth.token or "
                        "http_auth.tls with client_ca.", cfg.http)

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful: stop taking streams, let in-flight batches commit, flush notifiers."""
        self._serving = False
        if self._server is not None:
            await self._server.stop(grace)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._http is not None:
            await self._http.cleanup()
        if self.handover is not None:
            await self.handover.aclose()
        if self.keeper is not None:
            await self.keeper.aclose()
        if self.query is not None:
            await self.query.aclose()
        if self.spool is not None:
            await self.spool.stop()
        await self.writer.stop()
        await asyncio.to_thread(self._stop_compactor)
        if self._rules is not None:
            rules, self._rules = self._rules, None
            await asyncio.to_thread(_stop_child, rules)
        self._reads.shutdown(wait=True)
        if self._sync_query is not None:
            self._sync_query.close()
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
        return {n: self._liveness.is_up(i, now) for n, i in self.ingestor.nodes.items()}

    async def _evaluate_loop(self) -> None:
        interval = self.cfg.alerting.evaluation_interval
        while True:
            await asyncio.sleep(interval - (time.time() % interval))
            now = time.time()
            self._rate.append((now, self.ingestor.counters.samples))
            if self.engine is None:
                continue
            handover = self.handover
            self._liveness.feed(self.engine, self.ingestor.nodes, handover, now)
            try:
                self._record(now, self.engine.evaluate(now))
                if self.keeper is not None and handover is not None:
                    self.keeper.record(self.engine.active_states(), now)
                    handover.after_evaluation(now)
            except Exception as err:  # supervision boundary: one bad evaluation never stops the loop
                log.exception("rule evaluation failed: %s", err)

    def _record(self, now: float, changed: list[Alert]) -> None:
        for alert in changed:
            # Snapshot: the engine keeps mutating its Alert objects as states move on.
            self._transitions.append(Transition(now, dataclasses.replace(
                alert, labels=dict(alert.labels), annotations=dict(alert.annotations))))

    async def _housekeeping(self) -> None:
        while True:
            for _ in range(10):
                await asyncio.sleep(30)
                if self._http_ssl is not None:
                    self._http_ssl.refresh()
                c = self._compactor
                if isinstance(c, subprocess.Popen) and c.poll() is not None:
                    log.error("compactor exited with status %s; restarting it", c.returncode)
                    self._start_compactor()
                if self._rules is not None and self._rules.poll() is not None:
                    log.error("rules process exited with status %s; restarting it", self._rules.returncode)
                    self._start_rules()
            try:
                n = await self.writer.run_in_thread(self.store.apply_retention)
                if n:
                    log.info("retention removed %d samples older than %.0fs", n, self.cfg.retention)
            except Exception as err:  # noqa: BLE001 - supervision boundary: retention retries next round
                log.error("store %s: retention failed: %s", self.store.path, err)

    # --- the read-only view (collector/view.py) ---------------------------------------------
    def nodes(self, now: float) -> list[NodeRow]:
        """The nodes this collector owns (one that moved to another collector is that one's)."""
        up = self.node_up(now)
        if self.handover is not None:
            moved = self.handover.released
        else:
            moved = read_released(self.cfg.data_dir, os.getpid()) if self.rules_process else set()
        return [NodeRow(n, up[n], i.connected, dict(i.labels), i.samples, i.batches, i.last_batch_at, i.clock_skew,
                        i.agent_version, tuple(i.plugins)) for n, i in self.ingestor.nodes.items() if n not in moved]

    def counters(self) -> CollectorCounters:
        i = self.ingestor.counters
        return CollectorCounters(i.samples, i.duplicates, self.store.duplicate_samples, i.refused_batches,
                                 i.refused_streams, self.ingestor.streams)

    def active_alerts(self) -> list[Alert]:
        if self.rules_process:
            return [_alert(a) for a in read_state(self.cfg.data_dir, os.getpid())[0]]
        return self.engine.active(restoring=False) if self.engine is not None else []

    def alert_rules(self) -> list[AlertingRule]:
        if self.rules_process:
            return [r for g in self._rule_groups for r in g.rules if isinstance(r, AlertingRule)]
        return self.engine.rules() if self.engine is not None else []

    def accelerators(self, node: str, now: float, *, streaming: bool = True) -> list[Accelerator]:
        return self.fleet.of(node, now, streaming=streaming)

    def notifier_health(self) -> list[NotifierHealth]:
        if self.rules_process:
            return read_notifier_health(self.cfg.data_dir, os.getpid())
        return [h for n in self.notifiers if isinstance(n, NotifierBase) for h in n.health()]

    def rule_groups(self) -> list[GroupHealth]:
        if self.rules_process:
            return read_group_health(self.cfg.data_dir, os.getpid())
        return self.engine.group_health() if self.engine is not None else []

    def transitions(self, since: float) -> list[Transition]:
        if self.rules_process:
            published = read_state(self.cfg.data_dir, os.getpid())[1]
            return [Transition(t["time"], _alert(t)) for t in published if t["time"] > since]
        return [t for t in self._transitions if t.time > since]

    def health(self) -> list[HealthSample]:
        out = [HealthSample("fleetmon_collector_refusals_total", (("reason", reason), ("what", what)), float(n))
               for (what, reason), n in sorted(self.ingestor.counters.refusals.items())]
        out.append(HealthSample("fleetmon_collector_series", (), float(self.store.series_count())))
        if self.spool is not None:
            out.extend(self.spool.health())
        if self.handover is not None and self.keeper is not None:
            out.extend(self.handover.health())
            out.extend(self.keeper.health())
        elif self.rules_process:
            out.extend(read_health(self.cfg.data_dir, os.getpid()))
        return out

    def history(self, reader: LogStoreReader) -> HistoryReader:
        local = EmbeddedHistory(reader)
        if not self.cfg.query.enabled:
            return local
        return FallbackHistory(RemoteHistory(self._query_sync()), local)

    def _query_sync(self) -> PromQuerySync:
        """The read thread's client of the query API (made there, used only there)."""
        if self._sync_query is None:
            self._sync_query = PromQuerySync(self.cfg.query)
        return self._sync_query

    async def read_store(self, fn: Callable[[LogStoreReader], T]) -> T:
        def run() -> T:
            if self._reader is None:
                self._reader = LogStoreReader(self.cfg.data_dir)
            return fn(self._reader)

        return await asyncio.get_running_loop().run_in_executor(self._reads, run)

    def samples_per_second(self) -> float:
        if len(self._rate) < 2:
            return 0.0
        recent = [r for r in self._rate if r[0] >= self._rate[-1][0] - 10] or list(self._rate)
        (t0, s0), (t1, s1) = recent[0], self._rate[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0


def _alert(d: dict[str, Any]) -> Alert:
    """An alert as the rules process published it (collector/rulesproc.py)."""
    value = d["value"]
    return Alert(labels=d["labels"], annotations=d["annotations"], state=AlertState(d["state"]),
                 active_at=d["active_at"], value=float(value), fired_at=d["fired_at"], resolved_at=d["resolved_at"])


def _stop_child(p: subprocess.Popen[bytes]) -> None:
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def newest_sample_ms(decoded: Decoded) -> int:
    """The newest sample time (ms, the agent's clock) of a decoded batch, 0 for none."""
    item = decoded.item
    if item.blocks:
        return max(b.ts_ms for b in item.blocks)
    return max(item.samples.ts_ms, default=0)
