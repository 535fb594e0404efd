"""IPMI through ``ipmitool``: DCMI power reading and the SDR's power, PSU, current, voltage sensors.

ipmitool runs as an asyncio subprocess with a deadline (no thread is parked on it). Remote
BMCs are reached with ``-I lanplus``; the password travels in the child's environment
(``IPMI_PASSWORD`` with ``-E``), never in argv (visible in ``ps``) and never in a log line.
Parsing is pure and tested on captured ipmitool output.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
from dataclasses import dataclass, field

from agent.errors import NotSupported
from agent.model import Collection
from agent.plugins.power import metrics as m
from agent.plugins.power.config import IpmiConfig
from agent.plugins.power.source import Env, Source, SourceError

# ---------------------------------------------------------------------------------------------
# parsing


@dataclass
class DcmiPower:
    instant: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    average: float | None = None
    #: "Power reading state is: activated|deactivated"; None when the line is missing.
    active: bool | None = None


_DCMI_FIELDS = {
    "instantaneous power reading": "instant",
    "minimum during sampling period": "minimum",
    "maximum during sampling period": "maximum",
    "average power reading over sample period": "average",
}
_WATTS = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*Watts?\s*$", re.IGNORECASE)


def parse_dcmi_power_reading(text: str) -> DcmiPower:
    """``ipmitool dcmi power reading`` (DCMI 1.5 §6.6.1 Get Power Reading)."""
    out = DcmiPower()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in _DCMI_FIELDS:
            mt = _WATTS.match(value)
            # DCMI carries watts as an unsigned 16-bit number: a negative or overflowing
            # (400 nines read as inf) reading is no reading.
            if mt and 0 <= float(mt.group(1)) < math.inf:
                setattr(out, _DCMI_FIELDS[key], float(mt.group(1)))
        elif key == "power reading state is":
            out.active = value.strip().lower() == "activated"
    return out


@dataclass
class SdrSensor:
    name: str
    status: str  # ok, ns (no reading), cr, nr, nc, lnc, …
    entity: str = ""  # "10.1" = entity id 10 (power supply), instance 1; empty in plain `sdr`
    value: float | None = None
    unit: str = ""
    states: list[str] = field(default_factory=list)  # asserted discrete states

    @property
    def entity_id(self) -> int | None:
        head = self.entity.split(".", 1)[0]
        return int(head) if head.isascii() and head.isdigit() else None  # "²".isdigit() is True


_READING = re.compile(r"^(-?\d+(?:\.\d+)?)\s+(\S.*)$")


def _split_reading(text: str) -> tuple[float | None, str, list[str]]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    value: float | None = None
    unit = ""
    if parts:
        mt = _READING.match(parts[0])
        if mt:
            value, unit = float(mt.group(1)), mt.group(2)
            if not math.isfinite(value):  # digits past a float's range: no reading
                value = None
            parts = parts[1:]
        elif parts[0].lower() in ("no reading", "not readable", "disabled") or parts[0].startswith("0x"):
            parts = parts[1:]
    return value, unit, parts


def parse_sdr(text: str) -> list[SdrSensor]:
    """``ipmitool sdr elist`` (name | id | status | entity | reading) or ``ipmitool sdr``
    (name | reading | status). Lines that are not sensors ("Unable to send command: …",
    interleaved by some BMCs) are skipped."""
    out = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) == 5:
            name, _sid, status, entity, reading = cols
        elif len(cols) == 3:
            name, reading, status = cols
            entity = ""
        else:
            continue
        if not name:
            continue
        value, unit, states = _split_reading(reading)
        out.append(SdrSensor(name, status, entity, value, unit, states))
    return out


# IPMI 2.0 Table 43-13, entity ID codes: 0x0A power supply.
ENTITY_POWER_SUPPLY = 10

# Sensor type 08h (power supply) offsets as ipmitool names them (IPMI 2.0 Table 42-3):
# anything but presence (offset 0) and standby (offset 7) means the PSU does not deliver.
_PSU_FAULTS = ("failure detected", "predictive failure", "ac lost", "input lost", "out-of-range",
               "config error", "configuration error")


@dataclass
class PsuStatus:
    name: str
    present: bool
    failed: bool


def psu_statuses(sensors: list[SdrSensor]) -> list[PsuStatus]:
    """Discrete sensors on power-supply entities that report presence or faults."""
    out = []
    for s in sensors:
        if s.entity_id != ENTITY_POWER_SUPPLY or not s.states:
            continue
        states = [x.lower() for x in s.states]
        present = any("presence detected" in x for x in states)
        failed = any(f in x for x in states for f in _PSU_FAULTS)
        if not present and not failed:
            continue
        out.append(PsuStatus(s.name, present, failed))
    return out


# ---------------------------------------------------------------------------------------------
# reading


class IpmiSource(Source):
    name = "ipmi"

    def __init__(self, env: Env, cfg: IpmiConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self._unsupported: set[str] = set()

    @property
    def target(self) -> str:
        return f"BMC {self.cfg.host}:{self.cfg.port}" if self.cfg.host else "local BMC"

    def absent_reason(self) -> str | None:
        if shutil.which(self.cfg.ipmitool) is None:
            return f"{self.cfg.ipmitool} not installed (Debian/Ubuntu: apt install ipmitool)"
        return self.cfg.unset(self.env.ctx.dev_root)

    def argv(self, *command: str) -> list[str]:
        argv = [self.cfg.ipmitool]
        if self.cfg.host:
            argv += ["-I", self.cfg.interface, "-H", self.cfg.host, "-p", str(self.cfg.port)]
            if self.cfg.username:
                argv += ["-U", self.cfg.username]
            # -E: the password comes from $IPMI_PASSWORD (set only in the child's environment).
            argv += ["-E"]
            if self.cfg.interface == "lanplus":
                argv += ["-C", str(self.cfg.cipher_suite)]
            # One try with a 2 s timeout: the plugin's own deadline bounds the whole run.
            argv += ["-N", "2", "-R", "1"]
        return [*argv, *command]

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        password = self.cfg.password or os.environ.get(self.cfg.password_env, "")
        env["IPMI_PASSWORD"] = password
        return env

    async def run(self, *command: str) -> str:
        what = f"ipmitool {' '.join(command)}"
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(*command), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self._child_env(),
            )
        except OSError as err:
            raise SourceError(f"cannot run {self.cfg.ipmitool}: {err.strerror}") from err
        try:
            out, err_b = await proc.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        stderr = err_b.decode(errors="replace").strip()
        if proc.returncode != 0:
            # DCMI 1.5 §6: a BMC without DCMI answers "Invalid command" (completion code C1h).
            if "invalid command" in stderr.lower() or "(c1)" in stderr.lower():
                raise NotSupported(f"{what}: the BMC does not implement it ({_last_line(stderr)})")
            hint = ""
            if "session" in stderr.lower() or "password" in stderr.lower() or "unauthorized" in stderr.lower():
                hint = (f" (check plugins.power.ipmi.username and the password in ${self.cfg.password_env};"
                        f" the user needs at least USER privilege)")
            raise SourceError(f"{self.target}: {what} failed (exit {proc.returncode}): "
                              f"{_last_line(stderr) or 'no message'}{hint}")
        return out.decode(errors="replace")

    async def _sdr(self) -> str:
        if not self.cfg.sdr_types:
            return await self.run("sdr", "elist")
        # One ipmitool run per type, one after the other: a BMC serves sessions slowly and
        # parallel ones compete; `sdr type` prints the same five columns as `sdr elist`.
        return "\n".join([await self.run("sdr", "type", t) for t in self.cfg.sdr_types])

    async def collect(self, col: Collection, now: float) -> None:
        jobs: dict[str, asyncio.Task[str]] = {}
        if self.cfg.dcmi and "dcmi" not in self._unsupported:
            jobs["dcmi"] = asyncio.ensure_future(self.run("dcmi", "power", "reading"))
        if self.cfg.sdr:
            jobs["sdr"] = asyncio.ensure_future(self._sdr())
        if not jobs:
            return
        try:
            done = await asyncio.gather(*jobs.values(), return_exceptions=True)
        except asyncio.CancelledError:
            for task in jobs.values():
                task.cancel()
            raise
        errors: list[BaseException] = []
        for kind, result in zip(jobs, done, strict=True):
            if isinstance(result, NotSupported):
                self._unsupported.add(kind)
                self.env.log.info("ipmi: %s: %s; not asking again", self.target, result)
            elif isinstance(result, BaseException):
                errors.append(result)
            elif kind == "dcmi":
                self._add_dcmi(col, parse_dcmi_power_reading(result), now)
            else:
                self._add_sdr(col, parse_sdr(result))
        if errors and len(errors) == len(jobs):
            first = errors[0]
            if isinstance(first, SourceError):
                raise first
            raise SourceError(f"{self.target}: {first}") from first
        for err in errors:
            self.env.log.warning("ipmi: %s", err)

    def _add_dcmi(self, col: Collection, p: DcmiPower, now: float) -> None:
        if p.active is False:
            # DCMI: readings are not valid while power measurement is deactivated.
            self.env.log.debug("ipmi: %s: DCMI power measurement is deactivated", self.target)
            return
        for stat in ("instant", "minimum", "maximum", "average"):
            col.add(m.IPMI_POWER, getattr(p, stat), {"stat": stat})
        self.env.node_power(col, "dcmi", p.instant, now)

    def _add_sdr(self, col: Collection, sensors: list[SdrSensor]) -> None:
        by_unit = {"watts": m.IPMI_SENSOR_WATTS, "amps": m.IPMI_SENSOR_AMPERES, "volts": m.IPMI_SENSOR_VOLTS}
        seen: set[str] = set()
        for s in sensors:
            metric = by_unit.get(s.unit.lower())
            if metric is None or s.value is None or s.name in seen:
                continue
            seen.add(s.name)
            labels = {"sensor": s.name}
            if s.entity:
                labels["entity"] = s.entity
            col.add(metric, s.value, labels)
        for psu in psu_statuses(sensors):
            labels = {"psu": psu.name, "source": "ipmi"}
            col.add(m.PSU_PRESENT, 1 if psu.present else 0, labels)
            col.add(m.PSU_UP, 1 if psu.present and not psu.failed else 0, labels)


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else ""
