"""Fuzzing the power plugin's sources: ipmitool text, a hostile upsd (NUT protocol), a hostile
BMC (Redfish JSON over HTTP) and the kernel's power sysfs files (RAPL, hwmon, power_supply).

A BMC's firmware, a UPS's network card and the upsd in front of it are remote parties: any
answer can be anything. Seeds are the captures in ``../shared/fixtures`` (ipmi, ups, redfish,
sysfs); each source is driven through its own ``collect`` (the contract: samples, or a
``PluginError`` naming the source), and what it produced must be what the collector accepts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agent.errors import PluginError
from agent.model import Collection
from agent.plugin import PluginContext
from agent.plugins.power import redfish
from agent.plugins.power.config import IpmiConfig, NutConfig, RedfishConfig
from agent.plugins.power.energy import PowerIntegrator
from agent.plugins.power.ipmi import IpmiSource, parse_dcmi_power_reading, parse_sdr, psu_statuses
from agent.plugins.power.nut import NutError, NutSource, parse_list, parse_ups, parse_vars, split_words
from agent.plugins.power.source import Env, LocalSource, Source
from agent.plugins.power.sysfs import (
    AcpiSource,
    HwmonSource,
    PowerSupplySource,
    RaplSource,
    class_entries,
    parse_acpi_power_meter,
    parse_hwmon_chip,
    parse_power_supply,
    parse_rapl_zone,
)
from tests.fuzz import (
    INTERESTING,
    assert_finite,
    assert_wire_ready,
    call,
    fuzz,
    mutated_json,
    mutated_text,
    read_texts,
    text_input,
)
from tests.services import FIXTURES
from tests.test_power_redfish import PASSWORD, USER, Bmc, BmcState, mockup_routes, serve

log = logging.getLogger("fleetmon.test.fuzz")


def env(sysfs_root: Path = Path("/nonexistent")) -> Env:
    return Env(PluginContext(node="n1", sysfs_root=sysfs_root), log, PowerIntegrator(300.0))


def collect_twice(src: Source) -> Collection:
    """Two collections a second apart (the second integrates power into energy), then the
    contract: what the source produced, or a PluginError naming it."""
    col = Collection()

    async def run() -> None:
        for now in (1000.0, 1001.0):
            await asyncio.wait_for(src.collect(col, now), 10)

    call(asyncio.run, run(), errors=(PluginError,))
    src.close()
    return col


def read_twice(src: LocalSource) -> Collection:
    """A kernel source scanned once and read twice, a second apart, under the same contract."""
    col = Collection()

    def run() -> None:
        src.scan()
        for now in (1000.0, 1001.0):
            src.read(col, now)

    call(run, errors=(PluginError,))
    src.close()
    return col


# --- IPMI ------------------------------------------------------------------------------------------

IPMI = read_texts((FIXTURES / "ipmi").rglob("*.txt"))


@fuzz(120)
@given(text_input(IPMI))
@example("Instantaneous power reading:  " + "9" * 400 + " Watts\nPower reading state is: activated")
@example("Instantaneous power reading:  -250 Watts\nPower reading state is: activated")
@example("PS1 Status | C8h | ok | ²0.1 | Presence detected")
def test_ipmitool_outputs(text: str) -> None:
    dcmi = parse_dcmi_power_reading(text)
    sensors = parse_sdr(text)
    assert_finite(dcmi, "dcmi")
    assert_finite(sensors, "sdr")
    for s in sensors:
        assert s.entity_id is None or s.entity_id >= 0
    psu_statuses(sensors)
    src = IpmiSource(env(), IpmiConfig())
    col = Collection()
    for now in (1000.0, 1001.0):
        src._add_dcmi(col, dcmi, now)
        src._add_sdr(col, sensors)
    assert_wire_ready(col)


# --- NUT -------------------------------------------------------------------------------------------

UPS_DUMPS = read_texts((FIXTURES / "ups").rglob("variables.dev"))


def var_lines(ups: str, dump: str) -> list[str]:
    """A ``variables.dev`` dump (``name: value``) as upsd's ``LIST VAR`` item lines."""
    out = []
    for line in dump.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            quoted = value.strip().replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'VAR {ups} {name.strip()} "{quoted}"')
    return out


