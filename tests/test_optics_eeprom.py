"""EEPROM decoding on byte images built here from the specifications' offsets.

Each image sets raw values at the offsets SFF-8472 (A0h/A2h), SFF-8636 (lower page, upper
pages 00h/03h) and CMIS 5.x (lower page, pages 00h/01h/02h/11h) define; the expected values
are the same numbers in the metric units (raw units: 1/256 degC, 100 uV, 2 uA, 0.1 uW).
"""

from __future__ import annotations

import json
import math
import struct
import subprocess

import pytest

from agent.model import Collection
from agent.output import to_influx, to_json, to_prom
from agent.plugins.optics import cmis, eeprom
from agent.plugins.optics.eeprom import EepromError, EepromImage, PageRequest, decode, plan_pages, split_legacy
from agent.plugins.optics.emit import module_samples
from agent.plugins.optics.reading import mw_to_dbm
from tests.services import require_binary

approx = pytest.approx


def page() -> bytearray:
    return bytearray(128)


def put16(buf: bytearray, off: int, value: int, base: int = 0) -> None:
    buf[off - base : off - base + 2] = (value & 0xFFFF).to_bytes(2, "big")


def puts(buf: bytearray, off: int, n: int, text: str, base: int = 0) -> None:
    buf[off - base : off - base + n] = text.ljust(n).encode()


# --- SFF-8472 -----------------------------------------------------------------------------------


def sff8472_a0(diag: int) -> bytearray:
    a0 = page()
    a0[0], a0[1], a0[2] = 0x03, 0x04, 0x07  # SFP, 2-wire ID, LC
    puts(a0, 20, 16, "ACME OPTICS")
    puts(a0, 40, 16, "SFP-10G-SR")
    puts(a0, 56, 4, "A1")
    put16(a0, 60, 850)  # wavelength, nm
    a0[65] = 0x1A  # RX_LOS, TX_FAULT, TX_DISABLE implemented
    puts(a0, 68, 16, "SN12345")
    a0[92] = diag
    a0[93] = 0x80  # alarm/warning flags implemented
    a0[94] = 0x08
    return a0


def sff8472_internal() -> EepromImage:
    a0 = sff8472_a0(0x68)  # DDM implemented, internally calibrated, average rx power
    a2 = page()
    for i, v in enumerate((80 * 256, -10 * 256, 70 * 256, 0)):  # temperature thresholds
        put16(a2, 0 + 2 * i, v)
    for i, v in enumerate((36300, 29700, 34650, 31350)):  # Vcc, 100 uV
        put16(a2, 8 + 2 * i, v)
    for i, v in enumerate((7500, 1000, 6000, 1500)):  # bias, 2 uA
        put16(a2, 16 + 2 * i, v)
    for i, v in enumerate((15849, 1122, 10000, 1778)):  # tx power, 0.1 uW
        put16(a2, 24 + 2 * i, v)
    for i, v in enumerate((15849, 389, 10000, 617)):  # rx power, 0.1 uW
        put16(a2, 32 + 2 * i, v)
    put16(a2, 96, 10030)  # 39.1796875 degC
    put16(a2, 98, 33544)  # 3.3544 V
    put16(a2, 100, 3045)  # 6.09 mA
    put16(a2, 102, 6367)  # 0.6367 mW
    put16(a2, 104, 0)  # no light: 0 mW
    a2[110] = 0x02  # Rx_LOS state
    a2[113] = 0x40  # rx power low alarm
    a2[117] = 0x40  # rx power low warning
    a2[112] = 0x80  # temperature high alarm
    return EepromImage(lower=bytes(a0), a2=bytes(a2))


