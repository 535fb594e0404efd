"""The one place the plugin talks SNMP (pysnmp 7, asyncio): GETs and table walks into a Snapshot.

Every pysnmp call and its error types stay here (STYLE 6, 8): an error indication becomes a
:class:`SnmpError` whose message names the device and says what to check. Tables are walked
column-wise with GETBULK, several columns per request (one round trip brings ``max_repetitions``
rows of each), so a PDU with 24 outlets costs a handful of requests, not one per cell.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from typing import Any

from pyasn1.type import univ
from pysnmp.carrier.asyncio.dispatch import AsyncioDispatcher
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
)
from pysnmp.hlapi.v3arch.asyncio import auth as usm
from pysnmp.proto import errind, rfc1902, rfc1905

from agent.errors import PluginError
from agent.plugins.snmp.config import DeviceConfig
from agent.plugins.snmp.snapshot import Snapshot, Value

_AUTH = {
    "MD5": usm.USM_AUTH_HMAC96_MD5, "SHA": usm.USM_AUTH_HMAC96_SHA, "SHA224": usm.USM_AUTH_HMAC128_SHA224,
    "SHA256": usm.USM_AUTH_HMAC192_SHA256, "SHA384": usm.USM_AUTH_HMAC256_SHA384,
    "SHA512": usm.USM_AUTH_HMAC384_SHA512,
}
_PRIV = {"DES": usm.USM_PRIV_CBC56_DES, "AES": usm.USM_PRIV_CFB128_AES, "AES192": usm.USM_PRIV_CFB192_AES,
         "AES256": usm.USM_PRIV_CFB256_AES}
#: Variable bindings per GET, and columns per GETBULK (keeps each response well under 1472 bytes).
GET_CHUNK = 16
BULK_COLUMNS = 8
TOO_BIG = 1  # SNMP error-status tooBig


def open_engine(engine: SnmpEngine) -> None:
    """Give the engine a transport dispatcher on the running loop (one per collection)."""
    if engine.transport_dispatcher is None:
        engine.register_transport_dispatcher(AsyncioDispatcher())


def release_engine(engine: SnmpEngine) -> None:
    """Close the engine's sockets at the end of a collection, on the loop they belong to, and
    forget its transport so the next collection (maybe on another loop) opens a new one. The
    engine itself (its MIB data, v3 keys: the costly part) lives on."""
    if engine.transport_dispatcher is None:
        return
    engine.close_dispatcher()
    # hlapi's LCD remembers the transport it registered; without this the next request would
    # look for it on the new dispatcher and fail ("No suitable transport domain").
    lcd = engine.get_user_context("CommandGeneratorLcdConfigurator")
    if lcd:
        lcd["tran"].clear()


class SnmpError(PluginError):
    """One device failed one poll; the message names the device and what to check.

    ``reason`` is what stays the same while the device stays down the same way: a silent device
    times out on whichever request the poll happened to send first, and that is one episode."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def _secret(value: str, env: str) -> str:
    return os.environ.get(env, "") if env else value


def auth_data(dev: DeviceConfig) -> CommunityData | UsmUserData:
    if dev.version == "2c":
        return CommunityData(_secret(dev.community, dev.community_env), mpModel=1)
    v3 = dev.v3
    auth_key, priv_key = _secret(v3.auth_key, v3.auth_key_env), _secret(v3.priv_key, v3.priv_key_env)
    kw: dict[str, Any] = {}
    if auth_key:
        kw.update(authKey=auth_key, authProtocol=_AUTH[v3.auth_protocol])
        if priv_key:
            kw.update(privKey=priv_key, privProtocol=_PRIV[v3.priv_protocol])
    return UsmUserData(v3.user, **kw)


def convert(value: Any) -> Value | None:
    """A pysnmp value as plain Python; None for noSuchObject/noSuchInstance/endOfMibView."""
    if isinstance(value, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)):
        return None
    # Responses decode into pyasn1's base types (unless a MIB lookup re-types them): check those.
    if isinstance(value, univ.ObjectIdentifier):
        return str(value)
    if isinstance(value, rfc1902.IpAddress):
        return value.prettyPrint()
    if isinstance(value, univ.OctetString):
        return bytes(value).decode("utf-8", errors="replace").replace("\x00", "").strip()
    if isinstance(value, univ.Integer):  # INTEGER, Gauge32, Counter32/64, TimeTicks, Unsigned32
        return int(value)
    return None