VAR_TEXTS = ["\n".join(var_lines("ups1", d)) for d in UPS_DUMPS]


@fuzz(120)
@given(text_input(VAR_TEXTS))
@example('VAR ups1 battery.charge "nan"\nVAR ups1 ups.load "-inf"\nVAR ups1 ups.realpower "1e400"')
def test_nut_answers(text: str) -> None:
    lines = text.splitlines()
    for line in lines:
        assert all(isinstance(w, str) for w in split_words(line))
    items = call(parse_list, lines, "VAR", errors=(NutError,))
    if items is None:
        return
    variables = parse_vars(lines)
    reading = parse_ups("ups1", variables)
    assert_finite(reading, "ups")


class HostileUpsd:
    """A TCP server speaking upsd's protocol (NUT docs/net-protocol.txt) with the given list
    bodies: every LIST is answered BEGIN / the body's lines / END, whatever the lines say."""

    def __init__(self, lists: dict[str, list[str]]) -> None:
        self.lists = lists

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            cmd = line.decode("utf-8", "replace").strip()
            if cmd.startswith("LIST "):
                what = cmd[5:]
                body = self.lists.get(what)
                if body is None:
                    writer.write(b"ERR UNKNOWN-UPS\n")
                else:
                    text = "".join(f"{item}\n" for item in body)
                    writer.write(f"BEGIN LIST {what}\n{text}END LIST {what}\n".encode())
            elif cmd == "LOGOUT":
                writer.write(b"OK Goodbye\n")
                break
            else:
                writer.write(b"OK\n")
            await writer.drain()
        writer.close()


@st.composite
def upsd_answers(draw: st.DrawFn) -> dict[str, list[str]]:
    # Short names: each is repeated on every VAR line (a 4400-digit one makes a 200 kB example).
    odd = [t for t in INTERESTING if len(t) < 40]
    names = draw(st.lists(st.sampled_from(["ups1", "ups2"]) | st.sampled_from(odd), min_size=1, max_size=3))
    lists = {"UPS": [f'UPS {n} "a UPS"' for n in names]}
    for n in names:
        lists[f"VAR {n}"] = draw(mutated_text([t.replace("ups1", n) for t in VAR_TEXTS])).splitlines()
    return lists


@fuzz(40)
@given(upsd_answers())
def test_nut_source_against_a_hostile_upsd(lists: dict[str, list[str]]) -> None:
    server = HostileUpsd(lists)

    async def run() -> Collection:
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        col = Collection()
        try:
            src = NutSource(env(), NutConfig(host="127.0.0.1", port=port))
            for now in (1000.0, 1001.0):
                await asyncio.wait_for(src.collect(col, now), 10)
        finally:
            srv.close()
            await srv.wait_closed()
        return col

    col = call(asyncio.run, run(), errors=(PluginError,))
    if col is not None:
        assert_wire_ready(col)


# --- Redfish ---------------------------------------------------------------------------------------

MOCKUP = {path: json.loads(file.read_text()) for path, file in
          mockup_routes(FIXTURES / "redfish" / "public-rackmount1").items()}
DOCS = list(MOCKUP.values()) + [json.loads(p.read_text()) for p in
                               sorted((FIXTURES / "redfish" / "telegraf-testdata").rglob("*.json"))
                               if "invalid" not in p.name]
REDFISH_KEYS = ("Reading", "@odata.id", "Status", "State", "Health", "Members", "Id", "SetPoint", "PowerControl",
                "PowerSupplies", "Redundancy", "PowerConsumedWatts", "LimitInWatts", "EnergykWh")

