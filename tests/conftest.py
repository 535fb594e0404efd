from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import services
from tests.services import FIXTURES, REPO


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture (session-scoped servers included) starts for this test.
    services.current_test[:] = [item]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    services.current_test.clear()


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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/* from the current output instead of comparing")
    parser.addoption("--update-screenshots", action="store_true", default=False,
                     help="write the dashboard test's screenshots into docs/screenshots/ (the README shows them)")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
