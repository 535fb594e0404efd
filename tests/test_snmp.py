"""snmp plugin: every recording in shared/fixtures/snmp/snmpsim-data served by a real snmpsim,
polled over SNMPv2c and SNMPv3 authPriv; timeouts, a v3 auth failure and a device that drops out.

One snmpsim serves the whole module (it answers every recording: the community, or the v3
context, is the recording's path). snmpsim refuses to run as root unless it drops privileges to
a user that can then read this venv (not so under /root in CI); ``SNMPSIM_ALLOW_ROOT=true`` is its
own switch for running as root, and it serves loopback only here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

import agent.plugins.snmp.metrics as metrics
from agent.config import build
from agent.errors import ConfigError, PluginError
from agent.model import Collection, Metric
from agent.plugin import PluginContext
from agent.plugins.snmp import SnmpPlugin
from agent.plugins.snmp.apc import parse_rpdu2
from agent.plugins.snmp.config import SnmpConfig
from agent.plugins.snmp.plugin import resolve_devices
from agent.plugins.snmp.upsmib import parse_ups_mib
from tests import snmprec
from tests.sample_lookup import one, values
from tests.services import FIXTURES, Process, free_port

DATA = FIXTURES / "snmp" / "snmpsim-data"
V3_USER, V3_AUTH, V3_PRIV = "fleetmon", "auth-key-123", "priv-key-456"
KWH = 3.6e6

# recording -> (kind, mibs). None: the kind's default readers; []: identity only (no mapping
# shipped for that vendor MIB yet: Tripp Lite, Emerson ENP, Liebert GP; see the plugin README).
RECORDINGS: dict[str, tuple[str, list[str] | None]] = {
    "pdu/apc-7902b": ("pdu", None),
    "pdu/apc-8641": ("pdu", None),
    "pdu/apc-8932": ("pdu", None),
    "pdu/tripplite-poweralert": ("pdu", []),
    "pdu/ingrasys-power-switch": ("ups", None),  # a Santak UPS behind a WebPower Pro II card
    "ups/eaton-93e-80": ("ups", None),
    "ups/eaton-9px-partial": ("ups", ["eaton-xups"]),
    "ups/eastpower-istars-swv053": ("ups", None),
    "ups/huawei-gse200m": ("ups", ["huawei-ups5000"]),
    "ups/phoenixtec-power": ("ups", None),
    "ups/emerson-network-power": ("ups", []),
    "ups/vertiv-power": ("ups", []),
    "env/geist-temperature-sensor": ("sensor", ["geist-v5"]),
}


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def device(rec: str, port: int, **kw: Any) -> dict[str, Any]:
    kind, mibs = RECORDINGS.get(rec, ("pdu", None))
    out: dict[str, Any] = {"name": rec.split("/")[1], "kind": kind, "host": "127.0.0.1", "port": port,
                           "community": rec}
    if kind == "pdu":
        out["rack"] = "r1"
    if mibs is not None:
        out["mibs"] = mibs
    return {**out, **kw}


def plugin(devices: list[dict[str, Any]], **kw: Any) -> SnmpPlugin:
    cfg = build(SnmpConfig, {"devices": devices, "request_timeout": 1.0, "retries": 1, **kw}, "plugins.snmp")
    p = SnmpPlugin(PluginContext(node="poller-1"), cfg)
    p.discover()
    return p




@pytest.fixture(scope="module")
def snmpsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    exe = Path(sys.executable).parent / "snmpsim-command-responder"
    if not exe.exists():
        pytest.fail(f"{exe} missing: snmpsim is a dev dependency (pip install -e '.[dev]')")
    tmp = tmp_path_factory.mktemp("snmpsim")
    port = free_udp_port()
    env = dict(os.environ)
    if os.geteuid() == 0:
        env["SNMPSIM_ALLOW_ROOT"] = "true"
    proc = Process([str(exe), f"--data-dir={DATA}", f"--agent-udpv4-endpoint=127.0.0.1:{port}",
                    f"--cache-dir={tmp / 'cache'}", "--log-level=error",
                    f"--v3-user={V3_USER}", f"--v3-auth-key={V3_AUTH}", "--v3-auth-proto=SHA",
                    f"--v3-priv-key={V3_PRIV}", "--v3-priv-proto=AES"], tmp / "snmpsim.log", env=env)

    async def answers() -> bool:
        probe = plugin([device("env/geist-temperature-sensor", port)], request_timeout=0.5, retries=0)
        try:
            deadline = time.monotonic() + 60
            while proc.alive() and time.monotonic() < deadline:
                if one(await probe.collect(), "sensor_up") == 1:
                    break
            else:
                return False
        finally:
            probe.close()
        # snmpsim indexes a recording the first time it is asked for it (seconds for the big APC
        # walks on a busy machine): touch every recording once, so the tests' deadlines measure
        # the plugin, not the simulator's warm-up.
        warm = plugin([device(rec, port, mibs=[]) for rec in RECORDINGS], request_timeout=10, device_timeout=120)
        try:
            col = await warm.collect()
        finally:
            warm.close()
        return all(s.value == 1 for s in col.samples if s.name in ("pdu_up", "ups_up", "sensor_up"))

    try:
        if not asyncio.run(answers()):
            pytest.fail(f"snmpsim did not answer within 60 s: {proc.log_text()[-2000:]}")
        yield port
    finally:
        proc.stop()


def collect(p: SnmpPlugin) -> Collection:
    """One collection on a fresh loop, the plugin closed on that loop (as the agent does)."""
    async def run() -> Collection:
        try:
            return await p.collect()
        finally:
            p.close()
    return asyncio.run(run())


def test_fixture_recordings_are_all_listed() -> None:
    on_disk = {p.relative_to(DATA).as_posix().removesuffix(".bz2").removesuffix(".snmprec")
               for p in DATA.rglob("*.snmprec*")}
    assert on_disk == set(RECORDINGS)


@pytest.mark.services
def test_every_recording_through_snmpsim(snmpsim: int) -> None:
    devices = [device(rec, snmpsim) for rec in RECORDINGS]
    devices.append(device("pdu/apc-7902b", snmpsim, name="apc-7902b-legacy", mibs=["apc-rpdu"]))
    col = collect(plugin(devices, request_timeout=3.0, device_timeout=60))
    up = {**values(col, "pdu_up"), **values(col, "ups_up"), **values(col, "sensor_up")}
    assert len(up) == len(devices) and set(up.values()) == {1.0}
    ids = {dict(k).get("pdu") or dict(k).get("ups") or dict(k).get("sensor"): dict(k)["sys_object_id"]
           for k in values(col, "snmp_device_info")}
    assert ids["apc-8641"].startswith("1.3.6.1.4.1.318.") and ids["vertiv-power"].startswith("1.3.6.1.4.1.476")

    # APC AP8641 (rPDU2): metered by outlet; units converted from PowerNet-MIB's.
    pdu = {"pdu": "apc-8641", "rack": "r1"}
    assert one(col, "pdu_power_watts", **pdu) == 1210  # 121 hundredths of kW
    assert one(col, "pdu_energy_joules_total", **pdu) == pytest.approx(1951.6 * KWH)  # 19516 tenths of kWh
    assert one(col, "pdu_power_factor_ratio", **pdu) == 0.94
    ph = {**pdu, "phase": "1"}
    assert (one(col, "pdu_phase_current_amperes", **ph), one(col, "pdu_phase_voltage_volts", **ph),
            one(col, "pdu_phase_power_watts", **ph), one(col, "pdu_phase_current_rating_amperes", **ph)) \
        == (6.5, 201, 1220, 24)
    assert one(col, "pdu_phase_load_ratio", **ph) == pytest.approx(6.5 / 24)
    assert values(col, "pdu_phase_threshold_amperes", **ph) == {
        (("level", "low"),): 0, (("level", "near_overload"),): 19, (("level", "overload"),): 24}
    assert values(col, "pdu_bank_current_amperes", **pdu) == {(("bank", "1"),): 3.8, (("bank", "2"),): 2.4}
    assert one(col, "pdu_bank_current_rating_amperes", bank="1", **pdu) == 20
    assert len(values(col, "pdu_outlet_power_watts", **pdu)) == 24
    out1 = {**pdu, "outlet": "1"}
    assert (one(col, "pdu_outlet_current_amperes", **out1), one(col, "pdu_outlet_power_watts", **out1),
            one(col, "pdu_outlet_power_rating_watts", **out1)) == (0.9, 163, 2500)
    assert one(col, "pdu_outlet_energy_joules_total", **out1) == pytest.approx(304.6 * KWH)
    assert one(col, "pdu_outlet_info", name="CP-CM-SAN-01", **pdu) == 1

    # AP7902B: a switched PDU without a power meter: rPDU2 answers -1, so power/energy/voltage are
    # omitted, not reported as -1 or 0; the older rPDU tree has a power reading of its own.
    pdu = {"pdu": "apc-7902b", "rack": "r1"}
    assert values(col, "pdu_power_watts", **pdu) == {}
    assert values(col, "pdu_energy_joules_total", **pdu) == {}
    assert values(col, "pdu_phase_voltage_volts", **pdu) == {}
    assert one(col, "pdu_phase_current_amperes", **pdu) == 1.6
    assert values(col, "pdu_outlet_current_amperes", **pdu) == {}  # not metered by outlet
    legacy = {"pdu": "apc-7902b-legacy", "rack": "r1"}
    assert one(col, "pdu_power_watts", **legacy) == 192
    assert one(col, "pdu_phase_current_amperes", **legacy) == 1.6
    assert values(col, "pdu_bank_current_amperes", **legacy) == {(("bank", "1"),): 0.0, (("bank", "2"),): 1.1}
    assert len(values(col, "pdu_outlet_on", **legacy)) == 16
    assert one(col, "pdu_info", **legacy) == 1

    pdu = {"pdu": "apc-8932", "rack": "r1"}
    assert (one(col, "pdu_power_watts", **pdu), one(col, "pdu_phase_voltage_volts", **pdu)) == (160, 121)
    assert one(col, "pdu_energy_joules_total", **pdu) == pytest.approx(642.6 * KWH)

    # UPS-MIB
    ups = {"ups": "eaton-93e-80"}
    assert one(col, "ups_on_battery", **ups) == 0
    assert one(col, "ups_battery_runtime_seconds", **ups) == 1092 * 60
    assert one(col, "ups_battery_charge_ratio", **ups) == 1.0
    assert values(col, "ups_output_power_watts", **ups) == {
        (("line", "1"),): 5100, (("line", "2"),): 3600, (("line", "3"),): 2700}
    assert one(col, "ups_real_power_watts", **ups) == 11400
    assert one(col, "ups_load_ratio", **ups) == 0.21  # the most loaded of 21 %, 16 %, 12 %
    assert one(col, "ups_real_power_nominal_watts", **ups) == 72090
    ups = {"ups": "eastpower-istars-swv053"}  # table cells carry a stray ".0": lines 1-3 all the same
    assert set(values(col, "ups_input_voltage_volts", **ups)) == {(("line", "1"),), (("line", "2"),), (("line", "3"),)}
    assert values(col, "ups_battery_runtime_seconds", **ups) == {}  # 0 minutes on mains: not estimated
    assert one(col, "ups_battery_temperature_celsius", **ups) == 36
    ups = {"ups": "ingrasys-power-switch"}
    assert (one(col, "ups_battery_charge_ratio", **ups), one(col, "ups_battery_voltage_volts", **ups)) == (1.0, 273.0)
    assert one(col, "ups_battery_temperature_celsius", ups="phoenixtec-power") == 31
    # Vendor profiles
    ups = {"ups": "eaton-9px-partial"}
    assert (one(col, "ups_battery_runtime_seconds", **ups), one(col, "ups_load_ratio", **ups),
            one(col, "ups_on_battery", **ups)) == (17218, 0.09, 0)
    ups = {"ups": "huawei-gse200m"}
    assert one(col, "ups_input_voltage_volts", line="1", **ups) == pytest.approx(236.9)
    assert one(col, "ups_output_frequency_hertz", **ups) == pytest.approx(49.99)
    assert values(col, "ups_battery_charge_ratio", **ups) == {}  # -1: not estimated
    sensor = {"sensor": "geist-temperature-sensor"}
    temps = values(col, "sensor_temperature_celsius", **sensor)
    assert list(temps) == [(("probe", "1"), ("probe_name", "Watchdog Rack 01"))]
    assert 10 <= next(iter(temps.values())) <= 30  # snmpsim varies it between 10.0 and 30.0
    assert len(values(col, "sensor_remote_temperature_celsius", **sensor)) == 2
    # Identity only: what the plugin reads without a vendor mapping.
    for name in ("tripplite-poweralert", "emerson-network-power", "vertiv-power"):
        kinds = {s.name for s in col.samples if name in s.labels.values()}
        assert kinds <= {"snmp_device_info", "snmp_uptime_seconds", "pdu_up", "ups_up", "snmp_poll_duration_seconds"}


@pytest.mark.services
def test_v3_auth_priv_and_wrong_key(snmpsim: int, caplog: pytest.LogCaptureFixture) -> None:
    v3 = {"user": V3_USER, "auth_key": V3_AUTH, "priv_key": V3_PRIV, "context": "ups/eaton-93e-80"}
    p = plugin([device("ups/eaton-93e-80", snmpsim, version="3", v3=v3),
                device("ups/eaton-93e-80", snmpsim, name="wrong-key", version="3",
                       v3={**v3, "auth_key": "nope-nope-1"})],
               request_timeout=3.0, retries=0, device_timeout=30)
    with caplog.at_level(logging.WARNING, logger="fleetmon.agent.snmp"):
        col = collect(p)
    assert one(col, "ups_up", ups="eaton-93e-80") == 1
    assert one(col, "ups_battery_runtime_seconds", ups="eaton-93e-80") == 1092 * 60
    assert one(col, "ups_up", ups="wrong-key") == 0
    assert values(col, "ups_battery_runtime_seconds", ups="wrong-key") == {}
    lines = [r.getMessage() for r in caplog.records]
    assert any("ups wrong-key" in line and "SNMPv3 authentication failed for user 'fleetmon'" in line
               for line in lines), lines
    assert "nope-nope-1" not in caplog.text and V3_AUTH not in caplog.text


class Relay(asyncio.DatagramProtocol):
    """A UDP hop in front of snmpsim that can go silent: a device that drops off the network."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.silent, self.closed = upstream, False, False
        self.tasks: set[asyncio.Future[None]] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self.outbound: dict[tuple[str, int], asyncio.Future[asyncio.DatagramTransport]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.silent:
            task = asyncio.ensure_future(self._forward(data, addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _forward(self, data: bytes, client: tuple[str, int]) -> None:
        # One upstream socket per client, made once even when its requests arrive together.
        out = self.outbound.get(client)
        if out is None:
            out = self.outbound[client] = asyncio.ensure_future(self._open(client))
        transport = await out
        if not self.closed:
            transport.sendto(data)

    async def _open(self, client: tuple[str, int]) -> asyncio.DatagramTransport:
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, _addr: tuple[str, int]) -> None:
                if relay.transport is not None and not relay.silent:
                    relay.transport.sendto(reply, client)

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(Back, remote_addr=self.upstream)
        return transport

    def close(self) -> None:
        self.closed = True
        for fut in self.outbound.values():
            if fut.done() and not fut.cancelled():
                fut.result().close()
        if self.transport is not None:
            self.transport.close()


@pytest.mark.services
def test_timeouts_and_a_device_that_drops_out(snmpsim: int, caplog: pytest.LogCaptureFixture) -> None:
    relay_port = free_udp_port()

    async def scenario() -> list[Collection]:
        loop = asyncio.get_running_loop()
        _, relay = await loop.create_datagram_endpoint(lambda: Relay(("127.0.0.1", snmpsim)),
                                                       local_addr=("127.0.0.1", relay_port))
        p = plugin([device("pdu/apc-8932", relay_port, name="flaky"),
                    device("pdu/apc-8641", snmpsim),
                    device("pdu/apc-8641", snmpsim, name="wrong-community", community="public")],
                   request_timeout=2.0, retries=0, device_timeout=10)
        try:
            first = await p.collect()
            relay.silent = True
            dropped = await p.collect()
            relay.silent = False
            back = await p.collect()
        finally:
            p.close()
            relay.close()
            await asyncio.sleep(0)  # let the closed transports release their sockets
        return [first, dropped, back]

    with caplog.at_level(logging.INFO, logger="fleetmon.agent.snmp"):
        first, dropped, back = asyncio.run(scenario())
    assert one(first, "pdu_up", pdu="flaky") == 1 and one(first, "pdu_power_watts", pdu="flaky") == 160
    assert one(dropped, "pdu_up", pdu="flaky") == 0
    assert values(dropped, "pdu_power_watts", pdu="flaky") == {}
    # The other PDU is unaffected; the wrong community times out every cycle (v2c drops it silently).
    for col in (first, dropped, back):
        assert one(col, "pdu_up", pdu="apc-8641") == 1
        assert one(col, "pdu_phase_current_amperes", pdu="apc-8641") == 6.5
        assert one(col, "pdu_up", pdu="wrong-community") == 0
    assert one(back, "pdu_up", pdu="flaky") == 1 and one(back, "pdu_power_watts", pdu="flaky") == 160
    msgs = [r.getMessage() for r in caplog.records]
    flaky_down = [m for m in msgs if "pdu flaky" in m and "no answer" in m]
    assert len(flaky_down) == 1, msgs
    assert any("pdu flaky" in m and "answers again" in m for m in msgs)
    # Down for three cycles, said once.
    assert len([m for m in msgs if "pdu wrong-community" in m and "no answer" in m]) == 1


# --- parsers on the recordings, without a server ------------------------------------------------------


def test_ups_mib_omits_not_supported_values() -> None:
    snap = snmprec.load(DATA / "ups" / "huawei-gse200m.snmprec.bz2")
    col = parse_ups_mib(snap, {"ups": "u"})
    names = {s.name for s in col.samples}
    # upsEstimatedChargeRemaining, upsEstimatedMinutesRemaining, upsBatteryTemperature are -1.
    assert not names & {"ups_battery_charge_ratio", "ups_battery_runtime_seconds", "ups_battery_temperature_celsius"}
    assert one(col, "ups_battery_voltage_volts") == pytest.approx(538.5)
    assert one(col, "ups_info") == 1


def test_rpdu2_parser_exact_on_recording() -> None:
    col = parse_rpdu2(snmprec.load(DATA / "pdu" / "apc-8641.snmprec"), {"pdu": "p"})
    assert one(col, "pdu_peak_power_watts") == 2430
    assert one(col, "pdu_apparent_power_voltamperes") == 1310
    assert one(col, "pdu_phase_peak_current_amperes") == 12.4
    assert one(col, "pdu_phase_load_state") == 1  # normal
    assert one(col, "pdu_outlet_peak_power_watts", outlet="1") == 336
    assert one(col, "pdu_outlet_on", outlet="1") == 1  # snmpsim serves the recorded initial state first


def test_config_errors_name_the_device_and_key() -> None:
    with pytest.raises(ConfigError, match=r"devices\[0\] \(p1\): unknown mibs acme; known: apc, "):
        resolve_devices(build(SnmpConfig, {"devices": [{"name": "p1", "host": "h", "mibs": ["acme"]}]}, "s"))
    with pytest.raises(ConfigError, match=r"version 3 needs v3\.user"):
        build(SnmpConfig, {"devices": [{"name": "p1", "host": "h", "version": "3"}]}, "plugins.snmp")
    with pytest.raises(ConfigError, match="two pdus named 'p1'"):
        build(SnmpConfig, {"devices": [{"name": "p1", "host": "a"}, {"name": "p1", "host": "b"}]}, "plugins.snmp")
    bad = {"profiles": {"x": {"metrics": [{"name": "acme_volts", "oid": "1.3.6.x"}]}}}
    with pytest.raises(ConfigError, match=r"profiles\.x\.metrics\[0\]: metric 'acme_volts' oid '1.3.6.x' is not a"):
        build(SnmpConfig, bad, "plugins.snmp")
    clash = {"devices": [{"name": "p1", "host": "h", "mibs": ["x"]}],
             "profiles": {"x": {"metrics": [{"name": "acme_ups_events_total", "oid": "1.3.6.1.1.0", "type": "counter"},
                                            {"name": "pdu_energy_joules_total", "oid": "1.3.6.1.2.0"}]}}}
    with pytest.raises(ConfigError, match=r"metrics\[1\]: pdu_energy_joules_total is a built-in counter, not a gauge"):
        resolve_devices(build(SnmpConfig, clash, "plugins.snmp"))


def test_user_profile_maps_a_vendor_mib() -> None:
    """The README's "adding a vendor MIB" example, on the Tripp Lite recording (no built-in mapping)."""
    cfg = build(SnmpConfig, {
        "devices": [{"name": "tl", "host": "h", "mibs": ["tripplite-outlets"]}],
        "profiles": {"tripplite-outlets": {"metrics": [
            {"name": "pdu_outlet_on", "column": "1.3.6.1.4.1.850.1.1.3.4.1.3.1.4", "index_label": "outlet",
             "map": {"1": 0, "2": 1}},
        ]}}}, "plugins.snmp")
    [dev] = resolve_devices(cfg)
    snap = snmprec.load(DATA / "pdu" / "tripplite-poweralert.snmprec")
    col = dev.chains[0][0].parse(snap, dev.labels)
    assert one(col, "pdu_outlet_on", outlet="1") == 1


def test_readme_lists_every_metric(repo_root: Path) -> None:
    text = (repo_root / "agent" / "plugins" / "snmp" / "README.md").read_text()
    declared = {m.name for m in vars(metrics).values() if isinstance(m, Metric)}
    declared |= {"sensor_temperature_celsius", "sensor_humidity_ratio", "ups_ambient_temperature_celsius"}
    assert {n for n in declared if f"`{n}`" not in text} == set()



def test_collect_never_discovers_on_the_event_loop() -> None:
    """discover() imports pysnmp and compiles the profiles: it belongs to the scheduler's worker
    thread at start. A collection before it fails with a clear error instead of doing that work
    on the event loop."""
    cfg = build(SnmpConfig, {"devices": [device("env/geist-temperature-sensor", 161)]}, "plugins.snmp")
    p = SnmpPlugin(PluginContext(node="poller-1"), cfg)
    with pytest.raises(PluginError, match="snmp plugin collected before discover"):
        asyncio.run(p.collect())
    assert p.devices == []  # nothing was resolved on the loop
    p.discover()
    assert [d.cfg.name for d in p.devices] == ["geist-temperature-sensor"]
    p.close()
