"""Fuzzing the optics plugin's decoders: module EEPROMs (SFF-8472, SFF-8636, CMIS), the legacy
ioctl dump, netlink replies, ``ethtool -m`` text and the sysfs files of IB ports and interfaces.

A module's EEPROM is written by its vendor and read over I2C: any byte can be anything. Seeds are
the real Finisar captures (``optics/oom-module-data``), the real ``ethtool -m`` outputs and sysfs
trees, and the specification-built images of ``tests/test_optics_eeprom.py`` for CMIS.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agent.errors import PluginError
from agent.model import Collection
from agent.plugin import PluginContext
from agent.plugins.optics import OpticsPlugin, emit, kernel
from agent.plugins.optics.eeprom import PAGE, EepromError, EepromImage, PageRequest, decode, plan_pages, split_legacy
from agent.plugins.optics.ethtool_text import parse as parse_ethtool
from agent.plugins.optics.plugin import OpticsConfig
from agent.plugins.optics.reading import ModuleReading
from agent.plugins.optics.sysfs import parse_address, parse_int, parse_rate, parse_speed, parse_state
from tests.fuzz import (
    assert_finite,
    assert_wire_ready,
    call,
    fuzz,
    hex_tables,
    mutated_bytes,
    read_texts,
    text_input,
)
from tests.services import FIXTURES
from tests.test_optics_eeprom import cmis_pages, sff8636_pages

OOM = FIXTURES / "optics" / "oom-module-data"


def _sfp_seeds() -> tuple[list[bytes], list[bytes]]:
    a0 = [p.read_bytes()[:PAGE] for p in sorted(OOM.glob("*_EEPROM_*.txt"))]
    # The same modules as if externally calibrated (A0h byte 92 bit 4): the calibration
    # constants of A2h bytes 56-91 then take part (SFF-8472 table 9-6).
    a0 += [a[:92] + bytes([0x58]) + a[93:] for a in a0]
    a2 = [hex_tables(p.read_text(errors="replace"))[0] for p in sorted(OOM.glob("*_FCCABY_*.txt"))]
    return a0, a2


SFP_A0, SFP_A2 = _sfp_seeds()
QSFP = [hex_tables(p.read_text(errors="replace")) for p in sorted(OOM.glob("qsfp*datafile.txt"))]
LOWERS = [t[0] for t in QSFP] + [sff8636_pages()[0], cmis_pages()[0]]
UPPERS = [dict(enumerate(t[1:])) for t in QSFP] + [sff8636_pages()[1], cmis_pages()[1]]
ETHTOOL = read_texts((FIXTURES / "ethtool-m").glob("*.txt"))


def check_reading(r: ModuleReading | None) -> None:
    """A decoded module: sane identity, finite values, samples the collector accepts."""
    if r is None:
        return
    assert 0 <= r.identifier <= 0xFF
    assert all(lane.lane >= 1 for lane in r.lanes)
    assert_finite(r, "reading")
    col = Collection()
    emit.module_samples(col, "eth0", r)
    assert_wire_ready(col)


@st.composite
def images(draw: st.DrawFn) -> EepromImage:
    if draw(st.booleans()):  # SFP: A0h, and A2h or not
        a2 = draw(st.none() | mutated_bytes(SFP_A2))
        return EepromImage(lower=draw(mutated_bytes(SFP_A0)), a2=a2)
    i = draw(st.integers(0, len(LOWERS) - 1))
    upper = {}
    for page, data in UPPERS[i].items():
        if draw(st.integers(0, 5)):  # now and then a page could not be read
            upper[page] = draw(mutated_bytes([data]))
    return EepromImage(lower=draw(mutated_bytes([LOWERS[i]])), upper=upper)


@fuzz(80)
@given(images())
def test_eeprom_images(img: EepromImage) -> None:
    reqs = plan_pages(img.lower)
    assert all(isinstance(r, PageRequest) and r.length == PAGE for r in reqs)
    check_reading(call(decode, img, errors=(EepromError,)))


def test_external_calibration_that_is_not_a_number_is_omitted() -> None:
    """Found by fuzzing: an externally calibrated SFP whose A2h slope/offset/polynomial bytes read
    as IEEE-754 NaN or infinity gave NaN readings, and the collector refuses a whole batch with a NaN."""
    a0 = next(a for a in SFP_A0 if a[92] == 0x58)
    a2 = bytearray(SFP_A2[0])
    a2[56:60] = struct.pack(">f", float("nan"))  # Rx_PWR(4)
    a2[84:86] = b"\xff\xff"  # temperature slope 255.99..., offset 0x7fff: finite, kept
    a2[86:88] = b"\x7f\xff"
    r = decode(EepromImage(lower=a0, a2=bytes(a2)))
    assert r.temperature_c is not None and r.lanes[0].rx_power_mw is None
    assert ("rx_power", "high_alarm") not in r.thresholds
    check_reading(r)


@fuzz(60)
@given(st.sampled_from((0, 1, 2, 3, 4, 5, 0xFFFF)), mutated_bytes([
    SFP_A0[0] + b"\0" * PAGE + SFP_A2[0],  # SFF-8472: A0h (256 bytes), then A2h
    b"".join([LOWERS[0], *UPPERS[0].values()]),  # SFF-8636: lower page, pages 00h-03h
]))
def test_legacy_ioctl_dumps(kind: int, data: bytes) -> None:
    img = call(split_legacy, kind, data, errors=(EepromError,))
    if img is not None:
        check_reading(call(decode, img, errors=(EepromError,)))


def _netlink_reply(seq: int, data: bytes) -> bytes:
    attr = struct.pack("=HH", 4 + len(data), kernel.ETHTOOL_A_MODULE_EEPROM_DATA) + data
    body = struct.pack("=BBH", 32, 1, 0) + attr
    return struct.pack("=IHHII", 16 + len(body), 21, 0, seq, 0) + body


def _netlink_error(seq: int, text: bytes) -> bytes:
    tlv = struct.pack("=HH", 4 + len(text), kernel.NLMSGERR_ATTR_MSG) + text + b"\0" * (-len(text) % 4)
    body = struct.pack("=i", -5) + struct.pack("=IHHII", 64, 21, 1, seq, 0) + tlv
    return struct.pack("=IHHII", 16 + len(body), kernel.NLMSG_ERROR,
                       kernel.NLM_F_CAPPED | kernel.NLM_F_ACK_TLVS, seq, 0) + body


@fuzz(80)
@given(mutated_bytes([_netlink_reply(3, LOWERS[0]), _netlink_error(3, b"module not plugged\0")]))
@example(struct.pack("=IHHII", 16, kernel.NLMSG_ERROR, 0, 3, 0))  # an error message without its code
@example(struct.pack("=IHHII", 20, kernel.NLMSG_ERROR, kernel.NLM_F_ACK_TLVS, 3, 0) + b"\xfb\xff\xff\xff")
def test_netlink_replies(buf: bytes) -> None:
    reply = call(kernel.parse_reply, buf, 3, errors=(EepromError,))
    if reply is not None:
        assert isinstance(reply.error, int) and isinstance(reply.message, str)
        assert all(isinstance(v, bytes) for v in reply.attrs.values())


@fuzz(150)
@given(text_input(ETHTOOL))
# Found by the long run: 400 digits read as an infinite wavelength; a module state past a
# float's range would overflow the sample's conversion.
@example("Identifier : 0x03 (SFP)\nLaser wavelength : " + "9" * 400 + "nm\nModule state : 0x" + "f" * 300)
def test_ethtool_text(text: str) -> None:
    check_reading(call(parse_ethtool, text, errors=(EepromError,)))


@pytest.mark.timeout(60)
def test_ethtool_text_long_blank_line_is_linear() -> None:
    """Found by fuzzing: the ``key : value`` regex backtracked cubically on a long run of blanks
    without a colon (1000 blanks took 1.3 s, an 8 KiB line hours): a hang on one odd line."""
    r = parse_ethtool("Identifier : 0x03 (SFP)\n" + " " * 20_000 + "x\n" + "Vendor name : ACME\n")
    assert (r.identifier, r.vendor) == (3, "ACME")


# --- sysfs ---------------------------------------------------------------------------------------

SYSFS_TEXTS = ["4: ACTIVE", "5: LinkUp", "400 Gb/sec (4X NDR)", "25000", "-1", "0x1a", "N/A (no PMA)",
               "00:15:5d:01:ca:05", "up"]


@fuzz(100)
@given(text_input(SYSFS_TEXTS, max_size=40))
@example("1" * 4400)  # found by the long run: past int()'s 4300 digits (ValueError) in parse_state
def test_sysfs_values(text: str) -> None:
    state = parse_state(text)
    assert state is None or (isinstance(state, int) and state >= 0)
    number = parse_int(text)
    assert number is None or isinstance(number, int)
    for value in (parse_rate(text), parse_speed(text)):
        assert value is None or (isinstance(value, float) and value >= 0)
        assert_finite(value)
    address = parse_address(text)
    assert address is None or isinstance(address, bytes)


def test_sysfs_numbers_the_kernel_cannot_print() -> None:
    """Found by fuzzing: ``str.isdigit`` is true for ``²``, which ``int`` refuses (ValueError);
    400 nines overflowed the float conversion of a speed (OverflowError) and made an infinite rate."""
    assert parse_state("²: ACTIVE") is None
    assert parse_state("٣: ACTIVE") is None
    assert parse_speed("9" * 400) is None  # not a link speed a kernel prints (Mb/s in an int)
    assert parse_rate("9" * 400 + " Gb/sec") is None


def _tree(root: Path, rel: str) -> dict[str, bytes]:
    """The regular files under ``root/rel`` (through a link, or in a flattened copy), by path."""
    return {str(p.relative_to(root)): p.read_bytes()[:4096] for p in sorted((root / rel).rglob("*")) if p.is_file()}


IB_FILES = _tree(FIXTURES / "sysfs" / "h100-infiniband" / "sys", "class/infiniband/mlx5_0")
assert IB_FILES, "no IB device in the h100 capture"
# The interface's own attributes; where the capture holds class/net/eth0 as a file naming its
# target (links checked out as text), these few stand in.
_NET_STAND_IN = {"operstate": b"up\n", "carrier": b"1\n", "carrier_changes": b"2\n", "speed": b"1000\n",
                 "mtu": b"1500\n", "address": b"01:01:01:01:01:01\n"}
NET_FILES = {k: v for k, v in _tree(FIXTURES / "sysfs" / "procfs" / "sys", "class/net/eth0").items()
             if k.count("/") == 3} or {f"class/net/eth0/{k}": v for k, v in _NET_STAND_IN.items()}
TREE = {**IB_FILES, **NET_FILES, "class/net/eth0/device": b"../../../0000:00:1f.6\n"}
TREE_TEXTS = sorted({v.decode("utf-8", "replace") for v in TREE.values()})


@st.composite
def sysfs_trees(draw: st.DrawFn) -> dict[str, bytes]:
    tree = dict(TREE)
    for _ in range(draw(st.integers(1, 6))):
        name = draw(st.sampled_from(sorted(tree)))
        tree[name] = draw(text_input([tree[name].decode("utf-8", "replace"), *TREE_TEXTS[:8]], 60)).encode()
    return tree


def _write(root: Path, tree: dict[str, bytes], before: dict[str, bytes] | None = None) -> None:
    for rel, data in tree.items():
        if before is not None and before.get(rel) == data:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# Memory-backed where there is one: a collection reads ~80 files and this test writes them.
_TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None


@fuzz(20)
@given(sysfs_trees(), sysfs_trees())
def test_ib_ports_and_interfaces(first: dict[str, bytes], second: dict[str, bytes]) -> None:
    """Two collections over mutated sysfs trees (the second sees counters move: flap events)."""
    with tempfile.TemporaryDirectory(dir=_TMP) as tmp:
        root = Path(tmp)
        plugin = OpticsPlugin(PluginContext(node="n1", sysfs_root=root), OpticsConfig(eeprom="off"))
        before = None
        for tree in (first, second):
            _write(root, tree, before)
            before = tree
            call(plugin.discover, errors=(PluginError,))
            col = plugin.collect()
            assert_wire_ready(col, col.events)
        plugin.close()


def test_negative_or_huge_sysfs_counters_are_omitted(tmp_path: Path) -> None:
    """Found by fuzzing: a counter file reading ``-5`` became a negative ``_total`` sample (the
    collector refuses the whole batch); the kernel prints these as unsigned 64-bit numbers."""
    tree = dict(TREE)
    tree["class/infiniband/mlx5_0/ports/1/counters/link_downed"] = b"-5\n"
    tree["class/infiniband/mlx5_0/ports/1/counters/symbol_error"] = b"18446744073709551616\n"
    tree["class/net/eth0/carrier_changes"] = b"-1\n"  # found by the long run: net_carrier_changes_total -1
    _write(tmp_path, tree)
    plugin = OpticsPlugin(PluginContext(node="n1", sysfs_root=tmp_path), OpticsConfig(eeprom="off"))
    plugin.discover()
    col = plugin.collect()
    assert_wire_ready(col)
    names = {s.name for s in col.samples}
    assert "ib_port_link_downed_total" not in names and "ib_port_symbol_errors_total" not in names
    assert "net_carrier_changes_total" not in names and "net_mtu_bytes" in names
    assert "ib_port_link_error_recovery_total" in names
