"""Which collector owns a node's alerts, and how they pass from one collector to the next.

A node's alerts live in the collector it streams to. When it starts streaming to a collector
that does not own it (the collector started or restarted; the agent failed over to it, or came
back to it), that collector **adopts** it:

1. the engine holds the node's alerts of restorable rules (``AlertEngine.adopt``);
2. its history is read back: the last ``ALERTS_FOR_STATE`` samples of its alerts and the
   samples its rules' windows need (``AlertEngine.warm_plan``), from the shared TSDB when a
   ``query`` API is configured, else (or when the TSDB does not answer) from this collector's
   own store and alert state file; the samples go into the windows ahead of the live ones;
3. once every rule group has evaluated over the warmed windows, the alerts are restored as
   Prometheus restores them (``AlertEngine.restore``): a firing alert fires on at the next
   evaluation, under the same labels, so Alertmanager sees the one alert it had, with no gap (the
   previous owner's last ``endsAt`` is minutes ahead) and no new notification; an alert the
   previous owner had that is not active here is resolved by the new owner.

When a node's stream ends, its alerts are **held**, unchanged, for ``node_timeout``: the agent
may be back in a moment (a restart, a flap), or on another collector. While it is held, the
collector asks the shared TSDB whether the node's samples now arrive through someone else
(a sample stamped after the last one it received here); if so it **releases** the node: its
alerts are dropped without a resolve (the new owner sends them), its series end, and it stops
counting the node as its own. If the hold runs out with no sign of the node, its series are
marked stale as before: its device alerts resolve and ``NodeAgentSilent`` takes over.

A restarted collector restores only the nodes that stream to it again; the alerts of nodes that
stay elsewhere are their new owners' (it neither restores nor resolves them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from alerts.engine import AlertEngine
from alerts.promql.labels import from_map
from alerts.restore import ForState
from collector.alertstate import AlertStateKeeper
from collector.errors import CollectorError
from collector.promquery import PromQueryClient, RawSeries, any_of, quote
from collector.storage.base import HealthSample
from collector.storage.logreader import LogStoreReader
from collector.storage.sqlite import Matcher

log = logging.getLogger("fleetmon.collector.handover")

#: Nodes adopted together share one round of history queries (a restart adopts them all at once).
ADOPT_BATCH = 100
#: How long the history of an adoption may take before the node goes on without it.
ADOPT_TIMEOUT = 20.0
#: Metric names read from history per request while warming: the samples of one part are in
#: memory at a time (a batch of 100 nodes' whole plan as Python lists was ~0.5 KB a sample
#: held at once, the rules process's peak at 2,500 nodes).
WARM_NAMES = 8
#: The agent's self-metric every batch carries: a sample of it stamped after the last one a
#: collector received means the node streams elsewhere now.
PRESENCE_METRIC = "fleetmon_agent_wal_bytes"


class History(Protocol):
    """Where an adopted node's past is read from."""

    name: str

    async def for_state(self, nodes: list[str], now: float) -> dict[str, list[ForState]]:
        """The last ``ALERTS_FOR_STATE`` sample of each alert series of these nodes."""
        ...

    async def samples(self, nodes: list[str], plan: dict[str, int], now: float) -> list[RawSeries]:
        """The samples of these nodes' series named in ``plan`` (name -> ms of history)."""
        ...


class TsdbHistory:
    """The shared TSDB's query API (what the node's previous collector wrote)."""

    name = "the shared TSDB"

    def __init__(self, client: PromQueryClient, tolerance_s: float) -> None:
        self.client = client
        self.tolerance_s = tolerance_s

    async def for_state(self, nodes: list[str], now: float) -> dict[str, list[ForState]]:
        got = await self.client.raw(f"ALERTS_FOR_STATE{{node=~{quote(any_of(nodes))}}}", self.tolerance_s, now)
        out: dict[str, list[ForState]] = {n: [] for n in nodes}
        for s in got:
            if not s.ts_ms:
                continue
            labels = from_map({k: v for k, v in s.labels.items() if k != "__name__"})
            out.setdefault(s.labels.get("node", ""), []).append(ForState(labels, s.ts_ms[-1], s.values[-1]))
        return out

    async def samples(self, nodes: list[str], plan: dict[str, int], now: float) -> list[RawSeries]:
        by_span: dict[int, list[str]] = {}
        for name, span in plan.items():
            by_span.setdefault(span, []).append(name)
        out: list[RawSeries] = []
        for span, names in sorted(by_span.items()):
            sel = f"{{__name__=~{quote(any_of(sorted(names)))}, node=~{quote(any_of(nodes))}}}"
            out.extend(await self.client.raw(sel, span / 1000, now))
        return out

    async def seen_after(self, after_ms: dict[str, int], window_s: float, now: float) -> set[str]:
        """The nodes with a sample stamped after ``after_ms[node]`` (they stream elsewhere)."""
        got = await self.client.raw(f"{PRESENCE_METRIC}{{node=~{quote(any_of(sorted(after_ms)))}}}", window_s, now)
        return {node for s in got if s.ts_ms and s.ts_ms[-1] > after_ms.get(node := s.labels.get("node", ""), 2**62)}


