"""``ethtool -m`` text (the fallback route) parses to the values ethtool printed, exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agent.model import Collection
from agent.plugins.optics.eeprom import EepromError
from agent.plugins.optics.emit import module_samples
from agent.plugins.optics.ethtool_text import parse
from agent.plugins.optics.reading import LEVELS, ModuleReading

approx = pytest.approx


def load(fixtures_dir: Path, name: str) -> ModuleReading:
    return parse((fixtures_dir / "ethtool-m" / name).read_text())


def thresholds(temp: tuple[float, ...], volt: tuple[float, ...], bias_ma: tuple[float, ...],
               tx_mw: tuple[float, ...], rx_mw: tuple[float, ...]) -> dict[tuple[str, str], float]:
    out = {}
    for quantity, values in (("temperature", temp), ("voltage", volt), ("tx_bias", tuple(v / 1000 for v in bias_ma)),
                             ("tx_power", tx_mw), ("rx_power", rx_mw)):
        for level, value in zip(LEVELS, values, strict=True):
            out[(quantity, level)] = value
    return out


def flags(on: set[tuple[str, str]], quantities: tuple[str, ...]) -> dict[tuple[str, str], bool]:
    return {(q, lv): (q, lv) in on for q in quantities for lv in LEVELS}


MODULE = ("temperature", "voltage")
LANE = ("tx_bias", "tx_power", "rx_power")


def test_i40e_sfp_10g_sr(fixtures_dir: Path) -> None:
    r = load(fixtures_dir, "sfp-10g-sr-fs-i40e-dom.txt")
    assert (r.standard, r.identifier, r.type) == ("SFF-8472", 0x03, "SFP")
    assert (r.vendor, r.part_number, r.revision, r.serial) == ("FS", "SFP-10GSR-85", "A", "F2020533679")
    assert r.wavelength_nm == 850.0
    assert (r.temperature_c, r.voltage_v) == (39.18, 3.3544)
    [lane] = r.lanes
    assert (lane.lane, lane.tx_bias_a, lane.tx_power_mw, lane.rx_power_mw) == (1, 6.090 / 1000, 0.6367, 0.6486)
    assert (lane.rx_los, lane.tx_fault) == (None, None)  # ethtool prints no SFP LOS/fault state
    assert r.thresholds == thresholds((80.0, -10.0, 70.0, 0.0), (3.63, 2.97, 3.465, 3.135),
                                      (15.0, 2.0, 12.0, 3.0), (1.5849, 0.1122, 1.0, 0.1778),
                                      (1.5849, 0.0389, 1.0, 0.0617))
    assert r.alarms == flags(set(), MODULE)
    assert lane.alarms == flags(set(), LANE)


def test_bnxt_sfp_with_alarms(fixtures_dir: Path) -> None:
    r = load(fixtures_dir, "sfp-10g-sr-fs-bnxt-dom-alarm.txt")
    assert (r.vendor, r.part_number, r.revision, r.serial) == ("FS", "SFP-10GSR-85", "", "S2109191251")
    assert r.wavelength_nm == 850.0
    assert (r.temperature_c, r.voltage_v) == (0.0, 0.2287)
    [lane] = r.lanes
    assert (lane.tx_bias_a, lane.tx_power_mw, lane.rx_power_mw) == (99.168 / 1000, 5.7, 2.731)
    assert r.thresholds == thresholds((3.02, 7.06, 0.0, 0.25), (0.0012, 0.0006, 2.6368, 0.0),
                                      (15.390, 0.0, 36.006, 16.448), (0.8224, 0.8224, 0.8224, 0.8224),
                                      (0.8224, 0.8224, 0.0, 0.0))
    assert r.alarms == flags({("temperature", "low_alarm"), ("voltage", "low_alarm")}, MODULE)
    assert lane.alarms == flags({("tx_bias", "high_alarm"), ("tx_power", "low_alarm")}, LANE)


def test_ixgbe_sfp_zero_readings(fixtures_dir: Path) -> None:
    """All-zero DOM: reported as read; 0 mW becomes -inf dBm, as ethtool prints it."""
    r = load(fixtures_dir, "sfp-10g-sr-fs-ixgbe-dom-zero-readings.txt")
    assert (r.vendor, r.part_number, r.revision, r.serial) == ("FS", "SFP-10GSR-85", "A", "F2010652115")
    assert (r.temperature_c, r.voltage_v) == (0.0, 0.0)
    [lane] = r.lanes
    assert (lane.tx_bias_a, lane.tx_power_mw, lane.rx_power_mw) == (0.0, 0.0, 0.0)
    assert r.thresholds == thresholds((3.02, 7.06, 0.0, 0.25), (0.0012, 0.0006, 2.6368, 0.0),
                                      (15.390, 0.0, 36.006, 16.448), (0.8224, 0.8224, 0.8224, 0.8224),
                                      (0.8224, 0.8224, 0.0, 0.6945))
    assert r.alarms == flags(set(), MODULE)
    col = Collection()
    module_samples(col, "eth3", r)
    values = {(s.name, s.labels.get("quantity"), s.labels.get("level")): s.value for s in col.samples}
    assert values[("optical_tx_power_dbm", None, None)] == -math.inf
    assert values[("optical_rx_power_dbm", None, None)] == -math.inf
    assert values[("optical_threshold", "rx_power", "high_warning")] == -math.inf
    assert values[("optical_threshold", "rx_power", "low_warning")] == approx(-1.58, abs=0.005)


def test_sfp28_25g_lr(fixtures_dir: Path) -> None:
    r = load(fixtures_dir, "sfp28-25g-lr-edge-dom.txt")
    assert (r.vendor, r.part_number, r.revision, r.serial) == ("EDGE", "SFP-10/25GLR-31", "1A", "EO11111111111")
    assert r.wavelength_nm == 1310.0
    assert (r.temperature_c, r.voltage_v) == (34.99, 3.2995)
    [lane] = r.lanes
    assert (lane.tx_bias_a, lane.tx_power_mw, lane.rx_power_mw) == (51.494 / 1000, 0.8183, 0.0001)
    assert r.thresholds == thresholds((95.0, -50.0, 85.0, -40.0), (3.63, 2.97, 3.465, 3.135),
                                      (110.0, 1.0, 100.0, 1.0), (3.1623, 0.1, 1.5849, 0.1995),
                                      (3.1623, 0.0234, 1.5849, 0.0468))
    assert lane.alarms == flags({("rx_power", "low_alarm"), ("rx_power", "low_warning")}, LANE)
    col = Collection()
    module_samples(col, "eth0", r)
    by_name = {s.name: s.value for s in col.samples if "lane" in s.labels and s.name.endswith("dbm")}
    # ethtool printed -0.87 dBm and -40.00 dBm beside the mW values.
    assert by_name["optical_tx_power_dbm"] == approx(-0.87, abs=0.005)
    assert by_name["optical_rx_power_dbm"] == approx(-40.0, abs=0.005)


def test_passive_copper_dac_has_identity_only(fixtures_dir: Path) -> None:
    r = load(fixtures_dir, "sfp-dac-copper-passive-ubiquiti-udc2.txt")
    assert (r.vendor, r.part_number, r.revision, r.serial) == ("UbiquitiNetworks", "UDC-2", "", "")
    assert (r.wavelength_nm, r.temperature_c, r.voltage_v, r.lanes, r.thresholds, r.alarms) == (
        None, None, None, [], {}, {})
    col = Collection()
    module_samples(col, "eth5", r)
    assert [s.name for s in col.samples] == ["optical_module_info"]


def test_per_channel_format() -> None:
    """QSFP/CMIS output names lanes in the key and lists lane flags (ethtool qsfp.c / cmis.c)."""
    text = (
        "\tIdentifier                                : 0x18 (QSFP-DD Double Density 8X Pluggable Transceiver)\n"
        "\tModule State                              : 0x03 (ModuleReady)\n"
        "\tLaser tx bias current (Channel 1)         : 6.750 mA\n"
        "\tLaser tx bias current (Channel 2)         : 6.800 mA\n"
        "\tTransmit avg optical power (Channel 1)    : 0.7794 mW / -1.08 dBm\n"
        "\tRcvr signal avg optical power (Channel 2) : 0.0000 mW / -inf dBm\n"
        "\tRx loss of signal                         : [ No, Yes ]\n"
        "\tTx fault                                  : None\n"
        "\tLaser bias current high alarm   (Chan 2)  : On\n"
    )
    r = parse(text)
    assert (r.standard, r.type, r.module_state) == ("CMIS", "QSFP-DD", 3)
    assert [(ln.lane, ln.tx_bias_a, ln.tx_power_mw, ln.rx_power_mw, ln.rx_los, ln.tx_fault) for ln in r.lanes] == [
        (1, 6.75 / 1000, 0.7794, None, False, False), (2, 6.8 / 1000, None, 0.0, True, False)]
    assert r.lanes[1].alarms == {("tx_bias", "high_alarm"): True}


def test_not_module_output() -> None:
    with pytest.raises(EepromError, match="does not start with 'Identifier'"):
        parse("Offset\t\tValues\n------\t\t------\n0x0000:\t\t03 04 07\n")
