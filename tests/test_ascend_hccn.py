"""Ascend RoCE ports through hccn_tool, and `npu-smi -t health` alarms, on the ascend-faultdiag
captures (shared/fixtures/ascend/mind-cluster-faultdiag: command logs, see NOTICE.md)."""

from __future__ import annotations

import math
import re
import stat
from pathlib import Path

import pytest

from agent.model import Collection, Severity
from agent.plugin import PluginContext
from agent.plugins.accel import AccelReading
from agent.plugins.ascend import AscendPlugin
from agent.plugins.ascend.hccn import parse_link_stat, parse_optical, parse_stat, parse_status_line
from agent.plugins.ascend.npu_smi import Health, parse_health, parse_kv_query, parse_mapping
from agent.plugins.ascend.plugin import AscendConfig
from agent.plugins.ascend.readings import health_events
from agent.plugins.ascend.roce import LinkTracker, optical_samples, stat_samples
from agent.toolrun import ToolOutputError
from tests.sample_lookup import values
from tests.test_ascend import TRAIN_NEW, fake_npu_smi

DIR = "mind-cluster-faultdiag"
_COMMAND = re.compile(r"^(/?usr/local/\S+|lspci|cat /|pip list|Datetime:)")


def split_log(text: str) -> list[tuple[str, str]]:
    """The capture logs hold one command line then its output, for many commands."""
    out: list[tuple[str, str]] = []
    cmd: str | None = None
    buf: list[str] = []
    for line in text.splitlines():
        if _COMMAND.match(line):
            if cmd is not None:
                out.append((cmd, "\n".join(buf).strip("\n") + "\n"))
            cmd, buf = line.strip(), []
        else:
            buf.append(line)
    if cmd is not None:
        out.append((cmd, "\n".join(buf).strip("\n") + "\n"))
    return out


def log(fixtures_dir: Path, name: str) -> list[tuple[str, str]]:
    return split_log((fixtures_dir / "ascend" / DIR / name).read_text())


def output(fixtures_dir: Path, name: str, needle: str) -> str:
    [text] = [out for cmd, out in log(fixtures_dir, name) if needle in cmd]
    return text



def test_every_command_of_every_capture_parses(fixtures_dir: Path) -> None:
    parsed = 0
    for path in sorted((fixtures_dir / "ascend" / DIR).glob("*.txt")):
        for cmd, out in split_log(path.read_text()):
            src = f"{path.name}: {cmd}"
            if "hccn_tool" in cmd and "-optical" in cmd:
                parse_optical(out, source=src)
            elif "hccn_tool" in cmd and "-link_stat" in cmd:
                parse_link_stat(out, source=src)
            elif "hccn_tool" in cmd and "-stat" in cmd:
                parse_stat(out, source=src)
            elif "hccn_tool" in cmd and "-fec" in cmd:
                parse_status_line(out, "fec mode", source=src)
            elif "hccn_tool" in cmd and "-net_health" in cmd:
                parse_status_line(out, "net health status", source=src)
            elif cmd.endswith("npu-smi info -m"):
                parse_mapping(out, source=src)
            elif "-t health" in cmd:
                parse_health(out, source=src)
            elif "npu-smi info -i" in cmd and "Invalid" not in out:
                parse_kv_query(out, source=src)
            else:
                continue  # -ip -g, lspci, version files, pip: not read by the plugin
            parsed += 1
    assert parsed == 45  # kg_parse: 10 + 3, modelarts: 8 stat + 8 link_stat twice


def test_optical_dom_in_the_shared_vocabulary(fixtures_dir: Path) -> None:
    r = parse_optical(output(fixtures_dir, "kg_parse_npu_info_before.txt", "-optical"), source="optical")
    assert r.present is False  # the capture says "not present" yet gives readings (NOTICE.md)
    m = r.module
    assert (m.vendor, m.part_number, m.serial, m.type, m.wavelength_nm) == \
        ("Hisense", "LMQ8611-PC+", "V8BD6H25033", "QSFP+", 850.0)
    assert (m.temperature_c, m.voltage_v) == (47.0, pytest.approx(3.2629))
    col = Collection()
    optical_samples(col, "0", r)
    port = {"interface": "npu0", "gpu": "0"}
    rx = values(col, "optical_rx_power_dbm", **port)
    assert rx[(("lane", "1"),)] == pytest.approx(10 * math.log10(1.0189))
    assert rx[(("lane", "2"),)] == pytest.approx(10 * math.log10(0.0054))  # -22.7 dBm: a dark lane
    assert values(col, "optical_tx_bias_amperes", lane="4", **port) == {(): pytest.approx(0.007924)}
    assert values(col, "optical_rx_los", **port) == {(("lane", str(n)),): 1.0 for n in range(1, 5)}  # 0xff
    assert values(col, "optical_tx_los", **port) == {(("lane", str(n)),): 0.0 for n in range(1, 5)}
    assert values(col, "optical_media_snr_db", lane="3", **port) == {(): 22.1875}
    assert values(col, "optical_host_snr_db", **port) == {}  # "not supported"
    thresholds = values(col, "optical_threshold", **port)
    assert thresholds[(("level", "low_warning"), ("quantity", "rx_power"))] == pytest.approx(10 * math.log10(0.1445))
    assert thresholds[(("level", "high_warning"), ("quantity", "voltage"))] == pytest.approx(3.465)
    assert thresholds[(("level", "high_warning"), ("quantity", "temperature"))] == 70
    assert values(col, "optical_temperature_celsius", **port) == {(): 47.0}
    assert values(col, "ascend_optical_module_present", **port) == {(): 0.0}


