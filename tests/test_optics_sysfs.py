"""optics plugin on the captured sysfs trees: every IB port and interface, exact values.

Expected values are literals read from the fixture files (``cat``); data counters are in
4-byte words, so the byte series is the file value times 4.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from agent.errors import PluginUnavailable
from agent.model import Collection
from agent.plugin import PluginContext
from agent.plugins.optics import OpticsPlugin
from agent.plugins.optics.plugin import OpticsConfig
from agent.plugins.optics.sysfs import parse_int, parse_rate, parse_speed, parse_state
from tests.services import captured_link, require_binary

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

# sysfs counters/ file -> series name (DESIGN.md names where it has them).
COUNTER_NAMES = {
    "symbol_error": "ib_port_symbol_errors_total",
    "link_error_recovery": "ib_port_link_error_recovery_total",
    "link_downed": "ib_port_link_downed_total",
    "port_rcv_errors": "ib_port_receive_errors_total",
    "port_rcv_remote_physical_errors": "ib_port_receive_remote_physical_errors_total",
    "port_rcv_switch_relay_errors": "ib_port_receive_switch_relay_errors_total",
    "port_xmit_discards": "ib_port_transmit_discards_total",
    "port_xmit_constraint_errors": "ib_port_transmit_constraint_errors_total",
    "port_rcv_constraint_errors": "ib_port_receive_constraint_errors_total",
    "local_link_integrity_errors": "ib_port_local_link_integrity_errors_total",
    "excessive_buffer_overrun_errors": "ib_port_excessive_buffer_overrun_errors_total",
    "VL15_dropped": "ib_port_vl15_dropped_total",
    "port_xmit_data": "ib_port_transmit_bytes_total",
    "port_rcv_data": "ib_port_receive_bytes_total",
    "port_xmit_packets": "ib_port_transmit_packets_total",
    "port_rcv_packets": "ib_port_receive_packets_total",
    "port_xmit_wait": "ib_port_transmit_wait_ticks_total",
    "unicast_xmit_packets": "ib_port_transmit_unicast_packets_total",
    "unicast_rcv_packets": "ib_port_receive_unicast_packets_total",
    "multicast_xmit_packets": "ib_port_transmit_multicast_packets_total",
    "multicast_rcv_packets": "ib_port_receive_multicast_packets_total",
    "port_rcv_discards": "ib_port_receive_discards_total",
}
# IBA PortCounters widths: the counters that get a saturation flag.
WIDTHS = {"symbol_error": 16, "link_error_recovery": 8, "link_downed": 8, "port_rcv_errors": 16,
          "port_rcv_remote_physical_errors": 16, "port_rcv_switch_relay_errors": 16,
          "port_xmit_discards": 16, "port_xmit_constraint_errors": 8, "port_rcv_constraint_errors": 8,
          "local_link_integrity_errors": 4, "excessive_buffer_overrun_errors": 4, "VL15_dropped": 16,
          "port_xmit_wait": 32}


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def expected_port(device: str, port: str, *, state: int, phys: int, gbps: float, link_layer: str,
                  counters: dict[str, int], hw: dict[str, int] | None = None) -> Series:
    out: Series = {
        _key("ib_port_state", device=device, port=port): state,
        _key("ib_port_physical_state", device=device, port=port): phys,
        _key("ib_port_rate_bytes_per_second", device=device, port=port): gbps * 1e9 / 8,
        _key("ib_port_info", device=device, port=port, link_layer=link_layer): 1,
    }
    for file, raw in counters.items():
        value = raw * 4 if file in ("port_xmit_data", "port_rcv_data") else raw
        out[_key(COUNTER_NAMES[file], device=device, port=port)] = value
        if file in WIDTHS:
            saturated = 1 if raw == 2 ** WIDTHS[file] - 1 else 0
            out[_key("ib_port_saturated", device=device, port=port, counter=file)] = saturated
    for file, raw in (hw or {}).items():
        if file == "lifespan":  # milliseconds in sysfs
            out[_key("ib_port_hw_lifespan_seconds", device=device, port=port)] = raw / 1000
        else:
            out[_key(f"ib_port_hw_{file}_total", device=device, port=port)] = raw
    return out


def expected_hca(device: str, **labels: str) -> Series:
    return {_key("ib_hca_info", device=device, **labels): 1}


def expected_net(name: str, *, up: int, carrier: int, changes: int, ups: int, downs: int,
                 mtu: int, speed_mbps: int | None) -> Series:
    out: Series = {
        _key("net_up", interface=name): up,
        _key("net_carrier", interface=name): carrier,
        _key("net_carrier_changes_total", interface=name): changes,
        _key("net_carrier_up_total", interface=name): ups,
        _key("net_carrier_down_total", interface=name): downs,
        _key("net_mtu_bytes", interface=name): mtu,
    }
    if speed_mbps is not None:
        out[_key("net_speed_bytes_per_second", interface=name)] = speed_mbps * 125_000
    return out


def collect(root: Path, **options: object) -> Series:
    config = OpticsConfig(**options)  # type: ignore[arg-type]
    plugin = OpticsPlugin(PluginContext(node="t", sysfs_root=root), config)
    plugin.discover()
    try:
        col: Collection = plugin.collect()
    finally:
        plugin.close()
    out: Series = {}
    for s in col.samples:
        key = _key(s.name, **s.labels)
        assert key not in out, f"duplicate series {key}"
        out[key] = s.value
    return out


# --- node-exporter tree ----------------------------------------------------------------------

NODE_EXPORTER_IB: Series = {
    **expected_hca("i40iw0", board_id="I40IW Board ID", fw_version="0.2", hca_type="I40IW"),
    # Every counter of i40iw0 reads "N/A (no PMA)": state and rate only, no counter at all.
    **expected_port("i40iw0", "1", state=4, phys=5, gbps=10, link_layer="InfiniBand", counters={}),
    **expected_hca("mlx4_0", board_id="SM_1141000001000", fw_version="2.31.5050", hca_type="MT4099"),
    **expected_port("mlx4_0", "1", state=4, phys=5, gbps=40, link_layer="InfiniBand", counters={
        "link_downed": 0, "link_error_recovery": 0, "multicast_rcv_packets": 93,
        "multicast_xmit_packets": 16, "port_rcv_constraint_errors": 0, "port_rcv_data": 4631917,
        "port_rcv_discards": 0, "port_rcv_errors": 0, "port_rcv_packets": 6825908347,
        "port_xmit_constraint_errors": 0, "port_xmit_data": 3733440, "port_xmit_discards": 5,
        "port_xmit_packets": 6235865, "port_xmit_wait": 4294967295, "unicast_rcv_packets": 61148,
        "unicast_xmit_packets": 61239,
    }),
    **expected_port("mlx4_0", "2", state=4, phys=5, gbps=40, link_layer="InfiniBand", counters={
        "link_downed": 0, "link_error_recovery": 0, "multicast_rcv_packets": 0,
        "multicast_xmit_packets": 0, "port_rcv_data": 0, "port_xmit_data": 0,
        "unicast_rcv_packets": 0, "unicast_xmit_packets": 0,
    }),
}


def test_node_exporter_tree_exact(fixtures_dir: Path) -> None:
    root = fixtures_dir / "sysfs/node-exporter/sys"
    got = collect(root)
    assert got == NODE_EXPORTER_IB
    # port_xmit_wait sits at 2^32-1: flagged, and reported as read (not wrapped, not dropped).
    assert got[_key("ib_port_saturated", device="mlx4_0", port="1", counter="port_xmit_wait")] == 1
    assert got[_key("ib_port_transmit_wait_ticks_total", device="mlx4_0", port="1")] == 4294967295
    assert got[_key("ib_port_receive_bytes_total", device="mlx4_0", port="1")] == 18527668


def test_node_exporter_virtual_interfaces_on_request(fixtures_dir: Path) -> None:
    """bond0/dmz/int have no ``device`` link (bonds), nor has eth0 (a link to
    devices/pci0000:00/0000:00:03.0/0000:03:00.0/net/eth0, whose capture has no ``device``):
    skipped by default, read when asked."""
    root = fixtures_dir / "sysfs/node-exporter/sys"
    assert {k for k in collect(root) if k[0].startswith("net_")} == set()
    got = collect(root, physical_only=False)
    net = {k: v for k, v in got.items() if k[0].startswith("net_")}
    expected = {
        # bond0 speed reads -1 (unknown): omitted, not reported as 0 or -125000.
        **expected_net("bond0", up=1, carrier=1, changes=2, ups=1, downs=1, mtu=1500, speed_mbps=None),
        **expected_net("dmz", up=1, carrier=1, changes=2, ups=1, downs=1, mtu=1500, speed_mbps=1000),
        **expected_net("int", up=1, carrier=1, changes=2, ups=1, downs=1, mtu=1500, speed_mbps=1000),
    }
    # eth0 is a link, kept or flattened into a directory; a checkout without symlink support holds
    # a file naming the target instead, which is not an interface (a real /sys never has that).
    if captured_link(root / "class/net/eth0") != "text":
        expected |= expected_net("eth0", up=1, carrier=1, changes=2, ups=1, downs=1, mtu=1500, speed_mbps=1000)
    assert net == expected
    only = collect(root, physical_only=False, interfaces=["d*"], ib_devices=["none"])
    assert {k[1] for k in only} == {frozenset({("interface", "dmz")})}


def test_interfaces_through_links_as_in_a_real_sysfs(tmp_path: Path) -> None:
    """A real /sys is all links: class/net/<if> -> devices/..., <if>/device -> the PCI function
    (physical), a virtual interface has no ``device``; a dangling ``device`` link still marks it."""
    devices = tmp_path / "devices"
    for path, carrier in (("pci0000:00/0000:00:01.0/0000:01:00.0/net/ens1", "1"),
                          ("pci0000:00/0000:00:01.0/0000:02:00.0/net/ens2", "0"), ("virtual/net/veth0", "1")):
        nic = devices / path
        nic.mkdir(parents=True)
        (nic / "carrier").write_text(carrier + "\n")
        (nic / "mtu").write_text("9000\n")
    (devices / "pci0000:00/0000:00:01.0/0000:01:00.0/net/ens1/device").symlink_to("../../../0000:01:00.0")
    (devices / "pci0000:00/0000:00:01.0/0000:02:00.0/net/ens2/device").symlink_to("../../../0000:02:00.9")
    (tmp_path / "class/net").mkdir(parents=True)
    for name, target in (("ens1", "pci0000:00/0000:00:01.0/0000:01:00.0/net/ens1"),
                         ("ens2", "pci0000:00/0000:00:01.0/0000:02:00.0/net/ens2"), ("veth0", "virtual/net/veth0")):
        (tmp_path / "class/net" / name).symlink_to(f"../../devices/{target}")
    got = collect(tmp_path)
    assert got == {_key("net_carrier", interface="ens1"): 1, _key("net_mtu_bytes", interface="ens1"): 9000,
                   _key("net_carrier", interface="ens2"): 0, _key("net_mtu_bytes", interface="ens2"): 9000}
    got = collect(tmp_path, physical_only=False)
    assert {dict(k[1])["interface"] for k in got} == {"ens1", "ens2", "veth0"}


# --- procfs tree -------------------------------------------------------------------------------

ZERO_ERRORS = {k: 0 for k in ("VL15_dropped", "excessive_buffer_overrun_errors", "link_downed",
                              "link_error_recovery", "local_link_integrity_errors",
                              "port_rcv_constraint_errors", "port_rcv_errors",
                              "port_rcv_remote_physical_errors", "port_rcv_switch_relay_errors",
                              "port_xmit_constraint_errors", "port_xmit_discards", "symbol_error")}

PROCFS: Series = {
    **expected_hca("hfi1_0", fw_version="1.27.0",
                   board_id="HPE 100Gb 1-port OP101 QSFP28 x16 PCIe Gen3 with Intel Omni-Path Adapter"),
    **expected_port("hfi1_0", "1", state=4, phys=5, gbps=100, link_layer="InfiniBand", counters={
        **ZERO_ERRORS, "port_rcv_data": 345091702026, "port_rcv_packets": 638036947,
        "port_xmit_data": 273558326543, "port_xmit_packets": 568318856, "port_xmit_wait": 0,
    }),
    **expected_hca("mlx4_0", board_id="SM_1141000001000", fw_version="2.31.5050", hca_type="MT4099"),
    **expected_port("mlx4_0", "1", state=4, phys=5, gbps=40, link_layer="InfiniBand", counters={
        **ZERO_ERRORS, "port_rcv_data": 2221223609, "port_rcv_packets": 87169372,
        "port_xmit_data": 26509113295, "port_xmit_packets": 85734114, "port_xmit_wait": 3599,
    }),
    # port 2's link_layer file ends in two newlines: still "InfiniBand".
    **expected_port("mlx4_0", "2", state=4, phys=5, gbps=40, link_layer="InfiniBand", counters={
        **ZERO_ERRORS, "port_rcv_data": 2460436784, "port_rcv_packets": 89332064,
        "port_xmit_data": 26540356890, "port_xmit_packets": 88622850, "port_xmit_wait": 3846,
    }),
    **expected_hca("mlx5_0", board_id="SM_2001000001034", fw_version="14.28.2006", hca_type="MT4118"),
    # phys_state reads "4: ACTIVE" in this capture: reported as read (4), not corrected to 5.
    **expected_port("mlx5_0", "1", state=4, phys=4, gbps=25, link_layer="InfiniBand", counters={
        **ZERO_ERRORS, "multicast_rcv_packets": 0, "multicast_xmit_packets": 0,
        "port_rcv_data": 18126345378, "port_rcv_packets": 541889824, "port_xmit_data": 2880761508848,
        "port_xmit_packets": 10907922116, "port_xmit_wait": 0, "unicast_rcv_packets": 541889824,
        "unicast_xmit_packets": 10907922116,
    }, hw={
        "duplicate_request": 41, "implied_nak_seq_err": 0, "lifespan": 10, "local_ack_timeout_err": 131,
        "out_of_buffer": 0, "out_of_sequence": 1, "packet_seq_err": 1, "req_cqe_error": 3481,
        "req_cqe_flush_error": 80, "req_remote_access_errors": 0, "req_remote_invalid_request": 0,
        "resp_cqe_error": 8109, "resp_cqe_flush_error": 4708, "resp_local_length_error": 0,
        "resp_remote_access_errors": 0, "rnr_nak_retry_err": 0, "roce_adp_retrans": 99,
        "roce_adp_retrans_to": 4, "roce_slow_restart": 0, "roce_slow_restart_cnps": 131,
        "roce_slow_restart_trans": 0, "rx_atomic_requests": 0, "rx_dct_connect": 0,
        "rx_read_requests": 175528982, "rx_write_requests": 742114,
    }),
    # eth0 has a device entry (physical); speed 1000 Mb/s.
    **expected_net("eth0", up=1, carrier=1, changes=2, ups=1, downs=1, mtu=1500, speed_mbps=1000),
}


def test_procfs_tree_exact(fixtures_dir: Path) -> None:
    got = collect(fixtures_dir / "sysfs/procfs/sys")
    assert got == PROCFS
    assert got[_key("ib_port_transmit_bytes_total", device="mlx5_0", port="1")] == 11523046035392


# --- h100-infiniband tree (9 HCAs) ---------------------------------------------------------

H100_COUNTERS = {
    "VL15_dropped": 0, "excessive_buffer_overrun_errors": 15, "link_downed": 0, "link_error_recovery": 0,
    "local_link_integrity_errors": 0, "multicast_rcv_packets": 0, "multicast_xmit_packets": 0,
    "port_rcv_constraint_errors": 0, "port_rcv_data": 230539874932483, "port_rcv_errors": 14,
    "port_rcv_packets": 317548853677, "port_rcv_remote_physical_errors": 0,
    "port_rcv_switch_relay_errors": 1, "port_xmit_constraint_errors": 0,
    "port_xmit_data": 230442669431839, "port_xmit_discards": 0, "port_xmit_packets": 315487941081,
    "port_xmit_wait": 2489603687, "symbol_error": 0, "unicast_rcv_packets": 317548853677,
    "unicast_xmit_packets": 315487941081,
}
H100_HW = {
    "duplicate_request": 0, "implied_nak_seq_err": 0, "lifespan": 12, "local_ack_timeout_err": 0,
    "out_of_buffer": 0, "out_of_sequence": 0, "packet_seq_err": 0, "req_cqe_error": 0,
    "req_cqe_flush_error": 0, "req_remote_access_errors": 0, "req_remote_invalid_request": 0,
    "resp_cqe_error": 0, "resp_cqe_flush_error": 0, "resp_local_length_error": 0,
    "resp_remote_access_errors": 0, "rnr_nak_retry_err": 0, "roce_adp_retrans": 3,
    "roce_adp_retrans_to": 0, "roce_slow_restart": 0, "roce_slow_restart_cnps": 0,
    "roce_slow_restart_trans": 0, "rx_atomic_requests": 0, "rx_dct_connect": 422237,
    "rx_icrc_encapsulated": 0, "rx_read_requests": 9187392, "rx_write_requests": 3809045607,
}


def h100_expected() -> Series:
    out: Series = {}
    for dev in ("mlx5_0", "mlx5_1", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_7", "mlx5_8", "mlx5_9"):
        counters = dict(H100_COUNTERS)
        if dev == "mlx5_1":  # the one port that differs in this capture
            counters.update(link_downed=255, port_rcv_data=205128687774249, port_rcv_switch_relay_errors=2)
        out |= expected_hca(dev, board_id="MT_0000000838", fw_version="28.41.1000", hca_type="MT4129")
        out |= expected_port(dev, "1", state=4, phys=5, gbps=400, link_layer="InfiniBand",
                             counters=counters, hw=H100_HW)
    out |= expected_hca("mlx5_bond_0", board_id="MT_0000000884", fw_version="32.38.3056", hca_type="MT41692")
    out |= expected_port("mlx5_bond_0", "1", state=4, phys=5, gbps=200, link_layer="Ethernet",
                         counters=H100_COUNTERS, hw=H100_HW)
    return out


def test_h100_tree_exact(fixtures_dir: Path) -> None:
    got = collect(fixtures_dir / "sysfs/h100-infiniband/sys")
    assert got == h100_expected()
    # link_downed is an 8-bit counter: 255 on mlx5_1 is saturated; the 4-bit excessive buffer
    # overrun counter reads 15 everywhere, saturated too.
    assert got[_key("ib_port_saturated", device="mlx5_1", port="1", counter="link_downed")] == 1
    assert got[_key("ib_port_saturated", device="mlx5_0", port="1", counter="link_downed")] == 0
    assert got[_key("ib_port_saturated", device="mlx5_0", port="1",
                    counter="excessive_buffer_overrun_errors")] == 1
    assert got[_key("ib_port_receive_bytes_total", device="mlx5_1", port="1")] == 820514751096996
    assert got[_key("ib_port_rate_bytes_per_second", device="mlx5_0", port="1")] == 50_000_000_000


def test_device_filters(fixtures_dir: Path) -> None:
    got = collect(fixtures_dir / "sysfs/h100-infiniband/sys", ib_devices=["mlx5_*"],
                  exclude_ib_devices=["mlx5_bond_*", "mlx5_[4-9]"])
    assert {dict(k[1])["device"] for k in got} == {"mlx5_0", "mlx5_1"}


# --- pure parsers ----------------------------------------------------------------------------


def test_parsers() -> None:
    assert parse_state("4: ACTIVE") == 4
    assert parse_state("5: LinkUp") == 5
    assert parse_state("") is None
    assert parse_rate("400 Gb/sec (4X NDR)") == 50e9
    assert parse_rate("2.5 Gb/sec (1X SDR)") == 312_500_000
    assert parse_rate("Unknown") is None
    assert parse_int("N/A (no PMA)") is None
    assert parse_int("0x1303") == 0x1303
    assert parse_speed("-1") is None
    assert parse_speed("100000") == 12.5e9


# --- the agent end to end: --once --format prom | promtool check metrics -----------------------


@pytest.mark.parametrize("tree", ["node-exporter", "procfs", "h100-infiniband"])
def test_once_prom_passes_promtool(tree: str, fixtures_dir: Path, fleetmon_cmd: list[str]) -> None:
    promtool = require_binary("promtool")
    root = fixtures_dir / "sysfs" / tree / "sys"
    done = subprocess.run(
        [*fleetmon_cmd, "agent", "--once", "--format", "prom", "--plugins", "optics",
         "--sysfs-root", str(root), "--node", "n1"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    check = subprocess.run([promtool, "check", "metrics"], input=done.stdout, capture_output=True,
                           text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln and not ln.startswith("#")]
    assert 'fleetmon_agent_plugin_success{node="n1",plugin="optics"} 1' in lines
    if tree == "node-exporter":
        # i40iw0 counters read "N/A (no PMA)": no counter series for it, no zero.
        assert not [ln for ln in lines if 'device="i40iw0"' in ln and "_total" in ln]
        assert 'ib_port_state{device="i40iw0",node="n1",port="1"} 4' in lines
        assert 'ib_port_transmit_bytes_total{device="mlx4_0",node="n1",port="1"} 14933760' in lines
    if tree == "h100-infiniband":
        assert 'ib_port_receive_bytes_total{device="mlx5_1",node="n1",port="1"} 820514751096996' in lines
        assert 'ib_port_link_downed_total{device="mlx5_1",node="n1",port="1"} 255' in lines
    # No transceiver series: the trees are captures, not this host's modules.
    assert not [ln for ln in lines if ln.startswith("optical_")]


def test_no_hca_no_interface_one_line(tmp_path: Path, fleetmon_cmd: list[str]) -> None:
    (tmp_path / "class/net").mkdir(parents=True)
    plugin = OpticsPlugin(PluginContext(node="t", sysfs_root=tmp_path), OpticsConfig())
    with pytest.raises(PluginUnavailable, match=r"no InfiniBand device under .* and no physical network"):
        plugin.discover()
    plugin.close()
    plugin.close()
    done = subprocess.run(
        [*fleetmon_cmd, "agent", "--once", "--format", "prom", "--plugins", "optics",
         "--sysfs-root", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1  # nothing usable: --once says so (issue 15)
    warnings = [ln for ln in done.stderr.splitlines() if "plugin optics disabled" in ln]
    assert len(warnings) == 1 and "plugin optics disabled: no InfiniBand device" in warnings[0]
    assert done.stderr.splitlines()[-1].startswith("fleetmon agent: no usable plugin: optics (no InfiniBand")


def test_unreadable_counter_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A counter file the kernel refuses (a directory here stands in for EINVAL/EACCES: the
    read fails) is omitted; the readable ones are reported."""
    port = tmp_path / "class/infiniband/mlx5_0/ports/1"
    (port / "counters").mkdir(parents=True)
    (port / "counters/symbol_error").mkdir()  # os.read fails with EISDIR
    (port / "counters/link_downed").write_text("3\n")
    (port / "state").write_text("1: DOWN\n")
    caplog.set_level(logging.WARNING)
    got = collect(tmp_path)
    assert got == {
        _key("ib_hca_info", device="mlx5_0"): 1,
        _key("ib_port_state", device="mlx5_0", port="1"): 1,
        _key("ib_port_link_downed_total", device="mlx5_0", port="1"): 3,
        _key("ib_port_saturated", device="mlx5_0", port="1", counter="link_downed"): 0,
    }


def test_link_flap_events(tmp_path: Path) -> None:
    nic = tmp_path / "class/net/ens1"
    nic.mkdir(parents=True)
    (nic / "device").write_text("")
    (nic / "carrier_changes").write_text("4\n")
    port = tmp_path / "class/infiniband/mlx5_0/ports/1/counters"
    port.mkdir(parents=True)
    (port / "link_downed").write_text("7\n")
    plugin = OpticsPlugin(PluginContext(node="t", sysfs_root=tmp_path), OpticsConfig(eeprom="off"))
    plugin.discover()
    assert plugin.collect().events == []
    (nic / "carrier_changes").write_text("6\n")
    (port / "link_downed").write_text("8\n")
    events = plugin.collect().events
    plugin.close()
    assert [(e.kind, e.labels) for e in events] == [
        ("ib.link_downed", {"device": "mlx5_0", "port": "1"}),
        ("net.link_flap", {"interface": "ens1"}),
    ]
    assert "2 time(s)" in events[1].message
