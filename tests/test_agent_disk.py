"""A real agent whose WAL disk fills up while the collector is away, then a corrupt WAL at start.

Issue 12: the agent keeps what it has, uses no sequence number for what it cannot store, says
"disk full" with the path once, survives the reconnect, and drains when space returns; a
corrupt WAL is moved aside at start with one clear line, never a crash loop.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import AgentProc, CollectorProc, durable_seq
from tests.services import free_port, wait_until


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk the WAL really fills (ENOSPC). Needs root (CI's container has it)."""
    where = tmp_path / "disk"
    where.mkdir()
    mount = shutil.which("mount")
    if mount is None or subprocess.run([mount, "-t", "tmpfs", "-o", "size=2048k", "tmpfs", str(where)],
                                       capture_output=True, check=False).returncode != 0:
        if os.environ.get("FLEETMON_REQUIRE_SERVICES"):
            pytest.fail("cannot mount a tmpfs (needs root) and FLEETMON_REQUIRE_SERVICES is set")
        pytest.skip("cannot mount a tmpfs here (needs root); tests/test_wal.py covers the WAL itself")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _newest(wal: Path) -> int:
    con = sqlite3.connect(f"file:{wal}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT max(seq) FROM batches").fetchone()
    finally:
        con.close()
    return int(row[0] or 0)


@pytest.mark.services
def test_full_wal_disk_then_collector_returns(small_disk: Path, tmp_path: Path) -> None:
    other = small_disk / "someone-elses.log"  # what filled the disk besides the WAL
    other.write_bytes(b"x" * (1280 << 10))
    port = free_port()  # the collector is away at first
    agent = AgentProc(tmp_path, "full-1", [f"127.0.0.1:{port}"],
                      plugins={"simulated": {"interval": 0.1, "gpus": 16, "ib_ports": 4, "lanes": 4}},
                      extra={"data_dir": str(small_disk / "agent"), "batch_interval": 0.1, "audit_log": None})
    agent.start()
    collector: CollectorProc | None = None
    try:
        wal = small_disk / "agent" / "wal.sqlite"
        wait_until(lambda: agent.log_lines("disk full"), 60, "the agent to report its full disk")
        line = agent.log_lines("disk full")[0]
        assert str(wal) in line
        assert agent.proc is not None and agent.proc.alive()
        full_at = _newest(wal)
        # Still full: batches are dropped, not numbered; the line is not repeated.
        wait_until(lambda: len(agent.log_lines("dropped|disk full")) >= 1, 5, "steady")
        assert _newest(wal) == full_at and len(agent.log_lines("disk full")) == 1

        # The collector comes back (the first write after connecting used to crash the agent),
        # then the disk gets space again: everything the WAL kept is delivered, and new
        # batches follow with the very next sequence numbers.
        collector = CollectorProc(tmp_path, port=port).start()
        wait_until(lambda: durable_seq(collector.db(), "full-1") >= full_at, 60, "the kept batches to drain")
        assert agent.proc.alive()
        other.unlink()
        wait_until(lambda: durable_seq(collector.db(), "full-1") > full_at + 5, 60,
                   "new batches after the space returned")
        assert agent.proc.alive()
        assert agent.log_lines("writing again")
        text = agent.log.read_text()
        assert "Traceback" not in text and "cannot rollback" not in text, text[-3000:]
    finally:
        agent.stop()
        if collector is not None:
            collector.stop()


@pytest.mark.services
def test_corrupt_wal_at_start_is_moved_aside(tmp_path: Path) -> None:
    collector = CollectorProc(tmp_path).start()
    data = tmp_path / "agent-data"
    data.mkdir()
    wal = data / "wal.sqlite"
    wal.write_bytes(os.urandom(64 << 10))  # garbage where the WAL should be
    agent = AgentProc(tmp_path, "corrupt-1", [collector.addr], extra={"data_dir": str(data), "audit_log": None})
    agent.start()
    try:
        wait_until(lambda: durable_seq(collector.db(), "corrupt-1") >= 2, 60, "the agent to stream on a fresh WAL")
        assert agent.proc is not None and agent.proc.alive()
        lines = agent.log_lines("is corrupt")
        assert len(lines) == 1 and str(wal) in lines[0] and "moved it to" in lines[0]
        assert list(data.glob("wal.sqlite.corrupt-*"))
        assert "Traceback" not in agent.log.read_text()
    finally:
        agent.stop()
        collector.stop()
