"""The agent's Prometheus exposition: ``--once --format prom``, ``/metrics``, DCGM-compatible names."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent import dcgm
from agent.exposition import families, render
from agent.model import Collection
from agent.plugins.accel import GPU_INFO, MEMORY_USED, TEMPERATURE
from tests.services import Process, free_port, proc_cpu, require_binary, running, wait_for_http

DOC = Path(__file__).resolve().parents[1] / "docs" / "prometheus.md"


# dcgm-exporter's own conventions, which its dashboards depend on: promtool's linter flags them,
# the parser accepts them. Anything else promtool says is a real problem.
_DCGM_LINT = re.compile(r"^DCGM_FI_\w+ (label names should be written in 'snake_case' not 'camelCase'"
                        r"|counter metrics should have \"_total\" suffix)$")


def _promtool_ok(text: str) -> None:
    promtool = require_binary("promtool")
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    problems = [line for line in (res.stdout + res.stderr).splitlines() if not _DCGM_LINT.match(line)]
    assert problems == [] and (res.returncode == 0 or "DCGM_FI_" in text), res.stdout + res.stderr


def _series(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, labels as printed."""
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_dcgm_names_units_and_labels() -> None:
    col = Collection()
    gpu = {"gpu": "0", "uuid": "GPU-abc", "vendor": "nvidia", "model": "NVIDIA H100 80GB HBM3"}
    col.add(GPU_INFO, 1, gpu | {"driver": "550.54.15", "pci": "00000000:3B:00.0"})
    col.add(TEMPERATURE, 71.5, gpu)
    col.add(MEMORY_USED, 3 << 30, gpu)
    col.add(TEMPERATURE, 40, {"gpu": "0", "uuid": "amd-1", "vendor": "amd", "model": "MI300X"})
    text = render(families(col.samples, {"node": "n1", "cluster": "c1"}, "dcgm"))
    ids = ('DCGM_FI_DRIVER_VERSION="550.54.15",Hostname="n1",UUID="GPU-abc",cluster="c1",gpu="0",'
           'modelName="NVIDIA H100 80GB HBM3",pci_bus_id="00000000:3B:00.0"')
    assert _series(text) == {
        f"DCGM_FI_DEV_GPU_TEMP{{{ids}}}": 71.5,
        f"DCGM_FI_DEV_FB_USED{{{ids}}}": 3072.0,  # MiB, as dcgm-exporter reports it
        # what DCGM has no name for keeps fleetmon's name: the info series, an AMD GPU
        'gpu_info{cluster="c1",driver="550.54.15",gpu="0",model="NVIDIA H100 80GB HBM3",node="n1",'
        'pci="00000000:3B:00.0",uuid="GPU-abc",vendor="nvidia"}': 1.0,
        'gpu_temperature_celsius{cluster="c1",gpu="0",model="MI300X",node="n1",uuid="amd-1",vendor="amd"}': 40.0,
    }
    assert "# TYPE DCGM_FI_DEV_GPU_TEMP gauge" in text and "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C)." in text


def test_mapping_table_in_the_docs_matches_the_code() -> None:
    rows = re.findall(r"^\| `(DCGM_FI_\w+)` \| (gauge|counter) \| `(\w+)`(?: with `([^`]*)`)? \|", DOC.read_text(),
                      re.M)
    documented = {(name, typ, src, when or "") for name, typ, src, when in rows}
    coded = {(f.name, f.type, src, ", ".join(f'{k}="{v}"' for k, v in f.when))
             for src, fields in dcgm.MAPPING.items() for f in fields}
    assert documented == coded