class SnmpClient:
    """Polls one device through a shared engine. Not thread-safe: use it on the plugin's loop."""

    def __init__(self, engine: SnmpEngine, dev: DeviceConfig, *, timeout: float, retries: int,
                 max_repetitions: int) -> None:
        self.engine, self.dev = engine, dev
        self.timeout, self.retries, self.max_repetitions = timeout, retries, max_repetitions
        self._auth = auth_data(dev)
        self._context = ContextData(contextName=dev.v3.context.encode()) if dev.version == "3" else ContextData()
        self._target: UdpTransportTarget | None = None

    @property
    def where(self) -> str:
        return f"{self.dev.kind} {self.dev.name} ({self.dev.host}:{self.dev.port}, SNMPv{self.dev.version})"

    async def _transport(self) -> UdpTransportTarget:
        if self._target is None:
            try:
                self._target = await UdpTransportTarget.create(
                    (self.dev.host, self.dev.port), timeout=self.timeout, retries=self.retries)
            except Exception as err:  # pysnmp raises PySnmpError (and OSError) for bad addresses
                raise SnmpError(f"{self.where}: cannot resolve or open {self.dev.host}: {err}") from err
        return self._target

    def _fail(self, indication: object, what: str) -> SnmpError:
        if isinstance(indication, errind.RequestTimedOut):
            hint = ("check the address and port, that the device is up, and the community (a wrong one is "
                    "silently ignored)" if self.dev.version == "2c" else
                    "check the address and port, that the device is up, and the v3 context name")
            return SnmpError(f"{self.where}: no answer to {what} ({self.timeout:g}s x {self.retries + 1} tries); "
                             f"{hint}", reason="no answer")
        if isinstance(indication, errind.WrongDigest):
            return SnmpError(f"{self.where}: SNMPv3 authentication failed for user {self.dev.v3.user!r} "
                             f"(wrong auth key or auth_protocol {self.dev.v3.auth_protocol})")
        if isinstance(indication, errind.UnknownUserName):
            return SnmpError(f"{self.where}: the device does not know SNMPv3 user {self.dev.v3.user!r}")
        if isinstance(indication, errind.DecryptionError):
            return SnmpError(f"{self.where}: SNMPv3 decryption failed (wrong priv key or priv_protocol "
                             f"{self.dev.v3.priv_protocol})")
        return SnmpError(f"{self.where}: {what} failed: {indication}")

    async def get(self, oids: Sequence[str], snap: Snapshot) -> None:
        target = await self._transport()
        for start in range(0, len(oids), GET_CHUNK):
            chunk = oids[start:start + GET_CHUNK]
            ei, es, _eidx, vbs = await get_cmd(self.engine, self._auth, target, self._context,
                                              *(ObjectType(ObjectIdentity(o)) for o in chunk), lookupMib=False)
            if ei:
                raise self._fail(ei, f"GET {chunk[0]}")
            if es:
                # An SNMPv2c agent answers missing scalars with noSuchObject, not an error; a
                # v1-style error status names the culprit: ask the others one by one.
                if len(chunk) == 1:
                    continue
                for oid in chunk:
                    await self.get([oid], snap)
                continue
            for oid, value in vbs:
                v = convert(value)
                if v is not None:
                    snap.put(str(oid), v)

    async def walk(self, columns: Iterable[str], snap: Snapshot) -> None:
        cols = list(dict.fromkeys(columns))
        for start in range(0, len(cols), BULK_COLUMNS):
            await self._walk_group(cols[start:start + BULK_COLUMNS], snap)

    async def _walk_group(self, cols: list[str], snap: Snapshot) -> None:
        target = await self._transport()
        cursor = {c: c for c in cols}  # column -> the OID to continue after
        reps = self.max_repetitions
        while cursor:
            asked = list(cursor)
            ei, es, _eidx, vbs = await bulk_cmd(self.engine, self._auth, target, self._context, 0, reps,
                                               *(ObjectType(ObjectIdentity(cursor[c])) for c in asked),
                                               lookupMib=False)
            if ei:
                raise self._fail(ei, f"GETBULK {asked[0]}")
            if es and int(es) == TOO_BIG and reps > 1:
                # The answer would not fit the agent's message size (RFC 3416 4.2.3): ask fewer rows.
                reps = max(1, reps // 2)
                continue
            if es:
                raise SnmpError(f"{self.where}: GETBULK {asked[0]} answered {es.prettyPrint()}")
            done: set[str] = set()
            last: dict[str, str] = {}
            for k, (oid, value) in enumerate(vbs):
                col = asked[k % len(asked)]
                if col in done:
                    continue
                name = str(oid)
                v = convert(value)
                if not name.startswith(col + ".") or isinstance(value, rfc1905.EndOfMibView):
                    done.add(col)
                    continue
                if v is not None:
                    snap.put(name, v)
                last[col] = name
            for col in asked:
                nxt = last.get(col)
                if col in done or nxt is None or nxt == cursor[col]:
                    del cursor[col]  # the column ended, or the agent stopped advancing
                else:
                    cursor[col] = nxt

    async def poll(self, gets: Sequence[str], walks: Sequence[str]) -> Snapshot:
        snap = Snapshot()
        await asyncio.gather(self.get(list(gets), snap), self.walk(walks, snap))
        return snap
