"""Reading EEPROM through the kernel: netlink messages (pure), the live kernel's answers on
interfaces without a module, the ethtool binary route, and the no-permission line."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from agent.plugin import PluginContext
from agent.plugins.optics import OpticsPlugin, kernel
from agent.plugins.optics.eeprom import LOWER, PageRequest, plan_pages
from agent.plugins.optics.ethtool_text import parse
from agent.plugins.optics.kernel import (
    EepromUnavailable,
    ModuleReader,
    Netlink,
    eeprom_request,
    family_request,
    parse_attrs,
    parse_reply,
)
from agent.plugins.optics.plugin import OpticsConfig
from tests.services import REPO, require_binary
from tests.test_optics_eeprom import cmis_pages, sff8472_internal, sff8636_pages


def test_eeprom_request_layout() -> None:
    msg = eeprom_request(21, 7, "ens1f0", PageRequest(0x50, 0x11, 128))
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq, pid) == (len(msg), 21, kernel.NLM_F_REQUEST, 7, 0)
    cmd, version, _ = struct.unpack_from("=BBH", msg, 16)
    assert (cmd, version) == (kernel.ETHTOOL_MSG_MODULE_EEPROM_GET, 1)
    attrs = parse_attrs(msg[20:])
    header = parse_attrs(attrs[kernel.ETHTOOL_A_MODULE_EEPROM_HEADER])
    assert header == {kernel.ETHTOOL_A_HEADER_DEV_NAME: b"ens1f0\0"}
    assert attrs[kernel.ETHTOOL_A_MODULE_EEPROM_OFFSET] == struct.pack("=I", 128)
    assert attrs[kernel.ETHTOOL_A_MODULE_EEPROM_LENGTH] == struct.pack("=I", 128)
    assert attrs[kernel.ETHTOOL_A_MODULE_EEPROM_PAGE] == b"\x11"
    assert attrs[kernel.ETHTOOL_A_MODULE_EEPROM_BANK] == b"\x00"
    assert attrs[kernel.ETHTOOL_A_MODULE_EEPROM_I2C_ADDRESS] == b"\x50"
    # The header attribute is flagged nested, as the kernel's strict policy requires.
    (_, first_type) = struct.unpack_from("=HH", msg, 20)
    assert first_type == kernel.ETHTOOL_A_MODULE_EEPROM_HEADER | kernel.NLA_F_NESTED
    assert len(msg) % 4 == 0


def test_parse_reply_data_and_errors() -> None:
    data = bytes(range(128))
    attr = struct.pack("=HH", 4 + 128, kernel.ETHTOOL_A_MODULE_EEPROM_DATA) + data
    body = struct.pack("=BBH", 32, 1, 0) + attr
    ok = struct.pack("=IHHII", 16 + len(body), 21, 0, 3, 0) + body
    assert parse_reply(ok, 3).attrs[kernel.ETHTOOL_A_MODULE_EEPROM_DATA] == data
    # NLMSG_ERROR with a capped request and an extended-ack message.
    text = b"module not plugged\0"
    tlv = struct.pack("=HH", 4 + len(text), kernel.NLMSGERR_ATTR_MSG) + text + b"\0" * (-len(text) % 4)
    err_body = struct.pack("=i", -errno.EIO) + struct.pack("=IHHII", 64, 21, 1, 4, 0) + tlv
    err = struct.pack("=IHHII", 16 + len(err_body), kernel.NLMSG_ERROR,
                      kernel.NLM_F_CAPPED | kernel.NLM_F_ACK_TLVS, 4, 0) + err_body
    reply = parse_reply(err, 4)
    assert (reply.error, reply.message) == (errno.EIO, "module not plugged")
    assert family_request(1)[4:6] == struct.pack("=H", kernel.GENL_ID_CTRL)


def test_live_kernel_without_module() -> None:
    """This host's loopback has no module: the kernel answers EOPNOTSUPP, the reader None."""
    if os.geteuid() != 0:
        pytest.skip("without CAP_NET_ADMIN the kernel refuses EEPROM requests before looking at them")
    try:
        nl = Netlink()
    except EepromUnavailable as err:
        pytest.skip(f"no ethtool netlink here: {err}")
    try:
        with pytest.raises(OSError) as info:
            nl.read("lo", LOWER)
        assert info.value.errno == errno.EOPNOTSUPP
        with pytest.raises(OSError) as missing:
            nl.read("fleetmon-none0", LOWER)
        assert missing.value.errno == errno.ENODEV
        # Every page the decoders ask for passes the kernel's request validation (it reaches the
        # driver, which has no module: EOPNOTSUPP); a malformed one is refused with the reason.

        for lower in (cmis_pages()[0], sff8636_pages()[0], sff8472_internal().lower):
            for req in plan_pages(lower):
                with pytest.raises(OSError) as page_err:
                    nl.read("lo", req)
                assert page_err.value.errno == errno.EOPNOTSUPP, req
        with pytest.raises(OSError) as bad:
            nl.read("lo", PageRequest(0x50, 1, 0))
        assert bad.value.errno == errno.EINVAL
        assert "lower half page" in str(bad.value) or "Invalid argument" in str(bad.value)
    finally:
        nl.close()
    reader = ModuleReader()
    try:
        assert reader.read("lo") is None
    finally:
        reader.close()
        reader.close()


