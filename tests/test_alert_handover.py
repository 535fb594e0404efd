"""A collector killed and restarted while an alert fires: it restores the alert's ``for`` state from
its own alert state file (no shared TSDB here), so the alert fires on with its first active time,
Alertmanager keeps one alert the whole time, and its receiver gets no resolve and no second
notification (issue 14; the move between collectors is tests/test_fleet_e2e.py)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.alert_tier import alert_tier, node_rules, watching
from tests.fleet import AgentProc, CollectorProc, metric_value
from tests.services import wait_until

pytestmark = pytest.mark.services

HOT_GPU = {"simulated": {"interval": 0.5, "gpus": 2, "ib_ports": 0, "lanes": 1, "psus": 0,
                         "faults": [{"at": "0s", "kind": "gpu_temperature", "gpu": 0, "value": 92}]}}


def collector_alert(col: CollectorProc, name: str, state: str | None = None) -> dict[str, Any]:
    """The collector's alert named ``name`` (in ``state`` when given); {} when it has none."""
    try:
        got = [a for a in col.get("/api/v1/alerts") if a["labels"].get("alertname") == name
               and (state is None or a["state"] == state)]
    except OSError:
        return {}
    return dict(got[0]) if got else {}


def _stamp(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_a_restarted_collector_restores_its_firing_alert_from_its_own_store(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    # A short ``for`` (the restored active time tells a restored timer from a new one), above
    # the grace period so that it is restored at all.
    rules.write_text(node_rules("3s"))
    with alert_tier(tmp_path) as tier:
        col = CollectorProc(tmp_path, rules=[rules], extra={"alerting": {
            "notifiers": {"alertmanager": {"urls": [tier.url]}}, "for_grace_period": "1s"}})
        agent = AgentProc(tmp_path, "n1", [col.addr], plugins=HOT_GPU)
        labels = {"node": "n1", "gpu": "0"}
        try:
            col.start()
            agent.start()
            before = wait_until(lambda: collector_alert(col, "GPUOverTemperature", "firing"), 60, "the alert to fire")
            wait_until(lambda: tier.alerts("GPUOverTemperature"), 30, "the alert in Alertmanager")
            with watching(tier, "GPUOverTemperature", labels) as watch:
                col.kill()
                restarted = time.time()
                col.start()
                after = wait_until(lambda: collector_alert(col, "GPUOverTemperature"), 30,
                                   "the restarted collector to hold the alert again")
                # Restored, not started over: the first life's active time, never a new one.
                assert after["active_at"] == int(before["active_at"])
                wait_until(lambda: collector_alert(col, "GPUOverTemperature", "firing"), 30,
                           "the restored alert to fire")
                # The restarted collector sends it on (Alertmanager's copy is refreshed by it).
                wait_until(lambda: any(_stamp(a["updatedAt"]) > restarted for a in tier.alerts("GPUOverTemperature")),
                           30, "the restarted collector to send the alert")
            # Its windows came back from its own store too (the local history).
            metrics = col.metrics()
            assert metric_value(metrics, "fleetmon_collector_alerts_restored_total") == 1
            assert metric_value(metrics, "fleetmon_collector_warmed_samples_total") > 0
            assert watch.readings and not watch.gaps(), f"Alertmanager lost the alert: {watch.gaps()[:5]}"
            assert [s for s, _ in tier.notifications("GPUOverTemperature")] == ["firing"]
        finally:
            agent.stop()
            col.stop()
