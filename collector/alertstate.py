"""``ALERTS_FOR_STATE`` where a collector's successor finds it (alerts/restore.py).

After every evaluation the collector hands the engine's pending and firing alerts
(:meth:`alerts.engine.AlertEngine.active_states`) to an :class:`AlertStateKeeper`, which keeps
them twice, as Prometheus keeps the series:

- **locally**, in ``<data_dir>/alert_state.sqlite``: one row per alert series holding its last
  sample (labels, node, active time, sample time; a NULL active time is the stale marker of an
  alert that ended). A restarted collector restores from it when no shared TSDB answers.
- **in the shared TSDB**, through every ``remote_write`` sink: ``ALERTS_FOR_STATE{…}`` = the
  active time and ``ALERTS{…, alertstate}`` = 1 at each evaluation, and Prometheus's stale
  marker when an alert ends. The collector a node fails over to reads them back
  (collector/handover.py). Best effort, as Prometheus's own remote write of rule output: a
  TSDB that is away loses these samples (counted, logged once), never blocks evaluation.

A node that moved to another collector is :meth:`forgotten <AlertStateKeeper.forget>`: its
alerts are the new owner's, so no stale marker is written for them here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from alerts.group import ActiveState
from alerts.model import AlertState
from alerts.promql.labels import Labels
from alerts.restore import ForState
from collector.errors import SinkError, StoreError
from collector.storage.base import HealthSample, Point, SinkBatch
from collector.storage.remote_write import RemoteWriteConfig, RemoteWriteSink

log = logging.getLogger("fleetmon.collector.alertstate")

FILE = "alert_state.sqlite"
#: Prometheus's stale marker (``value.StaleNaN``, 0x7ff0000000000002): what a TSDB recognises as
#: "this series ended" (the engine's internal marker differs in one bit; this is the wire's).
PROMETHEUS_STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
#: Samples waiting for the TSDB at most; past it the oldest go (a TSDB away for long).
MAX_PENDING = 200_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS for_state (
    labels TEXT PRIMARY KEY,   -- the alert's labels, sorted, as JSON pairs
    node TEXT NOT NULL,
    active_at REAL,            -- unix seconds; NULL: the alert ended (a stale marker)
    ts_ms INTEGER NOT NULL     -- the time of this last sample
);
CREATE INDEX IF NOT EXISTS for_state_node ON for_state (node, ts_ms);
"""


def _key(labels: Labels) -> str:
    return json.dumps(labels, separators=(",", ":"))


