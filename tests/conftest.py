from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.services import FIXTURES, REPO


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"shared fixtures not found at {FIXTURES} (set FLEETMON_SHARED to the shared/ folder)")
    return FIXTURES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def fleetmon_cmd() -> list[str]:
    """argv prefix that runs the fleetmon CLI with this interpreter."""
    return [sys.executable, "-m", "fleetmon"]
