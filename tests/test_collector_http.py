"""The collector's HTTP side against a real collector with real agents: the JSON API (node
health roll-up, alerts with their action and ``for``, history, queries), every endpoint's
answer to bad parameters (400 with a JSON error, never 500), and ``/metrics`` through
prometheus_client, linted by promtool and scraped by a real Prometheus."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fleet import CollectorProc, lost_gpu_pair, metric_value
from tests.services import free_port, require_binary, running, wait_for_http, wait_until

RULES = """
groups:
  - name: http-test
    rules:
      - alert: GPULostNow
        expr: gpu_up == 0
        labels: {severity: critical}
        annotations:
          summary: "GPU {{ $labels.gpu }} on {{ $labels.node }} is lost"
          runbook_action: "Drain {{ $labels.node }} and reboot it"
      - alert: SlowToFire
        expr: gpu_temperature_celsius{node="n1", gpu="0"} > 0
        for: 1h
        labels: {severity: warning}
        annotations: {summary: "always pending", runbook_action: "Nothing to do"}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProc]:
    """n1: GPU 1 off the bus (XID 79) and a pending alert; n2: healthy. The sink points at a
    port where nothing listens, so the spool holds what it acked and the sink lags."""
    tmp = tmp_path_factory.mktemp("http")
    (tmp / "rules.yml").write_text(RULES)
    sink = {"type": "influxdb_v1", "url": f"http://127.0.0.1:{free_port()}", "database": "fleet"}
    collector = CollectorProc(tmp, rules=[tmp / "rules.yml"], extra={"sinks": {"down": sink}}).start()
    agents = lost_gpu_pair(tmp, collector)
    try:
        for a in agents:
            a.start()
        wait_until(lambda: {a["name"] for a in collector.get("/api/v1/alerts")} == {"GPULostNow", "SlowToFire"}, 30,
                   "both alerts")
        wait_until(lambda: collector.get("/api/v1/summary")["nodes_up"] == 2, 30, "both nodes up")
        # n1's XID batch leaves its agent at once, so the alerts can be in before n2's first batch.
        wait_until(lambda: all(n["accelerators"] for n in collector.get("/api/v1/nodes")), 30, "both nodes' GPUs")
        yield collector
    finally:
        for a in agents:
            a.stop()
        collector.stop()


def _request(url: str, method: str = "GET") -> tuple[int, str, Any]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get_content_type(), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers.get_content_type(), json.loads(err.read())


# (path and query, the parameter the error must name)
BAD = [
    ("/api/v1/events?since=abc", "since"),
    ("/api/v1/events?since=nan", "since"),
    ("/api/v1/events?since=-5", "since"),
    ("/api/v1/events?since=2024-13-45T00:00:00Z", "since"),
    ("/api/v1/events?since=2024-05-01T12:00:00", "since"),  # no time zone
    ("/api/v1/events?limit=0", "limit"),
    ("/api/v1/events?limit=many", "limit"),
    ("/api/v1/events?limit=100000", "limit"),
    ("/api/v1/events?since=1h&since=2h", "since"),
    ("/api/v1/events?sinse=1h", "sinse"),
    ("/api/v1/alerts/transitions?since=yesterday", "since"),  # local time: the command line's, not the API's
    ("/api/v1/alerts/transitions?limit=-1", "limit"),
    ("/api/v1/alerts?state=burning", "state"),
    ("/api/v1/alerts?severity=critical", "severity"),
    ("/api/v1/nodes?health=sick", "health"),
    ("/api/v1/nodes/n1?verbose=1", "verbose"),
    ("/api/v1/summary?x=1", "x"),
    ("/api/v1/query", "query"),
    ("/api/v1/query?selector=", "selector"),
    ("/api/v1/query?selector=gpu_up{node=n1}", "selector"),
    ("/api/v1/query?selector=gpu_up&since=inf", "since"),
    ("/api/v1/query?selector=gpu_up&until=soon", "until"),
    ("/api/v1/query?selector=gpu_up&since=1m&until=1h", "since"),  # since after until
    ("/api/v1/query?selector=gpu_up&step=0", "step"),
    ("/api/v1/query?selector=gpu_up&step=fast", "step"),
    ("/api/v1/query?selector=gpu_up&since=30d&step=1s", "step"),  # millions of points
]


