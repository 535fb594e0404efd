"""Rule evaluation apart from ingest: a child process that tails the append log.

Everything the rules need is in the log already, in order: series definitions (SERIES), samples
and events as acked (BATCH), and the nodes' stream status (NODE ``status`` records the ingest
side writes on connect and disconnect). So the rule engine, its notifiers and the node
liveness logic run here, on a core of their own, and ingest costs what ingest costs.

The HTTP API reads what this process publishes after each evaluation (active alerts, recent
transitions) from the store's ``alert_state`` table. Reading starts at the log's end: like an
in-process engine after a restart, the windows fill from live data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alerts.engine import AlertEngine, GroupHealth, GroupStats
from alerts.model import Alert, EventNotice, NodeStatus
from alerts.notifiers import build_notifiers
from alerts.notifiers.base import NotifierBase, NotifierHealth
from alerts.rules import default_rule_files
from collector.alertstate import AlertStateKeeper
from collector.config import CollectorConfig
from collector.handover import Handover, sources_for
from collector.liveness import NodeLiveness
from collector.promquery import PromQueryClient
from collector.rulefeed import NO_REF, RuleFeed
from collector.spool import build_sinks
from collector.storage import applog
from collector.storage.base import HealthSample
from collector.storage.logreader import LogStoreReader
from collector.storage.logstore import LOG_DIR, STORE_FILE, open_db
from collector.storage.remote_write import RemoteWriteSink
from fleetmon_common import logs, settings
from fleetmon_common.memory import Trimmer, limit_arenas

log = logging.getLogger("fleetmon.collector.rules")

_SEVERITY_NAMES = {0: "info", 1: "warning", 2: "critical"}
_STATE_SCHEMA = "CREATE TABLE IF NOT EXISTS alert_state (key TEXT PRIMARY KEY, body TEXT NOT NULL)"


def alert_dict(a: Alert) -> dict[str, Any]:
    return {"labels": a.labels, "annotations": a.annotations, "state": a.state.value, "active_at": a.active_at,
            "fired_at": a.fired_at, "resolved_at": a.resolved_at,
            "value": a.value if np.isfinite(a.value) else str(a.value)}


@dataclass
class _Node:
    labels: dict[str, str]
    connected: bool = False
    connected_at: float = 0.0
    last_batch_at: float = 0.0
    clock_skew: float = 0.0


def log_end(folder: Path) -> int:
    files = applog.log_files(folder)
    if not files:
        return 0
    no, path = files[-1]
    return applog.position(no, path.stat().st_size)


class RuleRunner:
    def __init__(self, cfg: CollectorConfig, start: int | None = None) -> None:
        self.cfg = cfg
        self.parent: int | None = None  # the collector process (published with the state)
        a = cfg.alerting
        notifiers = build_notifiers(a.notifiers, "alerting.notifiers") if a.notifiers else []
        rules = default_rule_files() if a.rules is None else a.rules
        self.engine = AlertEngine.from_files(rules, notifiers, external_labels=a.external_labels,
                                             resend_delay=a.resend_delay, for_grace_period=a.for_grace_period,
                                             for_outage_tolerance=a.for_outage_tolerance)
        self.notifiers = notifiers
        self.feed = RuleFeed(self.engine)
        self.folder = cfg.data_dir / LOG_DIR
        self.next = log_end(self.folder) if start is None else start
        self.refs = np.full(1024, NO_REF, np.int64)  # store series id -> engine ref (its name: the feed's)
        self.nodes: dict[str, _Node] = {}
        self.liveness = NodeLiveness(cfg.node_timeout)
        self.transitions: deque[tuple[float, dict[str, Any]]] = deque(maxlen=1000)
        self._db = open_db(cfg.data_dir / STORE_FILE)
        self._db.execute(_STATE_SCHEMA)
        self._known_series()
        # Alert state across restarts and moves, as in the collector's process (collector/handover.py).
        self.query = PromQueryClient(cfg.query) if cfg.query.enabled else None
        remote_write = [s.config for s in build_sinks(cfg.sinks) if isinstance(s, RemoteWriteSink)]
        self.keeper = AlertStateKeeper(cfg.data_dir, remote_write, a.for_outage_tolerance)
        sources, tsdb = sources_for(self.keeper, self._read_store, self.query, a.for_outage_tolerance)
        self.handover = Handover(self.engine, self.keeper, sources, hold=cfg.node_timeout, tsdb=tsdb)
        self.last_sample_ms: dict[str, int] = {}
        self._reader: LogStoreReader | None = None

    async def _read_store(self, fn: Any) -> Any:
        def run() -> Any:
            if self._reader is None:
                self._reader = LogStoreReader(self.cfg.data_dir)
            return fn(self._reader)

        return await asyncio.to_thread(run)

    def _define(self, sid: int, name: str, labels: str) -> None:
        self._ref_table(sid)
        if not self.engine.wants(name):  # most series: no rule reads their name (labels not parsed)
            self.refs[sid] = NO_REF
            return
        self.refs[sid] = self.feed.ref(name, json.loads(labels))

    def _known_series(self) -> None:
        """Series defined before our start position (streams that are already live): from the
        store, and from the log's part the compactor has not copied yet."""
        for sid, name, labels in self._db.execute("SELECT id, name, labels FROM series"):
            self._define(int(sid), name, labels)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'compactor_low'").fetchone()
        for pos, payload in applog.read(self.folder, int(row[0]) if row else 0, frozenset({applog.SERIES})):
            if pos >= self.next:
                break
            for sid, name, _m, _f, labels, _node, _t, _h in applog.decode_json(payload)["series"]:
                self._define(int(sid), name, labels)

    def _ref_table(self, sid: int) -> None:
        if sid >= len(self.refs):
            grown = np.full(max(sid + 1, 2 * len(self.refs)), NO_REF, np.int64)
            grown[:len(self.refs)] = self.refs
            self.refs = grown

    def read(self, now: float, max_records: int = 5000) -> int:
        n = 0
        for pos, payload in applog.read(self.folder, self.next):
            self.next = pos + applog.FRAME_BYTES + len(payload)
            n += 1
            kind = applog.kind(payload)
            if kind == applog.SERIES:
                for sid, name, _m, _f, labels, _node, _t, _h in applog.decode_json(payload)["series"]:
                    self._define(int(sid), name, labels)
            elif kind == applog.BATCH:
                self._batch(applog.decode_batch(payload), now)
            elif kind == applog.NODE:
                self._node(applog.decode_json(payload))
            if n >= max_records:
                break
        return n

    def _batch(self, rec: applog.BatchRecord, now: float) -> None:
        if not rec.node:
            return
        info = self.nodes.get(rec.node)
        if info is not None:
            info.last_batch_at = now
        if rec.blocks:
            newest = max(b.ts_ms for b in rec.blocks)
            if newest > self.last_sample_ms.get(rec.node, 0):
                self.last_sample_ms[rec.node] = newest
        for b in rec.blocks:
            self.feed.block(self._refs_of(b.sids), b.ts_ms, b.values, now)
        if rec.events:
            node_labels = info.labels if info is not None else {}
            for ts, kind, severity, message, action, labels in rec.events:
                notice = EventNotice(node=rec.node, kind=kind, severity=severity, message=message, ts=ts / 1000,
                                     labels=json.loads(labels) if labels else dict(node_labels), action=action)
                for n in self.notifiers:
                    n.send_event(notice)
            urgent = getattr(self.engine, "evaluate_urgent", None)
            if urgent is not None:
                # Events come with their counter samples (gpu_xid_errors_total, ...): the groups
                # reading the counters of this batch's series evaluate now, not at the next tick.
                self._record(now, urgent(now, self._counter_names(rec)))

    def _refs_of(self, sids: np.ndarray) -> np.ndarray:
        inside = sids < len(self.refs)
        return np.where(inside, self.refs[np.where(inside, sids, 0)], NO_REF)

    def _counter_names(self, rec: applog.BatchRecord) -> set[str]:
        refs = (r for b in rec.blocks for r in self._refs_of(b.sids).tolist())
        return {n for n in self.feed.names(refs) if n.endswith("_total")}

    def _node(self, body: dict[str, Any]) -> None:
        if body.get("op") != "status":
            return
        node = body["node"]
        info = self.nodes.setdefault(node, _Node(body.get("labels", {})))
        info.labels = body.get("labels", info.labels)
        info.connected = bool(body["online"])
        if info.connected:
            info.connected_at = float(body["ts"])
            info.clock_skew = float(body.get("skew", 0.0))
        status = NodeStatus(node=node, online=info.connected, ts=float(body["ts"]), labels=dict(info.labels))
        if info.connected:
            self.handover.online(node, status.ts)
        else:
            self.handover.offline(node, self.last_sample_ms.get(node, 0), status.ts)
        for n in self.notifiers:
            n.send_node_status(status)

    def _record(self, now: float, changed: list[Alert]) -> None:
        for alert in changed:
            self.transitions.append((now, alert_dict(dataclasses.replace(
                alert, labels=dict(alert.labels), annotations=dict(alert.annotations)))))

    def evaluate(self, now: float) -> None:
        engine = self.engine
        self.liveness.feed(engine, self.nodes, self.handover, now)
        try:
            self._record(now, engine.evaluate(now))
            self.keeper.record(engine.active_states(), now)
            self.handover.after_evaluation(now)
        except Exception as err:  # supervision boundary: one bad evaluation never stops the loop
            log.exception("rule evaluation failed: %s", err)
        self.publish()

    def publish(self) -> None:
        active = [alert_dict(a) for a in self.engine.active(restoring=False)]
        trans = [{"time": t, **a} for t, a in self.transitions]
        notifiers = [dataclasses.asdict(h) for n in self.notifiers if isinstance(n, NotifierBase) for h in n.health()]
        groups = [{"name": g.name, "file": g.file, "interval": g.interval, "rules": g.rules, "failing": g.failing,
                   "stats": dataclasses.asdict(g.stats)} for g in self.engine.group_health()]
        # The hand-over and alert-state counters, served on the collector's /metrics.
        health = [{"name": h.name, "labels": [list(kv) for kv in h.labels], "value": h.value}
                  for h in (*self.handover.health(), *self.keeper.health())]
        rows = [("active", json.dumps(active)), ("transitions", json.dumps(trans)),
                ("notifiers", json.dumps(notifiers)), ("groups", json.dumps(groups)),
                ("health", json.dumps(health)), ("released", json.dumps(sorted(self.handover.released))),
                ("publisher", json.dumps(self.parent))]
        self._db.executemany("INSERT INTO alert_state VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                             "body = excluded.body", rows)

    async def run(self, stop: asyncio.Event, parent: int | None) -> None:
        self.parent = parent
        await self.engine.start()
        await self.keeper.start()
        await self.handover.start()
        interval = self.cfg.alerting.evaluation_interval
        next_eval = time.time()
        trimmer = Trimmer()
        try:
            while not stop.is_set():
                if parent is not None and os.getppid() != parent:
                    log.warning("rules: the collector (pid %d) is gone; stopping", parent)
                    break
                now = time.time()
                got = self.read(now)
                if now >= next_eval:
                    self.evaluate(now)
                    next_eval = (now // interval + 1) * interval
                    trimmer.maybe()
                if not got:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), min(0.05, max(0.0, next_eval - time.time())))
        finally:
            await self.handover.aclose()
            await self.keeper.aclose()
            if self.query is not None:
                await self.query.aclose()
            if self._reader is not None:
                self._reader.close()
            await self.engine.aclose()
            self._db.close()


