"""Runs each plugin at its own interval, off the event loop, with a deadline.

The thread plugins due in a cycle run in turn on one worker thread, the *lane* (an
:class:`~agent.plugin.AsyncPlugin` runs on the loop, or on the lane too in a cycle where it has
nothing to await: :meth:`~agent.plugin.AsyncPlugin.blocking_collect`). Each has its deadline
counted from its own turn. At 1 Hz every plugin is done in a few milliseconds, and one thread
that runs them in turn costs the node less than one thread each: the threads of the same cycle
no longer wake together and pass the GIL to one another. A plugin that holds the lane for more
than half its interval (or its deadline, if shorter) is moved off it: the lane's thread is left
to it, the plugins after it continue at once on a fresh one, and from then on that plugin
collects on a thread of its own. Its collection still counts if it ends within its deadline;
past that it is abandoned (Python cannot kill a thread stuck in C) and counted as failed, and
while it is still stuck its later runs are skipped rather than piling up threads. So a hung
plugin delays the others once, by at most half an interval, and never again; every other plugin
keeps its own timing.

One timer drives every plugin: intervals are aligned to wall-clock multiples, so the plugins due
at one instant (all of them, at 1 Hz) start together and are awaited together, and the event
loop wakes once when the last of them is done (or at their deadline), not once per plugin. Then
each collection goes to the sink, and ``on_cycle`` is told (the batcher writes its batch there:
a cycle at 1 Hz costs one timer, one wake-up for the plugins and one for the WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from agent import registry
from agent.config import AgentConfig, PluginSection, build
from agent.errors import AgentError, ConfigError, PluginUnavailable
from agent.model import Collection, Event, Metric, MetricType, Stamped
from agent.plugin import AnyPlugin, AsyncPlugin, NodeDirectory, Plugin, PluginContext
from fleetmon_common.settings import Problems

log = logging.getLogger("fleetmon.agent")

PLUGIN_DURATION = Metric(
    "fleetmon_agent", "plugin_duration_seconds", MetricType.GAUGE,
    "Wall time of the plugin's last collection", "seconds",
)
PLUGIN_SUCCESS = Metric(
    "fleetmon_agent", "plugin_success", MetricType.GAUGE,
    "1 if the plugin's last collection succeeded within its deadline, else 0",
)
PLUGIN_SAMPLES = Metric(
    "fleetmon_agent", "plugin_samples", MetricType.GAUGE, "Samples the plugin's last collection produced",
)


@dataclass
class PluginStatus:
    name: str
    enabled: bool
    detail: str = ""


class EventBuffer:
    """Thread-safe, bounded: plugins' background threads push, the scheduler drains.

    Once bound to the event loop, the first push into an empty buffer wakes the drain (one
    ``call_soon_threadsafe``); nothing polls while no event comes.
    """

    def __init__(self, maxlen: int = 10_000) -> None:
        self._q: deque[Event] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self.dropped = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """Wake an ``asyncio.Event`` on ``loop`` when events arrive; returns it."""
        self._loop, self._ready = loop, asyncio.Event()
        if self._q:
            self._ready.set()
        return self._ready

    def push(self, event: Event) -> None:
        with self._lock:
            if len(self._q) == self._q.maxlen:
                self.dropped += 1
            first = not self._q
            self._q.append(event)
        if first and self._loop is not None and self._ready is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the agent is stopping
                self._loop.call_soon_threadsafe(self._ready.set)

    def drain(self) -> list[Event]:
        with self._lock:
            out = list(self._q)
            self._q.clear()
        return out


class RunResult(NamedTuple):
    """One collection of one plugin, as the scheduler saw it."""

    collection: Collection
    ok: bool  # finished within its deadline without an error
    seconds: float


class PluginRunner:
    """One plugin instance, its deadline, and its thread when it has one of its own (at
    discovery; after it ran past a deadline on the lane; or when collected outside a lane)."""

    def __init__(self, plugin: AnyPlugin, section: PluginSection) -> None:
        self.plugin = plugin
        self.section = section
        self.name = section.name
        self._pool: ThreadPoolExecutor | None = None
        self._busy: Future[Any] | None = None
        #: Collects off the lane (on a thread of its own, or an AsyncPlugin with its coroutine on
        #: the loop): it once held the lane too long.
        self.own_thread = False
        self.enabled = True
        self.detail = ""
        self._stuck_logged = False

    def _own_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fleetmon-{self.name}")
        return self._pool

    def _release_pool(self) -> None:
        """Let the own thread go (it ends once its call, if one is stuck, returns)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    async def _in_thread(self, fn: Callable[[], Any], timeout: float) -> Any:
        if self._busy is not None and not self._busy.done():
            raise TimeoutError("previous call is still running")
        fut = self._own_pool().submit(fn)
        self._busy = fut
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    async def discover(self) -> bool:
        try:
            await self._in_thread(self.plugin.discover, self.section.timeout)
            # Discoveries run side by side, each on its own thread; collections run on the loop
            # (an AsyncPlugin) or, in turn, on the lane: the thread is not needed again.
            self._release_pool()
        except PluginUnavailable as err:
            self.enabled, self.detail = False, str(err)
            log.warning("plugin %s disabled: %s", self.name, err)
        except TimeoutError:
            self.enabled, self.detail = False, f"discovery ran past {self.section.timeout:g}s"
            log.warning("plugin %s disabled: discovery ran past its %gs deadline", self.name, self.section.timeout)
        except Exception as err:  # supervision boundary: one plugin never stops the agent
            self.enabled, self.detail = False, f"{type(err).__name__}: {err}"
            log.exception("plugin %s disabled: discovery failed: %s", self.name, err)
        return self.enabled

    async def collect(self) -> RunResult:
        """Run one collection (on its own thread, or on the loop). Never raises."""
        return (await collect_together([self]))[0]

    def lane_call(self) -> Callable[[], Collection] | None:
        """What it collects with on the lane this cycle, or None (on a thread of its own, or on
        the loop): a thread plugin that never overran there, or an AsyncPlugin with nothing to
        await this time (:meth:`~agent.plugin.AsyncPlugin.blocking_collect`)."""
        if self.own_thread:
            return None
        if isinstance(self.plugin, AsyncPlugin):
            try:
                return self.plugin.blocking_collect()
            except Exception as err:  # supervision boundary: it collects on the loop instead
                log.error("plugin %s: blocking_collect failed: %s", self.name, err, exc_info=err)
                return None
        return self.plugin.collect

    def _start(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        """Start one collection: on its own thread, or as a task on the loop (an AsyncPlugin)."""
        plugin = self.plugin
        if self._busy is not None and not self._busy.done():
            # Still stuck in a call on its thread or on the lane (an AsyncPlugin's blocking
            # collection that made it leave the lane): never a second one beside it.
            job.error = TimeoutError("previous call is still running")
            job.done_on_loop(None)
            return
        if isinstance(plugin, AsyncPlugin):
            task = loop.create_task(_within(plugin.collect(), self.section.timeout))
            job.future = task
            task.add_done_callback(job.done_on_loop)
            return
        fut = self._own_pool().submit(plugin.collect)
        self._busy = job.future = fut
        fut.add_done_callback(job.done_in_thread)

    def _to_lane(self, job: _Job, call: Callable[[], Collection]) -> None:
        """Queue one collection for the lane (started by :meth:`Lane.run`)."""
        if self._busy is not None and not self._busy.done():
            job.error = TimeoutError("previous call is still running")
            job.finished = time.perf_counter()
            return
        fut: Future[Collection] = Future()
        self._busy = job.future = fut
        job.runner, job.call = self, call
        fut.add_done_callback(job.done_in_thread)

    def leave_lane(self) -> None:
        """It held the lane too long (:data:`LANE_SHARE`, or its deadline): it collects off it from now on."""
        if not self.own_thread:
            self.own_thread = True
            where = "on the loop" if isinstance(self.plugin, AsyncPlugin) else "on a thread of its own"
            log.warning("plugin %s held the plugin lane for more than %gs: it collects %s from now on",
                        self.name, _patience(self), where)

    def _result(self, job: _Job, started: float) -> RunResult:
        """What one started collection came to; logs its failure."""
        if job.runner is not None and job.began is not None:
            started = job.began  # on the lane, its deadline counts from its own turn
        seconds = (job.finished if job.finished is not None else time.perf_counter()) - started
        fut = job.future
        err: BaseException | None = job.error
        if err is None:
            if fut is None or not fut.done() or fut.cancelled():
                err = TimeoutError()
            else:
                err = fut.exception()
                if err is None and seconds > self.section.timeout:
                    err = TimeoutError()  # it finished, but past its deadline: not used, as wait_for would
        if err is None:
            assert fut is not None
            self._stuck_logged = False
            return RunResult(fut.result(), True, seconds)
        if isinstance(err, TimeoutError):
            if job.runner is not None and job.began is not None:
                self.leave_lane()
            if not self._stuck_logged:
                log.warning("plugin %s: collection ran past its %gs deadline", self.name, self.section.timeout)
                self._stuck_logged = True
        elif isinstance(err, AgentError):
            log.warning("plugin %s: collection failed: %s", self.name, err)
        elif isinstance(err, Exception):  # supervision boundary
            log.error("plugin %s: collection crashed: %s", self.name, err, exc_info=err)
        else:
            raise err  # KeyboardInterrupt, SystemExit: not the plugin's to swallow
        return RunResult(Collection(), False, seconds)

    def close(self) -> None:
        try:
            self.plugin.close()
        except Exception as err:  # noqa: BLE001 - supervision boundary: closing one plugin never blocks the others
            log.warning("plugin %s: close failed: %s", self.name, err)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class _Job:
    """One collection in flight within :func:`collect_together`."""

    __slots__ = ("began", "call", "error", "finished", "future", "group", "runner", "stop")

    def __init__(self, group: _Group) -> None:
        self.group = group
        self.future: Future[Collection] | asyncio.Future[Collection] | None = None
        self.error: BaseException | None = None  # set when it could not even start
        self.finished: float | None = None
        self.runner: PluginRunner | None = None  # set when it runs on the lane
        self.call: Callable[[], Collection] | None = None  # what the lane calls
        self.began: float | None = None  # when its turn on the lane began
        self.stop: threading.Event | None = None  # set: the lane's worker it was handed to starts nothing more

    def done_in_thread(self, _fut: object) -> None:
        self.finished = time.perf_counter()
        self.group.one_done(in_thread=True)

    def done_on_loop(self, fut: asyncio.Future[Collection] | None) -> None:
        self.finished = time.perf_counter()
        if fut is not None and not fut.cancelled():
            fut.exception()  # looked at here: a task that ends after its group gave up on it is not "never retrieved"
        self.group.one_done(in_thread=False)


class _Group:
    """Counts the collections of one cycle down; the last one wakes the loop, once (every one
    does once :meth:`rearm` was called: the cycle waits for a lane that lost a plugin)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.left = count
        self.lock = threading.Lock()
        self.all_done: asyncio.Future[None] = loop.create_future()
        self.eager = False

    def rearm(self) -> None:
        with self.lock:
            self.all_done = self.loop.create_future()
            self.eager = True

    def one_done(self, *, in_thread: bool) -> None:
        with self.lock:
            self.left -= 1
            last = self.left == 0
            eager = self.eager
        if not (last or eager):
            return
        if in_thread:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the agent is stopping
                self.loop.call_soon_threadsafe(self.release)
        else:
            self.release()

    def release(self) -> None:
        if not self.all_done.done():
            self.all_done.set_result(None)


async def _within(coro: Awaitable[Collection], seconds: float) -> Collection:
    async with asyncio.timeout(seconds):
        return await coro


class Lane:
    """The worker thread on which the thread plugins of a cycle collect in turn.

    A turn is never queued behind one still running (a cycle that overlaps a slow one): it goes
    to a fresh worker, and the busy one ends after its turn. A worker whose plugin got stuck is
    told to start nothing more (:meth:`abandon`) and ends once that call returns.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._turn: Future[None] | None = None  # the last turn handed to the worker

    def run(self, jobs: list[_Job]) -> None:
        if self._pool is not None and self._turn is not None and not self._turn.done():
            self._pool.shutdown(wait=False)  # busy: it ends after the turn it has
            self._pool = None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetmon-plugins")
            self._stop = threading.Event()
        for job in jobs:
            job.stop = self._stop
        self._turn = self._pool.submit(_run_turns, jobs, self._stop)

    def abandon(self, job: _Job) -> None:
        """``job`` is stuck: its worker starts nothing more and ends once the call returns."""
        if job.stop is None:
            return
        job.stop.set()
        if job.stop is self._stop and self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def close(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _run_turns(jobs: list[_Job], stop: threading.Event) -> None:
    """On the lane: each collection in turn, until the loop moves the rest to a fresh worker."""
    for job in jobs:
        if stop.is_set():
            return
        fut, call = job.future, job.call
        assert isinstance(fut, Future) and call is not None
        try:
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled: the agent stops
        except RuntimeError:
            continue  # already taken by the worker this lane replaced
        job.began = time.perf_counter()
        try:
            result = call()
        except BaseException as err:  # noqa: BLE001 - handed to the loop through the future, as a pool's worker does
            fut.set_exception(err)
        else:
            fut.set_result(result)


async def collect_together(runners: Sequence[PluginRunner], lane: Lane | None = None) -> list[RunResult]:
    """One collection of each runner, all started at once and awaited together. Never raises.

    With a ``lane``, the thread plugins that never overran collect on it in turn; the others
    run on their own threads, or on the loop. The loop wakes once, when the last collection is
    done or when the longest deadline among them has passed, whichever comes first; a
    collection that finished past its own deadline counts as failed, as one still running does
    (its result is not used). Only when a plugin holds the lane past its deadline does the loop
    wake more often: to move the plugins after it to a fresh worker, and to wait for them.
    """
    loop = asyncio.get_running_loop()
    group = _Group(loop, len(runners))
    jobs = [_Job(group) for _ in runners]
    started = time.perf_counter()
    on_lane: list[_Job] = []
    for runner, job in zip(runners, jobs, strict=True):
        call = runner.lane_call() if lane is not None else None
        if call is not None:
            runner._to_lane(job, call)
            if job.runner is not None:
                on_lane.append(job)
            else:
                group.one_done(in_thread=False)  # skipped: its previous call is still running
        else:
            runner._start(job, loop)
    if on_lane:
        assert lane is not None
        lane.run(on_lane)
    if group.left > 0:
        try:
            await _await_cycle(group, lane, on_lane, max(r.section.timeout for r in runners))
        finally:
            for job in jobs:
                if isinstance(job.future, asyncio.Task) and not job.future.done() and group.all_done.cancelled():
                    job.future.cancel()  # this cycle was cancelled (the agent stops): so are its tasks
    return [runner._result(job, started) for runner, job in zip(runners, jobs, strict=True)]


#: A thread plugin may hold the lane for this share of its interval (or its deadline, if
#: shorter); past it, it is moved to a thread of its own and the plugins after it go on on a
#: fresh worker. Its collection still counts if it ends within its deadline. So the next cycle
#: never finds the lane held by a plugin of this one, whatever the deadlines.
LANE_SHARE = 0.5


def _patience(runner: PluginRunner) -> float:
    return min(runner.section.timeout, LANE_SHARE * runner.section.interval)


async def _await_cycle(group: _Group, lane: Lane | None, on_lane: list[_Job], first_wait: float) -> None:
    """Until every collection is done, or past its deadline. On the lane each deadline counts
    from that plugin's own turn, and a plugin that holds the lane too long (:data:`LANE_SHARE`)
    gets the worker to itself: the plugins after it move to a fresh one.

    A turn never waits behind another (:meth:`Lane.run`), so collections not started are between
    two turns; should they still not have started after their longest deadline, they are given
    up. Whatever never started is cancelled, so it neither runs late nor keeps its plugin busy.
    """
    if on_lane:
        first_wait = min(first_wait, *(_patience(job.runner) for job in on_lane if job.runner is not None))
    wait = first_wait
    unstarted_since: float | None = None
    moved: list[_Job] = []  # moved off the lane (its worker left to them): waited for until their deadline
    try:
        while True:
            handle = group.loop.call_later(max(0.0, wait), group.release)
            try:
                await group.all_done
            finally:
                handle.cancel()
            if group.left == 0:
                return
            now = time.perf_counter()
            running = [job for job in moved if not _finished(job) and now < _deadline(job)]
            pending = [job for job in on_lane if not _finished(job) and job not in moved]
            if not pending and not running:
                return  # the ones left run on their own threads or the loop, past their deadlines
            assert lane is not None
            wake = [_deadline(job) for job in running]
            current = next((job for job in pending if job.began is not None), None)
            if current is not None and current.runner is not None and current.began is not None:
                unstarted_since = None
                if now < current.began + _patience(current.runner):
                    wake.append(current.began + _patience(current.runner))
                else:  # it holds the lane too long: the worker is left to it
                    current.runner.leave_lane()
                    lane.abandon(current)
                    moved.append(current)
                    pending.remove(current)
                    if now < _deadline(current):
                        wake.append(_deadline(current))
                    if pending:
                        lane.run(pending)
                        wake.append(now + max(_patience(job.runner) for job in pending if job.runner is not None))
            elif pending:  # none of them started: between two turns, they start in a moment
                longest = max(job.runner.section.timeout for job in pending if job.runner is not None)
                unstarted_since = now if unstarted_since is None else unstarted_since
                if now - unstarted_since < longest:
                    wake.append(unstarted_since + longest)
            if not wake:
                return  # given up: what never started is cancelled below
            wait = min(wake) - now
            group.rearm()
    finally:
        for job in on_lane:
            if job.began is None and job.future is not None:
                job.future.cancel()  # never started, and now never will (a running one is not cancelled)


def _finished(job: _Job) -> bool:
    return job.future is None or job.future.done()


def _deadline(job: _Job) -> float:
    """When a collection on the lane ran out of time: its own deadline from its turn."""
    assert job.runner is not None and job.began is not None
    return job.began + job.runner.section.timeout


def add_self_metrics(col: Collection, name: str, ok: bool, seconds: float) -> None:
    """The plugin's report on itself (STYLE 9), added to its own collection."""
    labels = {"plugin": name}
    n = len(col)
    col.put(PLUGIN_DURATION.series(labels), seconds)
    col.put(PLUGIN_SUCCESS.series(labels), 1.0 if ok else 0.0)
    col.put(PLUGIN_SAMPLES.series(labels), float(n))


def make_context(cfg: AgentConfig, events: EventBuffer, directory: NodeDirectory | None = None) -> PluginContext:
    return PluginContext(
        node=cfg.node,
        sysfs_root=Path(cfg.sysfs_root),
        procfs_root=Path(cfg.procfs_root),
        dev_root=Path(cfg.dev_root),
        directory=directory or NodeDirectory(),
        emit=events.push,
    )


def build_runners(cfg: AgentConfig, ctx: PluginContext, only: list[str] | None = None,
                  problems: Problems | None = None) -> list[PluginRunner]:
    """Instantiate the configured (or the ``only``) plugins. Every config error of every plugin
    is found in one pass: raised together, or recorded in ``problems`` when given."""
    found = problems if problems is not None else Problems()
    found.source = cfg.source
    classes: dict[str, type[Plugin] | type[AsyncPlugin]] = {}
    names = list(cfg.plugins) if only is None else only
    for name in names:
        with found.gather(ConfigError):
            classes[name] = registry.load(name)
    defaults = {name: cls.default_interval for name, cls in classes.items()}
    sections = {s.name: s for s in cfg.plugin_sections(defaults, found)}
    runners = []
    for name, cls in classes.items():
        section = sections.get(name) or PluginSection(
            name, defaults[name], min(defaults[name] * 0.8, 30.0), True, {}
        )
        if not section.enabled:
            continue
        with found.gather(ConfigError):
            options = build(cls.Config, section.options, f"plugins.{name}")
            try:
                plugin = cls(ctx, options)
            except AgentError as err:
                msg = str(err)
                raise ConfigError(msg if msg.startswith(f"plugins.{name}") else f"plugins.{name}: {msg}") from err
            runners.append(PluginRunner(plugin, section))
    if problems is None and found:
        for r in runners:
            r.close()
        found.raise_if_any(ConfigError)
    return runners


Sink = Callable[[float, Collection], Awaitable[None]]
CycleHook = Callable[[float], Awaitable[None]]
#: Plugins due within this many seconds of each other collect in the same cycle.
_SAME_TICK = 0.001


class Scheduler:
    """Drives the runners; hands every collection (with self-metrics) to ``sink``, then calls
    ``on_cycle`` with the cycle's time once all of that cycle's collections are in."""

    def __init__(self, runners: list[PluginRunner], events: EventBuffer, sink: Sink,
                 on_cycle: CycleHook | None = None) -> None:
        self.runners = runners
        self.events = events
        self.sink = sink
        self.on_cycle = on_cycle
        self._tasks: list[asyncio.Task[None]] = []
        self._cycles: set[asyncio.Task[None]] = set()
        self.lane = Lane()

    def status(self) -> list[PluginStatus]:
        return [PluginStatus(r.name, r.enabled, r.detail) for r in self.runners]

    async def start(self) -> None:
        await asyncio.gather(*(r.discover() for r in self.runners))
        live = [r for r in self.runners if r.enabled]
        if live:
            self._tasks.append(asyncio.create_task(self._tick(live), name="plugins"))
        self._tasks.append(asyncio.create_task(self._drain_events(), name="events"))

    async def _tick(self, runners: list[PluginRunner]) -> None:
        loop = asyncio.get_running_loop()
        # Align to wall-clock multiples of each interval so a fleet samples at the same instants
        # (and plugins with intervals that divide each other collect together).
        now, wall = loop.time(), time.time()
        due_at = [now + (-wall) % r.section.interval for r in runners]
        while True:
            at = min(due_at)
            await asyncio.sleep(max(0.0, at - loop.time()))
            now = loop.time()
            due = [i for i, t in enumerate(due_at) if t <= at + _SAME_TICK]
            cycle = asyncio.create_task(self._cycle([runners[i] for i in due], time.time()))
            self._cycles.add(cycle)  # a slow cycle never holds the next tick back
            cycle.add_done_callback(self._cycles.discard)
            for i in due:
                interval = runners[i].section.interval
                due_at[i] += interval
                if due_at[i] < now:  # we fell behind (a stalled loop): skip missed ticks, keep the phase
                    due_at[i] += ((now - due_at[i]) // interval + 1) * interval

    async def _cycle(self, runners: list[PluginRunner], ts: float) -> None:
        results = await collect_together(runners, self.lane)
        for runner, (result, ok, secs) in zip(runners, results, strict=True):
            add_self_metrics(result, runner.name, ok, secs)
            await self.sink(ts, result)
        if self.on_cycle is not None:
            await self.on_cycle(ts)

    async def _drain_events(self) -> None:
        ready = self.events.bind(asyncio.get_running_loop())
        while True:
            await ready.wait()
            ready.clear()
            events = self.events.drain()
            if events:
                await self.sink(time.time(), Collection(events=events))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._cycles]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for r in self.runners:
            r.close()
        self.lane.close()


async def collect_once(runners: list[PluginRunner], events: EventBuffer) -> Stamped:
    """Discover and collect every plugin once, concurrently (``fleetmon agent --once``)."""
    await asyncio.gather(*(r.discover() for r in runners))
    ts = time.time()
    live = [r for r in runners if r.enabled]
    lane = Lane()
    try:
        results = await collect_together(live, lane) if live else []
    finally:
        lane.close()
    total = Collection()
    for r, (result, ok, secs) in zip(live, results, strict=True):
        add_self_metrics(result, r.name, ok, secs)
        total.extend(result)
    total.events.extend(events.drain())
    return Stamped(ts, total)
