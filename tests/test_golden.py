"""Golden files for ``fleetmon agent --once`` on the captured sysfs trees (STYLE 11).

Refresh with ``pytest tests/test_golden.py --update-golden`` and review the diff; never edit
the files by hand. Self-metrics that measure time are left out (they differ every run).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "node-exporter-optics-power.prom": ("node-exporter", "optics,power"),
    "h100-infiniband-optics.prom": ("h100-infiniband", "optics"),
    "procfs-optics-power.prom": ("procfs", "optics,power"),
}


@pytest.mark.parametrize("golden", sorted(CASES))
def test_once_output_matches_golden(golden: str, fixtures_dir: Path, fleetmon_cmd: list[str],
                                    update_golden: bool) -> None:
    tree, plugins = CASES[golden]
    out = subprocess.run([*fleetmon_cmd, "agent", "--once", "--format", "prom", "--plugins", plugins,
                          "--node", "golden", "--sysfs-root", str(fixtures_dir / "sysfs" / tree / "sys")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = "".join(line + "\n" for line in out.stdout.splitlines()
                   if not line.startswith("fleetmon_agent_plugin_duration_seconds{"))
    path = GOLDEN / golden
    if update_golden:
        path.write_text(text)
        return
    assert path.exists(), f"{path} missing: run pytest {__file__} --update-golden"
    assert text == path.read_text(), f"output differs from {path}; if intended, refresh with --update-golden"
