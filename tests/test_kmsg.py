"""kmsg plugin: every kernel-log fixture parsed to exact counts; framing and message parsers; following."""

from __future__ import annotations

import errno
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.errors import PluginUnavailable
from agent.model import Collection, Event, Severity
from agent.plugin import PluginContext
from agent.plugins.kmsg.parse import Aer, Malformed, ModuleEvent, SXid, Xid, classify, parse_line
from agent.plugins.kmsg.plugin import KmsgConfig, KmsgPlugin, KmsgReader

# Expected counts, one row per fixture file. Counted independently of the parser:
#   records: `grep -c ''` (every line, including a last line without newline; none is blank)
#   xids:    `grep -o 'NVRM: Xid (PCI:[0-9a-f:]*): [0-9]*' FILE | sort | uniq -c`
EXPECTED = {
    "dmesg-time-format-iso.log": (41, {("0000:19:00", 48): 1, ("0000:19:00", 63): 1, ("0000:19:00", 94): 9}),
    "dmesg-with-xid-119.log": (43, {("0000:9b:00", 119): 5}),
    "dmesg.decode.iso.log": (24, {("0000:38:00", 13): 16, ("0000:38:00", 43): 1}),
    "dmesg.decode.iso.log.0": (636, {("0000:38:00", 13): 629, ("0000:38:00", 43): 7}),
    "kmsg.1.log": (47, {}),
    "kmsg.2.peermem.log": (8, {}),
}


def make(path: Path, events: list[Event] | None = None, **options: object) -> KmsgPlugin:
    sink: list[Event] = events if events is not None else []
    ctx = PluginContext(node="t", emit=sink.append)
    plugin = KmsgPlugin(ctx, KmsgConfig(path=str(path), from_start=True, **options))  # type: ignore[arg-type]
    plugin.discover()
    return plugin


