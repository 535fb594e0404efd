"""UPS and energy storage through NUT's ``upsd``: a small asyncio client of its TCP protocol.

The protocol (NUT docs/net-protocol.txt) is line based: ``LIST UPS`` and ``LIST VAR <ups>``
answer ``BEGIN LIST …`` / one line per item / ``END LIST …``; failures are ``ERR <CODE>``.
Values are double-quoted with ``\\"`` and ``\\\\`` escapes. Variable names and units follow
NUT docs/nut-names.txt (percent for charge and load, seconds for runtime, volts, watts).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.model import Collection
from agent.plugins.power import metrics as m
from agent.plugins.power.config import NutConfig
from agent.plugins.power.source import Env, Source, SourceError

# ups.status flags (nut-names.txt, "ups.status"): reported 0/1 each, so rules need no regex.
STATUS_FLAGS = ("OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG", "BYPASS", "CAL", "OFF", "OVER",
                "TRIM", "BOOST", "FSD", "ALARM", "TEST")

# upsd answers these per UPS when it has no fresh data; the UPS is down, the source is not.
_STALE = ("DATA-STALE", "DRIVER-NOT-CONNECTED")

# ---------------------------------------------------------------------------------------------
# parsing


class NutError(SourceError):
    def __init__(self, code: str, context: str) -> None:
        super().__init__(f"{context}: upsd answered ERR {code}")
        self.code = code


def split_words(line: str) -> list[str]:
    """Split a protocol line into words; double-quoted words may hold spaces and escapes."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] == " ":
            i += 1
            continue
        if line[i] == '"':
            i += 1
            buf = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(line[i])
                i += 1
            words.append("".join(buf))
            i += 1
        else:
            j = line.find(" ", i)
            j = n if j < 0 else j
            words.append(line[i:j])
            i = j
    return words


def parse_list(lines: list[str], kind: str) -> list[list[str]]:
    """Items of a ``BEGIN LIST <kind> …`` … ``END LIST <kind> …`` answer, words after the kind."""
    out = []
    for line in lines:
        if line.startswith("ERR "):
            raise NutError(line[4:].split()[0] if line[4:].split() else "UNKNOWN", f"LIST {kind}")
        words = split_words(line)
        if words and words[0] == kind:
            out.append(words[1:])
    return out


def parse_vars(lines: list[str]) -> dict[str, str]:
    """``VAR <ups> <name> "<value>"`` lines → {name: value}."""
    return {w[1]: w[2] for w in parse_list(lines, "VAR") if len(w) >= 3}


@dataclass
class UpsReading:
    ups: str
    flags: list[str] = field(default_factory=list)
    charge_ratio: float | None = None
    runtime_s: float | None = None
    battery_v: float | None = None
    load_ratio: float | None = None
    input_v: float | None = None
    output_v: float | None = None
    real_power_w: float | None = None
    real_power_nominal_w: float | None = None


