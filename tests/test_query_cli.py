"""``fleetmon query`` (and ``status``/``top``) against a real collector with two simulated
agents: PromQL over HTTP where the data is, or over the data dir; the same answers either way;
human times; a table; a closed pipe; finding the collector unasked; a protected API."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.queryout import human
from collector.storage.logreader import LogStoreReader
from fleetmon import cli
from tests.fleet import AgentProc, CollectorProc, lab_pki
from tests.services import REPO, wait_until

pytestmark = pytest.mark.services
TOKEN = "q7-token-4f1c9a"
STEP_S = 1


class Fleet:
    def __init__(self, tmp: Path, collector: CollectorProc) -> None:
        self.tmp = tmp
        self.collector = collector
        self.run_dir = tmp / "run"
        self.token_file = tmp / "token"
        # A past window every sample of which is stored (set once the fleet has history).
        self.start = self.end = 0

    def api(self, path: str, **query: str) -> tuple[int, Any]:
        url = self.collector.http + path + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())

    @property
    def window(self) -> list[str]:
        return ["--since", _rfc3339(self.start), "--until", _rfc3339(self.end), "--step", f"{STEP_S}s"]


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("query")
    (tmp / "token").write_text(TOKEN + "\n")
    collector = CollectorProc(tmp, tls=False, extra={"http_auth": {"token": {"file": str(tmp / "token")}}})
    f = Fleet(tmp, collector)
    with pytest.MonkeyPatch.context() as mp:  # the collector registers itself in the test's own folder
        mp.setenv("FLEETMON_RUNTIME_DIR", str(f.run_dir))
        collector.start()
    # Named as the demo names its nodes: the README's examples run on this fleet as printed.
    agents = [AgentProc(tmp, n, [collector.addr], tls=False).start() for n in ("node-01", "node-02")]
    try:
        def seconds_stored() -> float:
            _, doc = f.api("/api/v1/query", query="min(count_over_time(gpu_temperature_celsius[1m]))")
            result = doc["data"]["result"]
            return float(result[0]["value"][1]) / 2 if result else 0.0  # a sample every 0.5 s

        wait_until(lambda: seconds_stored() >= 7, 60, "7 s of samples from every GPU")
        # A 4-second window ending a second or two ago (batches leave the agents every 0.5 s, so all
        # of it is stored) and starting after every series' first sample.
        f.end = int(time.time()) - 1
        f.start = f.end - 4
        yield f
    finally:
        for a in agents:
            a.stop()
        collector.stop()


@pytest.fixture
def run(fleet: Fleet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``fleetmon ARGS`` in this process: (exit code, stdout, stderr). It finds the fleet's
    collector as a user's shell would (its runtime folder), with the token in the environment."""
    monkeypatch.setenv("FLEETMON_RUNTIME_DIR", str(fleet.run_dir))
    monkeypatch.setenv("FLEETMON_TOKEN", TOKEN)
    monkeypatch.delenv("FLEETMON_URL", raising=False)
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            rc = cli.main(list(args))
        finally:
            root.handlers[:], level = saved
            root.setLevel(level)
        out, err = capsys.readouterr()
        return rc, out, err

    return call


EXPRS = ['max by (node) (gpu_temperature_celsius)', 'gpu_power_watts{gpu="0"}',
         'sum by (node) (rate(ib_port_receive_bytes_total[2s]))']


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_over_http_and_over_the_data_dir_the_same_answer(fleet: Fleet, run: Any, fmt: str) -> None:
    data_dir = str(fleet.collector.data_dir)
    for expr in EXPRS:
        rc, http, err = run("query", expr, *fleet.window, "--format", fmt)  # found: the running collector's API
        assert (rc, err) == (0, ""), expr
        rc, local, err = run("query", expr, *fleet.window, "--format", fmt, "--data-dir", data_dir)
        assert (rc, err) == (0, ""), expr
        assert http == local and http.count("\n") >= 2, (expr, http, local)
    instant = ['gpu_temperature_celsius{gpu="0"}[3s]', "count(gpu_up)", "topk(2, gpu_power_watts)"]
    for expr in instant:
        at = ["--at", _rfc3339(fleet.end), "--format", fmt]
        assert run("query", expr, *at) == run("query", expr, *at, "--data-dir", data_dir), expr


