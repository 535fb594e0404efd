"""Runs each plugin at its own interval, off the event loop, with a deadline.

Every plugin gets its own single worker thread. A collection that runs past its deadline is
abandoned (Python cannot kill a thread stuck in C) and counted as failed; while it is still
stuck, that plugin's later runs are skipped rather than piling up threads, and every other
plugin keeps its own timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
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
    """One plugin instance, its thread and its deadline."""

    def __init__(self, plugin: AnyPlugin, section: PluginSection) -> None:
        self.plugin = plugin
        self.section = section
        self.name = section.name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fleetmon-{self.name}")
        self._busy: Future[Any] | None = None
        self.enabled = True
        self.detail = ""
        self._stuck_logged = False

    async def _in_thread(self, fn: Callable[[], Any], timeout: float) -> Any:
        if self._busy is not None and not self._busy.done():
            raise TimeoutError("previous call is still running")
        fut = self._pool.submit(fn)
        self._busy = fut
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    async def discover(self) -> bool:
        try:
            await self._in_thread(self.plugin.discover, self.section.timeout)
            if isinstance(self.plugin, AsyncPlugin):
                self._pool.shutdown(wait=False)  # collect runs on the loop: the worker thread is not needed again
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
        """Run one collection. Never raises."""
        start = time.perf_counter()
        ok = False
        result = Collection()
        try:
            plugin = self.plugin
            if isinstance(plugin, AsyncPlugin):
                result = await asyncio.wait_for(plugin.collect(), self.section.timeout)
            else:
                result = await self._in_thread(plugin.collect, self.section.timeout)
            ok = True
            self._stuck_logged = False
        except TimeoutError:
            if not self._stuck_logged:
                log.warning("plugin %s: collection ran past its %gs deadline", self.name, self.section.timeout)
                self._stuck_logged = True
        except AgentError as err:
            log.warning("plugin %s: collection failed: %s", self.name, err)
        except Exception as err:  # supervision boundary
            log.exception("plugin %s: collection crashed: %s", self.name, err)
        return RunResult(result, ok, time.perf_counter() - start)

    def close(self) -> None:
        try:
            self.plugin.close()
        except Exception as err:  # noqa: BLE001 - supervision boundary: closing one plugin never blocks the others
            log.warning("plugin %s: close failed: %s", self.name, err)
        self._pool.shutdown(wait=False, cancel_futures=True)


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


class Scheduler:
    """Drives the runners; hands every collection (with self-metrics) to ``sink``."""

    def __init__(self, runners: list[PluginRunner], events: EventBuffer, sink: Sink) -> None:
        self.runners = runners
        self.events = events
        self.sink = sink
        self._tasks: list[asyncio.Task[None]] = []

    def status(self) -> list[PluginStatus]:
        return [PluginStatus(r.name, r.enabled, r.detail) for r in self.runners]

    async def start(self) -> None:
        await asyncio.gather(*(r.discover() for r in self.runners))
        for r in self.runners:
            if r.enabled:
                self._tasks.append(asyncio.create_task(self._loop(r), name=f"plugin-{r.name}"))
        self._tasks.append(asyncio.create_task(self._drain_events(), name="events"))

    async def _loop(self, runner: PluginRunner) -> None:
        interval = runner.section.interval
        loop = asyncio.get_running_loop()
        # Align to wall-clock multiples of the interval so a fleet samples at the same instants.
        next_at = loop.time() + (-time.time()) % interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            ts = time.time()
            result, ok, secs = await runner.collect()
            add_self_metrics(result, runner.name, ok, secs)
            await self.sink(ts, result)
            next_at += interval
            if next_at < loop.time():  # we fell behind (a slow run): skip missed ticks, keep the phase
                next_at += ((loop.time() - next_at) // interval + 1) * interval

    async def _drain_events(self) -> None:
        ready = self.events.bind(asyncio.get_running_loop())
        while True:
            await ready.wait()
            ready.clear()
            events = self.events.drain()
            if events:
                await self.sink(time.time(), Collection(events=events))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for r in self.runners:
            r.close()


async def collect_once(runners: list[PluginRunner], events: EventBuffer) -> Stamped:
    """Discover and collect every plugin once, concurrently (``fleetmon agent --once``)."""
    await asyncio.gather(*(r.discover() for r in runners))
    ts = time.time()
    live = [r for r in runners if r.enabled]
    results = await asyncio.gather(*(r.collect() for r in live))
    total = Collection()
    for r, (result, ok, secs) in zip(live, results, strict=True):
        add_self_metrics(result, r.name, ok, secs)
        total.extend(result)
    total.events.extend(events.drain())
    return Stamped(ts, total)