@pytest.mark.services
def test_bad_parameters_are_400_with_a_json_error(fleet: CollectorProc) -> None:
    for path, parameter in BAD:
        status, ctype, body = _request(fleet.http + urllib.parse.quote(path, safe="/?=&:"))
        assert (status, ctype) == (400, "application/json"), (path, status, body)
        assert body["parameter"] == parameter and body["error"].startswith(f"{parameter}: "), (path, body)
    # The case by name: once a 500 with a traceback in the log.
    status, _, body = _request(fleet.http + "/api/v1/events?since=abc")
    assert status == 400 and "unix seconds, RFC 3339" in body["error"]
    assert "Traceback" not in fleet.log.read_text()


@pytest.mark.services
def test_unknown_paths_and_methods_answer_json(fleet: CollectorProc) -> None:
    assert _request(fleet.http + "/api/v1/nodez")[:2] == (404, "application/json")
    status, _, body = _request(fleet.http + "/api/v1/nodes/nope")
    assert status == 404 and body["error"] == "node 'nope' is not known to this collector"
    assert _request(fleet.http + "/api/v1/nodes", method="POST")[:2] == (405, "application/json")


@pytest.mark.services
def test_nodes_roll_up_health_with_reasons_and_accelerators(fleet: CollectorProc) -> None:
    nodes = {n["node"]: n for n in fleet.get("/api/v1/nodes")}
    model = {"vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3 (simulated)"}
    n1, n2 = nodes["n1"], nodes["n2"]
    assert (n1["health"], n1["reasons"]) == ("failed", ["GPU 1 down", "critical alert GPULostNow firing",
                                                        "alert SlowToFire pending"])
    assert n1["accelerators"] == [{**model, "up": 1, "total": 2}]
    assert n1["alerts"] == {"firing": 1, "pending": 1}
    assert (n2["health"], n2["reasons"], n2["accelerators"]) == ("healthy", [], [{**model, "up": 2, "total": 2}])
    assert [n["node"] for n in fleet.get("/api/v1/nodes?health=failed")] == ["n1"]
    assert fleet.get("/api/v1/nodes?health=degraded") == []

    s = fleet.get("/api/v1/summary")
    assert s["health"] == {"failed": 1, "degraded": 0, "healthy": 1}
    assert s["models"] == [{**model, "nodes": {"failed": 1, "degraded": 0, "healthy": 1}, "up": 3, "total": 4}]

    detail = fleet.get("/api/v1/nodes/n1")
    assert [(d["gpu"], d["up"]) for d in detail["devices"]] == [("0", True), ("1", False)]
    assert all(d["uuid"].endswith("-sim") and d["model"] == model["model"] for d in detail["devices"])
    assert sorted(a["name"] for a in detail["active_alerts"]) == ["GPULostNow", "SlowToFire"]


@pytest.mark.services
def test_alerts_carry_their_action_and_for(fleet: CollectorProc) -> None:
    alerts = {a["name"]: a for a in fleet.get("/api/v1/alerts")}
    lost, slow = alerts["GPULostNow"], alerts["SlowToFire"]
    assert (lost["state"], lost["severity"], lost["node"], lost["for"]) == ("firing", "critical", "n1", 0.0)
    assert lost["action"] == "Drain n1 and reboot it" and lost["summary"] == "GPU 1 on n1 is lost"
    assert lost["labels"]["gpu"] == "1" and lost["fires_at"] is None
    assert (slow["state"], slow["for"], slow["action"]) == ("pending", 3600.0, "Nothing to do")
    assert slow["fires_at"] == pytest.approx(slow["active_at"] + 3600)
    assert [a["name"] for a in fleet.get("/api/v1/alerts?state=firing")] == ["GPULostNow"]
    assert fleet.get("/api/v1/alerts?node=n2") == []

    history = fleet.get("/api/v1/alerts/transitions?node=n1")
    assert {(t["name"], t["state"]) for t in history} >= {("GPULostNow", "firing"), ("SlowToFire", "pending")}
    assert [t["action"] for t in history if t["name"] == "GPULostNow"] == ["Drain n1 and reboot it"]
    assert len(fleet.get("/api/v1/alerts/transitions?limit=1")) == 1