def _csv(text: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        out.setdefault(row["name"] + row["labels"], []).append((float(row["time"]), float(row["value"])))
    return out


def test_the_table_folds_every_point_of_a_series_into_one_row(fleet: Fleet, run: Any) -> None:
    expr = 'gpu_temperature_celsius{node="node-01"}'
    rc, table, _ = run("query", expr, *fleet.window)
    rc2, raw, _ = run("query", expr, *fleet.window, "--format", "csv")
    assert rc == rc2 == 0
    points = _csv(raw)
    heading, columns, *rows = table.replace(",\n", ", ").splitlines()  # a long heading takes two lines
    assert heading.startswith('2 series of gpu_temperature_celsius{cluster="test", model=') and "every 1s" in heading
    assert columns.split() == ["gpu", "uuid", "first", "last", "min", "max", "avg", "count", "trend"]
    assert [r.split()[0] for r in rows] == ["0", "1"]  # one row per series, by GPU
    for row, (_series, pts) in zip(rows, sorted(points.items(), key=lambda kv: 'gpu="1"' in kv[0]), strict=True):
        cells = row.split()
        vals = [v for _t, v in pts]
        assert cells[2:8] == [human(vals[0]), human(vals[-1]), human(min(vals)), human(max(vals)),
                              human(sum(vals) / len(vals)), str(len(vals))]
        assert len(vals) == (fleet.end - fleet.start) // STEP_S + 1  # a value at every step
        assert len(cells) == 9 and set(cells[8]) <= set("▁▂▃▄▅▆▇█")


def test_a_range_selector_gives_the_stored_samples(fleet: Fleet, run: Any) -> None:
    rc, out, _ = run("query", 'gpu_temperature_celsius{node="node-01",gpu="0"}[3s]', "--at", _rfc3339(fleet.end),
                     "--format", "csv")
    assert rc == 0
    [got] = _csv(out).values()
    reader = LogStoreReader(fleet.collector.data_dir)
    try:
        [row] = [r for r in reader.find_series("gpu_temperature_celsius", [])
                 if r.labels["node"] == "node-01" and r.labels["gpu"] == "0"]
        [(_r, ts, vals)] = list(reader.query([row], (fleet.end - 3) * 1000, fleet.end * 1000))
    finally:
        reader.close()
    assert got == [(t / 1000, v) for t, v in zip(ts.tolist(), vals.tolist(), strict=True)] and len(got) >= 5


def test_promql_aggregates_as_prometheus_does(fleet: Fleet, run: Any) -> None:
    at = ["--at", _rfc3339(fleet.end), "--format", "json"]
    _, each, _ = run("query", "gpu_temperature_celsius", *at)
    _, by_node, _ = run("query", "max by (node) (gpu_temperature_celsius)", *at)
    temps = [json.loads(line) for line in each.splitlines()]
    want: dict[str, float] = {}
    for s in temps:
        want[s["metric"]["node"]] = max(want.get(s["metric"]["node"], -1e9), s["value"][1])
    assert {json.loads(line)["metric"]["node"]: json.loads(line)["value"][1] for line in by_node.splitlines()} == want
    _, count, _ = run("query", "count(gpu_up == 1)", *at)
    assert json.loads(count)["value"][1] == 4.0


@pytest.mark.parametrize("fmt", ["raw", "table"])
def test_a_closed_pipe_ends_quietly(fleet: Fleet, fmt: str) -> None:
    cmd = (f"{shlex.quote(sys.executable)} -m fleetmon query gpu_temperature_celsius --since 1m --format {fmt} "
           f"--url {fleet.collector.http} | head -1")
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FLEETMON_TOKEN": TOKEN})
    assert (res.returncode, res.stderr) == (0, "")
    assert len(res.stdout.splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "abc"], "--since: 'abc' is not a time; give e.g. 2h, 30m, now, today, yesterday, "
                         "2026-11-30T08:00:00Z or unix seconds"),
    (["--since", "3600"], "--since: '3600' would be a unix time in 1970; for that long ago give a unit (3600s"),
    (["--since", "2026-11-31T00:00:00Z"], "--since: '2026-11-31T00:00:00Z' is not an RFC 3339 time"),
    (["--since", "1h", "--at", "now"], "--at is one instant; --since, --until and --step make a range"),
    (["--until", "1h"], "--until and --step make a range query: give --since too"),
    (["--since", "1h", "--until", "2h"], "--since 1h is after --until 2h"),
    (["--since", "1h", "--step", "fast"], "--step: 'fast' is not a duration"),
    (["--since", "30d", "--step", "1s"], "2592001 steps: more than 11000 points per series; give a step of at "
                                         "least 236s"),
])
def test_wrong_times_are_named_not_a_traceback(run: Any, args: list[str], message: str) -> None:
    rc, out, err = run("query", "gpu_up", *args)
    assert (rc, out) == (2, "") and err.startswith("fleetmon query: " + message), err


