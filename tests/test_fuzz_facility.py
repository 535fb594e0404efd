"""Fuzzing the facility plugins' decoders: SNMP values through every MIB reader and mapping
profile, and SunSpec register images through the Modbus decoder and its samples.

An SNMP agent on a PDU or UPS card and a battery system's Modbus registers are remote parties:
any variable binding can hold any type and value, any register any 16 bits. Seeds are the real
snmpsim recordings (``../shared/fixtures/snmp``) and register images built from the SunSpec
Alliance's model definitions (``../shared/fixtures/sunspec``), as ``tests/test_modbus.py`` does.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pyasn1.type import univ
from pysnmp.proto import rfc1902, rfc1905

from agent.config import build
from agent.model import Collection
from agent.plugins.modbus.config import ModbusDeviceConfig
from agent.plugins.modbus.plugin import device_samples
from agent.plugins.modbus.sunspec import SunSpecError, decode_model, load_models
from agent.plugins.snmp.client import convert
from agent.plugins.snmp.config import SnmpConfig
from agent.plugins.snmp.plugin import NATIVE, Device, parse_device, resolve_devices
from agent.plugins.snmp.profiles import builtin_profiles
from agent.plugins.snmp.snapshot import Snapshot
from agent.plugins.snmp.system import SYSTEM
from tests import snmprec
from tests.fuzz import assert_finite, assert_wire_ready, call, fuzz
from tests.services import FIXTURES
from tests.sunspec_image import model_regs
from tests.test_modbus import _plausible

# --- SNMP ------------------------------------------------------------------------------------------

RECORDINGS = sorted(p for p in (FIXTURES / "snmp" / "snmpsim-data").rglob("*") if ".snmprec" in p.name)


@cache
def recording(path: Path) -> Snapshot:
    return snmprec.load(path)


@cache
def devices() -> list[Device]:
    """One device per reader and profile the plugin knows (each reads any snapshot)."""
    names = sorted({*NATIVE, *builtin_profiles()})
    cfg = build(SnmpConfig, {"devices": [{"name": f"d{i}", "host": "h", "kind": "pdu", "mibs": [n]}
                                         for i, n in enumerate(names)]}, "plugins.snmp")
    return resolve_devices(cfg)


@cache
def read_oids() -> tuple[str, ...]:
    """The scalars and table columns the readers ask for."""
    out = set(SYSTEM.gets)
    for dev in devices():
        for chain in dev.chains:
            for reader in chain:
                out |= {*reader.gets, *reader.walks}
    return tuple(sorted(out))


#: What an agent may put in a variable binding, as pysnmp decodes it off the wire.
snmp_values = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(rfc1902.Integer32),
    st.integers(0, 2**32 - 1).map(rfc1902.Gauge32),
    st.integers(0, 2**32 - 1).map(rfc1902.Counter32),
    st.integers(0, 2**64 - 1).map(rfc1902.Counter64),
    st.integers(0, 2**32 - 1).map(rfc1902.TimeTicks),
    st.sampled_from([-1, 0, 1, 100, 101, 2**31 - 1, -(2**31)]).map(rfc1902.Integer32),
    st.binary(max_size=64).map(rfc1902.OctetString),
    st.text(max_size=64).map(lambda t: rfc1902.OctetString(t.encode())),
    st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=6).map(lambda x: univ.ObjectIdentifier((1, 3, *x))),
    st.binary(min_size=4, max_size=4).map(rfc1902.IpAddress),
    st.sampled_from([rfc1905.NoSuchInstance, rfc1905.NoSuchObject, rfc1905.EndOfMibView]).map(lambda cls: cls()),
)
row_index = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3).map(lambda x: ".".join(map(str, x)))


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    """A recording with 1..10 bindings changed (any type, any value, missing) or rows added."""
    snap = Snapshot(dict(recording(draw(st.sampled_from(RECORDINGS))).values))
    relevant = [oid for oid in snap.values if oid.startswith(read_oids())]
    for _ in range(draw(st.integers(1, 10))):
        if relevant and draw(st.integers(0, 3)):
            oid = draw(st.sampled_from(relevant))
        else:  # a row or scalar the recording does not have
            oid = f"{draw(st.sampled_from(read_oids()))}.{draw(row_index)}"
        value = convert(draw(snmp_values))
        if value is None:
            snap.values.pop(oid, None)
        else:
            snap.put(oid, value)
    return snap


@fuzz(60)
@given(snapshots())
def test_snmp_readers(snap: Snapshot) -> None:
    for dev in devices():
        col, missing = parse_device(dev, snap)
        assert all(isinstance(m, str) for m in missing)
        assert_wire_ready(col)


# --- Modbus / SunSpec ------------------------------------------------------------------------------

MODELS = load_models(FIXTURES / "sunspec" / "models")
IMAGES = {mid: model_regs(defn, *_plausible(defn.group)) for mid, defn in MODELS.items()}
REG_VALUES = (0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF, 0x7F80, 0xFF80, 0x7FC0, 0x000A, 0xFFF6)


@st.composite
def register_images(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A model's registers (from its definition, every point plausibly set) with 1..12 registers
    changed: limits, float32 NaN/infinity halves, scale factors far past -10..10, repeat counts;
    now and then the length register or the image's size too."""
    mid = draw(st.sampled_from(sorted(IMAGES)))
    regs = list(IMAGES[mid])
    for _ in range(draw(st.integers(1, 12))):
        at = draw(st.integers(0, len(regs) - 1))
        regs[at] = draw(st.sampled_from(REG_VALUES) | st.integers(0, 0xFFFF))
    if draw(st.integers(0, 4)) == 0:
        regs[1] = draw(st.integers(0, 0xFFFF))
    if draw(st.integers(0, 4)) == 0:
        regs = regs[: draw(st.integers(0, len(regs)))]
    return mid, regs


