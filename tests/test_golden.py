"""Golden files for ``fleetmon agent --once`` on the captured sysfs trees (STYLE 11).

Refresh with ``pytest tests/test_golden.py --update-golden`` and review the diff; never edit
the files by hand. Self-metrics that measure time are left out (they differ every run).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.services import captured_link

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "node-exporter-optics-power.prom": ("node-exporter", "optics,power"),
    "h100-infiniband-optics.prom": ("h100-infiniband", "optics"),
    "procfs-optics-power.prom": ("procfs", "optics,power"),
}
# Label text that only a link's target can give (tree -> [(the link, the text)]): a copy of the
# fixtures that flattened the links (cp -rL) has no such name, so the golden is compared without it.
LINK_ONLY = {
    "node-exporter": [("class/hwmon/hwmon3", 'device="nct6775.656",')],
}


@pytest.mark.parametrize("golden", sorted(CASES))
def test_once_output_matches_golden(golden: str, fixtures_dir: Path, fleetmon_cmd: list[str],
                                    update_golden: bool) -> None:
    tree, plugins = CASES[golden]
    root = fixtures_dir / "sysfs" / tree / "sys"
    lost = [text for link, text in LINK_ONLY.get(tree, []) if captured_link(root / link) == "copy"]
    out = subprocess.run([*fleetmon_cmd, "agent", "--once", "--format", "prom", "--plugins", plugins,
                          "--node", "golden", "--sysfs-root", str(root)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = "".join(line + "\n" for line in out.stdout.splitlines()
                   if not line.startswith("fleetmon_agent_plugin_duration_seconds{"))
    path = GOLDEN / golden
    if update_golden:
        assert not lost, f"{root} has its links flattened: refresh the golden files from a tree that keeps them"
        path.write_text(text)
        return
    assert path.exists(), f"{path} missing: run pytest {__file__} --update-golden"
    expected = path.read_text()
    for label in lost:
        assert label in expected
        expected = expected.replace(label, "")
    assert text == expected, f"output differs from {path}; if intended, refresh with --update-golden"