def test_link_history_counts_and_flap_events(fixtures_dir: Path) -> None:
    tracker = LinkTracker()
    before, after = (Collection(), Collection())
    for col, name in ((before, "modelarts_worker-0_npu_info_before.txt"),
                      (after, "modelarts_worker-0_npu_info_after.txt")):
        for cmd, out in log(fixtures_dir, name):
            if "-link_stat" in cmd:
                index = cmd.split("-i ")[1].split()[0]
                tracker.update(col, index, parse_link_stat(out, source=cmd))
    assert values(before, "net_carrier_changes_total", gpu="0") == {(("interface", "npu0"),): 3}
    assert before.events == []  # history seen for the first time is counted, not announced
    changes = {dict(k)["gpu"]: v for k, v in values(after, "net_carrier_changes_total").items()}
    assert changes == {"0": 4, "1": 3, "2": 3, "3": 4, "4": 3, "5": 3, "6": 3, "7": 3}
    assert {dict(k)["gpu"]: v for k, v in values(after, "net_carrier").items() if v == 0} == {"0": 0, "3": 0}
    assert values(after, "net_carrier_down_total", gpu="3") == {(("interface", "npu3"),): 2}
    assert values(after, "net_carrier_up_total", gpu="3") == {(("interface", "npu3"),): 2}  # the tool's count
    assert [(e.kind, e.labels["gpu"], e.severity) for e in after.events] == [
        ("npu.link_flap", "0", Severity.WARNING), ("npu.link_flap", "3", Severity.WARNING)]
    assert after.events[0].message == \
        "Ascend NPU 0 RoCE port went down at Tue Aug 1 14:44:40 2022 (hccn_tool link history)"
    assert "hccn_tool -i 0 -optical -g" in after.events[0].action


def test_roce_error_counters(fixtures_dir: Path) -> None:
    col = Collection()
    for cmd, out in log(fixtures_dir, "modelarts_worker-0_npu_info_after.txt"):
        if "-stat -g" in cmd and "link_stat" not in cmd:
            stat_samples(col, cmd.split("-i ")[1].split()[0], parse_stat(out, source=cmd))
    rx = {dict(k)["gpu"]: v for k, v in values(col, "ascend_roce_rx_errors_total").items()}
    tx = {dict(k)["gpu"]: v for k, v in values(col, "ascend_roce_tx_errors_total").items()}
    assert (rx["5"], tx["5"], rx["6"], tx["6"], rx["0"]) == (11, 12, 13, 77, 0)
    assert values(col, "ascend_hccn_stat_total", gpu="6", stat="roce_tx_err_pkt_num") == {
        (("interface", "npu6"),): 77}


def test_fec_and_net_health(fixtures_dir: Path) -> None:
    assert parse_status_line(output(fixtures_dir, "kg_parse_npu_info_before.txt", "-fec"), "fec mode",
                             source="fec") == "no FEC mode"
    assert parse_status_line(output(fixtures_dir, "kg_parse_npu_info_before.txt", "-net_health"),
                             "net health status", source="h") == "Socket failed"


def test_health_alarm_with_codes(fixtures_dir: Path) -> None:
    ok = parse_health(output(fixtures_dir, "kg_parse_npu_info_before.txt", "-t health"), source="h")
    assert ok == Health("OK", (), "")
    alarm = parse_health(output(fixtures_dir, "kg_parse_npu_info_after.txt", "-t health"), source="h")
    assert alarm.status == "Alarm" and alarm.error_codes == ("A4025021", "8C03A000", "8C084E00")
    assert alarm.information == (
        "ascend_monitor adda heart beat lost error; node type=process-manager, sensor type=General Software, "
        "event state=The process start failed or exit abnormally; node type=adda, sensor type=Heartbeat Sensor, "
        "event state=Heartbeat Lost.")
    r = AccelReading(index="0", vendor="huawei", kind="NPU", model="910A")
    r.info = {"npu_id": "0", "chip_id": "0"}
    events = health_events(r, alarm)
    assert [(e.labels["code"], e.severity) for e in events] == [
        ("A4025021", Severity.CRITICAL), ("8C03A000", Severity.CRITICAL), ("8C084E00", Severity.CRITICAL)]
    assert events[0].message.startswith(
        "Ascend NPU 0 chip 0 (gpu 0): health Alarm, error code A4025021: ascend_monitor")
    assert "npu-smi info -t health -i 0 -c 0" in events[0].action


