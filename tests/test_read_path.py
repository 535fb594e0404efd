"""The read path through the shared TSDB (issue 14): ``fleetmon query`` and ``/api/v1/query`` read
from VictoriaMetrics' query API when one is configured, raw samples through the embedded store's
reader interface, and any PromQL passed through; without one, or while it does not answer, the
embedded store."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alerts.restore import ForState
from collector.alertstate import PROMETHEUS_STALE_NAN
from collector.storage.base import Point
from tests.fleet import CollectorProc
from tests.influx_servers import remote_write, start_victoria_metrics, vm_export
from tests.services import REPO, free_port

pytestmark = pytest.mark.services

@dataclass
class Tsdb:
    url: str
    #: Two nodes' GPU temperatures, 10 samples each a second apart, written just before the
    #: module's tests; node b's series ends with a stale marker.
    samples: dict[tuple[str, str], list[tuple[int, float]]]


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsdb]:
    proc, url = start_victoria_metrics(tmp_path_factory.mktemp("vm"), extra=["-dedup.minScrapeInterval=1ms"])
    now = int(time.time())
    samples = {("a", "0"): [(now - 20 + i, 60.0 + i) for i in range(10)],
               ("b", "1"): [(now - 20 + i, 70.0 + i) for i in range(10)]}
    try:
        points = [Point("gpu", "temperature_celsius", (("gpu", gpu), ("node", node)), v, t * 10**9)
                  for (node, gpu), rows in samples.items() for t, v in rows]
        points.append(Point("gpu", "temperature_celsius", (("gpu", "1"), ("node", "b")), PROMETHEUS_STALE_NAN,
                            (now - 10) * 10**9))
        remote_write(url, points)
        vm_export(url, "gpu_temperature_celsius", samples=21)
        yield Tsdb(url, samples)
    finally:
        proc.stop()


def fleetmon_query(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetmon", "query", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def points(out: str) -> dict[str, list[list[float]]]:
    """``fleetmon query --format json`` lines by node: [[t, v], …]."""
    got = {}
    for line in out.splitlines():
        item = json.loads(line)
        got[item["metric"]["node"]] = [[float(t), float(v)] for t, v in item["values"]]
    return got


def written(vm: Tsdb) -> dict[str, list[list[float]]]:
    return {node: [[float(t), v] for t, v in pts] for (node, _gpu), pts in vm.samples.items()}


def get(col: CollectorProc, path: str, **q: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"{col.http}{path}?{urllib.parse.urlencode(q)}", timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def test_a_collector_answers_for_the_whole_fleet_from_the_query_api(tmp_path: Path, vm: Tsdb) -> None:
    # No agent streams to this collector: what it answers is the fleet's, read from
    # VictoriaMetrics and evaluated by its own PromQL engine.
    col = CollectorProc(tmp_path, tls=False, extra={"query": {"url": vm.url}}).start()
    try:
        # The stored samples, each once, in order; b's stale marker ends its series, it is no sample.
        got = fleetmon_query("--url", col.http, "--format", "json", "gpu_temperature_celsius[5m]")
        assert got.returncode == 0, got.stderr
        assert points(got.stdout) == written(vm)
        # Any PromQL, over a range.
        got = fleetmon_query("--url", col.http, "--since", "3m", "--step", "10s", "--format", "json",
                             "max by (node) (gpu_temperature_celsius) * 2")
        assert got.returncode == 0, got.stderr
        answer = points(got.stdout)
        assert set(answer) == {"a", "b"} and all(v % 2 == 0 and 120 <= v <= 158 for _t, v in answer["a"])
        # The dashboard's stored-samples form reads the same (b's end, the stale marker, is a "NaN":
        # a gap in its plot).
        status, rows = get(col, "/api/v1/query", selector="gpu_temperature_celsius", since="5m")
        assert status == 200
        assert {r["labels"]["node"]: [[t, v] for t, v in r["values"] if v != "NaN"] for r in rows} == written(vm)
    finally:
        col.stop()


def test_fleetmon_query_passes_promql_through_to_the_tsdb(vm: Tsdb) -> None:
    got = fleetmon_query("--url", vm.url, "--format", "json", "gpu_temperature_celsius[5m]")
    assert got.returncode == 0, got.stderr
    # VictoriaMetrics answers a range selector with what it stores: b's stale marker too, as NaN.
    answer = points(got.stdout)
    assert math.isnan(answer["b"][-1][1])
    assert {node: pts[:-1] if node == "b" else pts for node, pts in answer.items()} == written(vm)
    got = fleetmon_query("--url", vm.url, "--format", "json", 'count(gpu_temperature_celsius{node="a"})')
    assert got.returncode == 0, got.stderr


def test_the_store_answers_while_the_query_api_does_not(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path, tls=False, extra={"query": {"url": f"http://127.0.0.1:{free_port()}"}}).start()
    try:
        status, body = get(col, "/api/v1/query", query="gpu_temperature_celsius[5m]")
        assert (status, body["data"]["result"]) == (200, [])
        status, rows = get(col, "/api/v1/query", selector="gpu_temperature_celsius", since="5m")
        assert (status, rows) == (200, [])
        assert "query API" in col.log.read_text() and "own store instead" in col.log.read_text()
    finally:
        col.stop()


def test_a_stale_marker_ends_an_alert_for_the_restore(vm: Tsdb) -> None:
    """What the hand-over reads: the last ALERTS_FOR_STATE sample of each alert, a stale marker
    for an alert that ended (Prometheus's bit pattern survives the trip through VictoriaMetrics)."""
    from collector.handover import TsdbHistory  # noqa: PLC0415 - only this test reads the state
    from collector.promquery import PromQueryClient, QueryConfig  # noqa: PLC0415

    now = int(time.time())
    a, b = (("alertname", "A"), ("node", "c")), (("alertname", "B"), ("node", "c"))
    remote_write(vm.url, [Point("ALERTS", "FOR_STATE", a, float(now - 60), (now - 5) * 10**9),
                          Point("ALERTS", "FOR_STATE", b, float(now - 60), (now - 6) * 10**9),
                          Point("ALERTS", "FOR_STATE", b, PROMETHEUS_STALE_NAN, (now - 5) * 10**9)])
    vm_export(vm.url, "ALERTS_FOR_STATE", samples=3)

    async def go() -> dict[str, list[ForState]]:
        client = PromQueryClient(QueryConfig(url=vm.url))
        try:
            return await TsdbHistory(client, 3600).for_state(["c"], time.time())
        finally:
            await client.aclose()

    got = {dict(r.labels)["alertname"]: r for r in asyncio.run(go())["c"]}
    assert got["A"].active_at == now - 60 and got["A"].ts_ms == (now - 5) * 1000 and not got["A"].stale
    assert got["B"].stale and math.isnan(got["B"].active_at)
