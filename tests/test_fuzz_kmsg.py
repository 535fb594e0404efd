"""Fuzzing the kernel-log path: record framing, the XID/SXID/AER/mlx5 message parsers, and the
kmsg plugin end to end (lines in, events and counters out, encoded into a batch).

Kernel log lines carry text that drivers, firmware and (through ``/dev/kmsg`` writes by root
processes) user space put there. Seeds are the captured logs in ``../shared/fixtures/kmsg`` and
one line of each message format the parser documents that the captures lack.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from agent.model import Collection, Event, Severity
from agent.plugin import NodeDirectory, PluginContext
from agent.plugins.kmsg.parse import Aer, Malformed, ModuleEvent, Record, SXid, Xid, classify, parse_line
from agent.plugins.kmsg.plugin import KmsgConfig, KmsgPlugin
from agent.plugins.nvidia.xid import XidLedger, bus_key, describe
from tests.fuzz import assert_wire_ready, call, fuzz, mutated_text, read_texts, text_input
from tests.services import FIXTURES

LOGS = read_texts((FIXTURES / "kmsg").iterdir())
# Formats the captures do not hold (parse.py's docstring: aer.c, mlx5 events.c, nvswitch).
OTHER = [
    "4,512,1234567,-;pcieport 0000:00:01.0: AER: PCIe Bus Error: severity=Corrected, type=Physical Layer, "
    "(Receiver ID)",
    "[  12.345678] nvidia 0000:3b:00.0: AER: PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer",
    "[Sun Feb 23 16:24:18 2025] mlx5_core 0000:5e:00.0: port_module:1135:(pid 0): Port module event: module 0, "
    "Cable unplugged",
    "kern  :err   : 2025-01-21T04:41:44,283302+00:00 mlx5_core 0000:5e:00.1: Port module event[error]: module 1, "
    "Cable error, Bus stuck (I2C or data shorted)",
    "6,3970,206764400,-;nvidia-nvswitch3: SXid (PCI:0000:c6:00.0): 12028, Non-fatal, Link 32 egress error",
]
LINES = sorted({line for text in LOGS for line in text.splitlines()} | set(OTHER))

#: /dev/kmsg carries microseconds since boot as a u64 (Documentation/ABI/testing/dev-kmsg).
MAX_SINCE_BOOT_S = (1 << 64) / 1e6


def check_record(rec: Record | None) -> None:
    if rec is None:
        return
    assert isinstance(rec.message, str)
    assert rec.wall is None or (isinstance(rec.wall, float) and abs(rec.wall) < 1e12)
    assert rec.since_boot is None or 0 <= rec.since_boot <= MAX_SINCE_BOOT_S
    assert rec.priority is None or 0 <= rec.priority <= 7
    assert rec.seq is None or rec.seq >= 0


@fuzz(150)
@given(text_input(LINES, max_size=120))
@example("6,1," + "9" * 400 + ",-;NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.")
@example("[" + "9" * 400 + ".0] NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.")
@example("6," + "9" * 5000 + ",1,-;hello")  # past int()'s 4300-digit limit
def test_framing(line: str) -> None:
    check_record(call(parse_line, line, errors=(Malformed,)))


@fuzz(150)
@given(text_input([line.partition(";")[2] or line for line in LINES], max_size=120))
def test_messages(message: str) -> None:
    found = classify(message)
    assert found is None or isinstance(found, (Xid, SXid, Aer, ModuleEvent))
    if isinstance(found, Xid):
        assert found.xid >= 0 and found.pci == found.pci.lower()
    elif isinstance(found, ModuleEvent):
        assert found.module >= 0 and found.status


@st.composite
def logs(draw: st.DrawFn) -> str:
    lines = draw(st.lists(mutated_text(LINES, ops=2), min_size=1, max_size=12))
    return "\n".join(lines)


@fuzz(30)
@given(logs(), logs())
def test_plugin_end_to_end(first: str, second: str) -> None:
    """Lines in, events and counters out; two collections, as a log grows between them."""
    events: list[Event] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kmsg.log"
        path.write_text(first + "\n")
        plugin = KmsgPlugin(PluginContext(node="n1", emit=events.append),
                            KmsgConfig(path=str(path), from_start=True, follow=False))
        plugin.discover()
        try:
            for more in (None, second):
                if more is not None:
                    with path.open("a") as f:
                        f.write(more + "\n")
                col = plugin.collect()
                assert_wire_ready(col, events)
        finally:
            plugin.close()


def test_numbers_past_the_kernel_range_are_malformed() -> None:
    """Found by fuzzing: a 400-digit microsecond count overflowed the float conversion
    (OverflowError), a 5000-digit sequence number hit int()'s digit limit (ValueError, not
    Malformed), and 400 nines in plain dmesg framing read as an infinite time since boot, which
    no event timestamp can carry."""
    for line in ("6,1," + "9" * 400 + ",-;x", "6,1,18446744073709551616,-;x", "6," + "9" * 5000 + ",1,-;x",
                 "[" + "9" * 400 + ".0] x", "[18446744074.0] x"):
        try:
            parse_line(line)
        except Malformed as err:
            assert "out of range" in str(err) or "bad timestamp" in str(err)
        else:
            raise AssertionError(f"{line[:40]!r} parsed")
    rec = parse_line("6,18446744073709551615,18446744073709551615,-;x")
    assert rec is not None and rec.seq == (1 << 64) - 1 and rec.since_boot is not None
    rec = parse_line("[18446744073.709551] x")
    assert rec is not None and rec.since_boot == 18446744073.709551


@fuzz(100)
@given(st.integers(-(2**63), 2**64 - 1), text_input(["0000:9b:00", "00000000:3B:00.0", "3b:00.0"], max_size=30),
       st.floats(0, 2e9))
def test_xids_from_any_source(xid: int, pci: str, ts: float) -> None:
    """An XID number (NVML eventData is a u64; the kernel line any digits) and a PCI address as a
    driver prints it: the catalog entry, the ledger and the event the plugins build from them."""
    info = describe(xid)
    assert info.name and isinstance(info.severity, Severity)
    ledger = XidLedger(NodeDirectory())
    ledger.record("nvml", pci, xid, ts)
    for (bus, n_xid), (count, first) in ledger.counts().items():
        assert bus == bus_key(pci) and n_xid == xid and count == 1 and first == ts
        labels = {**ledger.labels(bus), "xid": str(xid)}
        assert_wire_ready(Collection(), [Event("gpu.xid", info.severity, f"XID {xid}", labels, info.action, ts)])
