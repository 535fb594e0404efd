"""Redfish BMC power: PSUs, node power, power cap and PSU redundancy, over HTTPS with httpx.

Per chassis, the newer resources are preferred and the deprecated ``Power`` resource is read
only for what they lack (DSP0268 2020.4 deprecated ``Power`` in favour of ``PowerSubsystem``
and ``EnvironmentMetrics``):

- PSUs and redundancy: ``PowerSubsystem`` → ``PowerSupplies/*`` (+ ``Metrics``), else
  ``Power.PowerSupplies`` / ``Power.Redundancy``;
- node power and cap: ``EnvironmentMetrics.PowerWatts`` / ``PowerLimitWatts``, else
  ``Power.PowerControl[].PowerConsumedWatts`` / ``PowerLimit.LimitInWatts``.

Sessions (``POST /redfish/v1/SessionService/Sessions``, then ``X-Auth-Token``) are kept across
collections and renewed on 401; the session is deleted on close, because BMCs allow only a
few at a time. httpx is an optional dependency (the ``redfish`` extra) and imported lazily.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.model import Collection
from agent.plugins.power import metrics as m
from agent.plugins.power.config import RedfishConfig
from agent.plugins.power.source import Env, Source, SourceError

if TYPE_CHECKING:
    import httpx


def _httpx() -> Any:
    """The httpx module, imported on first use: it is optional (the ``redfish`` extra) and costs
    the agent memory on every node that has no BMC to read."""
    import httpx  # noqa: PLC0415 - optional and heavy, see above

    return httpx

SESSIONS = "/redfish/v1/SessionService/Sessions"

# Redfish Resource.Health (DSP0268 "Status"): numeric so rules can compare.
HEALTH = {"OK": 0, "Warning": 1, "Critical": 2}
# Resource.State values in which a PSU delivers power (StandbySpare: a cold-redundant spare).
_UP_STATES = ("Enabled", "StandbySpare")

# ---------------------------------------------------------------------------------------------
# parsing (pure: JSON documents in, readings out)


@dataclass
class PsuReading:
    psu: str
    present: bool | None
    up: bool | None
    health: int | None = None
    input_w: float | None = None
    output_w: float | None = None
    input_v: float | None = None
    capacity_w: float | None = None
    energy_j: float | None = None


@dataclass
class LegacyPower:
    consumed_w: float | None = None
    limit_w: float | None = None
    psus: list[PsuReading] = field(default_factory=list)
    redundancy: list[bool | None] = field(default_factory=list)


def _num(value: Any) -> float | None:
    """A JSON number as a float; None for anything else, and for NaN/Infinity (Python's json
    reads those tokens) and integers past a float's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    """A collection property; anything but a JSON array (a BMC's mistake) reads as empty."""
    value = doc.get(key)
    return value if isinstance(value, list) else []


def _reading(doc: dict[str, Any], key: str) -> float | None:
    """``{"Reading": 937.4, "DataSourceUri": …}`` excerpts (Sensor excerpt, DSP0268)."""
    sub = doc.get(key)
    return _num(sub.get("Reading")) if isinstance(sub, dict) else None


def _status(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    st = doc.get("Status")
    if not isinstance(st, dict):
        return None, None
    state, health = st.get("State"), st.get("Health")
    return (state if isinstance(state, str) else None), (health if isinstance(health, str) else None)


def _psu_state(doc: dict[str, Any]) -> tuple[bool | None, bool | None, int | None]:
    """(present, up, health); None where the BMC gives no Status at all (not guessed)."""
    state, health = _status(doc)
    if state is None and health is None:
        return None, None, None
    present = state != "Absent"
    up = present and (state is None or state in _UP_STATES) and health != "Critical"
    return present, up, HEALTH.get(health) if health else None


def redundancy_ok(doc: dict[str, Any]) -> bool | None:
    """A redundancy group is in effect and healthy: State Enabled and Health OK.

    ``UnavailableOffline`` (the DMTF mockup, one bay empty) means redundancy is not in effect.
    None when the BMC does not say.
    """
    state, health = _status(doc)
    if state is None and health is None:
        return None
    return state == "Enabled" and health == "OK"


def parse_power_supply(doc: dict[str, Any], metrics: dict[str, Any] | None, fallback_id: str = "") -> PsuReading:
    """A ``PowerSupply`` resource (PowerSupply.v1_x) and its ``PowerSupplyMetrics``."""
    present, up, health = _psu_state(doc)
    r = PsuReading(str(doc.get("Id") or fallback_id), present, up, health,
                   capacity_w=_num(doc.get("PowerCapacityWatts")))
    if metrics:
        r.input_w = _reading(metrics, "InputPowerWatts")
        r.output_w = _reading(metrics, "OutputPowerWatts")
        r.input_v = _reading(metrics, "InputVoltage")
        kwh = _reading(metrics, "EnergykWh")
        # Redfish reports kWh; a counter never reads negative (nor overflows to inf as joules).
        r.energy_j = kwh * 3_600_000 if kwh is not None and 0 <= kwh * 3_600_000 < math.inf else None
    return r


def parse_power_subsystem(doc: dict[str, Any]) -> list[bool | None]:
    return [redundancy_ok(g) for g in _list(doc, "PowerSupplyRedundancy") if isinstance(g, dict)]


def parse_environment_metrics(doc: dict[str, Any]) -> tuple[float | None, float | None]:
    """(node watts, power limit watts) from ``EnvironmentMetrics``."""
    limit = doc.get("PowerLimitWatts")
    set_point = _num(limit.get("SetPoint")) if isinstance(limit, dict) else None
    return _reading(doc, "PowerWatts"), set_point


def parse_legacy_power(doc: dict[str, Any]) -> LegacyPower:
    """The deprecated ``Power`` resource (Power.v1_x)."""
    out = LegacyPower()
    for ctl in _list(doc, "PowerControl"):
        if not isinstance(ctl, dict):
            continue
        watts = _num(ctl.get("PowerConsumedWatts"))
        if watts is None:
            continue
        out.consumed_w = watts
        limit = ctl.get("PowerLimit")
        if isinstance(limit, dict):
            out.limit_w = _num(limit.get("LimitInWatts"))  # null means "no limit": omitted
        break
    for i, ps in enumerate(_list(doc, "PowerSupplies")):
        if not isinstance(ps, dict):
            continue
        present, up, health = _psu_state(ps)
        output = _num(ps.get("PowerOutputWatts"))
        if output is None:
            output = _num(ps.get("LastPowerOutputWatts"))
        out.psus.append(PsuReading(
            str(ps.get("MemberId") or ps.get("Name") or i), present, up, health,
            input_w=_num(ps.get("PowerInputWatts")), output_w=output,
            input_v=_num(ps.get("LineInputVoltage")), capacity_w=_num(ps.get("PowerCapacityWatts")),
        ))
    out.redundancy = [redundancy_ok(g) for g in _list(doc, "Redundancy") if isinstance(g, dict)]
    return out


def _link(doc: dict[str, Any], key: str) -> str | None:
    sub = doc.get(key)
    if isinstance(sub, dict) and isinstance(sub.get("@odata.id"), str):
        return str(sub["@odata.id"])
    return None


def members(doc: dict[str, Any]) -> list[str]:
    return [str(x["@odata.id"]) for x in _list(doc, "Members")
            if isinstance(x, dict) and isinstance(x.get("@odata.id"), str)]


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class ChassisPower:
    chassis: str
    node_w: float | None = None
    cap_w: float | None = None
    psus: list[PsuReading] = field(default_factory=list)
    redundancy: list[bool | None] = field(default_factory=list)


class RedfishSource(Source):
    name = "redfish"

    def __init__(self, env: Env, cfg: RedfishConfig, timeout: float) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.timeout = timeout
        parts = urlsplit(cfg.url)
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else (parts.hostname or "")
        self._origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        self._token: str | None = None
        self._session_uri: str | None = None

    @property
    def target(self) -> str:
        # host[:port] only: never a user:password@ someone may have put in the URL.
        parts = urlsplit(self.cfg.url)
        return f"BMC {parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")

    def absent_reason(self) -> str | None:
        unset = self.cfg.unset()
        if unset is not None:
            return unset
        try:
            _httpx()
        except ImportError:
            return "httpx not installed (install fleetmon[redfish])"
        return None

    def _password(self) -> str:
        return self.cfg.password or os.environ.get(self.cfg.password_env, "")

    def _verify(self) -> ssl.SSLContext | bool:
        if self.cfg.ca_file:
            try:
                return ssl.create_default_context(cafile=self.cfg.ca_file)
            except (OSError, ssl.SSLError) as err:
                raise SourceError(f"{self.target}: cannot load CA file {self.cfg.ca_file}: {err}") from err
        return self.cfg.verify

    def _client(self) -> httpx.AsyncClient:
        httpx = _httpx()
        auth = None
        if self.cfg.auth == "basic" and self.cfg.username:
            auth = httpx.BasicAuth(self.cfg.username, self._password())
        return httpx.AsyncClient(
            base_url=self._origin, verify=self._verify(), auth=auth, timeout=self.timeout,
            headers={"Accept": "application/json", "OData-Version": "4.0"}, follow_redirects=False,
        )

    async def _login(self, client: httpx.AsyncClient) -> None:
        httpx = _httpx()
        try:
            resp = await client.post(SESSIONS, json={"UserName": self.cfg.username, "Password": self._password()})
        except httpx.TimeoutException as err:
            raise SourceError(f"{self.target}: session login timed out") from err
        except httpx.HTTPError as err:
            raise SourceError(f"{self.target}: session login failed: {err}") from err
        if resp.status_code in (401, 403):
            raise SourceError(f"{self.target}: session login refused (HTTP {resp.status_code}): wrong credentials? "
                              f"check plugins.power.redfish.username and ${self.cfg.password_env}")
        if resp.status_code >= 400:
            raise SourceError(f"{self.target}: session login failed: HTTP {resp.status_code}")
        token = resp.headers.get("X-Auth-Token")
        if not token:
            raise SourceError(f"{self.target}: session login answered without an X-Auth-Token header")
        self._token = token
        self._session_uri = resp.headers.get("Location")

    async def get(self, client: httpx.AsyncClient, path: str, optional: bool = False) -> dict[str, Any] | None:
        """GET one resource; errors name the BMC and the path. ``optional``: 404 → None."""
        httpx = _httpx()
        if path.startswith("http") and not path.startswith(self._origin):
            return None  # a link to another service (a PDU outlet): not ours to follow
        for attempt in (1, 2):
            if self.cfg.auth == "session" and self._token is None:
                await self._login(client)
            headers = {"X-Auth-Token": self._token} if self._token else None
            try:
                resp = await client.get(path, headers=headers)
            except httpx.TimeoutException as err:
                raise SourceError(f"{self.target}: GET {path} timed out") from err
            except httpx.HTTPError as err:
                raise SourceError(f"{self.target}: GET {path} failed: {err}") from err
            if resp.status_code == 401 and self.cfg.auth == "session" and attempt == 1:
                self._token = None  # the session expired or the BMC restarted: log in again
                continue
            break
        if resp.status_code == 404 and optional:
            return None
        if resp.status_code in (401, 403):
            raise SourceError(f"{self.target}: GET {path}: HTTP {resp.status_code}: wrong credentials? "
                              f"check plugins.power.redfish.username and ${self.cfg.password_env}")
        if resp.status_code >= 400:
            raise SourceError(f"{self.target}: GET {path}: HTTP {resp.status_code}")
        try:
            doc = json.loads(resp.content)
        except (ValueError, RecursionError) as err:  # RecursionError: nesting past the stack
            raise SourceError(f"{self.target}: GET {path}: invalid JSON: {err}") from err
        if not isinstance(doc, dict):
            raise SourceError(f"{self.target}: GET {path}: expected a JSON object, got {type(doc).__name__}")
        return doc

    async def _must(self, client: httpx.AsyncClient, path: str) -> dict[str, Any]:
        doc = await self.get(client, path)
        if doc is None:  # only for links to other origins, which we never pass here
            raise SourceError(f"{self.target}: GET {path}: not on this BMC")
        return doc

    async def read(self) -> list[ChassisPower]:
        async with self._client() as client:
            if self.cfg.chassis:
                paths = [f"/redfish/v1/Chassis/{c}" for c in self.cfg.chassis]
            else:
                paths = members(await self._must(client, "/redfish/v1/Chassis"))
            return list(await asyncio.gather(*(self._chassis(client, p) for p in paths)))

    async def _chassis(self, client: httpx.AsyncClient, path: str) -> ChassisPower:
        doc = await self._must(client, path)
        out = ChassisPower(str(doc.get("Id") or path.rstrip("/").rsplit("/", 1)[-1]))
        subsys, env_m, legacy = _link(doc, "PowerSubsystem"), _link(doc, "EnvironmentMetrics"), _link(doc, "Power")

        async def none() -> None:
            return None

        # The deprecated resource only when a newer one is missing.
        want_legacy = legacy is not None and (subsys is None or env_m is None)
        sub_doc, env_doc, legacy_doc = await asyncio.gather(
            self.get(client, subsys, optional=True) if subsys else none(),
            self.get(client, env_m, optional=True) if env_m else none(),
            self.get(client, legacy, optional=True) if legacy and want_legacy else none(),
        )
        old = parse_legacy_power(legacy_doc) if legacy_doc else None
        if env_doc is not None:
            out.node_w, out.cap_w = parse_environment_metrics(env_doc)
        elif old is not None:
            out.node_w, out.cap_w = old.consumed_w, old.limit_w
        if sub_doc is not None:
            out.redundancy = parse_power_subsystem(sub_doc)
            coll = _link(sub_doc, "PowerSupplies")
            if coll:
                coll_doc = await self.get(client, coll, optional=True)
                paths = members(coll_doc) if coll_doc else []
                out.psus = list(await asyncio.gather(*(self._psu(client, p) for p in paths)))
        elif old is not None:
            out.psus, out.redundancy = old.psus, old.redundancy
        return out

    async def _psu(self, client: httpx.AsyncClient, path: str) -> PsuReading:
        doc = await self._must(client, path)
        metrics_link = _link(doc, "Metrics")
        metrics = await self.get(client, metrics_link, optional=True) if metrics_link else None
        return parse_power_supply(doc, metrics, path.rstrip("/").rsplit("/", 1)[-1])

    async def collect(self, col: Collection, now: float) -> None:
        for ch in await self.read():
            self.env.node_power(col, "redfish", ch.node_w, now, {"chassis": ch.chassis})
            col.add(m.NODE_POWER_CAP, ch.cap_w, {"source": "redfish", "chassis": ch.chassis})
            for i, ok in enumerate(ch.redundancy):
                value = None if ok is None else float(ok)
                col.add(m.PSU_REDUNDANCY_OK, value, {"chassis": ch.chassis, "group": str(i)})
            for p in ch.psus:
                labels = {"psu": p.psu, "chassis": ch.chassis, "source": "redfish"}
                col.add(m.PSU_PRESENT, None if p.present is None else float(p.present), labels)
                col.add(m.PSU_UP, None if p.up is None else float(p.up), labels)
                col.add(m.PSU_HEALTH, p.health, labels)
                col.add(m.PSU_INPUT_POWER, p.input_w, labels)
                col.add(m.PSU_OUTPUT_POWER, p.output_w, labels)
                col.add(m.PSU_INPUT_VOLTAGE, p.input_v, labels)
                col.add(m.PSU_CAPACITY, p.capacity_w, labels)
                col.add(m.PSU_ENERGY, p.energy_j, labels)

    def close(self) -> None:
        """Delete the BMC session (sync: close() runs outside any collection)."""
        uri, self._session_uri = self._session_uri, None
        token, self._token = self._token, None
        if not uri or not token:
            return
        httpx = _httpx()
        try:
            with httpx.Client(base_url=self._origin, verify=self._verify(), timeout=min(self.timeout, 3.0)) as c:
                c.delete(uri, headers={"X-Auth-Token": token})
        except (httpx.HTTPError, SourceError) as err:
            self.env.log.info("redfish: %s: could not delete the session (%s); the BMC will expire it",
                              self.target, err)
