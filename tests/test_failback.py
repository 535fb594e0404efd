"""Agents leave a collector that stopped answering without closing its connections (a host that
is down: here a process paused with SIGSTOP, so no TCP reset ever comes), and come back to it,
staggered, once it answers again, with nothing lost (issue 14: rebalancing).

How fast (dead-host detection, return time and spread) is measured by ``bench/bench_failover.py``.
"""

from __future__ import annotations

import asyncio
import signal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agent.failback import FailbackConfig, probe
from agent.tls import ChannelSecurity
from agent.transport import rendezvous_order
from tests.fleet import AgentProc, CollectorProc, stored
from tests.services import wait_until

#: Probe every half second, move within a second of the second good probe (tests stay short).
FAST_FAILBACK = {"check_interval": 0.5, "healthy_checks": 2, "spread": 1.0}


def preferring(first: str, collectors: list[str], n: int) -> list[str]:
    """``n`` node names whose rendezvous order puts ``first`` first."""
    names = (f"n{i}" for i in range(10_000))
    return [name for name in names if rendezvous_order(name, collectors)[0] == first][:n]


def connected(col: CollectorProc) -> set[str]:
    try:
        return {n["node"] for n in col.get("/api/v1/nodes") if n["connected"]}
    except OSError:
        return set()


def assert_nothing_lost(agent: AgentProc, collectors: list[CollectorProc], rows: list[dict[str, Any]]) -> int:
    """Every sample of ``rows`` (the agent's audit) is in one of the collectors' stores, with its value."""
    have: dict[Any, float] = {}
    for col in collectors:
        have.update(stored(col.db(), agent.node))
    missing = [r for r in rows if _key(agent, r) not in have]
    assert not missing, f"{agent.node}: {len(missing)} of {len(rows)} samples in no store, e.g. {missing[:2]}"
    assert all(have[_key(agent, r)] == r["value"] for r in rows)
    return len(rows)


def _key(agent: AgentProc, row: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...], int]:
    labels = {**row["labels"], "node": agent.node, "cluster": "test", "rack": "r1"}
    return row["name"], tuple(sorted(labels.items())), row["ts_ms"]


@pytest.mark.services
def test_a_paused_collector_is_left_and_its_agents_return_staggered(tmp_path: Path) -> None:
    a = CollectorProc(tmp_path, name="a")
    b = CollectorProc(tmp_path, name="b")
    addrs = [a.addr, b.addr]
    agents = [AgentProc(tmp_path, node, addrs, extra={"failback": FAST_FAILBACK})
              for node in preferring(a.addr, addrs, 3)]
    nodes = {ag.node for ag in agents}
    try:
        a.start()
        b.start()
        for ag in agents:
            ag.start()
        wait_until(lambda: connected(a) >= nodes, 30, "the agents to stream to their preferred collector")
        assert a.proc is not None
        a.proc.signal(signal.SIGSTOP)  # the host is gone: no FIN, no RST, the kernel still ACKs
        wait_until(lambda: connected(b) >= nodes, 30, "the agents to notice and move to the next collector")
        a.proc.signal(signal.SIGCONT)
        wait_until(lambda: connected(a) >= nodes and not connected(b) & nodes, 30,
                   "the agents to move back to their preferred collector")
        for ag in agents:
            assert ag.log_lines(f"collector {a.addr} is healthy again; moving back"), ag.log.read_text()[-2000:]
        # What each agent wrote so far, once stored somewhere (stopping an agent writes one more
        # batch, never sent).
        written = {ag.node: ag.audit_rows() for ag in agents}
        for ag in agents:
            wait_until(partial(_caught_up, ag, [a, b], written[ag.node]), 30, f"{ag.node} to catch up")
    finally:
        if a.proc is not None:
            a.proc.signal(signal.SIGCONT)
        for ag in agents:
            ag.stop()
        a.stop()
        b.stop()
    for ag in agents:
        assert assert_nothing_lost(ag, [a, b], written[ag.node]) > 0


def _caught_up(agent: AgentProc, collectors: list[CollectorProc], rows: list[dict[str, Any]]) -> bool:
    keys: set[Any] = set()
    for col in collectors:
        keys.update(stored(col.db(), agent.node))
    return all(_key(agent, r) in keys for r in rows)


@pytest.mark.services
def test_the_health_check_says_serving_only_while_the_collector_runs(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path, tls=False).start()
    security = ChannelSecurity(None, None)
    try:
        assert asyncio.run(probe(security, col.addr, 5.0))
    finally:
        col.stop()
    assert not asyncio.run(probe(security, col.addr, 1.0))


def test_failback_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="healthy_checks"):
        FailbackConfig(healthy_checks=0).validate()
    with pytest.raises(ValueError, match="check_interval"):
        FailbackConfig(check_interval=0).validate()