#: The collector's ``read_store``: run a function with the store's reader, off the event loop.
ReadStore = Callable[[Callable[[LogStoreReader], list[RawSeries]]], Awaitable[list[RawSeries]]]


class LocalHistory:
    """This collector's own store and alert state file (a restart without a shared TSDB)."""

    name = "the local store"

    def __init__(self, keeper: AlertStateKeeper, read_store: ReadStore) -> None:
        self.keeper = keeper
        self.read_store = read_store

    async def for_state(self, nodes: list[str], now: float) -> dict[str, list[ForState]]:
        return await self.keeper.read(nodes, now)

    async def samples(self, nodes: list[str], plan: dict[str, int], now: float) -> list[RawSeries]:
        def read(reader: LogStoreReader) -> list[RawSeries]:
            out: list[RawSeries] = []
            now_ms = round(now * 1000)
            for name, span in plan.items():
                rows = reader.find_series(name, [Matcher("node", "=~", any_of(nodes))])
                for row, ts, vals in reader.query(rows, now_ms - span, now_ms):
                    if len(ts):
                        out.append(RawSeries({**row.labels, "__name__": row.name}, ts.tolist(), vals.tolist()))
            return out

        return await self.read_store(read)


@dataclass
class _Adoption:
    node: str
    started: float
    warm_at: float | None = None  # when its history was in the windows
    records: list[ForState] = field(default_factory=list)
    source: str = ""


@dataclass
class HandoverStats:
    adopted: int = 0
    restored: int = 0  # alerts whose for state came back
    taken_over: int = 0  # alerts of a previous owner resolved here
    released: int = 0  # nodes handed to another collector
    released_alerts: int = 0
    warmed_samples: int = 0
    history_errors: int = 0
    last_adoption_seconds: float = 0.0  # stream start -> alerts restored