def test_sff8472_internal_calibration() -> None:
    r = decode(sff8472_internal())
    assert (r.standard, r.type, r.vendor, r.part_number, r.revision, r.serial, r.wavelength_nm) == (
        "SFF-8472", "SFP", "ACME OPTICS", "SFP-10G-SR", "A1", "SN12345", 850.0)
    assert r.temperature_c == 10030 / 256
    assert r.voltage_v == approx(3.3544, abs=1e-12)
    [lane] = r.lanes
    assert lane.lane == 1
    assert lane.tx_bias_a == approx(0.00609, abs=1e-15)
    assert lane.tx_power_mw == approx(0.6367, abs=1e-12)
    assert lane.rx_power_mw == 0.0
    assert (lane.rx_los, lane.tx_fault, lane.rx_lol, lane.tx_lol) == (True, False, None, None)
    assert r.thresholds[("temperature", "high_alarm")] == 80.0
    assert r.thresholds[("temperature", "low_alarm")] == -10.0
    assert r.thresholds[("temperature", "high_warning")] == 70.0
    assert r.thresholds[("voltage", "low_warning")] == approx(3.135, abs=1e-12)
    assert r.thresholds[("tx_bias", "high_alarm")] == approx(0.015, abs=1e-15)
    assert r.thresholds[("tx_power", "low_warning")] == approx(0.1778, abs=1e-12)
    assert r.thresholds[("rx_power", "low_alarm")] == approx(0.0389, abs=1e-12)
    assert len(r.thresholds) == 20
    assert r.alarms[("temperature", "high_alarm")] is True
    assert r.alarms[("voltage", "high_alarm")] is False
    assert lane.alarms[("rx_power", "low_alarm")] is True
    assert lane.alarms[("rx_power", "low_warning")] is True
    assert lane.alarms[("tx_power", "low_alarm")] is False
    assert lane.alarms[("tx_bias", "high_alarm")] is False


def test_sff8472_external_calibration() -> None:
    a0 = sff8472_a0(0x58)  # DDM implemented, externally calibrated (bit 4)
    a2 = page()
    a2[56:72] = struct.pack(">4f", 0.0, 0.0, 0.0, 2.0)  # Rx_PWR(4..1)
    a2[72:76] = struct.pack(">f", 10.0)  # Rx_PWR(0): rx = 10 + 2 * ad
    put16(a2, 76, 0x0200)  # Tx_I slope 2.0 (8.8 fixed point)
    put16(a2, 78, 100)  # Tx_I offset
    put16(a2, 80, 0x0100)  # Tx_PWR slope 1.0
    put16(a2, 82, 0)
    put16(a2, 84, 0x0100)  # T slope 1.0
    put16(a2, 86, -256)  # T offset: -1 degC
    put16(a2, 88, 0x0080)  # V slope 0.5
    put16(a2, 90, 0)
    put16(a2, 0, 81 * 256)  # temperature high alarm, as A/D counts
    put16(a2, 34, 100)  # rx power low alarm, as A/D counts
    put16(a2, 96, 40 * 256)  # T_ad
    put16(a2, 98, 60000)  # V_ad
    put16(a2, 100, 3000)  # I_ad
    put16(a2, 102, 5000)  # TX_ad
    put16(a2, 104, 2000)  # RX_ad
    r = decode(EepromImage(lower=bytes(a0), a2=bytes(a2)))
    assert r.temperature_c == 39.0
    assert r.voltage_v == approx(3.0, abs=1e-12)
    [lane] = r.lanes
    assert lane.tx_bias_a == approx(6100 * 2e-6, abs=1e-15)  # 2 * 3000 + 100 = 6100 x 2 uA
    assert lane.tx_power_mw == approx(0.5, abs=1e-12)
    assert lane.rx_power_mw == approx(0.401, abs=1e-12)  # 10 + 2 * 2000 = 4010 x 0.1 uW
    assert r.thresholds[("temperature", "high_alarm")] == 80.0
    assert r.thresholds[("rx_power", "low_alarm")] == approx(0.021, abs=1e-12)


def test_sff8472_without_ddm_reports_identity_only() -> None:
    a0 = sff8472_a0(0x00)
    a0[8] = 0x04  # passive cable: bytes 60-61 are not a wavelength
    r = decode(EepromImage(lower=bytes(a0)))
    assert (r.temperature_c, r.voltage_v, r.lanes, r.thresholds, r.wavelength_nm) == (None, None, [], {}, None)
    assert plan_pages(bytes(a0)) == []
    assert plan_pages(sff8472_internal().lower) == [PageRequest(0x51, 0, 0)]


# --- SFF-8636 ------------------------------------------------------------------------------------


