"""Nothing acked is lost, nothing is stored twice: chaos with real processes (issue: delivery).

(a) collector stopped while 3 agents run, then restarted;
(b) influxd stopped behind a collector with an InfluxDB v1 sink;
(c) collector killed with SIGKILL mid-stream;
(d) an agent killed with SIGKILL and restarted with unacked data in its WAL.

Each outage lasts until every agent has produced ``OUTAGE_BATCHES`` batches the collector (or
influxd) could not take, so the backfill has several batches to replay; nothing waits a fixed
time. Afterwards, against each agent's audit log (every sample of every batch it wrote): every
durable sequence's samples are in the store (and in influxd) exactly once with the values sent,
nothing else is there, and no batch collided with another on a (series, timestamp).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fleet import (
    AgentProc,
    CollectorProc,
    assert_store_equals_audit,
    durable_seq,
    metric_value,
    stored,
)
from tests.influx_servers import influx_create_database, influx_query, start_influxd
from tests.services import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.services]
OUTAGE_BATCHES = 8  # at 2 batches/s: a few seconds of data each agent must buffer and replay


def _last_seq(a: AgentProc) -> int:
    return max((r["seq"] for r in a.audit_rows()), default=0)


def _caught_up(col: CollectorProc, agents: list[AgentProc], upto: dict[str, int] | None = None) -> bool:
    """Every agent's batches are durable up to ``upto`` (default: two batches behind its last)."""
    for a in agents:
        last = _last_seq(a)
        want = upto[a.node] if upto is not None else last - 2
        if last == 0 or durable_seq(col.db(), a.node) < want:
            return False
    return True


def _buffered(agents: list[AgentProc], since: dict[str, int]) -> dict[str, int]:
    """Wait until each agent wrote OUTAGE_BATCHES batches past ``since``; their last sequences."""
    wait_until(lambda: all(_last_seq(a) >= since[a.node] + OUTAGE_BATCHES for a in agents), 60,
               f"each agent to write {OUTAGE_BATCHES} batches during the outage")
    return {a.node: _last_seq(a) for a in agents}


def _no_collisions(col: CollectorProc) -> None:
    """No sample was dropped because its (series, timestamp) was already stored: with distinct
    sequences dropped as replays, a collision would be the same sample sent again as new."""
    assert col.get("/api/v1/summary")["duplicate_samples"] == 0


def _stop_all(agents: list[AgentProc], col: CollectorProc) -> None:
    for a in agents:
        a.stop()
    col.stop()


def test_a_collector_stopped(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path).start()
    agents = [AgentProc(tmp_path, f"n{i}", [col.addr]).start() for i in range(1, 4)]
    try:
        wait_until(lambda: _caught_up(col, agents), 30, "agents streaming")
        _no_collisions(col)
        col.stop()
        held = {a.node: durable_seq(col.db(), a.node) for a in agents}
        written = _buffered(agents, held)
        col.start()
        wait_until(lambda: _caught_up(col, agents, written), 60, "backfill of the outage's batches")
        _no_collisions(col)
    finally:
        _stop_all(agents, col)
    for a in agents:
        assert durable_seq(col.db(), a.node) >= written[a.node]
        assert assert_store_equals_audit(col.db(), a) > 0


