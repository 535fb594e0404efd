"""End to end with real processes: a collector and agents on loopback over gRPC."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import AgentProc, CollectorProc, wait_until

RULES = Path(__file__).parent / "data" / "e2e_rules.yml"
pytestmark = pytest.mark.slow


def stored(db: Path, node: str) -> dict[tuple[str, tuple[tuple[str, str], ...], int], float]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    import json

    out = {}
    for name, labels, ts, value in con.execute(
            "SELECT name, labels, ts, value FROM samples JOIN series ON series.id = samples.series_id "
            "WHERE series.node = ?", (node,)):
        lab = json.loads(labels)
        out[(name, tuple(sorted(lab.items())), ts)] = value
    con.close()
    return out


def durable_seq(db: Path, node: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    row = con.execute("SELECT contiguous FROM nodes WHERE node = ?", (node,)).fetchone()
    con.close()
    return int(row[0]) if row else 0


def assert_store_equals_audit(db: Path, agent: AgentProc) -> int:
    """Every sample of every durable sequence is stored once with its value; nothing else is."""
    upto = durable_seq(db, agent.node)
    sent = [r for r in agent.audit_rows() if r["seq"] <= upto]
    have = stored(db, agent.node)
    expect = {}
    for r in sent:
        labels = {**r["labels"], "node": agent.node, "cluster": "test", "rack": "r1"}
        expect[(r["name"], tuple(sorted(labels.items())), r["ts_ms"])] = r["value"]
    assert len(expect) == len(sent), "the agent sent one series twice at one instant"
    missing = set(expect) - set(have)
    extra = set(have) - set(expect)
    # Samples of batches past the durable mark may be stored (acked-but-not-contiguous): allow only those.
    later = {(r["name"], tuple(sorted({**r["labels"], "node": agent.node, "cluster": "test", "rack": "r1"}.items())),
              r["ts_ms"]) for r in agent.audit_rows() if r["seq"] > upto}
    assert not missing, f"{len(missing)} acked samples missing, e.g. {sorted(missing)[:3]}"
    assert extra <= later, f"{len(extra - later)} stored samples the agent never sent"
    assert all(have[k] == v for k, v in expect.items())
    return len(expect)


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
        time.sleep(0.5)
        col.stop()
    for a in agents:
        n = assert_store_equals_audit(col.db(), a)
        assert n > 100


def test_collector_outage_agents_log_once_and_resume(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path).start()
    agents = [AgentProc(tmp_path, f"n{i}", [col.addr]).start() for i in (1, 2)]
    try:
        wait_until(lambda: col.get("/api/v1/summary")["nodes_up"] == 2, 30, "both agents streaming")
        col.stop()
        time.sleep(6)  # several reconnect attempts with back-off
        for a in agents:
            assert a.proc is not None and a.proc.alive()
            assert len(a.log_lines("unavailable")) == 1, a.log.read_text()
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
        time.sleep(0.5)
        col.stop()
    for a in agents:
        assert_store_equals_audit(col.db(), a)
        assert len(a.log_lines("unavailable")) == 1