@pytest.mark.parametrize("names", ["fleetmon", "dcgm", "both"])
def test_once_prom_passes_promtool(fleetmon_cmd: list[str], names: str) -> None:
    out = subprocess.run([*fleetmon_cmd, "agent", "--once", "--format", "prom", "--names", names,
                          "--plugins", "simulated", "--node", "n1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    _promtool_ok(out.stdout)
    series = _series(out.stdout)
    dcgm_temp = [k for k in series if k.startswith("DCGM_FI_DEV_GPU_TEMP{")]
    fleet_temp = [k for k in series if k.startswith("gpu_temperature_celsius{")]
    assert (bool(dcgm_temp), bool(fleet_temp)) == {"fleetmon": (False, True), "dcgm": (True, False),
                                                   "both": (True, True)}[names]
    assert any(k.startswith("ib_port_state{") for k in series)  # non-GPU series are never renamed
    if names == "both":
        [util] = [v for k, v in series.items() if k.startswith('gpu_utilization_ratio{') and 'gpu="0"' in k]
        [pct] = [v for k, v in series.items() if k.startswith('DCGM_FI_DEV_GPU_UTIL{') and 'gpu="0"' in k]
        assert pct == pytest.approx(util * 100)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, fleetmon_cmd: list[str]) -> Iterator[tuple[Process, int]]:
    """A real agent with ``/metrics`` on; no collector is running, so it only collects and spools."""
    tmp = tmp_path_factory.mktemp("expo")
    port = free_port()
    cfg = {"node": "expo-1", "labels": {"cluster": "c1"}, "collectors": [f"127.0.0.1:{free_port()}"],
           "data_dir": str(tmp / "data"), "batch_interval": "1s",
           "prometheus": {"listen": f"127.0.0.1:{port}", "names": "both"},
           "plugins": {"simulated": {"interval": "1s", "gpus": 2, "ib_ports": 1}}}
    (tmp / "agent.yml").write_text(yaml.safe_dump(cfg))
    with running([*fleetmon_cmd, "agent", "--config", str(tmp / "agent.yml")], tmp / "agent.log") as proc:
        wait_for_http(f"http://127.0.0.1:{port}/metrics", proc=proc.proc, ok=lambda code: code == 200)
        _wait_for_body(port, "fleetmon_agent_plugin_success{")
        yield proc, port


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def _wait_for_body(port: int, needle: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = _get(port, "/metrics")[2].decode()
        if needle in body:
            return body
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in /metrics within {timeout}s:\n{body[-2000:]}")


@pytest.mark.services
def test_agent_metrics_endpoint(agent: tuple[Process, int]) -> None:
    _proc, port = agent
    status, headers, raw = _get(port, "/metrics")
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    body = raw.decode()
    _promtool_ok(body)
    series = _series(body)
    assert series['fleetmon_agent_plugin_success{cluster="c1",node="expo-1",plugin="simulated"}'] == 1
    assert 'fleetmon_agent_plugin_last_collection_timestamp_seconds{cluster="c1",node="expo-1",plugin="simulated"}' \
        in series
    # the agent's own state, from the batcher: nothing is acked (no collector), so the WAL holds data
    assert series['fleetmon_agent_connected{cluster="c1",node="expo-1"}'] == 0
    assert series['fleetmon_agent_wal_bytes{cluster="c1",node="expo-1"}'] >= 0
    assert any(k.startswith("gpu_temperature_celsius{") for k in series)
    assert any(k.startswith("DCGM_FI_DEV_GPU_TEMP{") and 'Hostname="expo-1"' in k for k in series)
    # gzip when asked (Prometheus asks), HEAD, unknown paths and methods
    status, headers, raw = _get(port, "/metrics", {"Accept-Encoding": "gzip"})
    assert headers.get("Content-Encoding") == "gzip" and b"fleetmon_agent_plugin_success" in gzip.decompress(raw)
    assert _get(port, "/nothing")[0] == 404
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    err.value.close()
    assert err.value.code == 405


def _cpu_and_rss(pid: int) -> tuple[float, int]:
    """The kernel's count of a process's CPU seconds and its resident bytes."""
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return proc_cpu(pid), rss


@pytest.mark.services
def test_agent_reports_its_own_cpu_and_memory(agent: tuple[Process, int]) -> None:
    """What the agent costs its node goes out with its own metrics: the CPU the kernel counted
    for it between two readings taken around the scrape, and its resident memory."""
    proc, port = agent
    cpu0, rss0 = _cpu_and_rss(proc.pid)
    series = _series(_get(port, "/metrics")[2].decode())
    cpu1, rss1 = _cpu_and_rss(proc.pid)
    cpu = series['fleetmon_agent_cpu_seconds_total{cluster="c1",node="expo-1"}']
    rss = series['fleetmon_agent_resident_bytes{cluster="c1",node="expo-1"}']
    assert 0 < cpu0 - 1e-6 <= cpu <= cpu1 + 1e-6, (cpu0, cpu, cpu1)  # the same clock ticks, summed apart
    # Resident memory moves between readings; pages counted as bytes, not pages or KiB.
    assert min(rss0, rss1) / 2 <= rss <= max(rss0, rss1) * 2, (rss0, rss, rss1)
    assert rss > 10 << 20


@pytest.mark.services
def test_prometheus_scrapes_the_agent(agent: tuple[Process, int], tmp_path: Path) -> None:
    prometheus = require_binary("prometheus")
    _proc, agent_port = agent
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "fleetmon", "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}]}],
    }))
    argv = [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    with running(argv, tmp_path / "prometheus.log") as proc:
        wait_for_http(f"http://127.0.0.1:{port}/-/ready", proc=proc.proc, ok=lambda code: code == 200)
        query = 'DCGM_FI_DEV_GPU_TEMP{Hostname="expo-1",gpu="1",job="fleetmon"}'
        deadline = time.monotonic() + 30
        result: list[dict[str, object]] = []
        while not result and time.monotonic() < deadline:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
            with urllib.request.urlopen(url, timeout=10) as resp:
                result = json.loads(resp.read())["data"]["result"]
            if not result:
                time.sleep(0.2)
        assert result, proc.log_text()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=10) as resp:
            [target] = json.loads(resp.read())["data"]["activeTargets"]
        assert (target["health"], target["lastError"]) == ("up", "")
        value = float(result[0]["value"][1])  # type: ignore[index]
        assert 40 < value < 100