@fuzz(60)
@given(mutated_json(DOCS, REDFISH_KEYS), mutated_json(DOCS, REDFISH_KEYS))
@example({"PowerControl": 5}, {})
@example({"PowerControl": [{"PowerConsumedWatts": 10**400}], "PowerSupplies": True, "Redundancy": 1.5}, {})
@example({"Members": 3, "PowerWatts": {"Reading": float("nan")}}, {"EnergykWh": {"Reading": float("inf")}})
@example({"Id": "PSU1"}, {"EnergykWh": {"Reading": -3.5}, "InputPowerWatts": {"Reading": 10**400}})
def test_redfish_documents(doc: Any, other: Any) -> None:
    """Every parser on every document (each takes any resource: a BMC may answer anything)."""
    if not isinstance(doc, dict) or not isinstance(other, dict):
        return  # RedfishSource.get refuses a document that is not an object
    legacy = redfish.parse_legacy_power(doc)
    assert_finite(legacy, "legacy power")
    psu = redfish.parse_power_supply(doc, other, "bay")
    assert_finite(psu, "power supply")
    assert psu.energy_j is None or psu.energy_j >= 0  # psu_energy_joules_total is a counter
    assert_finite(redfish.parse_environment_metrics(doc), "environment metrics")
    assert all(ok in (None, True, False) for ok in redfish.parse_power_subsystem(doc))
    assert all(isinstance(m, str) for m in redfish.members(doc))


@pytest.fixture(scope="module")
def bmc() -> Iterator[Bmc]:
    with serve(BmcState(routes={})) as server:
        yield server


@fuzz(8)
@given(st.lists(st.tuples(st.sampled_from(sorted(MOCKUP)), mutated_json(list(MOCKUP.values()), REDFISH_KEYS)),
                max_size=4))