class Handover:
    def __init__(self, engine: AlertEngine, keeper: AlertStateKeeper, sources: list[History], *,
                 hold: float, tsdb: TsdbHistory | None) -> None:
        self.engine = engine
        self.keeper = keeper
        self.sources = sources
        self.hold = hold
        self.tsdb = tsdb
        self.stats = HandoverStats()
        self.owned: set[str] = set()
        self.released: set[str] = set()
        self._adopting: dict[str, _Adoption] = {}
        self._queue: list[str] = []
        self._held: dict[str, tuple[float, int]] = {}  # node -> (stream ended at, last sample ms)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._adopter(), name="adopt"),
                       asyncio.create_task(self._watch_held(), name="handover")]

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def health(self) -> list[HealthSample]:
        st = self.stats
        return [HealthSample(name, (), float(value)) for name, value in (
            ("fleetmon_collector_nodes_adopted_total", st.adopted),
            ("fleetmon_collector_alerts_restored_total", st.restored),
            ("fleetmon_collector_alerts_taken_over_total", st.taken_over),
            ("fleetmon_collector_nodes_handed_over_total", st.released),
            ("fleetmon_collector_alerts_handed_over_total", st.released_alerts),
            ("fleetmon_collector_warmed_samples_total", st.warmed_samples),
            ("fleetmon_collector_history_errors_total", st.history_errors),
            ("fleetmon_collector_last_adoption_seconds", st.last_adoption_seconds),
        )]

    # --- what the collector tells it ------------------------------------------------------
    def online(self, node: str, now: float) -> None:
        if self._held.pop(node, None) is not None and node in self.owned:
            return  # back within the hold: nothing changed hands
        self.released.discard(node)
        if node in self.owned or node in self._adopting:
            return
        self.engine.adopt(node)
        self._adopting[node] = _Adoption(node, now)
        self._queue.append(node)
        self._wake.set()

    def offline(self, node: str, last_sample_ms: int, now: float) -> None:
        self._held[node] = (now, last_sample_ms)

    def holds(self, node: str, now: float) -> bool:
        """Whether the node's stream ended less than ``hold`` ago (its alerts wait, unchanged)."""
        held = self._held.get(node)
        if held is None:
            return False
        if now - held[0] < self.hold:
            return True
        del self._held[node]  # nobody took it: its series go stale, its alerts resolve
        self.owned.discard(node)  # if it comes back, it is adopted again (it may have been elsewhere)
        return False

    def after_evaluation(self, now: float) -> None:
        """Restore the adopted nodes whose windows every group has evaluated since warming."""
        for node, a in list(self._adopting.items()):
            if a.warm_at is None or not self.engine.evaluated_since(a.warm_at):
                continue
            del self._adopting[node]
            restored, resolved = self.engine.restore(node, a.records, now)
            self.owned.add(node)
            self.stats.adopted += 1
            self.stats.restored += restored
            self.stats.taken_over += len(resolved)
            self.stats.last_adoption_seconds = now - a.started
            log.info("node %s adopted in %.1fs: %d alert(s) restored, %d resolved (ended during the move), from %s "
                     "(%d alert state record(s))", node, now - a.started, restored, len(resolved), a.source,
                     len(a.records))

    # --- adoption ---------------------------------------------------------------------------
    async def _adopter(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                nodes, self._queue = self._queue[:ADOPT_BATCH], self._queue[ADOPT_BATCH:]
                nodes = [n for n in nodes if n in self._adopting]
                if nodes:
                    await self._adopt(nodes)

    async def _adopt(self, nodes: list[str]) -> None:
        now = time.time()
        records: dict[str, list[ForState]] = {}
        source = "nowhere (no history answered)"
        plan = self.engine.warm_plan()
        for src in self.sources:
            try:
                records = await asyncio.wait_for(self._warm(src, nodes, plan, now), ADOPT_TIMEOUT)
            except (CollectorError, TimeoutError) as err:
                # What a failed source warmed stays (the next source adds only older samples).
                self.stats.history_errors += 1
                log.warning("history of %d adopted node(s) not read from %s: %s", len(nodes), src.name,
                            str(err) or type(err).__name__)
                continue
            source = src.name
            break
        done = time.time()
        for node in nodes:
            a = self._adopting.get(node)
            if a is not None:
                a.records, a.warm_at, a.source = records.get(node, []), done, source

    async def _warm(self, src: History, nodes: list[str], plan: dict[str, int],
                    now: float) -> dict[str, list[ForState]]:
        """The nodes' alert state records from ``src``; their series' history into the windows,
        ``WARM_NAMES`` metric names at a time."""
        records = await src.for_state(nodes, now)
        names = sorted(plan)
        for i in range(0, len(names), WARM_NAMES):
            series = await src.samples(nodes, {n: plan[n] for n in names[i:i + WARM_NAMES]}, now)
            for s in series:
                labels = {k: v for k, v in s.labels.items() if k != "__name__"}
                self.stats.warmed_samples += self.engine.backfill(s.name, labels, s.ts_ms, s.values)
        return records

    # --- hand-over ----------------------------------------------------------------------------
    async def _watch_held(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.tsdb is None or not self._held:
                continue
            now = time.time()
            held = {n: last for n, (_since, last) in self._held.items() if n in self.owned or n in self._adopting}
            if not held:
                continue
            try:
                moved = await self.tsdb.seen_after(held, self.hold + 60, now)
            except CollectorError as err:
                log.debug("handover check failed: %s", err)
                continue
            for node in moved & set(self._held):
                self._release(node, time.time())

    def _release(self, node: str, now: float) -> None:
        self._held.pop(node, None)
        self._adopting.pop(node, None)
        self.owned.discard(node)
        self.released.add(node)
        n = self.engine.release(node, now)
        self.keeper.forget(node)
        self.stats.released += 1
        self.stats.released_alerts += n
        log.info("node %s streams to another collector now: %d alert(s) handed over", node, n)


def sources_for(keeper: AlertStateKeeper, read_store: ReadStore,
                client: PromQueryClient | None, tolerance_s: float) -> tuple[list[History], TsdbHistory | None]:
    """The TSDB first when there is one (it has what any collector wrote), the local store next."""
    tsdb = TsdbHistory(client, tolerance_s) if client is not None else None
    local = LocalHistory(keeper, read_store)
    return ([tsdb, local] if tsdb is not None else [local]), tsdb