@pytest.mark.services
def test_query_takes_human_times_and_a_step(fleet: CollectorProc) -> None:
    sel = urllib.parse.quote('gpu_temperature_celsius{node="n2",gpu="0"}')
    start = datetime.fromtimestamp(time.time() - 120, tz=UTC).isoformat().replace("+00:00", "Z")
    wait_until(lambda: len(fleet.get(f"/api/v1/query?selector={sel}&since=1m")[0]["values"]) >= 8, 30,
               "four seconds of samples")
    raw = fleet.get(f"/api/v1/query?selector={sel}&since=1m")[0]["values"]
    for since in ("2m", start, str(time.time() - 120)):
        [row] = fleet.get(f"/api/v1/query?selector={sel}&since={urllib.parse.quote(since)}")
        assert row["labels"]["node"] == "n2" and row["values"][:len(raw)] == raw
    [stepped] = fleet.get(f"/api/v1/query?selector={sel}&since=1m&step=2s")
    slots = [int(t // 2) for t, _ in stepped["values"]]
    assert len(set(slots)) == len(slots) and len(slots) < len(raw)
    # The last sample of each slot: every point kept is a stored one.
    assert all(p in raw for p in stepped["values"])


@pytest.mark.services
def test_metrics_pass_promtool_and_say_what_the_collector_does(fleet: CollectorProc) -> None:
    promtool = require_binary("promtool")
    text = fleet.metrics()
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout + res.stderr) == (0, "")

    def value(name: str, labels: str = "") -> float:
        return metric_value(text, name, labels)

    assert value("fleetmon_collector_samples_total") > 0
    assert value("fleetmon_collector_streams") == 2
    assert value("fleetmon_collector_refused_total", 'what="batch"') == 0
    assert value("fleetmon_collector_duplicates_total", 'kind="sample"') == 0
    assert value("fleetmon_node_up", 'node="n1"') == value("fleetmon_node_up", 'node="n2"') == 1
    assert value("fleetmon_node_last_seen_timestamp_seconds", 'node="n2"') > time.time() - 30
    assert value("fleetmon_collector_nodes", 'health="failed"') == 1
    model = 'model="NVIDIA H100 80GB HBM3 (simulated)"'
    assert value("fleetmon_collector_accelerators", f'{model},state="down",vendor="nvidia"') == 1
    assert value("fleetmon_collector_accelerators", f'{model},state="up",vendor="nvidia"') == 3
    log = 'notifier="log",target="fleetmon.alerts"'
    assert value("fleetmon_notifier_sent_total", log) >= 1  # the firing alert, at least
    assert value("fleetmon_notifier_queue_capacity", log) > 0
    assert value("fleetmon_notifier_failed_total", log) == 0
    group = f'file="{fleet.tmp / "rules.yml"}",rule_group="http-test"'
    assert value("fleetmon_rule_group_evaluations_total", group) > 0
    assert value("fleetmon_rule_group_rules", group) == 2
    assert value("fleetmon_rule_group_failing_rules", group) == 0
    assert value("fleetmon_rule_group_last_duration_seconds", group) > 0
    assert value("fleetmon_rule_group_iterations_missed_total", group) >= 0
    assert value("process_resident_memory_bytes") > 0
    # Nothing reaches the sink: what it acked waits in the spool, and the sink's lag grows.
    wait_until(lambda: metric_value(fleet.metrics(), "fleetmon_sink_lag_seconds", 'sink="down"') > 1, 30,
               "the sink to lag")
    later = fleet.metrics()
    assert metric_value(later, "fleetmon_spool_batches") > 0 and metric_value(later, "fleetmon_spool_bytes") > 0
    assert metric_value(later, "fleetmon_sink_failed_writes_total", 'sink="down"') > 0


@pytest.mark.services
def test_prometheus_scrapes_the_collector(fleet: CollectorProc, tmp_path: Path) -> None:
    """Prometheus asks for OpenMetrics first; whatever the collector answers must scrape clean."""
    prometheus = require_binary("prometheus")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "collector",
                            "static_configs": [{"targets": [fleet.http.removeprefix("http://")]}]}],
    }))
    argv = [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    with running(argv, tmp_path / "prometheus.log") as proc:
        wait_for_http(f"http://127.0.0.1:{port}/-/ready", proc=proc.proc, ok=lambda code: code == 200)

        def query(q: str) -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            with urllib.request.urlopen(url, timeout=10) as resp:
                result: list[dict[str, Any]] = json.loads(resp.read())["data"]["result"]
            return result

        [streams] = wait_until(lambda: query('fleetmon_collector_streams{job="collector"}'), 30, "a scrape")
        assert streams["value"][1] == "2"
        assert {r["metric"]["node"] for r in query("fleetmon_node_up == 1")} == {"n1", "n2"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=10) as resp:
            [target] = json.loads(resp.read())["data"]["activeTargets"]
        assert (target["health"], target["lastError"]) == ("up", "")