def sff8636_pages() -> tuple[bytes, dict[int, bytes]]:
    lo = page()
    lo[0], lo[1], lo[2] = 0x11, 0x08, 0x00  # QSFP28, rev 2.10, paged memory
    lo[3] = 0x21  # Rx LOS lane 1, Tx LOS lane 2
    lo[4] = 0x04  # Tx fault lane 3
    lo[5] = 0x82  # Rx LOL lane 2, Tx LOL lane 4
    lo[6] = 0x10  # temperature low warning
    lo[9] = 0x40  # lane 1 rx power low alarm
    lo[12] = 0x02  # lane 4 bias high warning
    put16(lo, 22, -1408)  # -5.5 degC
    put16(lo, 26, 32882)  # 3.2882 V
    for i, v in enumerate((7541, 0, 8000, 9000)):
        put16(lo, 34 + 2 * i, v)  # rx power
    for i, v in enumerate((3375, 3400, 3500, 3600)):
        put16(lo, 42 + 2 * i, v)  # bias
    for i, v in enumerate((7794, 7800, 7900, 8100)):
        put16(lo, 50 + 2 * i, v)  # tx power
    p0 = page()
    p0[0] = 0x11
    p0[147 - 128] = 0x00  # 850 nm VCSEL
    puts(p0, 148, 16, "FINISAR CORP", base=128)
    puts(p0, 168, 16, "FTLC9551REPM", base=128)
    puts(p0, 184, 2, "A0", base=128)
    put16(p0, 186, 850 * 20, base=128)
    puts(p0, 196, 16, "X3AB123", base=128)
    p0[194 - 128] = 0x30  # options: Tx CDR LOL (bit 5) and Rx CDR LOL (bit 4) flags implemented
    p0[195 - 128] = 0x0A  # options: Tx fault (bit 3) and Tx LOS (bit 1) implemented
    p0[220 - 128] = 0x0C  # average rx power, tx power supported
    p3 = page()
    for base, values in ((128, (75 * 256, -5 * 256, 70 * 256, 0)), (144, (35000, 31000, 34500, 31500)),
                         (176, (34674, 468, 17378, 933)), (184, (7500, 1000, 7000, 1500)),
                         (192, (34674, 1175, 17378, 2344))):
        for i, v in enumerate(values):
            put16(p3, base + 2 * i, v, base=128)
    return bytes(lo), {0: bytes(p0), 3: bytes(p3)}


def test_sff8636_per_lane() -> None:
    lower, upper = sff8636_pages()
    r = decode(EepromImage(lower=lower, upper=upper))
    assert (r.standard, r.type, r.vendor, r.part_number, r.revision, r.serial) == (
        "SFF-8636", "QSFP28", "FINISAR CORP", "FTLC9551REPM", "A0", "X3AB123")
    assert r.wavelength_nm == 850.0
    assert r.temperature_c == -5.5
    assert r.voltage_v == approx(3.2882, abs=1e-12)
    assert [ln.lane for ln in r.lanes] == [1, 2, 3, 4]
    assert [ln.rx_power_mw for ln in r.lanes] == approx([0.7541, 0.0, 0.8, 0.9], abs=1e-12)
    assert [ln.tx_bias_a for ln in r.lanes] == approx([0.00675, 0.0068, 0.007, 0.0072], abs=1e-15)
    assert [ln.tx_power_mw for ln in r.lanes] == approx([0.7794, 0.78, 0.79, 0.81], abs=1e-12)
    assert [ln.rx_los for ln in r.lanes] == [True, False, False, False]
    assert [ln.tx_fault for ln in r.lanes] == [False, False, True, False]
    assert [ln.rx_lol for ln in r.lanes] == [False, True, False, False]
    assert [ln.tx_lol for ln in r.lanes] == [False, False, False, True]
    assert r.alarms[("temperature", "low_warning")] is True
    assert r.alarms[("temperature", "high_alarm")] is False
    assert r.lanes[0].alarms[("rx_power", "low_alarm")] is True
    assert r.lanes[1].alarms[("rx_power", "low_alarm")] is False
    assert r.lanes[3].alarms[("tx_bias", "high_warning")] is True
    assert r.lanes[2].alarms[("tx_bias", "high_warning")] is False
    assert r.thresholds[("temperature", "low_alarm")] == -5.0
    assert r.thresholds[("voltage", "high_alarm")] == approx(3.5, abs=1e-12)
    assert r.thresholds[("rx_power", "low_alarm")] == approx(0.0468, abs=1e-12)
    assert r.thresholds[("tx_bias", "low_warning")] == approx(0.003, abs=1e-15)
    assert r.thresholds[("tx_power", "high_warning")] == approx(1.7378, abs=1e-12)
    assert len(r.thresholds) == 20
    assert plan_pages(lower) == [PageRequest(0x50, 0, 128), PageRequest(0x50, 3, 128)]


