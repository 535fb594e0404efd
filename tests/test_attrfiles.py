"""Attribute files held open and read with pread at offset 0 (agent/attrfiles.py), on the kernel's
own files: sysfs answers afresh at each read, a file that is gone says so as a fresh open would,
the process-wide budget is kept, and the plugins release what they hold."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent import attrfiles
from agent.attrfiles import PAGE, HeldFiles
from agent.config import PluginSection
from agent.plugin import PluginContext
from agent.plugins.optics import OpticsPlugin
from agent.plugins.optics.plugin import OpticsConfig
from agent.plugins.power import PowerPlugin
from agent.plugins.power.config import PowerConfig
from agent.scheduler import Lane, PluginRunner, collect_together

LO_TX = "/sys/class/net/lo/statistics/tx_packets"


def test_a_held_sysfs_file_gives_the_value_of_now() -> None:
    files = HeldFiles()
    try:
        before = int(files.read(LO_TX))
        assert len(files) == 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x", ("127.0.0.1", 9))  # one datagram on the loopback interface
        after = int(files.read(LO_TX))  # the same descriptor, read again at offset 0
        assert len(files) == 1
        assert after > before
    finally:
        files.release()
    assert len(files) == 0


def test_a_file_that_is_gone_is_let_go_and_reported_as_a_fresh_open_would() -> None:
    # /proc/<pid>/stat behaves as a sysfs attribute of an unplugged device: the held descriptor
    # fails (ESRCH here, ENODEV in sysfs) and the path no longer opens (ENOENT).
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    files = HeldFiles()
    try:
        path = f"/proc/{child.pid}/stat"
        assert files.read(path).startswith(f"{child.pid} ".encode())
        assert len(files) == 1
        child.kill()
        child.wait()
        with pytest.raises(FileNotFoundError):
            files.read(path)
        assert len(files) == 0
        assert files.text(path) is None
    finally:
        child.kill()
        child.communicate()  # reaped, its stdin closed
        files.release()


def test_a_file_whose_read_fails_is_not_held(tmp_path: Path) -> None:
    files = HeldFiles()
    with pytest.raises(IsADirectoryError):
        files.read(str(tmp_path))  # opens, and the read is refused
    assert len(files) == 0
    assert files.text(str(tmp_path / "absent")) is None
    assert len(files) == 0


def test_past_the_budget_files_are_opened_read_and_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for i in range(5):
        p = tmp_path / f"f{i}"
        p.write_text(f"{i}\n")
        paths.append(str(p))
    monkeypatch.setattr(attrfiles, "_budget", attrfiles.held_total() + 2)
    files = HeldFiles()
    try:
        assert [files.text(p) for p in paths] == ["0", "1", "2", "3", "4"]
        assert len(files) == 2
        for i, p in enumerate(paths):
            Path(p).write_text(f"{i * 10}\n")  # in place, as the kernel's values change
        assert [files.text(p) for p in paths] == ["0", "10", "20", "30", "40"]
        assert len(files) == 2
        other = HeldFiles()  # the budget is the process's, not one reader's
        assert other.text(paths[0]) == "0" and len(other) == 0
    finally:
        files.release()
    assert attrfiles.held_total() == attrfiles._budget - 2


def test_optics_reads_held_files_fresh_and_releases_them(fixtures_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attrfiles, "_budget", attrfiles.held_total() + 1000)  # whatever the host's limit
    root = tmp_path / "sys"
    shutil.copytree(fixtures_dir / "sysfs" / "h100-infiniband" / "sys", root, symlinks=True)
    plugin = OpticsPlugin(PluginContext(node="t", sysfs_root=root), OpticsConfig(eeprom="off"))
    plugin.discover()
    held_before = attrfiles.held_total()
    try:
        first = plugin.collect()
        held = attrfiles.held_total() - held_before
        assert held > 400  # 9 ports' counters and states
        counter = next((root / "class" / "infiniband").glob("mlx5_0/ports/1/counters/port_rcv_data"))
        counter.chmod(0o644)
        counter.write_text("123456789\n")  # in place: the held descriptor sees the new value
        second = plugin.collect()
        assert attrfiles.held_total() - held_before == held  # no descriptor more for a second collection

        def rcv(col: object) -> list[float]:
            return [v for s, v in zip(col.series, col.values, strict=True)  # type: ignore[attr-defined]
                    if s.metric.name == "ib_port_receive_bytes_total" and dict(s.key[2]).get("device") == "mlx5_0"]

        assert rcv(second) == [123456789 * 4.0] != rcv(first)  # the kernel counts 4-byte words
    finally:
        plugin.close()
    assert attrfiles.held_total() == held_before


def test_power_holds_its_files_until_a_rescan_or_close(fixtures_dir: Path) -> None:
    root = fixtures_dir / "sysfs" / "node-exporter" / "sys"
    plugin = PowerPlugin(PluginContext(node="t", sysfs_root=root), PowerConfig())
    plugin.discover()
    held_before = attrfiles.held_total()
    try:
        collect = plugin.blocking_collect()
        assert collect is not None
        collect()
        held = attrfiles.held_total() - held_before
        assert held > 0
        collect()
        assert attrfiles.held_total() - held_before == held
    finally:
        plugin.close()
    assert attrfiles.held_total() == held_before


def test_a_power_read_stuck_on_the_lane_is_waited_for_not_read_beside(
        fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel read stuck in a driver cannot be interrupted. When it happened on the scheduler's
    lane and the plugin left the lane for its coroutine, the next cycle says the previous call is
    still running and reads nothing beside it (the two would share the held descriptors)."""
    stuck, entered = threading.Event(), threading.Event()
    readers: set[int] = set()
    real = HeldFiles.read

    def read(self: HeldFiles, path: str, size: int = PAGE) -> bytes:
        readers.add(threading.get_ident())
        if path.endswith("/energy_uj") and not stuck.is_set():
            entered.set()
            stuck.wait(30)  # a driver that does not answer, until the test lets it
        return real(self, path, size)

    monkeypatch.setattr(HeldFiles, "read", read)
    plugin = PowerPlugin(PluginContext(node="t", sysfs_root=fixtures_dir / "sysfs" / "node-exporter" / "sys"),
                         PowerConfig())
    runner = PluginRunner(plugin, PluginSection("power", 1.0, 0.3, True, {}))

    async def cycles() -> list[bool]:
        assert await runner.discover()
        lane = Lane()
        try:
            first = await collect_together([runner], lane)  # stuck on the lane past its deadline
            assert entered.is_set() and runner.own_thread  # it left the lane
            readers.clear()
            second = await collect_together([runner], lane)  # off the lane: the read is still stuck
            assert readers == set()  # nothing read beside it
            stuck.set()
            deadline = time.monotonic() + 30
            busy = runner._busy  # the lane's call
            while busy is not None and not busy.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # until the stuck read has returned
            third = await collect_together([runner], lane)
            return [ok for (_col, ok, _secs) in (*first, *second, *third)]
        finally:
            stuck.set()
            lane.close()

    try:
        assert asyncio.run(cycles()) == [False, False, True]
    finally:
        stuck.set()
        runner.close()
