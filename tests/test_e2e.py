"""End to end with real processes: a collector and agents on loopback over gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fleet import AgentProc, CollectorProc, assert_store_equals_audit, durable_seq
from tests.services import wait_until

RULES = Path(__file__).parent / "data" / "e2e_rules.yml"
pytestmark = [pytest.mark.slow, pytest.mark.services]
# The agent's first "collector unavailable" warning; later attempts log at debug level.
UNAVAILABLE = r"collector \S+ unavailable \(.*buffering in the WAL"


def test_fault_fires_and_resolves_and_store_equals_sent(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path, rules=[RULES]).start()
    faults = [{"at": "3s", "for": "6s", "kind": "gpu_temperature", "gpu": 1, "value": 95}]
    agents = [
        AgentProc(tmp_path, "n1", [col.addr],
                  plugins={"simulated": {"interval": 0.5, "gpus": 2, "ib_ports": 1, "lanes": 2, "faults": faults}}),
        AgentProc(tmp_path, "n2", [col.addr]),
    ]
    try:
        for a in agents:
            a.start()

        def transitions() -> list[dict[str, Any]]:
            return [t for t in col.get("/api/v1/alerts/transitions") if t["labels"]["alertname"] == "GPUHotE2E"]

        wait_until(lambda: any(t["state"] == "firing" for t in transitions()), 30, "GPUHotE2E to fire")
        wait_until(lambda: any(t["state"] == "resolved" and t["fired_at"] for t in transitions()), 30,
                   "GPUHotE2E to resolve")
        ts = transitions()
        assert {t["labels"]["node"] for t in ts} == {"n1"}
        assert {t["labels"]["gpu"] for t in ts} == {"1"}
        firing = next(t for t in ts if t["state"] == "firing")
        assert firing["value"] == 95.0 and firing["annotations"]["summary"] == "GPU 1 on n1 at 95 °C"
        summary = col.get("/api/v1/summary")
        assert summary["nodes_up"] == 2
    finally:
        for a in agents:
            a.stop()
        col.stop()
    for a in agents:
        n = assert_store_equals_audit(col.db(), a)
        assert n > 100


def test_collector_outage_agents_log_once_and_resume(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path).start()
    # debug: each retry during the outage leaves a "still unavailable" line to count
    agents = [AgentProc(tmp_path, f"n{i}", [col.addr], extra={"log_level": "debug"}).start() for i in (1, 2)]
    try:
        wait_until(lambda: col.get("/api/v1/summary")["nodes_up"] == 2, 30, "both agents streaming")
        col.stop()
        wait_until(lambda: all(len(a.log_lines("still unavailable")) >= 2 for a in agents), 60,
                   "two more reconnect attempts with back-off")
        for a in agents:
            assert a.proc is not None and a.proc.alive()
            assert len(a.log_lines(UNAVAILABLE)) == 1, a.log.read_text()
        col.start()
        wait_until(lambda: all(a.log_lines("streaming to collector .* again") for a in agents), 40,
                   "agents to resume")
        wait_until(lambda: col.get("/api/v1/summary")["nodes_up"] == 2, 30, "both agents back")
        # the outage's data comes back from the WAL (backfill)
        wait_until(lambda: all(
            a.audit_rows() and durable_seq(col.db(), a.node) >= max(r["seq"] for r in a.audit_rows()) - 2
            for a in agents), 40, "backfill to catch up")
    finally:
        for a in agents:
            a.stop()
        col.stop()
    for a in agents:
        assert_store_equals_audit(col.db(), a)
        assert len(a.log_lines(UNAVAILABLE)) == 1
