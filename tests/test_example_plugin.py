"""The example third-party plugin installs with pip and is collected by ``fleetmon agent --once``.

It is installed with ``pip install --no-deps --no-build-isolation --target TMP`` (no network: the
build backend is the setuptools of the running venv) and found by the agent through the
``fleetmon.plugins`` entry point, because ``PYTHONPATH=TMP`` puts its ``.dist-info`` on the path
``importlib.metadata`` searches. Nothing is installed into the project's own venv.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fleetmon-example-plugin"
MIB = 1 << 20


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("example-plugin")
    # Build from a copy: pip builds in-tree, and the repository must stay clean.
    src = work / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def fake_example_smi(tmp_path: Path, body: str) -> Path:
    tool = tmp_path / "example-smi"
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def run_agent(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLE.parents[1])])}
    return subprocess.run(
        [sys.executable, "-m", "fleetmon", "agent", "--once", "--node", "n1", *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )


def test_entry_point_is_installed(installed: Path) -> None:
    [dist_info] = installed.glob("fleetmon_example_plugin-0.1.0.dist-info")
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert "[fleetmon.plugins]" in entry_points
    assert "example_accel = fleetmon_example_plugin:ExampleAccelPlugin" in entry_points


def test_agent_collects_the_installed_plugin(installed: Path, tmp_path: Path) -> None:
    capture = installed / "fleetmon_example_plugin" / "testdata" / "example-smi-a1.json"
    tool = fake_example_smi(tmp_path, f'[ "$1" = --json ] || exit 3\ncat "{capture}"\n')
    proc = run_agent(installed, "--format", "json", "--plugins", "example_accel",
                     "--set", f"example_accel.tool={tool}")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    got = {(r["name"], r["labels"].get("gpu", "")): r["value"] for r in rows}
    assert got[("gpu_temperature_celsius", "0")] == 41
    assert got[("gpu_temperature_celsius", "1")] == 44
    assert got[("gpu_power_watts", "0")] == 65.25
    assert ("gpu_power_watts", "1") not in got  # "N/A": omitted, not zero
    assert got[("gpu_utilization_ratio", "0")] == 0.37
    assert got[("gpu_memory_total_bytes", "1")] == 16384 * MIB
    assert got[("example_tensor_utilization_ratio", "0")] == 0.12
    assert got[("fleetmon_agent_plugin_success", "")] == 1
    [temp0] = [r for r in rows if r["name"] == "gpu_temperature_celsius" and r["labels"]["gpu"] == "0"]
    assert temp0["labels"] == {"gpu": "0", "vendor": "example", "model": "Example A1", "uuid": "EXA-5f1c2d3e",
                               "node": "n1"}


def test_plugin_without_its_tool_is_disabled_in_one_line(installed: Path, tmp_path: Path) -> None:
    proc = run_agent(installed, "--format", "json", "--plugins", "example_accel",
                     "--set", f"example_accel.tool={tmp_path / 'missing'}")
    # its only plugin unusable: --once says why and exits 1 (not 0 with an empty output)
    assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
    assert f"example-smi not found at {tmp_path / 'missing'} (set plugins.example_accel.tool to its path)" \
        in proc.stderr
    assert "no usable plugin: example_accel" in proc.stderr


def test_without_the_package_the_name_is_unknown(tmp_path: Path) -> None:
    proc = run_agent(tmp_path, "--format", "json", "--plugins", "example_accel")
    assert proc.returncode == 2
    assert "unknown plugin 'example_accel'" in proc.stderr