def test_human_times_reach_the_history(fleet: Fleet, run: Any) -> None:
    for since in ("yesterday", "2h", "now-10m", _rfc3339(fleet.start)):
        rc, out, err = run("query", "count(gpu_up)", "--since", since, "--format", "csv")
        assert (rc, err) == (0, ""), since
        assert float(out.splitlines()[-1].split(",")[-1]) == 4.0  # the newest step is now: all GPUs up


def test_expression_errors_point_at_the_column(run: Any) -> None:
    rc, out, err = run("query", "gpu_up{node=n1}")
    assert (rc, out) == (2, "")
    assert err.splitlines() == ["fleetmon query: parse error at column 13: unexpected ident 'n1' in label matching, "
                                "expected string", "  gpu_up{node=n1}", "              ^"]


def test_an_empty_answer_says_so(fleet: Fleet, run: Any) -> None:
    rc, out, err = run("query", "gpu_temprature_celsius", "--since", "10m")
    assert (rc, out) == (0, "")
    assert err.startswith("no data: gpu_temprature_celsius has no value between ") and fleet.collector.http in err


# --- the API ------------------------------------------------------------------------------------
def test_api_answers_promql_in_prometheus_format(fleet: Fleet) -> None:
    status, doc = fleet.api("/api/v1/query", query="max by (node) (gpu_temperature_celsius)", time=str(fleet.end))
    assert status == 200 and doc["status"] == "success" and doc["data"]["resultType"] == "vector"
    assert sorted(r["metric"]["node"] for r in doc["data"]["result"]) == ["node-01", "node-02"]
    assert all(r["value"][0] == fleet.end and isinstance(r["value"][1], str) for r in doc["data"]["result"])
    status, doc = fleet.api("/api/v1/query_range", query="count(gpu_up)", start=str(fleet.start), end=str(fleet.end),
                            step="1s")
    [series] = doc["data"]["result"]
    assert doc["data"]["resultType"] == "matrix" and series["metric"] == {}
    assert series["values"] == [[float(t), "4"] for t in range(fleet.start, fleet.end + 1)]
    status, doc = fleet.api("/api/v1/query", query="scalar(count(gpu_up))", time=_rfc3339(fleet.end))
    assert doc["data"] == {"resultType": "scalar", "result": [fleet.end, "4"]}


