"""The agent's systemd unit: valid for systemd, not root, and only the capabilities it explains."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

from tests.services import REPO, require_binary

UNIT = REPO / "deploy" / "systemd" / "fleetmon-agent.service"


def _service() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return dict(parser["Service"])


def test_unit_verifies_and_runs_unprivileged_with_two_capabilities(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    service = _service()
    assert service["DynamicUser"] == "yes" and "User" not in service
    ambient = set(service["AmbientCapabilities"].split())
    assert ambient == {"CAP_NET_ADMIN", "CAP_SYSLOG"}
    assert set(service["CapabilityBoundingSet"].split()) == ambient  # nothing more, ever
    assert service.get("ProtectKernelLogs", "no") == "no"  # it would hide /dev/kmsg from the kmsg plugin
    for cap in ambient:  # each one says which plugin needs it and why
        assert f"# {cap}" in UNIT.read_text()
    # systemd's own check (the ExecStart binary replaced: this machine has no /opt/fleetmon).
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/fleetmon/bin/fleetmon", "/bin/true"))
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