def _values(obj: Any) -> Any:
    """A decoded model's values and sub-groups, without the definitions they carry."""
    return {"values": obj.values, "groups": {k: [_values(g) for g in v] for k, v in obj.groups.items()}}


DEVICE = ModbusDeviceConfig(name="bess1", host="h", kind="bess")


@fuzz(120)
@given(register_images(), register_images())
def test_sunspec_models(first: tuple[int, list[int]], second: tuple[int, list[int]]) -> None:
    decoded: dict[int, list[Any]] = {}
    for mid, regs in (first, second):
        values = call(decode_model, MODELS[mid], regs, errors=(SunSpecError,))
        if values is not None:
            assert_finite(_values(values), f"model {mid}")
            decoded.setdefault(mid, []).append(values)
    col: Collection = device_samples(DEVICE, decoded)
    assert_wire_ready(col)


def test_scale_factors_past_the_specification_omit_their_points() -> None:
    """Found by fuzzing: a sunssf register reading 32767 made ``raw * 10**32767`` (a 32768-digit
    integer) and the float conversion of the samples raised OverflowError for the whole device;
    the specification's scale factors are -10..10."""
    defn = MODELS[802]
    regs = model_regs(defn, {"SoC": 55, "SoC_SF": 0, "V": 812, "V_SF": 0, "A": 12, "A_SF": 0})
    offsets = [sum(p.size for p in defn.group.points[:i]) for i in range(len(defn.group.points))]
    at = {p.name: off for p, off in zip(defn.group.points, offsets, strict=True)}
    regs[at["V_SF"]] = 0x7FFF  # +32767
    regs[at["A_SF"]] = 0x8001  # -32767
    got = decode_model(defn, regs).values
    assert got["SoC"] == 55 and "V" not in got and "A" not in got
    assert_wire_ready(device_samples(DEVICE, {802: [decode_model(defn, regs)]}))