def _fake_ethtool(tmp_path: Path, fixture: Path, sleep: float = 0.0) -> Path:
    """A stand-in ethtool printing a captured ``ethtool -m`` output and recording its argv."""
    script = tmp_path / "ethtool"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\nsleep {sleep}\ncat {fixture}\n")
    script.chmod(0o755)
    return script


def test_ethtool_route(tmp_path: Path, fixtures_dir: Path) -> None:
    fixture = fixtures_dir / "ethtool-m/sfp28-25g-lr-edge-dom.txt"
    reader = ModuleReader(source="ethtool", ethtool_path=str(_fake_ethtool(tmp_path, fixture)), timeout=5)
    assert reader.read("eth9") == parse(fixture.read_text())
    assert (tmp_path / "argv").read_text().split() == ["-m", "eth9"]


def test_ethtool_route_deadline(tmp_path: Path, fixtures_dir: Path) -> None:
    fixture = fixtures_dir / "ethtool-m/sfp28-25g-lr-edge-dom.txt"
    slow = ModuleReader(source="ethtool", ethtool_path=str(_fake_ethtool(tmp_path, fixture, 5)), timeout=0.3)
    with pytest.raises(EepromUnavailable, match=r"ran past 0\.3s"):
        slow.read("eth9")
    missing = ModuleReader(source="ethtool", ethtool_path=str(tmp_path / "nope"))
    with pytest.raises(EepromUnavailable, match="not found"):
        missing.read("eth9")


def test_real_ethtool_on_loopback() -> None:
    path = require_binary("ethtool", "/usr/sbin/ethtool", "/sbin/ethtool")
    with pytest.raises(EepromUnavailable, match="exit 1"):
        ModuleReader(source="ethtool", ethtool_path=path).run_ethtool("lo")


def test_no_permission_is_one_line(tmp_path: Path) -> None:
    """Without CAP_NET_ADMIN the legacy ioctl is refused: one clear warning, counters go on."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing to drop CAP_NET_ADMIN")
        prefix = [setpriv, "--inh-caps=-net_admin", "--bounding-set=-net_admin"]
    # A tree whose one interface is this host's loopback (same address as the live one).
    lo = tmp_path / "class/net/lo"
    lo.mkdir(parents=True)
    (lo / "operstate").write_text("unknown\n")
    (lo / "mtu").write_text("65536\n")
    (lo / "address").write_text("00:00:00:00:00:00\n")
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "fleetmon", "agent", "--once", "--format", "prom",
         "--plugins", "optics", "--sysfs-root", str(tmp_path), "--node", "n1",
         "--set", "optics.physical_only=false", "--set", "optics.exclude_interfaces=[]"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )
    if prefix and done.returncode != 0 and "setpriv" in done.stderr:
        pytest.skip(f"setpriv cannot drop CAP_NET_ADMIN here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "no permission to read the module EEPROM" in lines[0] and "CAP_NET_ADMIN" in lines[0]
    assert 'net_mtu_bytes{interface="lo",node="n1"} 65536' in done.stdout
    assert 'net_up{interface="lo",node="n1"} 0' in done.stdout


def test_eeprom_interval_and_ethtool_route_through_the_plugin(tmp_path: Path, fixtures_dir: Path) -> None:
    """Counters every collection, EEPROM only when ``eeprom_interval`` has passed; the last
    reading is emitted in between. Loopback stands in for a live interface (its address in
    the tree matches the running kernel's)."""
    sysfs = tmp_path / "sys"
    lo = sysfs / "class/net/lo"
    lo.mkdir(parents=True)
    (lo / "address").write_text("00:00:00:00:00:00\n")
    (lo / "mtu").write_text("65536\n")
    fixture = fixtures_dir / "ethtool-m/sfp-10g-sr-fs-i40e-dom.txt"
    script = tmp_path / "ethtool"
    script.write_text(f"#!/bin/sh\necho run >> {tmp_path}/runs\ncat {fixture}\n")
    script.chmod(0o755)
    config = OpticsConfig(physical_only=False, exclude_interfaces=[], eeprom="ethtool",
                          ethtool_path=str(script), eeprom_interval=3600)
    plugin = OpticsPlugin(PluginContext(node="t", sysfs_root=sysfs), config)
    plugin.discover()
    try:
        first = plugin.collect()
        second = plugin.collect()
        assert (tmp_path / "runs").read_text().count("run") == 1
        for col in (first, second):
            values = {(s.name, s.labels.get("lane")): s.value for s in col.samples}
            assert values[("optical_temperature_celsius", None)] == 39.18
            assert values[("optical_tx_bias_amperes", "1")] == 6.090 / 1000
            assert values[("net_mtu_bytes", None)] == 65536
        plugin.config.eeprom_interval = 1e-9  # due again at the next collection, no waiting
        plugin.collect()
        assert (tmp_path / "runs").read_text().count("run") == 2
    finally:
        plugin.close()
        plugin.close()
