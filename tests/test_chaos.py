"""Nothing acked is lost, nothing is stored twice: chaos with real processes (issue: delivery).

(a) collector stopped 60 s while 3 agents run, then restarted;
(b) influxd stopped 60 s behind a collector with an InfluxDB v1 sink;
(c) collector killed with SIGKILL mid-stream;
(d) an agent killed with SIGKILL and restarted with unacked data in its WAL.
After each, every sequence the agents produced (up to what the collector holds durably, which
the test waits to catch up) is in the store exactly once with equal values.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fleet import AgentProc, CollectorProc, assert_store_equals_audit, durable_seq, wait_until
from tests.influx_servers import influx_create_database, influx_query, start_influxd

pytestmark = pytest.mark.slow
OUTAGE = 60.0


def _caught_up(col: CollectorProc, agents: list[AgentProc], slack: int = 2) -> bool:
    for a in agents:
        rows = a.audit_rows()
        if not rows or durable_seq(col.db(), a.node) < max(r["seq"] for r in rows) - slack:
            return False
    return True


def _stop_all(agents: list[AgentProc], col: CollectorProc) -> None:
    for a in agents:
        a.stop()
    time.sleep(0.3)
    col.stop()


def test_a_collector_stopped_60s(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path).start()
    agents = [AgentProc(tmp_path, f"n{i}", [col.addr]).start() for i in range(1, 4)]
    try:
        wait_until(lambda: _caught_up(col, agents), 30, "agents streaming")
        col.stop()
        time.sleep(OUTAGE)
        col.start()
        wait_until(lambda: _caught_up(col, agents), 60, "backfill after the outage")
    finally:
        _stop_all(agents, col)
    for a in agents:
        n = assert_store_equals_audit(col.db(), a)
        # the outage's minute is in the store: about 2 batches a second for the whole run
        assert durable_seq(col.db(), a.node) >= OUTAGE * 2 * 0.9
        assert n > 0


def test_b_influxd_stopped_60s(tmp_path: Path) -> None:
    influx_proc, url = start_influxd(tmp_path)
    port = int(url.rsplit(":", 1)[1])
    influx_create_database(url, "fleet")
    col = CollectorProc(tmp_path, extra={"sinks": {"influx": {"type": "influxdb_v1", "url": url,
                                                               "database": "fleet"}}}).start()
    agents = [AgentProc(tmp_path, f"n{i}", [col.addr]).start() for i in range(1, 4)]
    try:
        wait_until(lambda: _caught_up(col, agents), 30, "agents streaming")
        influx_proc.stop()
        time.sleep(OUTAGE)
        influx_proc, url = start_influxd(tmp_path, port=port)
        wait_until(lambda: _caught_up(col, agents), 30, "collector keeps acking while influxd is down")
    finally:
        for a in agents:
            a.stop()

    def spool_empty() -> bool:
        text = __import__("urllib.request").request.urlopen(col.http + "/metrics", timeout=5).read().decode()
        return "fleetmon_spool_bytes 0.0" in text

    try:
        wait_until(spool_empty, 90, "the spool to drain into influxd")
        col.stop()
        for a in agents:
            expect = assert_store_equals_audit(col.db(), a)
            upto = durable_seq(col.db(), a.node)
            # every sample the collector holds for the node is in influxd exactly once
            total = 0
            for series in influx_query(url, f"SELECT count(*) FROM /.*/ WHERE node = '{a.node}'", "fleet"):
                if series["name"] == "event":
                    continue
                cols = series["columns"]
                for row in series["values"]:
                    total += sum(v for c, v in zip(cols, row, strict=True) if c.startswith("count_") and v)
            sent = len([r for r in a.audit_rows() if r["seq"] <= upto])
            assert sent == expect
            assert total >= sent, f"{a.node}: influxd has {total} samples, the agent sent {sent}"
            # values equal: spot-check one series exactly
            rows = [r for r in a.audit_rows() if r["seq"] <= upto and r["name"] == "gpu_temperature_celsius"
                    and r["labels"]["gpu"] == "0"]
            got = influx_query(url, f"SELECT temperature_celsius FROM gpu WHERE node = '{a.node}' AND gpu = '0'",
                               "fleet")
            values = {t // 1_000_000: v for t, v in got[0]["values"]}
            assert all(values[r["ts_ms"]] == r["value"] for r in rows)
            assert len(values) >= len(rows)
    finally:
        col.stop()
        influx_proc.stop()


def test_c_collector_sigkill_mid_stream(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path).start()
    agents = [AgentProc(tmp_path, f"n{i}", [col.addr]).start() for i in range(1, 4)]
    try:
        wait_until(lambda: _caught_up(col, agents), 30, "agents streaming")
        time.sleep(2)
        col.kill()
        time.sleep(3)
        col.start()
        wait_until(lambda: _caught_up(col, agents), 60, "agents to catch up after the crash")
    finally:
        _stop_all(agents, col)
    for a in agents:
        assert_store_equals_audit(col.db(), a)


def test_d_agent_sigkill_with_unacked_wal(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path).start()
    agent = AgentProc(tmp_path, "n1", [col.addr]).start()
    try:
        wait_until(lambda: _caught_up(col, [agent]), 30, "agent streaming")
        col.stop()  # the agent keeps writing batches it cannot send
        time.sleep(5)
        before = max(r["seq"] for r in agent.audit_rows())
        agent.kill()
        assert durable_seq(col.db(), "n1") < before - 5, "the WAL should hold unacked batches"
        agent.start()  # same WAL: the sequence continues, the unacked batches are replayed
        col.start()
        wait_until(lambda: _caught_up(col, [agent]), 60, "replay after the agent restart")
        assert max(r["seq"] for r in agent.audit_rows()) > before
    finally:
        _stop_all([agent], col)
    assert_store_equals_audit(col.db(), agent, unaudited_batches=1)
