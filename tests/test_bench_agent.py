"""bench/bench_agent.py's stream floor: the libraries the agent streams with, at its cadence and
without its code. It must really stream, or the agent's cost above it would be overstated."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fleet import CollectorProc
from tests.services import bench_script, wait_until


@pytest.mark.services
def test_the_stream_floor_streams_to_a_collector_and_applies_its_acks(tmp_path: Path) -> None:
    bench = bench_script("bench_agent")
    col = CollectorProc(tmp_path).start()
    try:
        proc = bench.start_in_use(col)
        try:

            def stored() -> int:
                return sum(n["samples"] for n in col.get("/api/v1/nodes") if n["node"] == "floor")

            # Two batches of the agent's size, each stored by the collector.
            wait_until(lambda: stored() >= 2 * bench.IN_USE_SAMPLES, 60, "the floor's batches stored")
        finally:
            rss, unacked = bench.stop_in_use(proc)
        assert stored() % bench.IN_USE_SAMPLES == 0  # whole batches, as sent
        assert unacked == 0  # every batch it stored in its WAL was acked, and deleted
        assert rss > 10  # an interpreter with the libraries loaded, not a figure from nowhere
    finally:
        col.stop()


def test_agent_ab_builds_side_b_from_the_benchmarks_plugins() -> None:
    ab = bench_script("agent_ab")
    b = ab.plugins_with({"nvidia": None, "optics": {"interval": 5}, "simulated": {"gpus": 1}})
    assert "nvidia" not in b  # null drops a plugin
    assert b["optics"] == {"interval": 5}  # merged over the benchmark's section
    assert b["simulated"] == {"gpus": 1}  # a plugin the benchmark lacks is added
    assert b["kmsg"] == ab.PLUGINS["kmsg"] and "nvidia" in ab.PLUGINS  # A's sections untouched


@pytest.mark.services
def test_agent_ab_measures_two_agents_streaming_at_once() -> None:
    ab = bench_script("agent_ab")
    tree = ab.FIXTURES / "sysfs" / "node-exporter" / "sys"
    # B without the nvidia plugin: both start, both stream to the collector (the pair waits for
    # two nodes up), both are measured over the same window and are alive at its end.
    result = ab.pair(({}, {}, ab.REPO), ({"nvidia": None}, {}, ab.REPO), tree=tree, seconds=5.0,
                     warmup=0.0, latency_us=0)
    # Each ran its own plugins: over 4-6 batches A's carry the 8 fake GPUs' ~200 samples a cycle,
    # B's (kmsg, optics, power: ~70 a cycle) do not.
    assert result.samples_a > result.samples_b + 100
    assert result.samples_b > 0
