"""A ``node_timeout`` shorter than the agents' batch interval (collector/liveness.py): every node
would go down between two batches; the collector says so once, with the figures."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from collector.liveness import STREAK, QuietStreams
from tests.services import Process, free_port, wait_for_port, wait_until


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fleetmon.collector.liveness"]


def test_downs_on_one_open_stream_warn_once_and_outages_do_not(caplog: pytest.LogCaptureFixture) -> None:
    q = QuietStreams(node_timeout=5)
    with caplog.at_level(logging.WARNING, logger="fleetmon.collector.liveness"):
        # A real outage: the stream ended, the node reconnected. Then a stall on a stream, once.
        q.went_down("n1", False, 100.0, 104.0)
        q.came_back("n1", 130.0, 131.0)
        q.went_down("n1", True, 130.0, 131.0)
        q.came_back("n1", 130.0, 150.0)
        # A reconnect between two downs starts the count again.
        q.went_down("n1", True, 130.0, 150.0)
        q.came_back("n1", 160.0, 161.0)
        assert _warnings(caplog) == []
        # A slow cadence: down between every two batches on one stream.
        for k in range(STREAK):
            q.went_down("n2", True, 200.0, 200.0 + 10 * k)
            q.came_back("n2", 200.0, 210.0 + 10 * k)
        q.went_down("n3", True, 300.0, 300.0)
        for k in range(STREAK + 2):
            q.went_down("n3", True, 300.0, 300.0 + 10 * k)
            q.came_back("n3", 300.0, 310.0 + 10 * k)
    got = _warnings(caplog)
    assert len(got) == 1, got
    assert got[0].startswith(f"node n2: counted down {STREAK} times in a row while its stream stayed open "
                             "(10.0s between its last two batches, node_timeout 5s)")


@pytest.mark.services
@pytest.mark.parametrize("process", [True, False], ids=["rules-process", "rules-in-collector"])
def test_a_collector_says_when_node_timeout_is_shorter_than_the_batch_interval(
        tmp_path: Any, fleetmon_cmd: list[str], process: bool) -> None:
    grpc_port, http_port = free_port(), free_port()
    (tmp_path / "collector.yml").write_text(f"""
data_dir: {tmp_path / "collector"}
listen: 127.0.0.1:{grpc_port}
http: 127.0.0.1:{http_port}
node_timeout: 1
alerting: {{process: {str(process).lower()}, notifiers: {{log: {{}}}}}}
""")
    (tmp_path / "agent.yml").write_text(f"""
collectors: ["127.0.0.1:{grpc_port}"]
data_dir: {tmp_path / "agent"}
node: slow-node
batch_interval: 2.5
plugins:
  simulated: {{gpus: 1, interval: 1}}
""")
    collector = Process([*fleetmon_cmd, "collector", "--config", str(tmp_path / "collector.yml")],
                        tmp_path / "collector.log")
    agent = None
    try:
        wait_for_port(grpc_port, timeout=60, proc=collector.proc)
        agent = Process([*fleetmon_cmd, "agent", "--config", str(tmp_path / "agent.yml")], tmp_path / "agent.log")
        text = wait_until(lambda: "counted down" in collector.log_text() and collector.log_text(), 90,
                          "the collector's warning about node_timeout")
    finally:
        if agent is not None:
            agent.stop()
        collector.stop()
    lines = [ln for ln in str(text).splitlines() if "counted down" in ln]
    assert len(lines) == 1, lines
    assert "node slow-node: counted down 3 times in a row" in lines[0]
    assert "node_timeout 1s" in lines[0] and "raise node_timeout" in lines[0]