def test_sff8636_legacy_dump_decodes_the_same() -> None:
    """ETHTOOL_GMODULEEEPROM's 640-byte SFF-8636 layout: lower, 00h, then 01h-03h upper halves."""
    lower, upper = sff8636_pages()
    dump = lower + upper[0] + bytes(128) + bytes(128) + upper[3]
    img = split_legacy(eeprom.ETH_MODULE_SFF_8636, dump)
    assert img.upper[3] == upper[3]
    assert decode(img) == decode(EepromImage(lower=lower, upper=upper))
    # The 256-byte form has no page 03h: no thresholds, the rest unchanged.
    short = decode(split_legacy(eeprom.ETH_MODULE_SFF_8636, lower + upper[0]))
    assert short.thresholds == {} and short.temperature_c == -5.5


def test_sff8472_legacy_dump() -> None:
    img = sff8472_internal()
    assert img.a2 is not None
    dump = img.lower + bytes(128) + img.a2 + bytes(128)
    assert decode(split_legacy(eeprom.ETH_MODULE_SFF_8472, dump)) == decode(img)


# --- CMIS ----------------------------------------------------------------------------------------


def cmis_pages() -> tuple[bytes, dict[int, bytes]]:
    lo = page()
    lo[0], lo[1], lo[2] = 0x19, 0x50, 0x00  # OSFP, CMIS 5.0, paged memory
    lo[3] = 3 << 1  # ModuleReady
    lo[9] = 0x01  # temperature high alarm
    put16(lo, 14, 11648)  # 45.5 degC
    put16(lo, 16, 33000)  # 3.3 V
    lo[85] = 0x02  # SMF
    lo[86], lo[87], lo[88] = 0x4B, 0x1C, 0x88  # first application: 8 host lanes, 8 media lanes
    p0 = page()
    p0[0] = 0x19
    puts(p0, 129, 16, "NVIDIA", base=128)
    puts(p0, 148, 16, "MMS4X00-NS", base=128)
    puts(p0, 164, 2, "A2", base=128)
    puts(p0, 166, 16, "MT2412FT00001", base=128)
    p1 = page()
    put16(p1, 138, 1311 * 20, base=128)  # 0.05 nm units
    p1[159 - 128] = 0x03  # temperature and Vcc monitors
    p1[176 - 128] = 0x01  # application 1 (8 media lanes) starts on lane 1
    p1[157 - 128] = 0x05  # Tx fault and Tx CDR LOL flags implemented (no Tx LOS)
    p1[158 - 128] = 0x06  # Rx LOS and Rx CDR LOL flags implemented
    p1[160 - 128] = 0x0F  # bias, tx power, rx power monitors; bias multiplier x2 (bits 4-3 = 01)
    p2 = page()
    for base, values in ((128, (80 * 256, -5 * 256, 75 * 256, 0)), (136, (34650, 31350, 34000, 32000)),
                         (176, (31623, 1000, 25119, 1585)), (184, (6000, 500, 5500, 750)),
                         (192, (31623, 200, 25119, 398))):
        for i, v in enumerate(values):
            put16(p2, base + 2 * i, v, base=128)
    p11 = page()
    p11[147 - 128] = 0x80  # Rx LOS lane 8
    p11[148 - 128] = 0x80  # Rx LOL lane 8
    p11[150 - 128] = 0x80  # rx power low alarm lane 8
    p11[152 - 128] = 0x80  # rx power low warning lane 8
    p11[145 - 128] = 0x04  # bias high warning lane 3
    p11[135 - 128] = 0x02  # tx fault lane 2
    for n in range(8):
        put16(p11, 154 + 2 * n, 10000 + 500 * n, base=128)  # tx power
        put16(p11, 170 + 2 * n, 3000 + 100 * n, base=128)  # bias (x2 multiplier)
        put16(p11, 186 + 2 * n, 0 if n == 7 else 9000 + 100 * n, base=128)  # rx power
    return bytes(lo), {0: bytes(p0), 1: bytes(p1), 2: bytes(p2), 0x11: bytes(p11)}