@pytest.mark.parametrize(("path", "query", "status", "kind", "message"), [
    ("/api/v1/query", {"query": "max by (node) ("}, 400, "bad_data", "query: parse error at column 16"),
    ("/api/v1/query", {"query": "gpu_up", "time": "yesterday"}, 400, "bad_data", "time: 'yesterday' is in local"),
    ("/api/v1/query", {"query": "gpu_up", "since": "1h"}, 400, "bad_data", "since: goes with selector="),
    ("/api/v1/query", {"query": "gpu_up + on (gpu) gpu_temperature_celsius"}, 422, "execution",
     "found duplicate series for the match group"),
    ("/api/v1/query_range", {"query": "gpu_up[1m]", "start": "1h", "end": "now", "step": "10s"}, 400, "bad_data",
     "query: invalid expression type 'range vector'"),
    ("/api/v1/query_range", {"query": "gpu_up", "start": "1h", "end": "now"}, 400, "bad_data", "step: required"),
    ("/api/v1/query_range", {"query": "gpu_up", "start": "30d", "end": "now", "step": "1s"}, 400, "bad_data",
     "step: more than 11000 points"),
])
def test_api_errors_are_prometheus_errors(fleet: Fleet, path: str, query: dict[str, str], status: int, kind: str,
                                          message: str) -> None:
    got, doc = fleet.api(path, **query)
    assert (got, doc["status"], doc["errorType"]) == (status, "error", kind), doc
    assert doc["error"].startswith(message), doc


# --- a protected API: the token from a file or the environment, never from the command line ---------
def test_without_the_token_a_clear_401(fleet: Fleet, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETMON_TOKEN")
    for command in (["query", "gpu_up"], ["status"], ["top", "-n", "1"]):
        rc, out, err = run(*command)
        assert (rc, out) == (2, ""), command
        assert err.endswith(": 401 Unauthorized: this collector's API needs its bearer token (http_auth.token): "
                            "give --token-file FILE or set FLEETMON_TOKEN\n"), err
    (fleet.tmp / "wrong").write_text("not-it\n")
    rc, _, err = run("status", "--token-file", str(fleet.tmp / "wrong"))
    assert rc == 2 and f"the token from --token-file {fleet.tmp / 'wrong'} was refused" in err and "not-it" not in err
    rc, out, err = run("status", "--token-file", str(fleet.token_file))
    assert rc == 0 and "2/2 nodes up" in out and TOKEN not in out + err
    rc, out, _ = run("query", "count(gpu_up)", "--token-file", str(fleet.token_file))
    assert rc == 0 and out.splitlines()[-1] == "4"


def test_an_https_api_with_client_certificates(tmp_path: Path, run: Any) -> None:
    pki = lab_pki(tmp_path)
    own, me = pki.collector(), pki.node("operator")
    tls = {"cert": str(own.cert), "key": str(own.key), "client_ca": str(pki.ca)}
    collector = CollectorProc(tmp_path, tls=False, extra={"http_auth": {"tls": tls}}).start()
    try:
        url = ["--url", f"https://127.0.0.1:{collector.http_port}"]
        rc, _, err = run("status", *url)
        assert rc == 2 and "TLS: certificate verify failed: " in err
        assert err.endswith("give the collector's CA with --cacert\n")
        rc, _, err = run("status", *url, "--cacert", str(pki.ca))
        assert rc == 2 and err.endswith("if it requires client certificates (http_auth.tls.client_ca), give --cert "
                                        "and --key\n"), err  # said by the TLS alert or by the hang-up after it
        mine = ["--cacert", str(pki.ca), "--cert", str(me.cert), "--key", str(me.key)]
        rc, out, err = run("status", *url, *mine)
        assert (rc, err) == (0, "") and "0/0 nodes up" in out
        rc, _, err = run("query", "count(gpu_up)", *url, *mine)
        assert (rc, err.split(" has no value")[0]) == (0, "no data: count(gpu_up)")
    finally:
        collector.stop()


# --- README --------------------------------------------------------------------------------------
def readme_queries() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("### History: `fleetmon query`", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    return [line.split("  #", 1)[0].strip() for b in blocks for line in b.splitlines() if line.startswith("fleetmon ")]


def test_readme_query_examples_run_as_printed(fleet: Fleet, run: Any) -> None:
    examples = readme_queries()
    assert len(examples) >= 6
    for line in examples:
        rc, out, err = run(*shlex.split(line)[1:])
        assert (rc, err) == (0, ""), (line, err)
        assert out.strip(), line
