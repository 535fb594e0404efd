"""The web dashboard in a real headless browser (Playwright driving Debian's /usr/bin/chromium;
never ``playwright install``), on a real collector with the shipped rule pack and simulated agents.

The demo fleet renders with its health roll-up and alerts; a fault injected into a running node
turns it red within 5 s of the fault's first sample; a node page plots its history. The README's
screenshots are written by this test with ``--update-screenshots`` (into docs/screenshots/),
like golden files; without the flag they go to a temporary folder.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.fleet import AgentProc, CollectorProc
from tests.services import REPO, require_binary, wait_until

pytestmark = pytest.mark.services

SCREENSHOTS = REPO / "docs" / "screenshots"
#: How soon a fault must show on the fleet page (the issue's bar), from the fault's first sample.
RED_WITHIN_S = 5.0
#: When the injected fault starts on its node's clock: after the page has seen the node healthy.
FAULT_AT_S = 6
SIM = {"interval": 0.5, "gpus": 4, "ib_ports": 1, "lanes": 2}


class Fleet:
    """A collector with the shipped pack; n1 runs hot (GPUOverTemperature pending: degraded), n3
    is healthy, and n2 is started on demand with an XID 79 scripted ``FAULT_AT_S`` in."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.collector = CollectorProc(tmp, rules=[Path("builtin:*.yml")]).start()
        hot = [{"at": "0s", "kind": "gpu_temperature", "gpu": 2, "value": 92}]
        addr = [self.collector.addr]
        self.agents = [AgentProc(tmp, "gpu-node-01", addr, plugins={"simulated": {**SIM, "faults": hot}}),
                       AgentProc(tmp, "gpu-node-03", addr, plugins={"simulated": SIM})]
        for a in self.agents:
            a.start()
        self.injected: AgentProc | None = None

    def inject(self) -> AgentProc:
        """Start gpu-node-02, whose GPU 1 falls off the bus (XID 79) ``FAULT_AT_S`` after its start."""
        if self.injected is None:
            xid = [{"at": f"{FAULT_AT_S}s", "kind": "xid", "gpu": 1, "xid": 79}]
            self.injected = AgentProc(self.tmp, "gpu-node-02", [self.collector.addr],
                                      plugins={"simulated": {**SIM, "faults": xid}}).start()
            self.agents.append(self.injected)
        return self.injected

    def fault_started_at(self, node: str) -> float:
        """The timestamp of the first sample that said GPU 1 is down."""
        sel = urllib.parse.quote(f'gpu_up{{node="{node}",gpu="1"}}')
        [row] = self.collector.get(f"/api/v1/query?selector={sel}&since=5m")
        return float(min(t for t, v in row["values"] if v == 0))

    def stop(self) -> None:
        for a in self.agents:
            a.stop()
        self.collector.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("dashboard"))
    try:
        wait_until(lambda: f.collector.get("/api/v1/summary")["nodes_up"] == 2, 30, "two nodes up")
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_binary("chromium", "/usr/bin/chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser: Browser, fleet: Fleet) -> Iterator[Page]:
    pg = browser.new_page(viewport={"width": 1360, "height": 900})
    errors: list[str] = []
    pg.on("pageerror", lambda err: errors.append(str(err)))
    pg.goto(fleet.collector.http + "/")
    yield pg
    pg.close()
    assert errors == [], errors  # no script error on any page the tests visited


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.config.getoption("--update-screenshots"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


def test_fleet_page_renders_the_roll_up_and_alerts(page: Page) -> None:
    page.wait_for_selector('[data-node="gpu-node-03"][data-health="healthy"]')
    hot = page.wait_for_selector('[data-node="gpu-node-01"][data-health="degraded"]', timeout=30_000)
    assert hot is not None and "alert GPUOverTemperature pending" in hot.inner_text()
    assert "4/4 NVIDIA H100 80GB HBM3 (simulated)" in hot.inner_text()
    row = page.wait_for_selector('tr[data-alert="GPUOverTemperature"]')
    assert row is not None
    text = row.inner_text()
    assert "critical" in text and "gpu-node-01" in text and "fires in" in text
    assert "Check the node's fans and inlet temperature" in text  # the runbook action, its own column
    models = page.inner_text("#models")
    assert "NVIDIA H100 80GB HBM3 (simulated)" in models and "8 / 8" in models


def test_injected_fault_turns_its_node_red_within_5s(page: Page, fleet: Fleet, shots: Path) -> None:
    node = fleet.inject().node
    page.wait_for_selector(f'[data-node="{node}"][data-health="healthy"]', timeout=30_000)
    red = page.wait_for_selector(f'[data-node="{node}"][data-health="failed"]', timeout=30_000)
    red_at = time.time()
    assert red is not None and "GPU 1 down" in red.inner_text()
    # From the fault's first sample on the node's clock (the same machine's) to red on the page.
    delay = red_at - fleet.fault_started_at(node)
    assert delay <= RED_WITHIN_S, f"{node} turned red {delay:.1f}s after the fault"
    page.wait_for_selector('tr[data-alert="GPUXidCritical"]', timeout=30_000)
    page.screenshot(path=str(shots / "dashboard-fleet.png"), full_page=True)


def test_node_page_lists_devices_and_plots_their_history(page: Page, fleet: Fleet, shots: Path) -> None:
    node = fleet.inject().node
    wait_until(lambda: fleet.collector.get(f"/api/v1/nodes/{node}")["health"] == "failed", 30, "the fault")
    page.goto(f"{fleet.collector.http}/#/node/{node}")
    page.wait_for_selector('#devices tr[data-gpu="1"]')
    assert "down" in page.inner_text('#devices tr[data-gpu="1"]')
    assert "up" in page.inner_text('#devices tr[data-gpu="0"]')
    # plotly.js keeps what it drew on the element: one trace per GPU, each with points.
    # The plots load one query each, in turn: wait for both.
    for metric in ("gpu_temperature_celsius", "gpu_power_watts"):
        page.wait_for_function("""(id) => {
            const d = document.getElementById(id);
            return d && d.data && d.data.length === 4 && d.data.every(t => t.x.length > 2);
        }""", arg=f"plot-{metric}", timeout=30_000)
    assert page.locator("#plot-gpu_power_watts .scatterlayer .trace").count() == 4
    page.wait_for_selector('#node-alerts tr:has-text("GPUXidCritical")')
    page.screenshot(path=str(shots / "dashboard-node.png"), full_page=True)


def test_a_node_of_another_collector_shows_its_history_only(page: Page, fleet: Fleet) -> None:
    """A node that streams elsewhere (moved away, or never here): no state of it here, its plots
    from the query API (none configured here: "no data")."""
    page.goto(f"{fleet.collector.http}/#/node/elsewhere-1")
    page.wait_for_selector('#health:has-text("not here")')
    assert "does not stream to this collector" in page.inner_text("#reasons")
    page.wait_for_function("""() => {
        const d = document.getElementById("plot-gpu_temperature_celsius");
        return d && d.layout && d.layout.annotations.length === 1;
    }""", timeout=30_000)


def test_alert_history_page(page: Page, fleet: Fleet, shots: Path) -> None:
    fleet.inject()
    page.goto(f"{fleet.collector.http}/#/alerts")
    page.wait_for_selector('#history tr:has-text("GPUXidCritical"):has(td.firing)', timeout=30_000)
    history = page.inner_text("#history")
    assert "gpu-node-02" in history and "pending" in history
    page.wait_for_selector("#alert-events tr")
    assert "gpu.xid" in page.inner_text("#alert-events")
    page.screenshot(path=str(shots / "dashboard-alerts.png"), full_page=True)
