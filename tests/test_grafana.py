"""Every Grafana panel's query returns data on the real server its dashboard is for.

fleetmon-shaped history (the simulated plugin with scripted faults, three nodes in two clusters
and racks, two hours at one-minute steps, encoded as the agent encodes line protocol) is written to
a real influxd and a real VictoriaMetrics; then every target of ``deploy/grafana/*.json`` is run
with Grafana's macros filled in as Grafana would (all clusters and racks selected).
"""

from __future__ import annotations

import json
import time
import types
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import agent.plugins.simulated.plugin as sim
from agent.model import Metric, MetricType
from agent.output import to_influx
from agent.plugin import PluginContext
from agent.scheduler import add_self_metrics
from tests.influx_servers import Server, influx_create_database, influx_query, influxd, victoria_metrics, vm_flush

pytestmark = pytest.mark.services
_ = (influxd, victoria_metrics)  # module fixtures, used by name below
GRAFANA = Path(__file__).resolve().parents[1] / "deploy" / "grafana"
DB = "fleetmon"
WAL_BYTES = Metric("fleetmon_agent", "wal_bytes", MetricType.GAUGE, "Bytes of unacked batches in the WAL", "bytes")
NODES = {  # node -> identity labels and its fault script (minutes from the start of the history)
    "n1": ({"cluster": "c1", "rack": "r1"}, [
        {"at": "20m", "for": "10m", "kind": "xid", "gpu": 1, "xid": 79},
        {"at": "30m", "for": "30m", "kind": "rx_power", "port": 0, "lane": 1, "value": -10.0},
        {"at": "40m", "for": "5m", "kind": "link_down", "port": 0},
        {"at": "60m", "for": "10m", "kind": "ups_on_battery"}]),
    "n2": ({"cluster": "c1", "rack": "r2"}, [{"at": "50m", "kind": "xid", "gpu": 0, "xid": 48}]),
    "n3": ({"cluster": "c2", "rack": "r2"}, []),
}
STEPS = 120  # one-minute steps: the last two hours


def history(monkeypatch: pytest.MonkeyPatch) -> str:
    start = (time.time() // 60 - STEPS) * 60
    clock = [start]
    monkeypatch.setattr(sim, "time", types.SimpleNamespace(time=lambda: clock[0]))
    lines: list[str] = []
    for node, (labels, faults) in NODES.items():
        plugin = sim.SimulatedPlugin(PluginContext(node=node), sim.SimulatedConfig(
            gpus=2, ib_ports=1, lanes=2, faults=faults))
        plugin.discover()
        for step in range(STEPS):
            clock[0] = ts = start + 60 * step
            col = plugin.collect()
            add_self_metrics(col, "simulated", True, 0.01)
            col.append(WAL_BYTES.sample(4096.0 * (step % 7)))
            lines.append(to_influx(ts, col, {**labels, "node": node}))
    return "".join(lines)


def _post(url: str, body: str) -> None:
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 204


def _get(url: str, params: dict[str, str]) -> Any:
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(params)}", timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def loaded(influxd: Server, victoria_metrics: Server) -> tuple[str, str]:
    mp = pytest.MonkeyPatch()
    try:
        body = history(mp)
    finally:
        mp.undo()
    influx_create_database(influxd.url, DB)
    _post(f"{influxd.url}/write?db={DB}&precision=ns", body)
    _post(f"{victoria_metrics.url}/write", body)  # VictoriaMetrics takes the same line protocol
    vm_flush(victoria_metrics.url)
    deadline = time.monotonic() + 30
    while not _get(f"{victoria_metrics.url}/api/v1/series", {"match[]": "gpu_up"})["data"]:
        assert time.monotonic() < deadline, "VictoriaMetrics did not index the history"
        vm_flush(victoria_metrics.url)
        time.sleep(0.2)
    return influxd.url, victoria_metrics.url


def _dashboard(name: str) -> dict[str, Any]:
    return json.loads((GRAFANA / name).read_text())


def _targets(dash: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p['title']} [{t['refId']}]", t) for p in dash["panels"] for t in p["targets"]]


def _influxql(q: str) -> str:
    # Grafana with every cluster/rack selected: a regex of all values; the time picker: the history.
    return (q.replace("$timeFilter", "time > now() - 3h").replace("$__interval", "5m")
            .replace("$cluster", "(c1|c2)").replace("$rack", "(r1|r2)"))


def _promql(q: str) -> str:
    return (q.replace("$cluster", ".*").replace("$rack", ".*").replace("$__rate_interval", "5m")
            .replace("$__range", "3h").replace("$__interval", "1m"))


def test_influxql_dashboard_every_panel_has_data(loaded: tuple[str, str]) -> None:
    url, _vm = loaded
    dash = _dashboard("fleetmon-fleet.json")
    assert all(p["datasource"]["type"] == "influxdb" for p in dash["panels"])
    empty = []
    for what, target in _targets(dash):
        series = influx_query(url, _influxql(target["query"]), DB)
        if not any(v is not None for s in series for row in s["values"] for v in row[1:]):
            empty.append(what)
    assert empty == [], f"panels without data: {empty}"
    for var in dash["templating"]["list"][1:]:
        values = {row[1] for s in influx_query(url, _influxql(var["query"]), DB) for row in s["values"]}
        assert values == {"cluster": {"c1", "c2"}, "rack": {"r1", "r2"}}[var["name"]]


def test_prometheus_dashboard_every_panel_has_data(loaded: tuple[str, str]) -> None:
    _influx, url = loaded
    dash = _dashboard("fleetmon-fleet-prometheus.json")
    assert all(p["datasource"]["type"] == "prometheus" for p in dash["panels"])
    now = time.time()
    empty = []
    for what, target in _targets(dash):
        q = _promql(target["expr"])
        if target.get("instant"):
            doc = _get(f"{url}/api/v1/query", {"query": q, "time": str(now)})
            values = [r["value"][1] for r in doc["data"]["result"]]
        else:
            doc = _get(f"{url}/api/v1/query_range", {"query": q, "start": str(now - 3 * 3600), "end": str(now),
                                                     "step": "60"})
            values = [v[1] for r in doc["data"]["result"] for v in r["values"]]
        assert doc["status"] == "success", (what, doc)
        if not [v for v in values if v not in ("NaN", "0")]:
            empty.append(what)
    assert empty == [], f"panels without data: {empty}"
    for var in dash["templating"]["list"][1:]:
        # label_values(selector, label) is Grafana's; the data source asks /api/v1/label/<label>/values
        inner = _promql(var["query"])[len("label_values("):-1]
        selector, _, label = inner.rpartition(",")
        doc = _get(f"{url}/api/v1/label/{label.strip()}/values", {"match[]": selector.strip()})
        assert set(doc["data"]) == {"cluster": {"c1", "c2"}, "rack": {"r1", "r2"}}[var["name"]]