def test_cmis_per_lane() -> None:
    lower, upper = cmis_pages()
    r = decode(EepromImage(lower=lower, upper=upper))
    assert (r.standard, r.type, r.vendor, r.part_number, r.revision, r.serial, r.spec_revision) == (
        "CMIS", "OSFP", "NVIDIA", "MMS4X00-NS", "A2", "MT2412FT00001", "5.0")
    assert r.module_state == 3 and cmis.state_name(3) == "ModuleReady"
    assert r.wavelength_nm == approx(1311.0, abs=1e-9)
    assert r.temperature_c == 45.5
    assert r.voltage_v == approx(3.3, abs=1e-12)
    assert [ln.lane for ln in r.lanes] == list(range(1, 9))
    assert [ln.tx_power_mw for ln in r.lanes] == approx([1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35], abs=1e-12)
    # 2 uA x multiplier 2: raw 3000 -> 12 mA
    assert [ln.tx_bias_a for ln in r.lanes] == approx([0.012 + 0.0004 * n for n in range(8)], abs=1e-15)
    assert [ln.rx_power_mw for ln in r.lanes] == approx([0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.0], abs=1e-12)
    assert [ln.rx_los for ln in r.lanes] == [False] * 7 + [True]
    assert [ln.rx_lol for ln in r.lanes] == [False] * 7 + [True]
    assert [ln.tx_fault for ln in r.lanes] == [False, True] + [False] * 6
    assert r.lanes[7].alarms[("rx_power", "low_alarm")] is True
    assert r.lanes[7].alarms[("rx_power", "low_warning")] is True
    assert r.lanes[6].alarms[("rx_power", "low_alarm")] is False
    assert r.lanes[2].alarms[("tx_bias", "high_warning")] is True
    assert r.alarms[("temperature", "high_alarm")] is True
    assert r.alarms[("voltage", "high_alarm")] is False
    assert r.thresholds[("temperature", "high_alarm")] == 80.0
    assert r.thresholds[("voltage", "low_alarm")] == approx(3.135, abs=1e-12)
    assert r.thresholds[("tx_power", "high_alarm")] == approx(3.1623, abs=1e-12)
    assert r.thresholds[("tx_bias", "high_alarm")] == approx(0.024, abs=1e-15)  # 6000 x 2 uA x 2
    assert r.thresholds[("rx_power", "low_alarm")] == approx(0.02, abs=1e-12)
    assert len(r.thresholds) == 20
    assert plan_pages(lower) == [PageRequest(0x50, p, 128) for p in (0x00, 0x01, 0x02, 0x11)]


def test_lane_flags_need_their_implemented_bits() -> None:
    """A flag the module does not advertise is omitted, not reported as 'no fault'."""
    lower, upper = sff8636_pages()
    p0 = bytearray(upper[0])
    p0[194 - 128] = p0[195 - 128] = 0
    r = decode(EepromImage(lower=lower, upper={**upper, 0: bytes(p0)}))
    assert [(ln.rx_los, ln.tx_fault, ln.rx_lol, ln.tx_lol) for ln in r.lanes] == [
        (True, None, None, None), (False, None, None, None), (False, None, None, None), (False, None, None, None)]
    lower, upper = cmis_pages()
    p1 = bytearray(upper[1])
    p1[157 - 128] = p1[158 - 128] = 0
    r = decode(EepromImage(lower=lower, upper={**upper, 1: bytes(p1)}))
    assert {(ln.rx_los, ln.tx_fault, ln.rx_lol, ln.tx_lol) for ln in r.lanes} == {(None, None, None, None)}


def test_cmis_media_lanes_from_applications() -> None:
    lower, upper = cmis_pages()
    lo, p1 = bytearray(lower), bytearray(upper[1])
    # Twin-port 2x400G: one 4-lane application, instances may start on lane 1 or 5.
    lo[88], p1[176 - 128] = 0x44, 0x11
    assert cmis.media_lanes(bytes(lo), bytes(p1)) == list(range(1, 9))
    # A single 4-lane application in an 8-lane OSFP: lanes 5-8 are not reported.
    p1[176 - 128] = 0x01
    assert cmis.media_lanes(bytes(lo), bytes(p1)) == [1, 2, 3, 4]
    r = decode(EepromImage(lower=bytes(lo), upper={**upper, 1: bytes(p1)}))
    assert [ln.lane for ln in r.lanes] == [1, 2, 3, 4]
    # A second application (byte 90-93) adds lanes; 0xFF ends the list.
    lo[90], lo[91], lo[92], p1[177 - 128] = 0x11, 0x0A, 0x11, 0x80  # 1 lane starting on lane 8
    assert cmis.media_lanes(bytes(lo), bytes(p1)) == [1, 2, 3, 4, 8]
    lo[90] = 0xFF
    assert cmis.media_lanes(bytes(lo), bytes(p1)) == [1, 2, 3, 4]
    # Without page 01h: the form factor's lane count (OSFP: 8; QSFP with CMIS: 4).
    assert cmis.media_lanes(bytes(lo), None) == list(range(1, 9))
    lo[0] = 0x1E
    assert cmis.media_lanes(bytes(lo), None) == [1, 2, 3, 4]