def value(col: Collection, name: str, **labels: str) -> float | None:
    """The collection's value of one series (not the 0 stamped before a new counter's first event)."""
    found = [s.value for s in col.samples
             if s.name == name and s.ts is None and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1
    return found[0] if found else None


def test_every_fixture_file_is_covered(fixtures_dir: Path) -> None:
    assert sorted(p.name for p in (fixtures_dir / "kmsg").iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_counts(fixtures_dir: Path, name: str) -> None:
    records, xids = EXPECTED[name]
    events: list[Event] = []
    plugin = make(fixtures_dir / "kmsg" / name, events)
    try:
        col = plugin.collect()
    finally:
        plugin.close()
    assert value(col, "kmsg_records_total") == records
    assert value(col, "kmsg_malformed_lines_total") == 0
    assert dict(plugin.xid_lines) == xids
    # Alone on the node, kmsg reports the XID counter: every line counts (one source, no twin).
    for (bus, xid), n in xids.items():
        assert value(col, "gpu_xid_errors_total", pci=bus, xid=str(xid)) == n
    assert len([e for e in events if e.kind == "gpu.xid"]) == sum(xids.values())
    assert [s for s in col.samples if s.name.startswith(("nvswitch_", "pcie_aer", "net_module"))] == []


def test_xid_event_carries_catalog_severity_and_action(fixtures_dir: Path) -> None:
    events: list[Event] = []
    plugin = make(fixtures_dir / "kmsg" / "dmesg-time-format-iso.log", events)
    plugin.collect()
    plugin.close()
    dbe = events[0]
    assert (dbe.kind, dbe.severity, dbe.action) == ("gpu.xid", Severity.CRITICAL, "reboot_then_inspect")
    assert dbe.labels == {"pci": "0000:19:00", "vendor": "nvidia", "xid": "48"}
    assert dbe.ts == pytest.approx(1731672123.470068)  # 2024-11-15T12:02:03,470068+00:00
    assert "uncorrectable double bit error" in dbe.message
    assert events[2].severity is Severity.WARNING and events[2].action == "restart_application"  # XID 94


def test_raw_kmsg_framing(fixtures_dir: Path) -> None:
    lines = (fixtures_dir / "kmsg" / "kmsg.1.log").read_text().splitlines()
    first, last = parse_line(lines[0]), parse_line(lines[-1])
    assert first is not None and last is not None
    assert (first.priority, first.seq, first.since_boot) == (6, 3964, 206.764307)
    assert first.message == "nvidia-nvswitch2: open (major=510)"
    assert (last.seq, last.since_boot) == (4010, 57631.398464)
    assert Counter(parse_line(line).message.split(":")[0] for line in lines)["nvidia-nvswitch3"] == 6  # type: ignore[union-attr]


def test_other_framings(fixtures_dir: Path) -> None:
    ctime = (fixtures_dir / "kmsg" / "dmesg-with-xid-119.log").read_text().splitlines()[2]
    rec = parse_line(ctime)
    assert rec is not None and rec.wall is not None
    assert rec.message.startswith("NVRM: Xid (PCI:0000:9b:00): 119, pid=2024380, name=nvidia-smi, Timeout")
    decoded = (fixtures_dir / "kmsg" / "dmesg.decode.iso.log").read_text().splitlines()[16]
    rec = parse_line(decoded)
    assert rec is not None and rec.wall == pytest.approx(1737434504.287197)
    assert classify(rec.message) == Xid("0000:38:00", 43, "pid=2924364, name=pt_main_thread, Ch 00000008")
    mono = parse_line("[  12.345678] pcieport 0000:00:01.0: AER: enabled with IRQ 122")
    assert mono is not None and (mono.since_boot, mono.wall) == (12.345678, None)
    assert parse_line("") is None
    assert parse_line(" SUBSYSTEM=pci") is None  # /dev/kmsg dictionary continuation


@pytest.mark.parametrize("line", [
    "garbage without any framing",
    "6,12;missing fields",
    "2024-13-45T99:99:99,000000+00:00 impossible date",
    "[Sun Foo 23 16:24:18 2025] bad month",
])
def test_malformed_lines_raise(line: str) -> None:
    with pytest.raises(Malformed):
        parse_line(line)


def test_malformed_line_is_skipped_and_counted(fixtures_dir: Path, tmp_path: Path) -> None:
    lines = (fixtures_dir / "kmsg" / "dmesg-time-format-iso.log").read_text().splitlines()
    mixed = tmp_path / "mixed.log"
    mixed.write_text("\n".join([*lines[:12], "\x00\x01 not a kernel line", *lines[12:]]) + "\n")
    plugin = make(mixed)
    col = plugin.collect()
    plugin.close()
    assert value(col, "kmsg_malformed_lines_total") == 1
    assert value(col, "kmsg_records_total") == 41
    assert sum(plugin.xid_lines.values()) == 11


def test_nvswitch_sxid() -> None:
    fatal = "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up"
    nonfatal = ("nvidia-nvswitch3: SXid (PCI:0000:c6:00.0): 12028, Non-fatal, "
                "Link 32 egress non-posted PRIV error (First)")
    assert classify(fatal) == SXid("0000:05:00.0", 20034, True, "Link 30 LTSSM Fault Up")
    assert classify(nonfatal) == SXid("0000:c6:00.0", 12028, False, "Link 32 egress non-posted PRIV error (First)")


def test_pcie_aer() -> None:
    corrected = ("pcieport 0000:00:01.0: AER: PCIe Bus Error: severity=Corrected, type=Physical Layer, "
                 "(Receiver ID)")
    fatal = ("nvidia 0000:3b:00.0: AER: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, "
             "(Requester ID)")
    old = ("pcieport 0000:00:1c.5: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, "
           "id=00e5(Requester ID)")
    assert classify(corrected) == Aer("0000:00:01.0", "corrected", "physical_layer", "(Receiver ID)")
    assert classify(fatal) == Aer("0000:3b:00.0", "fatal", "transaction_layer", "(Requester ID)")
    assert classify(old) == Aer("0000:00:1c.5", "non_fatal", "transaction_layer", "id=00e5(Requester ID)")
    assert classify("pcieport 0000:00:01.0: AER: Corrected error received: 0000:01:00.0") is None


def test_mlx5_port_module_events() -> None:
    unplugged = "mlx5_core 0000:5e:00.0: port_module:1135:(pid 0): Port module event: module 0, Cable unplugged"
    plugged = "mlx5_core 0000:5e:00.1: Port module event: module 1, Cable plugged"
    error = ("mlx5_core 0000:af:00.0: port_module:1142:(pid 0): Port module event[error]: module 3, Cable error, "
             "Bus stuck (I2C or data shorted)")
    assert classify(unplugged) == ModuleEvent("0000:5e:00.0", 0, "unplugged", "")
    assert classify(plugged) == ModuleEvent("0000:5e:00.1", 1, "plugged", "")
    assert classify(error) == ModuleEvent("0000:af:00.0", 3, "error", "Bus stuck (I2C or data shorted)")


def test_counters_and_events_for_sxid_aer_module(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text("\n".join([
        "6,100,5000000,-;nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up",
        "3,101,5000100,-;pcieport 0000:00:01.0: AER: PCIe Bus Error: severity=Corrected, type=Physical Layer, "
        "(Receiver ID)",
        "3,102,5000200,-;pcieport 0000:00:01.0: AER: PCIe Bus Error: severity=Corrected, type=Data Link Layer, "
        "(Transmitter ID)",
        "3,103,5000300,-;nvidia 0000:3b:00.0: AER: PCIe Bus Error: severity=Uncorrected (Fatal), "
        "type=Transaction Layer, (Requester ID)",
        "6,104,5000400,-;mlx5_core 0000:5e:00.0: port_module:1135:(pid 0): Port module event: module 0, "
        "Cable unplugged",
    ]) + "\n")
    events: list[Event] = []
    plugin = make(log, events)
    before = time.time()
    col = plugin.collect()
    after = time.time()
    plugin.close()
    assert value(col, "nvswitch_sxid_errors_total", device="0000:05:00.0", sxid="20034") == 1
    assert value(col, "pcie_aer_errors_total", device="0000:00:01.0", severity="corrected") == 2
    assert value(col, "pcie_aer_errors_total", device="0000:3b:00.0", severity="fatal") == 1
    assert value(col, "net_module_events_total", device="0000:5e:00.0", module="0", status="unplugged") == 1
    # New counter series are preceded by a 0 before their first event, so increase() sees it; these
    # records are from boot (5 s since boot), so the 0 is clamped to a minute before the collection.
    zeros = [s for s in col.samples if s.ts is not None]
    assert sorted(s.name for s in zeros) == ["net_module_events_total", "nvswitch_sxid_errors_total",
                                             "pcie_aer_errors_total", "pcie_aer_errors_total"]
    # (a minute before the collection started, whenever that was: no window around "now")
    assert all(s.value == 0 and before - 60.002 <= s.ts <= after - 60 for s in zeros)  # type: ignore[operator]
    kinds = [(e.kind, e.severity) for e in events]
    # Corrected AER errors are counted, not evented.
    assert kinds == [("nvswitch.sxid", Severity.CRITICAL), ("pcie.aer", Severity.CRITICAL),
                     ("net.module", Severity.WARNING)]


def test_follows_from_the_current_end(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "kmsg").write_text("6,1,1000,-;NVRM: Xid (PCI:0000:19:00): 48, old line before the agent started\n")
    ctx = PluginContext(node="t", dev_root=dev)
    plugin = KmsgPlugin(ctx, KmsgConfig())
    plugin.discover()
    try:
        assert value(plugin.collect(), "kmsg_records_total") == 0
        with (dev / "kmsg").open("a") as f:
            f.write("6,2,2000,-;NVRM: Xid (PCI:0000:19:00): 63, new\n6,3,2100,-;partial")
        col = plugin.collect()
        assert value(col, "kmsg_records_total") == 2
        assert dict(plugin.xid_lines) == {("0000:19:00", 63): 1}
    finally:
        plugin.close()
        plugin.close()


def test_epipe_is_counted_and_reading_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kmsg"
    path.write_text("")
    reader = KmsgReader(path, from_start=True)
    reader.is_device = True  # take the /dev/kmsg branch: one record per read()
    answers: list[object] = [OSError(errno.EPIPE, "Broken pipe"), b"6,9,100,-;hello\n", BlockingIOError()]

    def fake_read(fd: int, n: int) -> bytes:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[return-value]

    monkeypatch.setattr(os, "read", fake_read)
    assert reader.read_lines(100) == ["6,9,100,-;hello"]
    assert reader.overruns == 1
    monkeypatch.undo()
    reader.close()


def test_missing_device_disables(tmp_path: Path) -> None:
    plugin = KmsgPlugin(PluginContext(node="t", dev_root=tmp_path), KmsgConfig())
    with pytest.raises(PluginUnavailable, match="does not exist"):
        plugin.discover()
    plugin.close()

