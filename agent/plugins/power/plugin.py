"""Power plugin: the kernel's power files in one pass, network sources concurrently, each with a deadline.

``collect`` is a coroutine (an :class:`~agent.plugin.AsyncPlugin`, STYLE 13):

- the kernel sources (RAPL, hwmon, power_supply, ACPI meter) found their files at discovery;
  each collection reads them in **one** pass (plain file reads, no directory listing): on the
  plugin's reader thread under ``source_timeout``, or, when no network source is configured, on
  the scheduler's lane in turn with the blocking plugins (:meth:`PowerPlugin.blocking_collect`:
  no task and no thread hop; a read that holds the lane too long moves the plugin back to its
  reader thread for good). They are rescanned when a file vanishes, on a kernel hot-plug event
  (uevent) for their classes, and every ``rescan_interval``;
- network sources (Redfish, NUT, ipmitool as a subprocess) wait on the event loop without a
  thread, concurrently, each under its own ``source_timeout``.

One source failing costs its own samples and one log line (repeated only when the reason
changes); ``power_source_up{source}`` records it for rules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from collections.abc import Callable
from typing import NamedTuple

from agent.errors import PluginError, PluginUnavailable
from agent.model import Collection, Event, Severity
from agent.plugin import AsyncPlugin, FailureEpisodes, PluginContext
from agent.plugins.power import metrics as m
from agent.plugins.power.config import PowerConfig
from agent.plugins.power.energy import PowerIntegrator
from agent.plugins.power.hotplug import UeventWatch
from agent.plugins.power.source import Env, LocalSource, Source, SourceBase
from agent.plugins.power.sysfs import AcpiSource, HwmonSource, PowerSupplySource, RaplSource

#: The sysfs classes the kernel sources read, as uevents name their subsystem.
_SUBSYSTEMS = {"power_supply", "hwmon", "powercap"}


class Outcome(NamedTuple):
    """What one source produced in one collection; ``error`` is None when it answered."""

    samples: Collection
    error: Exception | None = None


class PowerPlugin(AsyncPlugin):
    name = "power"
    Config = PowerConfig
    default_interval = 10.0
    config: PowerConfig

    def __init__(self, ctx: PluginContext, config: PowerConfig) -> None:
        super().__init__(ctx, config)
        self.env = Env(ctx, self.log, PowerIntegrator(config.energy_max_gap))
        self.sources: list[SourceBase] = []
        self._candidates_found: list[SourceBase] = []
        self._rescannable: list[LocalSource] = []
        self._local: list[LocalSource] = []
        self._network: list[Source] = []
        self._episodes = FailureEpisodes()
        self._psu_up: dict[tuple[tuple[str, str], ...], float] = {}
        self._reader: cf.ThreadPoolExecutor | None = None
        self._reading: cf.Future[list[Outcome]] | None = None
        self._uevents: UeventWatch | None = None
        self._scanned_at = 0.0

    def _candidates(self) -> list[SourceBase]:
        c = self.config
        out: list[SourceBase] = []
        if c.rapl.enabled:
            out.append(RaplSource(self.env))
        if c.hwmon.enabled:
            out.append(HwmonSource(self.env))
        if c.power_supply.enabled:
            out.append(PowerSupplySource(self.env))
        if c.acpi.enabled:
            out.append(AcpiSource(self.env))
        # A network source's module (ipmitool's runner, HTTP and JSON code: ~1 MiB together) is
        # imported only when the source has an address to ask: most nodes read the kernel alone.
        if c.ipmi.enabled:
            why = c.ipmi.unset(self.ctx.dev_root)
            if why is None:
                from agent.plugins.power.ipmi import IpmiSource  # noqa: PLC0415

                out.append(IpmiSource(self.env, c.ipmi))
            else:
                out.append(Unset(self.env, "ipmi", why))
        if c.redfish.enabled:
            why = c.redfish.unset()
            if why is None:
                from agent.plugins.power.redfish import RedfishSource  # noqa: PLC0415

                out.append(RedfishSource(self.env, c.redfish, c.source_timeout))
            else:
                out.append(Unset(self.env, "redfish", why))
        if c.nut.enabled:
            why = c.nut.unset()
            if why is None:
                from agent.plugins.power.nut import NutSource  # noqa: PLC0415

                out.append(NutSource(self.env, c.nut))
            else:
                out.append(Unset(self.env, "nut", why))
        return out

    def discover(self) -> None:
        reasons = []
        self.sources = []
        candidates = self._candidates()
        for src in candidates:
            if isinstance(src, LocalSource):
                try:
                    src.scan()
                except PluginError as err:
                    reasons.append(f"{src.name}: {err}")
                    continue
            why = src.absent_reason()
            if why is None:
                self.sources.append(src)
            else:
                self.log.debug("power source %s not used: %s", src.name, why)
                reasons.append(f"{src.name}: {why}")
        if not self.sources:
            raise PluginUnavailable("no power source on this node (" + "; ".join(reasons) + ")")
        self._local = [s for s in self.sources if isinstance(s, LocalSource)]
        self._network = [s for s in self.sources if isinstance(s, Source)]
        self._scanned_at = time.monotonic()
        if self._local:
            self._reader = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetmon-power-read")
            # Kernel sources that are configured but absent now may appear later (a hot-plugged
            # supply): they stay candidates for the rescans.
            self._candidates_found = candidates
            self._rescannable = [s for s in candidates if isinstance(s, LocalSource)]
            self._uevents = UeventWatch(_SUBSYSTEMS)
        self.log.info("power sources: %s", ", ".join(s.name for s in self.sources))

    async def collect(self) -> Collection:
        if not self.sources:
            raise PluginError("power plugin used before discover() (or after close())")
        now = time.monotonic()
        jobs = [self._run(src, now) for src in self._network]
        if self._local:
            jobs.append(self._run_local(now))
        results = await asyncio.gather(*jobs)
        by_source: dict[str, Outcome] = {}
        for result in results:
            by_source.update(result)
        return self._compose(by_source)

    def blocking_collect(self) -> Callable[[], Collection] | None:
        """Kernel sources only (no BMC or UPS configured): a collection is file reads alone, so
        the scheduler may run it on its lane with the blocking plugins, not on the reader thread."""
        if self._network or not self._local or (self._reading is not None and not self._reading.done()):
            return None  # something to await, or a read of a previous collection is still stuck
        return self._collect_local

    def _collect_local(self) -> Collection:
        return self._compose(self._settled(self._read_local(time.monotonic())))

    def _compose(self, by_source: dict[str, Outcome]) -> Collection:
        """The collection from each source's outcome: its samples and ``power_source_up``."""
        col = Collection()
        for src in self.sources:
            outcome = by_source.get(src.name, Outcome(Collection(), PluginError("not collected")))
            col.extend(outcome.samples)
            col.add(m.SOURCE_UP, 1.0 if outcome.error is None else 0.0, {"source": src.name})
        self._psu_events(col)
        return col

    # -- kernel sources: one pass on the reader thread or the lane --------------------------

    async def _run_local(self, now: float) -> dict[str, Outcome]:
        timeout = self.config.source_timeout
        assert self._reader is not None
        if self._reading is not None and not self._reading.done():
            # A file read stuck in a driver cannot be interrupted: wait for it, never pile threads up.
            for src in self._local:
                self._fail(src.name, f"power source {src.name} ({src.target}): the previous read is still "
                                     f"stuck in the kernel")
            return {src.name: Outcome(Collection(), TimeoutError()) for src in self._local}
        self._reading = self._reader.submit(self._read_local, now)
        try:
            outcomes = await asyncio.wait_for(asyncio.wrap_future(self._reading), timeout)
        except TimeoutError:
            for src in self._local:
                self._fail(src.name, f"power source {src.name} ({src.target}): no answer within {timeout:g}s "
                                     f"(plugins.power.source_timeout)")
            return {src.name: Outcome(Collection(), TimeoutError()) for src in self._local}
        return self._settled(outcomes)

    def _settled(self, outcomes: list[Outcome]) -> dict[str, Outcome]:
        """Each kernel source's outcome of one pass, by name, its failure or recovery logged."""
        out = {}
        for src, outcome in zip(self._local, outcomes, strict=True):
            self._settle(src, outcome.error)
            out[src.name] = outcome
        return out

    def _read_local(self, now: float) -> list[Outcome]:
        """Off the loop (the reader thread, or the scheduler's lane): rescan if something changed,
        then read every kernel source once."""
        due = now - self._scanned_at >= self.config.rescan_interval
        hotplug = self._uevents is not None and self._uevents.changed()
        if due or hotplug or any(src.stale for src in self._local):
            self._rescan(now)
        outcomes = []
        for src in self._local:
            col = Collection()
            try:
                src.read(col, now)
            except PluginError as err:
                outcomes.append(Outcome(Collection(), err))
            except Exception as err:  # noqa: BLE001 - supervision boundary: logged on the loop by _settle
                outcomes.append(Outcome(Collection(), err))
            else:
                outcomes.append(Outcome(col))
        return outcomes

    def _rescan(self, now: float) -> None:
        for src in self._rescannable:
            src.close()  # its held files: the plan may change
            try:
                src.scan()
            except PluginError as err:
                self.log.debug("power source %s: rescan failed: %s", src.name, err)
        self._scanned_at = now
        present = [s for s in self._rescannable if s.absent_reason() is None]
        if present != self._local:
            self.log.info("power: kernel sources now %s", ", ".join(s.name for s in present) or "none")
            self._local = present
            self.sources = [s for s in self._candidates_found if s in present or s in self._network]

    # -- network sources: concurrently on the loop ------------------------------------------

    async def _run(self, src: Source, now: float) -> dict[str, Outcome]:
        sub = Collection()
        timeout = self.config.source_timeout
        try:
            await asyncio.wait_for(src.collect(sub, now), timeout)
        except TimeoutError as err:
            self._fail(src.name, f"{_where(src)}: no answer within {timeout:g}s (plugins.power.source_timeout)")
            return {src.name: Outcome(Collection(), err)}
        except Exception as err:  # noqa: BLE001 - supervision boundary: one source never stops the others
            self._settle(src, err)
            return {src.name: Outcome(Collection(), err)}
        self._settle(src, None)
        return {src.name: Outcome(sub)}

    def _settle(self, src: SourceBase, err: Exception | None) -> None:
        """Log a source's failure once per reason, and its recovery."""
        if err is None:
            if self._episodes.recovered(src.name):
                self.log.info("%s recovered", _where(src))
            return
        where = _where(src)
        if isinstance(err, PluginError):
            # Network sources already name their BMC/upsd in the message: say it once.
            text = str(err)
            prefix = f"power source {src.name}" if src.target and src.target in text else where
            self._fail(src.name, f"{prefix}: {text}")
            return
        if self._episodes.failed(src.name, repr(err)):
            self.log.error("%s crashed: %r", where, err, exc_info=err)

    def _fail(self, name: str, message: str) -> None:
        if self._episodes.failed(name, message):
            self.log.warning("%s", message)

    def _psu_events(self, col: Collection) -> None:
        present = {s.key[2]: v for s, v in col.pairs() if s.metric is m.PSU_PRESENT}
        for s, value in col.pairs():
            if s.metric is not m.PSU_UP:
                continue
            key = s.key[2]
            before = self._psu_up.get(key)
            self._psu_up[key] = value
            if value != 0 or before == 0:
                continue
            psu, src = s.labels.get("psu", "?"), s.labels.get("source", "?")
            if present.get(key) == 0:
                # An empty bay: a lost PSU if it held one before, else maybe a one-PSU build.
                severity = Severity.CRITICAL if before == 1 else Severity.WARNING
                message = f"PSU bay {psu} ({src}) is empty"
                action = "If this node should have a PSU there, insert one; until then it has no PSU redundancy"
            else:
                severity = Severity.CRITICAL
                message = f"PSU {psu} ({src}) is disabled or failed"
                action = ("Check the PSU's LEDs and input feed; reseat or replace the PSU; "
                          "the node runs without PSU redundancy until then")
            col.events.append(Event("power.psu_fault", severity, message, dict(s.labels), action=action))

    def close(self) -> None:
        sources, self.sources = self.sources, []
        self._local, self._network = [], []
        for src in sources:
            try:
                src.close()
            except PluginError as err:
                self.log.warning("power source %s: close failed: %s", src.name, err)
        if self._uevents is not None:
            self._uevents.close()
            self._uevents = None
        if self._reader is not None:
            self._reader.shutdown(wait=False, cancel_futures=True)
            self._reader = None


class Unset(SourceBase):
    """A network source without an address: absent, for the one line that says why."""

    def __init__(self, env: Env, name: str, why: str) -> None:
        super().__init__(env)
        self.name = name
        self._why = why

    def absent_reason(self) -> str:
        return self._why


def _where(src: SourceBase) -> str:
    """How log lines name a source: ``power source redfish (BMC 10.0.0.7)``."""
    return f"power source {src.name}" + (f" ({src.target})" if src.target else "")
