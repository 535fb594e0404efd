"""The promtool-format suite in tests/promql/ must pass under both ``fleetmon rules test`` and
Debian's ``promtool test rules`` (Prometheus 2.42): that is what "same answers as Prometheus"
means. The files in tests/promql/errors/ must fail under both, with the same error."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.unittest import run_file
from tests.services import REPO, require_binary

SUITE = REPO / "tests" / "promql"
FILES = sorted(SUITE.glob("*_test.yml"))
ERROR_FILES = sorted((SUITE / "errors").glob("*_test.yml"))


def test_suite_is_large_enough() -> None:
    assert len(FILES) >= 40


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_file_passes_fleetmon(path: Path) -> None:
    out = io.StringIO()
    ok = run_file(path, out)
    assert ok, out.getvalue()
    assert "  SUCCESS" in out.getvalue()


def test_fleetmon_cli_runs_whole_suite() -> None:
    res = subprocess.run([sys.executable, "-m", "fleetmon", "rules", "test", *map(str, FILES)],
                         cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("  SUCCESS") == len(FILES)


def test_promtool_runs_whole_suite() -> None:
    promtool = require_binary("promtool")
    res = subprocess.run([promtool, "test", "rules", *map(str, FILES)], cwd=REPO,
                         capture_output=True, text=True, timeout=240, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("  SUCCESS") == len(FILES)


def test_fleetmon_cli_fails_on_a_failing_file() -> None:
    res = subprocess.run([sys.executable, "-m", "fleetmon", "rules", "test", str(ERROR_FILES[0]), str(FILES[0])],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1
    assert res.stdout.count("  FAILED:") == 1 and res.stdout.count("  SUCCESS") == 1


def _normalise(err: str) -> str:
    # Prometheus lists the two clashing series of a many-to-many error in no fixed order.
    m = re.search(r"\[(\{.*\}), (\{.*\})\]", err)
    if m:
        a, b = sorted((m.group(1), m.group(2)))
        err = err[:m.start()] + f"[{a}, {b}]" + err[m.end():]
    return err


def _error_lines(text: str) -> list[str]:
    """The ``err: ...`` part of each failure, which both tools word identically."""
    return sorted(_normalise(line.split("err: ", 1)[1]) for line in text.splitlines() if "err: " in line)


@pytest.mark.parametrize("path", ERROR_FILES, ids=lambda p: p.stem)
def test_error_cases_fail_alike(path: Path) -> None:
    promtool = require_binary("promtool")
    ref = subprocess.run([promtool, "test", "rules", str(path)], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=False)
    assert ref.returncode == 1, ref.stdout + ref.stderr
    out = io.StringIO()
    assert not run_file(path, out)
    mine = out.getvalue()
    assert "  FAILED:" in mine
    ref_text = ref.stdout + ref.stderr
    if _error_lines(ref_text):
        assert _error_lines(mine) == _error_lines(ref_text)
    else:  # a wrong expectation: both report exp/got for the same expression
        assert "exp: {__name__=\"gpu_up\", gpu=\"0\"} 2" in mine
        assert "got: {__name__=\"gpu_up\", gpu=\"0\"} 1" in mine
