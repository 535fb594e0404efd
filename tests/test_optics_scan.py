"""Optics: the scan at discovery, and again when a port goes away or the rescan is due.

A collection lists no directory and re-reads no fact that does not change; what is found by the
scan must still follow the hardware: a device that goes away leaves, one that comes is found.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.model import Collection
from agent.plugin import PluginContext
from agent.plugins.optics import OpticsPlugin
from agent.plugins.optics.plugin import OpticsConfig


def _devices(col: Collection) -> set[str]:
    return {s.labels["device"] for s in col.samples if s.name == "ib_port_state"}


def _plugin(root: Path, **cfg: object) -> OpticsPlugin:
    plugin = OpticsPlugin(PluginContext(node="t", sysfs_root=root), OpticsConfig(eeprom="off", **cfg))  # type: ignore[arg-type]
    plugin.discover()
    return plugin


def test_devices_that_go_and_come_follow_the_scan(fixtures_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "sys"
    shutil.copytree(fixtures_dir / "sysfs" / "h100-infiniband" / "sys", root, symlinks=True)
    ib = root / "class" / "infiniband"
    ib.chmod(0o755)  # the capture is read-only; this copy's device list may change
    plugin = _plugin(root, rescan_interval=3600)
    first = plugin.collect()
    assert "mlx5_1" in _devices(first)
    # The device goes (driver unbound, card pulled): the next collection scans again at once.
    (ib / "mlx5_1").rename(tmp_path / "mlx5_1.away")
    gone = plugin.collect()
    assert _devices(gone) == _devices(first) - {"mlx5_1"}
    # It comes back: found at the next scan, not before (nothing is listed between scans).
    (tmp_path / "mlx5_1.away").rename(ib / "mlx5_1")
    assert "mlx5_1" not in _devices(plugin.collect())
    plugin.close()
    again = _plugin(root, rescan_interval=1e-6)  # every collection is past its rescan time
    assert "mlx5_1" in _devices(again.collect())
    again.close()