def test_cmis_flat_memory_copper() -> None:
    lower, upper = cmis_pages()
    lo = bytearray(lower)
    lo[2] = 0x80  # flat memory: passive copper, no monitors
    r = decode(EepromImage(lower=bytes(lo), upper={0: upper[0]}))
    assert (r.temperature_c, r.voltage_v, r.lanes, r.thresholds, r.alarms) == (None, None, [], {}, {})
    assert plan_pages(bytes(lo)) == [PageRequest(0x50, 0, 128)]


def test_bad_images_name_the_problem() -> None:
    with pytest.raises(EepromError, match="lower page is 10 bytes"):
        decode(EepromImage(lower=bytes(10)))
    with pytest.raises(EepromError, match="identifier 0x07"):
        decode(EepromImage(lower=bytes([7]) + bytes(127)))
    lower, _ = cmis_pages()
    with pytest.raises(EepromError, match="CMIS page 00h is missing"):
        decode(EepromImage(lower=lower))


# --- samples and output formats: 0 mW is -inf dBm and breaks nothing ----------------------------


def test_dbm_conversion() -> None:
    assert mw_to_dbm(1.0) == 0.0
    assert mw_to_dbm(0.0) == -math.inf
    assert mw_to_dbm(0.6367) == approx(-1.96, abs=0.005)  # as ethtool prints it


def cmis_collection() -> Collection:
    lower, upper = cmis_pages()
    col = Collection()
    module_samples(col, "eth1", decode(EepromImage(lower=lower, upper=upper)))
    return col


def test_module_samples() -> None:
    col = cmis_collection()
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in col.samples}
    assert got[("optical_rx_power_dbm", (("interface", "eth1"), ("lane", "8")))] == -math.inf
    assert got[("optical_tx_power_dbm", (("interface", "eth1"), ("lane", "1")))] == 0.0
    assert got[("optical_threshold", (("interface", "eth1"), ("level", "high_alarm"),
                                      ("quantity", "tx_power")))] == approx(5.0, abs=1e-4)
    assert got[("optical_threshold", (("interface", "eth1"), ("level", "high_alarm"),
                                      ("quantity", "tx_bias")))] == approx(0.024, abs=1e-15)
    assert got[("optical_module_state", (("interface", "eth1"),))] == 3
    assert got[("optical_rx_los", (("interface", "eth1"), ("lane", "8")))] == 1
    info = [s.labels for s in col.samples if s.name == "optical_module_info"]
    assert info == [{"interface": "eth1", "vendor": "NVIDIA", "part_number": "MMS4X00-NS",
                     "serial": "MT2412FT00001", "type": "OSFP", "standard": "CMIS", "revision": "A2",
                     "wavelength_nm": "1311"}]


def test_minus_inf_in_every_format() -> None:
    col = cmis_collection()
    prom = to_prom(1.0, col, {"node": "n"})
    assert 'optical_rx_power_dbm{interface="eth1",lane="8",node="n"} -Inf' in prom.splitlines()
    lines = [json.loads(ln) for ln in to_json(1.0, col, {"node": "n"}).splitlines()]
    lane8 = [ln for ln in lines if ln["name"] == "optical_rx_power_dbm" and ln["labels"]["lane"] == "8"]
    assert lane8[0]["value"] == "-Inf"
    influx = to_influx(1.0, col, {"node": "n"}).splitlines()
    lane8_line = [ln for ln in influx if ln.startswith("optical,") and "lane=8," in ln]
    assert lane8_line and "rx_power_dbm" not in lane8_line[0] and "tx_power_dbm=" in lane8_line[0]
    promtool = require_binary("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=prom, capture_output=True, text=True,
                           timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
