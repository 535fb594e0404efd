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