def test_malformed_hccn_output() -> None:
    with pytest.raises(ToolOutputError, match=r"Tx Power0 is '4\.4 dBm', expected a number in mW"):
        parse_optical("temperature : 47 C\nTx Power0 : 4.4 dBm\n", source="hccn_tool -i 0 -optical -g")
    with pytest.raises(ToolOutputError, match="no optical readings"):
        parse_optical("optical info:\npresent : not present\n", source="o")
    with pytest.raises(ToolOutputError, match="neither a link counter nor a LINK UP/DOWN record"):
        parse_link_stat("[devid 0]link up count : 2\nSegmentation fault\n", source="l")
    with pytest.raises(ToolOutputError, match="roce_rx_err_pkt_num is 'x', expected a number"):
        parse_stat("packet statistics:\nroce_rx_err_pkt_num:x\n", source="s")
    with pytest.raises(ToolOutputError, match="no 'fec mode:' line"):
        parse_status_line("hccn_tool: device 9 not found\n", "fec mode", source="f")


def _fake_hccn(tmp_path: Path, fixtures_dir: Path) -> Path:
    for cmd, out in log(fixtures_dir, "kg_parse_npu_info_before.txt"):
        for q in ("optical", "link_stat", "fec", "net_health"):
            if f"-{q} -g" in cmd:
                (tmp_path / f"{q}.txt").write_text(out)
        if "-stat -g" in cmd and "link_stat" not in cmd:
            (tmp_path / "stat.txt").write_text(out)
    tool = tmp_path / "hccn_tool"
    tool.write_text('#!/bin/sh\n'
                    f'[ "$2" = 0 ] || {{ echo "device $2 has no RoCE port" >&2; exit 3; }}\n'
                    f'cat "{tmp_path}/${{3#-}}.txt"\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def test_plugin_reads_the_roce_ports(tmp_path: Path, fixtures_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    npu_smi = fake_npu_smi(tmp_path, fixtures_dir, TRAIN_NEW + ".txt", TRAIN_NEW + "_mapping.txt")
    hccn = _fake_hccn(tmp_path, fixtures_dir)
    plugin = AscendPlugin(PluginContext(node="n1"), AscendConfig(npu_smi=str(npu_smi), queries=[],
                                                                 hccn_tool=str(hccn)))
    plugin.discover()
    first = plugin.collect()
    port = {"interface": "npu0", "gpu": "0"}
    assert len(values(first, "optical_rx_power_dbm", **port)) == 4
    assert values(first, "ascend_fec_mode_info", **port) == {(("mode", "no FEC mode"),): 1}
    assert values(first, "ascend_net_health_ok", **port) == {(): 0.0}
    assert values(first, "net_carrier_changes_total", **port) == {(): 3}
    # NPUs 1-7 have no answer from this tool: one warning per query, the cycle goes on.
    failing = [r.getMessage() for r in caplog.records if "exited with status 3" in r.getMessage()]
    assert len(failing) == 7 * 5
    (tmp_path / "link_stat.txt").write_text(output(fixtures_dir, "kg_parse_npu_info_after.txt", "-link_stat"))
    caplog.clear()
    second = plugin.collect()
    assert [e.kind for e in second.events] == ["npu.link_flap"]
    assert values(second, "net_carrier_changes_total", **port) == {(): 4}
    assert not [r for r in caplog.records if "exited with status 3" in r.getMessage()]  # said once
    plugin.close()


def test_hccn_tool_absent_is_not_fatal(tmp_path: Path, fixtures_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    npu_smi = fake_npu_smi(tmp_path, fixtures_dir, TRAIN_NEW + ".txt", TRAIN_NEW + "_mapping.txt")
    plugin = AscendPlugin(PluginContext(node="n1"), AscendConfig(npu_smi=str(npu_smi), queries=[],
                                                                 hccn_tool=str(tmp_path / "nope")))
    with caplog.at_level("INFO"):
        plugin.discover()
    assert "no RoCE port metrics: hccn_tool not found at" in caplog.text
    col = plugin.collect()
    assert not [s for s in col.samples if s.name.startswith("optical_")]
    assert [s for s in col.samples if s.name == "gpu_up"]