def read_published(data_dir: Path, *keys: str, parent: int | None = None) -> list[list[dict[str, Any]]]:
    """What the rules process last published under each key (``active``, ``transitions``,
    ``notifiers``, ``groups``); an empty list for a key not published yet.

    With ``parent``, only what the rules process of that collector process published: a
    restarted collector must not serve its previous life's alerts (their state is restored by
    its own rules process, which publishes after its first evaluation)."""
    db = open_db(data_dir / STORE_FILE)
    try:
        db.execute(_STATE_SCHEMA)
        wanted = (*keys, "publisher")
        rows = dict(db.execute(f"SELECT key, body FROM alert_state WHERE key IN ({','.join('?' * len(wanted))})",
                               wanted).fetchall())
    finally:
        db.close()
    if parent is not None and json.loads(rows.get("publisher", "null")) != parent:
        return [[] for _ in keys]
    return [json.loads(rows.get(k, "[]")) for k in keys]


def read_state(data_dir: Path, parent: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(active alerts, transitions) as the rules process last published them."""
    active, transitions = read_published(data_dir, "active", "transitions", parent=parent)
    return active, transitions


def read_notifier_health(data_dir: Path, parent: int | None = None) -> list[NotifierHealth]:
    """Every notifier target's counters, as the rules process last published them."""
    return [NotifierHealth(**d) for d in read_published(data_dir, "notifiers", parent=parent)[0]]


def read_group_health(data_dir: Path, parent: int | None = None) -> list[GroupHealth]:
    """Every rule group's evaluation counters, as the rules process last published them."""
    return [GroupHealth(g["name"], g["file"], g["interval"], g["rules"], g["failing"], GroupStats(**g["stats"]))
            for g in read_published(data_dir, "groups", parent=parent)[0]]


def read_health(data_dir: Path, parent: int | None = None) -> list[HealthSample]:
    """The rules process's hand-over and alert-state counters, as it last published them."""
    return [HealthSample(h["name"], tuple((str(k), str(v)) for k, v in h["labels"]), float(h["value"]))
            for h in read_published(data_dir, "health", parent=parent)[0]]


def read_released(data_dir: Path, parent: int | None = None) -> set[str]:
    """Nodes the rules process handed over to another collector (they stream there now)."""
    return {str(n) for n in read_published(data_dir, "released", parent=parent)[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m collector.rulesproc")
    ap.add_argument("--config-json", required=True, help="the collector's validated config (- : stdin)")
    ap.add_argument("--parent", type=int, default=None)
    ap.add_argument("--start", type=int, default=None, help="log position to read from (default: its end)")
    args = ap.parse_args(argv)
    text = sys.stdin.read() if args.config_json == "-" else Path(args.config_json).read_text()
    cfg = settings.build(CollectorConfig, json.loads(text), "collector config")
    logs.setup(cfg.log_level)
    limit_arenas()
    stop = asyncio.Event()

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await RuleRunner(cfg, args.start).run(stop, args.parent)

    try:
        asyncio.run(go())
    except Exception as err:  # supervision boundary: say why (with the traceback), exit 1
        log.exception("rules process failed: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
