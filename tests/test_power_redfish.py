"""Power plugin, Redfish source, against a local HTTP(S) server serving the captured BMC answers.

The DMTF mockup folder is served as ``/redfish/v1`` (``<folder>/index.json`` per resource);
the Telegraf Dell/HP captures are mapped to the URLs their ``@odata.id`` fields name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.model import Collection
from agent.plugin import PluginContext
from agent.plugins.power import PowerPlugin
from agent.plugins.power.config import KernelSourceConfig, PowerConfig, RedfishConfig
from agent.plugins.power.redfish import parse_legacy_power, parse_power_supply, redundancy_ok
from tests.services import require_binary

Key = tuple[str, tuple[tuple[str, str], ...]]
USER, PASSWORD = "monitor", "s3cret-pw"


def key(metric: str, **labels: str) -> Key:
    return metric, tuple(sorted(labels.items()))


@dataclass
class BmcState:
    routes: dict[str, Path]
    status: dict[str, int] = field(default_factory=dict)  # path → forced HTTP status
    delay: dict[str, float] = field(default_factory=dict)  # path → seconds before answering
    requests: list[tuple[str, str]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    logins: int = 0


def mockup_routes(folder: Path) -> dict[str, Path]:
    root = folder / "redfish" / "v1"
    return {("/redfish/v1/" + str(p.parent.relative_to(root))).rstrip("/.").rstrip("/")
            if p.parent != root else "/redfish/v1": p for p in root.rglob("index.json")}


def make_handler(state: BmcState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up
                self.wfile.write(body)

        def _authorized(self) -> bool:
            if self.headers.get("X-Auth-Token") in state.tokens:
                return True
            basic = self.headers.get("Authorization", "")
            expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            return basic == f"Basic {expected}"

        def do_POST(self) -> None:
            state.requests.append(("POST", self.path))
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if self.path.rstrip("/") != "/redfish/v1/SessionService/Sessions":
                self._send(405)
                return
            if body.get("UserName") != USER or body.get("Password") != PASSWORD:
                self._send(401, b'{"error": "bad credentials"}')
                return
            state.logins += 1
            token = f"tok{state.logins}"
            state.tokens.add(token)
            self._send(201, b"{}", {"X-Auth-Token": token,
                                    "Location": f"/redfish/v1/SessionService/Sessions/{state.logins}"})

        def do_DELETE(self) -> None:
            state.requests.append(("DELETE", self.path))
            state.tokens.discard(self.headers.get("X-Auth-Token", ""))
            self._send(204)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            state.requests.append(("GET", path))
            if path in state.delay:
                time.sleep(state.delay[path])
            if not self._authorized():
                self._send(401, b'{"error": "no session"}')
                return
            if path in state.status:
                self._send(state.status[path], b'{"error": "forced"}')
                return
            file = state.routes.get(path)
            if file is None:
                self._send(404, b'{"error": "not found"}')
                return
            self._send(200, file.read_bytes())

    return Handler


@dataclass
class Bmc:
    url: str
    state: BmcState


@contextlib.contextmanager
def serve(state: BmcState, tls: ssl.SSLContext | None = None) -> Iterator[Bmc]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        scheme = "https" if tls else "http"
        yield Bmc(f"{scheme}://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def redfish_plugin(url: str, sysfs: Path, *, kernel: bool = False, timeout: float = 3.0,
                   **rf: object) -> PowerPlugin:
    off = KernelSourceConfig(enabled=kernel)
    rcfg = RedfishConfig(url=url, username=USER, **rf)  # type: ignore[arg-type]
    if "password" not in rf:
        rcfg.password = PASSWORD
    cfg = PowerConfig(rapl=off, hwmon=off, power_supply=off, acpi=off, redfish=rcfg, source_timeout=timeout)
    cfg.ipmi.enabled = False
    return PowerPlugin(PluginContext(node="t", sysfs_root=sysfs), cfg)


def collect(plugin: PowerPlugin) -> tuple[dict[Key, float], Collection]:
    col: Collection = asyncio.run(plugin.collect())
    return {s.key(): s.value for s in col.samples}, col


@pytest.fixture
def redfish_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "redfish"


def test_parsers_on_mockup_documents(redfish_dir: Path) -> None:
    base = redfish_dir / "public-rackmount1" / "redfish" / "v1" / "Chassis" / "1U"
    bay1 = json.loads((base / "PowerSubsystem" / "PowerSupplies" / "Bay1" / "index.json").read_text())
    metrics = json.loads((base / "PowerSubsystem" / "PowerSupplies" / "Bay1" / "Metrics" / "index.json").read_text())
    r = parse_power_supply(bay1, metrics)
    assert (r.psu, r.present, r.up, r.health) == ("Bay1", True, True, 1)  # Enabled, Health Warning
    assert (r.input_w, r.output_w, r.input_v, r.capacity_w) == (937.4, 937.4, 230.2, 400.0)
    assert r.energy_j == 325675 * 3_600_000  # EnergykWh 325675
    legacy = parse_legacy_power(json.loads((base / "Power" / "index.json").read_text()))
    assert (legacy.consumed_w, legacy.limit_w) == (344.0, 500.0)
    assert [(p.psu, p.up, p.output_w) for p in legacy.psus] == [("0", True, 325.0)]
    assert redundancy_ok({"Status": {"State": "UnavailableOffline", "Health": "OK"}}) is False
    assert redundancy_ok({"Status": {"State": "Enabled", "Health": "OK"}}) is True
    assert redundancy_ok({}) is None
    bare = parse_power_supply({"Id": "PSU9"}, None)  # no Status: up/present are not guessed
    assert (bare.present, bare.up, bare.health) == (None, None, None)


def test_dmtf_mockup_over_http_with_session(redfish_dir: Path, tmp_path: Path) -> None:
    state = BmcState(mockup_routes(redfish_dir / "public-rackmount1"))
    with serve(state) as bmc:
        plugin = redfish_plugin(bmc.url, tmp_path)
        plugin.discover()
        got, col = collect(plugin)
        c = {"chassis": "1U"}
        bay1 = {"psu": "Bay1", "source": "redfish", **c}
        bay2 = {"psu": "Bay2", "source": "redfish", **c}
        assert got == {
            # EnvironmentMetrics PowerWatts 374, PowerLimitWatts.SetPoint 500 (the newer
            # resources win over the deprecated Power's 344 W)
            key("node_power_watts", source="redfish", **c): 374.0,
            key("node_energy_joules_total", source="redfish", **c): 0.0,
            key("node_power_cap_watts", source="redfish", **c): 500.0,
            # PowerSupplyRedundancy Status: UnavailableOffline / OK (bay 2 empty)
            key("psu_redundancy_ok", group="0", **c): 0.0,
            key("psu_present", **bay1): 1.0,
            key("psu_up", **bay1): 1.0,
            key("psu_health", **bay1): 1.0,
            key("psu_input_power_watts", **bay1): 937.4,
            key("psu_output_power_watts", **bay1): 937.4,
            key("psu_input_voltage_volts", **bay1): 230.2,
            key("psu_capacity_watts", **bay1): 400.0,
            key("psu_energy_joules_total", **bay1): 1172430000000.0,
            key("psu_present", **bay2): 0.0,
            key("psu_up", **bay2): 0.0,
            key("power_source_up", source="redfish"): 1.0,
        }
        # bay 2 was never seen holding a PSU: a warning, not a critical event
        assert [(e.kind, e.labels["psu"], e.severity.name) for e in col.events] == [
            ("power.psu_fault", "Bay2", "WARNING")]
        # the deprecated Power resource was not fetched: both newer ones exist
        assert ("GET", "/redfish/v1/Chassis/1U/Power") not in state.requests
        got2, col2 = collect(plugin)
        assert got2[key("node_energy_joules_total", source="redfish", **c)] > 0.0
        assert col2.events == []  # the fault was reported once
        assert state.logins == 1  # the session is kept across collections
        plugin.close()
        assert ("DELETE", "/redfish/v1/SessionService/Sessions/1") in state.requests
        plugin.close()


def test_dell_legacy_power_basic_auth(redfish_dir: Path, tmp_path: Path) -> None:
    dell = redfish_dir / "telegraf-testdata" / "dell"
    state = BmcState({
        "/redfish/v1": redfish_dir / "telegraf-testdata" / "base.json",
        "/redfish/v1/Chassis/System.Embedded.1": dell / "dell_chassis.json",
        "/redfish/v1/Chassis/System.Embedded.1/Power": dell / "dell_power.json",
    })
    with serve(state) as bmc:
        plugin = redfish_plugin(bmc.url, tmp_path, auth="basic", chassis=["System.Embedded.1"])
        plugin.discover()
        got, _ = collect(plugin)
        c = {"chassis": "System.Embedded.1"}
        psu = {"psu": "PSU.Slot.1", "source": "redfish", **c}
        assert got == {
            key("node_power_watts", source="redfish", **c): 429.0,  # PowerConsumedWatts
            key("node_energy_joules_total", source="redfish", **c): 0.0,
            key("node_power_cap_watts", source="redfish", **c): 348.0,  # PowerLimit.LimitInWatts
            key("psu_present", **psu): 1.0,
            key("psu_up", **psu): 1.0,
            key("psu_health", **psu): 0.0,
            key("psu_input_power_watts", **psu): 900.0,
            key("psu_output_power_watts", **psu): 203.0,
            key("psu_input_voltage_volts", **psu): 206.0,
            key("psu_capacity_watts", **psu): 750.0,
            key("power_source_up", source="redfish"): 1.0,
        }
        assert state.logins == 0


def test_hp_legacy_and_power_subsystem(redfish_dir: Path, tmp_path: Path) -> None:
    hp = redfish_dir / "telegraf-testdata" / "hp"
    legacy = BmcState({
        "/redfish/v1/Chassis/1": hp / "hp_chassis.json",
        "/redfish/v1/Chassis/1/Power": hp / "hp_power.json",
    })
    with serve(legacy) as bmc:
        plugin = redfish_plugin(bmc.url, tmp_path, chassis=["1"])
        plugin.discover()
        got, _ = collect(plugin)
        c = {"chassis": "1"}
        assert got[key("node_power_watts", source="redfish", **c)] == 221.0
        assert key("node_power_cap_watts", source="redfish", **c) not in got  # no PowerLimit
        assert got[key("psu_redundancy_ok", group="0", **c)] == 1.0  # Enabled / OK
        for member, output in (("0", 0.0), ("1", 90.0)):
            psu = {"psu": member, "source": "redfish", **c}
            assert got[key("psu_up", **psu)] == 1.0
            assert got[key("psu_output_power_watts", **psu)] == output  # LastPowerOutputWatts
            assert got[key("psu_input_voltage_volts", **psu)] == 205.0
            assert got[key("psu_capacity_watts", **psu)] == 800.0
    sub = hp / "power_subsys"
    root = "/redfish/v1/Chassis/1/PowerSubsystem"
    subsys = BmcState({
        "/redfish/v1/Chassis/1": hp / "hp_chassis_subsys.json",
        root: sub / "hp_power_subsys.json",
        f"{root}/PowerSupplies": sub / "hp_power_subsys_psu.json",
        f"{root}/PowerSupplies/PowerSupply1": sub / "hp_power_subsys_psu_1.json",
        f"{root}/PowerSupplies/PowerSupply1/Metrics": sub / "hp_power_subsys_metrics.json",
    })
    with serve(subsys) as bmc:
        plugin = redfish_plugin(bmc.url, tmp_path, chassis=["1"])
        plugin.discover()
        got, _ = collect(plugin)
        psu = {"psu": "Bay1", "source": "redfish", "chassis": "1"}  # the resource's Id
        assert got[key("psu_up", **psu)] == 1.0
        assert got[key("psu_health", **psu)] == 1.0
        assert got[key("psu_input_power_watts", **psu)] == 937.4
        assert got[key("psu_energy_joules_total", **psu)] == 1172430000000.0
        assert got[key("psu_redundancy_ok", group="0", chassis="1")] == 0.0
        # no EnvironmentMetrics and no Power link: node power is not invented
        assert not any(k[0] == "node_power_watts" for k in got)


def _one_warning(caplog: pytest.LogCaptureFixture, *needles: str) -> str:
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "redfish" in r.getMessage()]
    assert len(lines) == 1, lines
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("fault", ["http500", "invalid_json", "wrong_password", "timeout"])
def test_bmc_faults_leave_other_sources_running(
        fault: str, redfish_dir: Path, fixtures_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    dell = redfish_dir / "telegraf-testdata" / "dell"
    state = BmcState({
        "/redfish/v1/Chassis/System.Embedded.1": dell / "dell_chassis.json",
        "/redfish/v1/Chassis/System.Embedded.1/Power": dell / "dell_power.json",
    })
    extra: dict[str, object] = {}
    if fault == "http500":
        state.status["/redfish/v1/Chassis/System.Embedded.1/Power"] = 500
    elif fault == "invalid_json":
        state.routes["/redfish/v1/Chassis/System.Embedded.1/Power"] = dell / "dell_powerinvalid.json"
    elif fault == "wrong_password":
        extra["password"] = "Xq9-not-it"
    else:
        state.delay["/redfish/v1/Chassis/System.Embedded.1"] = 3.0
    sysfs = fixtures_dir / "sysfs" / "node-exporter" / "sys"
    with serve(state) as bmc:
        plugin = redfish_plugin(bmc.url, sysfs, kernel=True, timeout=1.0, chassis=["System.Embedded.1"], **extra)
        plugin.discover()
        try:
            with caplog.at_level(logging.WARNING):
                got, _ = collect(plugin)
                collect(plugin)  # the same failure again is not logged again
        finally:
            plugin.close()
        # "timeout": the BMC answers after 3 s, past the 1 s source deadline; had the source
        # waited for it, redfish would be up here.
        assert got[key("power_source_up", source="redfish")] == 0.0
        assert not any(k[0].startswith(("psu_", "node_")) for k in got)
        # the kernel sources are unaffected
        assert got[key("power_source_up", source="rapl")] == 1.0
        assert got[key("rapl_energy_joules_total", zone="intel-rapl:0", name="package-0")] == 240422.366267
        port = bmc.url.rsplit(":", 1)[1]
        line = _one_warning(caplog, "power source redfish", f"BMC 127.0.0.1:{port}")
        expected = {
            "http500": "GET /redfish/v1/Chassis/System.Embedded.1/Power: HTTP 500",
            "invalid_json": "GET /redfish/v1/Chassis/System.Embedded.1/Power: invalid JSON",
            "wrong_password": "wrong credentials",
            "timeout": "no answer within 1s",
        }[fault]
        assert expected in line
        assert PASSWORD not in line and "Xq9-not-it" not in line  # credentials are never logged


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    openssl = require_binary("openssl")
    cert, keyf = tmp / "bmc.crt", tmp / "bmc.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(keyf), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, keyf


def test_https_self_signed_verify_false_and_ca_file(
        redfish_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert, keyf = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, keyf)
    state = BmcState(mockup_routes(redfish_dir / "public-rackmount1"))
    with serve(state, tls) as bmc:
        assert bmc.url.startswith("https://")
        for options in ({"verify": False}, {"ca_file": str(cert)}):
            plugin = redfish_plugin(bmc.url, tmp_path, **options)
            plugin.discover()
            got, _ = collect(plugin)
            assert got[key("node_power_watts", source="redfish", chassis="1U")] == 374.0, options
            plugin.close()
        # default verify=true without the CA: refused, with a clear line
        plugin = redfish_plugin(bmc.url, tmp_path)
        plugin.discover()
        with caplog.at_level(logging.WARNING):
            got, _ = collect(plugin)
        assert got == {key("power_source_up", source="redfish"): 0.0}
        line = _one_warning(caplog, "BMC 127.0.0.1")
        assert "CERTIFICATE_VERIFY_FAILED" in line or "certificate verify failed" in line
