"""Power plugin: runs every configured power source concurrently, each with its own deadline.

``collect`` is a coroutine, so the scheduler awaits it on the event loop (STYLE 13): network
sources (Redfish, NUT, ipmitool as a subprocess) wait without a thread, sysfs reads go to a
worker thread. One source failing costs its own samples and one log line (repeated only
when the reason changes); ``power_source_up{source}`` records it for rules.
"""

from __future__ import annotations

import asyncio
import time

from agent.errors import PluginError, PluginUnavailable
from agent.model import Collection, Event, Severity
from agent.plugin import AsyncPlugin, PluginContext
from agent.plugins.power import metrics as m
from agent.plugins.power.config import PowerConfig
from agent.plugins.power.energy import PowerIntegrator
from agent.plugins.power.ipmi import IpmiSource
from agent.plugins.power.nut import NutSource
from agent.plugins.power.redfish import RedfishSource
from agent.plugins.power.source import Env, Source
from agent.plugins.power.sysfs import AcpiSource, HwmonSource, PowerSupplySource, RaplSource


class PowerPlugin(AsyncPlugin):
    name = "power"
    Config = PowerConfig
    default_interval = 10.0
    config: PowerConfig

    def __init__(self, ctx: PluginContext, config: PowerConfig) -> None:
        super().__init__(ctx, config)
        self.env = Env(ctx, self.log, PowerIntegrator(config.energy_max_gap))
        self.sources: list[Source] = []
        self._failing: dict[str, str] = {}
        self._psu_up: dict[tuple[tuple[str, str], ...], float] = {}

    def _candidates(self) -> list[Source]:
        c = self.config
        out: list[Source] = []
        if c.rapl.enabled:
            out.append(RaplSource(self.env))
        if c.hwmon.enabled:
            out.append(HwmonSource(self.env))
        if c.power_supply.enabled:
            out.append(PowerSupplySource(self.env))
        if c.acpi.enabled:
            out.append(AcpiSource(self.env))
        if c.ipmi.enabled:
            out.append(IpmiSource(self.env, c.ipmi))
        if c.redfish.enabled:
            out.append(RedfishSource(self.env, c.redfish, c.source_timeout))
        if c.nut.enabled:
            out.append(NutSource(self.env, c.nut))
        return out

    def discover(self) -> None:
        reasons = []
        self.sources = []
        for src in self._candidates():
            why = src.absent_reason()
            if why is None:
                self.sources.append(src)
            else:
                self.log.debug("power source %s not used: %s", src.name, why)
                reasons.append(f"{src.name}: {why}")
        if not self.sources:
            raise PluginUnavailable("no power source on this node (" + "; ".join(reasons) + ")")
        self.log.info("power sources: %s", ", ".join(s.name for s in self.sources))

    async def collect(self) -> Collection:
        if not self.sources:
            raise PluginError("power plugin used before discover() (or after close())")
        now = time.monotonic()
        results = await asyncio.gather(*(self._run(src, now) for src in self.sources))
        col = Collection()
        for src, (sub, ok) in zip(self.sources, results, strict=True):
            col.extend(sub)
            col.add(m.SOURCE_UP, 1.0 if ok else 0.0, {"source": src.name})
        self._psu_events(col)
        return col

    async def _run(self, src: Source, now: float) -> tuple[Collection, bool]:
        sub = Collection()
        timeout = self.config.source_timeout
        where = f"power source {src.name}" + (f" ({src.target})" if src.target else "")
        try:
            await asyncio.wait_for(src.collect(sub, now), timeout)
        except TimeoutError:
            self._fail(src.name, f"{where}: no answer within {timeout:g}s (plugins.power.source_timeout)")
            return Collection(), False
        except PluginError as err:
            # Network sources already name their BMC/upsd in the message: say it once.
            text = str(err)
            prefix = f"power source {src.name}" if src.target and src.target in text else where
            self._fail(src.name, f"{prefix}: {text}")
            return Collection(), False
        except Exception as err:  # supervision boundary: one source never stops the others
            if self._failing.get(src.name) != repr(err):
                self.log.exception("%s crashed: %s", where, err)
            self._failing[src.name] = repr(err)
            return Collection(), False
        if self._failing.pop(src.name, None) is not None:
            self.log.info("%s recovered", where)
        return sub, True

    def _fail(self, name: str, message: str) -> None:
        # One line per failure episode, again only when the reason changes: a BMC that stays
        # down must not flood the log every interval.
        if self._failing.get(name) != message:
            self.log.warning("%s", message)
        self._failing[name] = message

    def _psu_events(self, col: Collection) -> None:
        present = {tuple(sorted(s.labels.items())): s.value for s in col.samples if s.metric is m.PSU_PRESENT}
        for s in col.samples:
            if s.metric is not m.PSU_UP:
                continue
            key = tuple(sorted(s.labels.items()))
            before = self._psu_up.get(key)
            self._psu_up[key] = s.value
            if s.value != 0 or before == 0:
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
        for src in sources:
            try:
                src.close()
            except PluginError as err:
                self.log.warning("power source %s: close failed: %s", src.name, err)