def influx_points(url: str, database: str, node: str) -> dict[tuple[str, tuple[tuple[str, str], ...], int], float]:
    """Every point influxd holds for ``node``, keyed like tests.fleet.stored (name, labels, ts ms)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...], int], float] = {}
    for series in influx_query(url, f"SELECT * FROM /.*/ WHERE \"node\" = '{node}' GROUP BY *", database):
        if series["name"] == "event":
            continue
        tags = tuple(sorted((k, v) for k, v in series.get("tags", {}).items() if v))
        fields = series["columns"][1:]
        for t, *values in series["values"]:
            for field, value in zip(fields, values, strict=True):
                if value is None:
                    continue
                key = (f"{series['name']}_{field}", tags, t // 1_000_000)
                assert key not in out, f"influxd holds {key} twice"
                out[key] = value
    return out


def test_b_influxd_stopped(tmp_path: Path) -> None:
    influx_proc, url = start_influxd(tmp_path)
    port = int(url.rsplit(":", 1)[1])
    influx_create_database(url, "fleet")
    col = CollectorProc(tmp_path, extra={"sinks": {"influx": {"type": "influxdb_v1", "url": url,
                                                               "database": "fleet"}}}).start()
    agents = [AgentProc(tmp_path, f"n{i}", [col.addr]).start() for i in range(1, 4)]

    def metric(name: str, labels: str = "") -> float:
        return metric_value(col.metrics(), name, labels)

    try:
        wait_until(lambda: _caught_up(col, agents), 30, "agents streaming")
        influx_proc.stop()
        held = {a.node: durable_seq(col.db(), a.node) for a in agents}
        # The collector keeps acking while influxd is down: batches go to the spool.
        wait_until(lambda: _caught_up(col, agents, {n: s + OUTAGE_BATCHES for n, s in held.items()}), 60,
                   f"{OUTAGE_BATCHES} batches per agent acked while influxd is down")
        wait_until(lambda: metric("fleetmon_sink_failed_writes_total", 'sink="influx"') > 0, 30,
                   "the sink to notice influxd is gone")
        assert metric("fleetmon_spool_bytes") > 0
        influx_proc, url = start_influxd(tmp_path, port=port)
        wait_until(lambda: _caught_up(col, agents), 30, "agents streaming after the outage")
    finally:
        for a in agents:
            a.stop()

    try:
        wait_until(lambda: metric("fleetmon_spool_bytes") == 0, 90, "the spool to drain into influxd")
        _no_collisions(col)
        assert metric("fleetmon_sink_dropped_points_total", 'sink="influx"') == 0
        col.stop()
        for a in agents:
            sent = assert_store_equals_audit(col.db(), a)
            have = stored(col.db(), a.node)
            assert sent > 0 and len(have) >= sent
            # influxd holds exactly what the store holds (which is what the agent sent): no gap,
            # nothing twice, nothing else, equal values.
            got = influx_points(url, "fleet", a.node)
            assert set(got) == set(have), (f"{a.node}: {len(set(have) - set(got))} stored points not in influxd, "
                                           f"{len(set(got) - set(have))} in influxd not stored")
            assert got == have
    finally:
        col.stop()
        influx_proc.stop()


def test_c_collector_sigkill_mid_stream(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path).start()
    agents = [AgentProc(tmp_path, f"n{i}", [col.addr]).start() for i in range(1, 4)]
    try:
        wait_until(lambda: _caught_up(col, agents), 30, "agents streaming")
        # mid-stream: a few more batches acked after the streams settled
        now = {a.node: _last_seq(a) for a in agents}
        wait_until(lambda: _caught_up(col, agents, {n: s + 3 for n, s in now.items()}), 30, "more batches acked")
        col.kill()
        held = {a.node: durable_seq(col.db(), a.node) for a in agents}
        written = _buffered(agents, held)
        col.start()
        wait_until(lambda: _caught_up(col, agents, written), 60, "agents to catch up after the crash")
        _no_collisions(col)
    finally:
        _stop_all(agents, col)
    for a in agents:
        assert assert_store_equals_audit(col.db(), a) > 0


def test_d_agent_sigkill_with_unacked_wal(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path).start()
    agent = AgentProc(tmp_path, "n1", [col.addr]).start()
    try:
        wait_until(lambda: _caught_up(col, [agent]), 30, "agent streaming")
        col.stop()  # the agent keeps writing batches it cannot send
        held = durable_seq(col.db(), "n1")
        before = _buffered([agent], {"n1": held})["n1"]
        agent.kill()
        assert durable_seq(col.db(), "n1") == held < before - 5, "the WAL should hold unacked batches"
        agent.start()  # same WAL: the sequence continues, the unacked batches are replayed
        col.start()
        wait_until(lambda: _caught_up(col, [agent], {"n1": before + 1}), 60, "replay after the agent restart")
        _no_collisions(col)
    finally:
        _stop_all([agent], col)
    assert_store_equals_audit(col.db(), agent, unaudited_batches=1)