class ForStateFile:
    """The local copy: the last ``ALERTS_FOR_STATE`` sample of every alert series, per node."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as err:
            raise StoreError(f"{path}: cannot open the alert state file: {err} (delete it to start afresh: "
                             "alert timers are then not restored once)") from err

    def write(self, ts_ms: int, active: Iterable[tuple[str, str, float]], ended: Iterable[tuple[str, str]]) -> None:
        """``active``: (labels key, node, active time); ``ended``: (labels key, node)."""
        # Ended first: an alert that ended and started again since the last write is active.
        rows = [(k, node, None, ts_ms) for k, node in ended] + [(k, node, at, ts_ms) for k, node, at in active]
        if not rows:
            return
        with self._lock, self._errors("write"):
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO for_state VALUES (?, ?, ?, ?) ON CONFLICT (labels) DO UPDATE SET "
                                 "node = excluded.node, active_at = excluded.active_at, ts_ms = excluded.ts_ms", rows)
            self._db.execute("COMMIT")

    def read(self, nodes: Iterable[str], since_ms: int) -> dict[str, list[ForState]]:
        out: dict[str, list[ForState]] = {}
        with self._lock, self._errors("read"):
            for node in nodes:
                got = out.setdefault(node, [])
                rows = self._db.execute("SELECT labels, active_at, ts_ms FROM for_state WHERE node = ? AND ts_ms >= ?",
                                        (node, since_ms))
                for labels, at, ts in rows:
                    pairs = tuple((str(k), str(v)) for k, v in json.loads(labels))
                    got.append(ForState(pairs, int(ts), float("nan") if at is None else float(at)))
        return out

    def prune(self, before_ms: int) -> int:
        with self._lock, self._errors("prune"):
            return self._db.execute("DELETE FROM for_state WHERE ts_ms < ?", (before_ms,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _errors(self, what: str):  # type: ignore[no-untyped-def]
        try:
            yield
        except sqlite3.Error as err:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise StoreError(f"{self.path}: alert state {what} failed: {err}") from err


@dataclass
class KeeperStats:
    tsdb_samples: int = 0  # ALERTS / ALERTS_FOR_STATE samples the TSDB took
    tsdb_dropped: int = 0  # lost to a TSDB that was away or refused them
    local_writes: int = 0


class AlertStateKeeper:
    """Keeps the engine's alert state after each evaluation (locally and in the TSDB)."""

    def __init__(self, data_dir: Path, remote_write: Iterable[RemoteWriteConfig] = (),
                 tolerance_s: float = 3600.0) -> None:
        self.file = ForStateFile(data_dir / FILE)
        # Sinks of their own (own client and health), so these samples stay out of the data sinks' figures.
        self.sinks = [RemoteWriteSink(replace(cfg, name=f"{cfg.name}_alert_state", batch_size=10_000))
                      for cfg in remote_write]
        self.tolerance_ms = round(tolerance_s * 1000)
        self.stats = KeeperStats()
        self._previous: dict[Labels, str] = {}  # alert labels -> node, as of the last evaluation
        # The newest snapshot for the local file, and every alert that ended since its last write.
        self._local: tuple[int, list[tuple[str, str, float]]] | None = None
        self._ended_local: list[tuple[str, str]] = []
        self._local_lock = threading.Lock()
        self._pending: list[Point] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = ""
        self._next_prune = 0.0

    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start()
        self._task = asyncio.create_task(self._run(), name="alert-state")

    async def aclose(self) -> None:
        if self._task is not None:
            self._wake.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreError):
            await asyncio.to_thread(self._flush_local)
        for sink in self.sinks:
            await sink.aclose()
        self.file.close()

    def record(self, states: Iterable[ActiveState], now: float) -> None:
        """The engine's active alerts after an evaluation at ``now`` (called on the event loop)."""
        ts_ms = round(now * 1000)
        current: dict[Labels, str] = {}
        active: list[tuple[str, str, float]] = []
        points: list[Point] = []
        ts_ns = ts_ms * 1_000_000
        for s in states:
            current[s.labels] = s.part
            at = float(s.active_at_ms // 1000)  # whole seconds, as Prometheus (ActiveAt.Unix())
            active.append((_key(s.labels), s.part, at))
            if self.sinks:
                points.append(Point("ALERTS", "FOR_STATE", s.labels, at, ts_ns))
                state = "firing" if s.state == AlertState.FIRING else "pending"
                points.append(Point("ALERTS", "", tuple(sorted((*s.labels, ("alertstate", state)))), 1.0, ts_ns))
        ended = [(labels, node) for labels, node in self._previous.items() if labels not in current]
        self._previous = current
        with self._local_lock:
            self._ended_local.extend((_key(labels), node) for labels, node in ended)
            self._local = (ts_ms, active)
        if self.sinks:
            points.extend(Point("ALERTS", "FOR_STATE", labels, PROMETHEUS_STALE_NAN, ts_ns) for labels, _ in ended)
            self._pending.extend(points)
            if len(self._pending) > MAX_PENDING:
                dropped = len(self._pending) - MAX_PENDING
                del self._pending[:dropped]
                self.stats.tsdb_dropped += dropped
        self._wake.set()

    def health(self) -> list[HealthSample]:
        return [HealthSample("fleetmon_collector_alert_state_samples_total", (("outcome", outcome),), float(n))
                for outcome, n in (("written", self.stats.tsdb_samples), ("dropped", self.stats.tsdb_dropped))]

    def forget(self, node: str) -> None:
        """The node moved to another collector: its alerts end here without stale markers."""
        self._previous = {labels: n for labels, n in self._previous.items() if n != node}

    async def read(self, nodes: list[str], now: float) -> dict[str, list[ForState]]:
        """The local records of these nodes within the outage tolerance."""
        return await asyncio.to_thread(self.file.read, nodes, round(now * 1000) - self.tolerance_ms)

    def _flush_local(self) -> None:
        with self._local_lock:
            got, self._local = self._local, None
            ended, self._ended_local = self._ended_local, []
        if got is not None:
            self.file.write(got[0], got[1], ended)
            self.stats.local_writes += 1

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await asyncio.to_thread(self._flush_local)
            except StoreError as err:
                self._warn(str(err))
            if self._pending:
                points, self._pending = self._pending, []
                await self._send(points)
            if time.time() >= self._next_prune:
                self._next_prune = time.time() + 600
                with contextlib.suppress(StoreError):
                    await asyncio.to_thread(self.file.prune, round(time.time() * 1000) - self.tolerance_ms)

    async def _send(self, points: list[Point]) -> None:
        for sink in self.sinks:
            try:
                await sink.write(SinkBatch(0, points))
            except SinkError as err:
                self.stats.tsdb_dropped += len(points)
                self._warn(f"alert state not written to {sink.name}: {err}")
            else:
                self.stats.tsdb_samples += len(points)
                if self._failing:
                    log.warning("alert state reaches %s again", sink.name)
                    self._failing = ""

    def _warn(self, why: str) -> None:
        if why != self._failing:
            log.warning("%s (alert timers restore from what was kept before)", why)
            self._failing = why