def _float(vars_: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(vars_[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None  # float() reads "nan" and "inf" too


def _pct(vars_: Mapping[str, str], key: str) -> float | None:
    v = _float(vars_, key)
    return None if v is None else v / 100  # NUT reports percent


def parse_ups(ups: str, vars_: Mapping[str, str]) -> UpsReading:
    # ups.realpower is what the UPS measures; when absent it is not estimated from load ×
    # nominal (that would be an invented value).
    return UpsReading(
        ups=ups,
        flags=vars_.get("ups.status", "").split(),
        charge_ratio=_pct(vars_, "battery.charge"),
        runtime_s=_float(vars_, "battery.runtime"),
        battery_v=_float(vars_, "battery.voltage"),
        load_ratio=_pct(vars_, "ups.load"),
        input_v=_float(vars_, "input.voltage"),
        output_v=_float(vars_, "output.voltage"),
        real_power_w=_float(vars_, "ups.realpower"),
        real_power_nominal_w=_float(vars_, "ups.realpower.nominal"),
    )


# ---------------------------------------------------------------------------------------------
# reading


class NutClient:
    """One upsd connection for one collection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str) -> None:
        self.reader, self.writer, self.where = reader, writer, where

    async def _line(self) -> str:
        raw = await self.reader.readline()
        if not raw:
            raise SourceError(f"{self.where}: upsd closed the connection")
        return raw.decode(errors="replace").rstrip("\r\n")

    async def command(self, cmd: str) -> str:
        self.writer.write(cmd.encode() + b"\n")
        await self.writer.drain()
        return await self._line()

    async def list(self, what: str) -> list[str]:
        self.writer.write(f"LIST {what}\n".encode())
        await self.writer.drain()
        first = await self._line()
        if first.startswith("ERR "):
            code = first[4:].split()[0] if first[4:].split() else "UNKNOWN"
            raise NutError(code, f"{self.where}: LIST {what}")
        if not first.startswith("BEGIN LIST"):
            raise SourceError(f"{self.where}: LIST {what}: unexpected answer {first[:80]!r}")
        lines: list[str] = []
        while True:
            line = await self._line()
            if line.startswith("END LIST"):
                return lines
            lines.append(line)

    async def close(self) -> None:
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            self.writer.write(b"LOGOUT\n")
            await asyncio.wait_for(self.writer.drain(), 0.5)
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 0.5)


class NutSource(Source):
    name = "nut"

    def __init__(self, env: Env, cfg: NutConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self._stale_logged: set[str] = set()

    @property
    def target(self) -> str:
        return f"upsd {self.cfg.host}:{self.cfg.port}"

    def absent_reason(self) -> str | None:
        return self.cfg.unset()

    async def _connect(self) -> NutClient:
        try:
            reader, writer = await asyncio.open_connection(self.cfg.host, self.cfg.port)
        except OSError as err:
            raise SourceError(f"{self.target}: cannot connect: {err.strerror or err}") from err
        client = NutClient(reader, writer, self.target)
        if self.cfg.username:
            password = self.cfg.password or os.environ.get(self.cfg.password_env, "")
            for cmd, shown in ((f"USERNAME {self.cfg.username}", "USERNAME"), (f"PASSWORD {password}", "PASSWORD")):
                answer = await client.command(cmd)
                if not answer.startswith("OK"):
                    await client.close()
                    # Never echo the password: name the command, not the line sent.
                    raise SourceError(f"{self.target}: {shown} refused ({answer[:60]})")
        return client

    async def read(self) -> list[tuple[str, dict[str, str] | None]]:
        """(ups, variables or None when upsd has no fresh data for it)."""
        client = await self._connect()
        try:
            names = list(self.cfg.ups)
            if not names:
                names = [w[0] for w in parse_list(await client.list("UPS"), "UPS") if w]
            out: list[tuple[str, dict[str, str] | None]] = []
            for ups in names:
                try:
                    out.append((ups, parse_vars(await client.list(f"VAR {ups}"))))
                except NutError as err:
                    if err.code not in _STALE:
                        raise
                    if ups not in self._stale_logged:
                        self._stale_logged.add(ups)
                        self.env.log.warning("nut: %s", err)
                    out.append((ups, None))
            return out
        finally:
            await client.close()

    async def collect(self, col: Collection, now: float) -> None:
        for ups, vars_ in await self.read():
            labels = {"ups": ups}
            # "WAIT": the driver has not delivered its first reading yet (upsd placeholder).
            if vars_ is None or vars_.get("ups.status", "WAIT") == "WAIT":
                col.add(m.UPS_UP, 0, labels)
                continue
            self._stale_logged.discard(ups)
            r = parse_ups(ups, vars_)
            col.add(m.UPS_UP, 1, labels)
            col.add(m.UPS_ON_BATTERY, 1 if "OB" in r.flags else 0, labels)
            col.add(m.UPS_LOW_BATTERY, 1 if "LB" in r.flags else 0, labels)
            for flag in (*STATUS_FLAGS, *(f for f in r.flags if f not in STATUS_FLAGS)):
                col.add(m.UPS_STATUS_FLAG, 1 if flag in r.flags else 0, {**labels, "flag": flag})
            col.add(m.UPS_CHARGE, r.charge_ratio, labels)
            col.add(m.UPS_RUNTIME, r.runtime_s, labels)
            col.add(m.UPS_BATTERY_VOLTAGE, r.battery_v, labels)
            col.add(m.UPS_LOAD, r.load_ratio, labels)
            col.add(m.UPS_INPUT_VOLTAGE, r.input_v, labels)
            col.add(m.UPS_OUTPUT_VOLTAGE, r.output_v, labels)
            col.add(m.UPS_REAL_POWER, r.real_power_w, labels)
            col.add(m.UPS_REAL_POWER_NOMINAL, r.real_power_nominal_w, labels)