def test_redfish_source_against_a_hostile_bmc(bmc: Bmc, changes: list[tuple[str, Any]]) -> None:
    """The DMTF mockup served over HTTP with a few of its resources replaced by mutated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        routes = {}
        for i, (path, doc) in enumerate([*MOCKUP.items(), *changes]):
            file = Path(tmp) / f"{i}.json"
            file.write_text(json.dumps(doc))
            routes[path] = file
        bmc.state.routes = routes
        cfg = RedfishConfig(url=bmc.url, username=USER, password=PASSWORD, auth="basic")
        col = collect_twice(redfish.RedfishSource(env(), cfg, 5.0))
    assert_wire_ready(col)


def test_redfish_nesting_past_the_stack_is_a_source_error(bmc: Bmc) -> None:
    """Found by fuzzing the tool outputs: json.loads raises RecursionError (not ValueError) for
    deep nesting; a BMC answering that crashed the source instead of failing it with a reason."""
    with tempfile.TemporaryDirectory() as tmp:
        deep = Path(tmp) / "deep.json"
        deep.write_text("[" * 100_000)
        bmc.state.routes = {**{p: deep for p in MOCKUP}}
        src = redfish.RedfishSource(env(), RedfishConfig(url=bmc.url, username=USER, password=PASSWORD,
                                                         auth="basic"), 5.0)
        with pytest.raises(PluginError, match="invalid JSON"):
            asyncio.run(src.collect(Collection(), 1000.0))


# --- power sysfs -----------------------------------------------------------------------------------

SYSFS_ROOTS = [FIXTURES / "sysfs" / name / "sys" for name in ("procfs", "node-exporter")]


def _class_attrs(cls: str) -> list[dict[str, str]]:
    out = []
    for root in SYSFS_ROOTS:
        for _, path in class_entries(root / "class" / cls):
            attrs = {f.name: f.read_text(errors="replace").strip() for f in path.iterdir() if f.is_file()}
            if attrs:
                out.append(attrs)
    return out


# A captured tree holds these classes; the built-in ones keep the corpus whole wherever the
# capture was unpacked (a copy whose links became files holding their target paths).
RAPL = [*_class_attrs("powercap"), {"name": "package-0", "energy_uj": "240422366267",
                                    "max_energy_range_uj": "262143328850", "constraint_0_name": "long_term",
                                    "constraint_0_power_limit_uw": "95000000"}]
HWMON = [*_class_attrs("hwmon"), {"name": "power_meter", "power1_average": "345000000", "power1_cap": "500000000",
                                  "in0_input": "12000", "in0_label": "VIN", "curr1_input": "-1500"}]
SUPPLY = [*_class_attrs("power_supply"), {"type": "Battery", "status": "Discharging", "energy_now": "36320000",
                                          "power_now": "8700000", "capacity": "42", "current_now": "-700000"}]


@st.composite
def mutated_attrs(draw: st.DrawFn, corpus: list[dict[str, str]]) -> dict[str, str]:
    attrs = dict(draw(st.sampled_from(corpus)))
    values = sorted(set(attrs.values()))
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(sorted(attrs)) | st.sampled_from(["energy_uj", "power1_input", "capacity",
                                                                     "constraint_1_power_limit_uw"]))
        attrs[key] = draw(text_input([attrs.get(key, "0"), *values], 30))
    return attrs


@fuzz(50)
@given(mutated_attrs(RAPL), mutated_attrs(HWMON), mutated_attrs(SUPPLY))
@example({"energy_uj": "9" * 400}, {"power1_input": "9" * 400}, {"energy_now": "9" * 400, "power_now": "-9" * 200})
def test_power_sysfs_parsers(rapl: dict[str, str], hwmon: dict[str, str], supply: dict[str, str]) -> None:
    zone = parse_rapl_zone("intel-rapl:0", rapl)
    assert zone.energy_uj is None or 0 <= zone.energy_uj < 1 << 64
    assert all(0 < v < 1 << 64 for v in zone.limits_uw.values())
    assert_finite(parse_hwmon_chip("hwmon0", hwmon), "hwmon")
    assert_finite(parse_acpi_power_meter(hwmon), "acpi")
    assert_finite(parse_power_supply("BAT0", supply), "power_supply")


@fuzz(10)
@given(mutated_attrs(RAPL), mutated_attrs(RAPL), mutated_attrs(HWMON), mutated_attrs(SUPPLY))
# Found by fuzzing: a copied tree's link-as-text file holding a NUL raised ValueError
# ("embedded null byte") out of the hwmon source.
@example(RAPL[-1], RAPL[-1], {**HWMON[-1], "device": "../\x00./../coretemp.0"}, SUPPLY[-1])
def test_power_sysfs_sources(rapl1: dict[str, str], rapl2: dict[str, str], hwmon: dict[str, str],
                             supply: dict[str, str]) -> None:
    """The kernel sources over a tree of mutated attributes; RAPL read twice (counter unwrapping)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tree = {"class/hwmon/hwmon0": hwmon, "class/power_supply/BAT0": supply, "class/powercap/intel-rapl:0": rapl1}
        for folder, attrs in tree.items():
            (root / folder).mkdir(parents=True)
            for name, value in attrs.items():
                if name and "/" not in name and name not in (".", ".."):
                    (root / folder / name).write_text(value)
        e = env(root)
        col = Collection()
        for src in (HwmonSource(e), PowerSupplySource(e), AcpiSource(e)):
            col.extend(read_twice(src))
        rapl = RaplSource(e)

        def run() -> None:
            rapl.scan()
            rapl.read(col, 1000.0)
            for name, value in rapl2.items():
                if name and "/" not in name and name not in (".", ".."):
                    (root / "class/powercap/intel-rapl:0" / name).write_text(value)
            rapl.read(col, 1001.0)

        call(run, errors=(PluginError,))
    assert_wire_ready(col)
