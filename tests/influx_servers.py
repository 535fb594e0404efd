"""Real InfluxDB 1.x and VictoriaMetrics (with vmagent and vmalert) for tests, benches and chaos tests.

``start_influxd(tmp_path)`` / ``start_victoria_metrics(tmp_path)`` / ``start_vmagent(tmp_path,
url)`` / ``start_vmalert(tmp_path, rules, …)`` start the Debian binaries on free loopback ports
with their data under ``tmp_path`` and return ``(Process, url)``; pass the same ``tmp_path`` and
``port`` again to restart a server on its old data (chaos tests). The pytest fixtures ``influxd``
and ``victoria_metrics`` (one server per test module) wrap them; a test module uses them with
``from tests.influx_servers import influxd, victoria_metrics`` (``# noqa: F401``) or by listing
this module in ``pytest_plugins``.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.storage.base import Point, SinkBatch
from collector.storage.remote_write import RemoteWriteConfig, RemoteWriteSink
from tests.services import Process, free_port, require_binary, wait_for_http

INFLUXD_CONF = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false

[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = 25000000

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false
"""


def _started(name: str, argv: list[str], root: Path, port: int, health: str,
             ok: Callable[[int], bool] = lambda code: code == 200) -> tuple[Process, str]:
    """Start ``argv`` with its log under ``root``; return once ``health`` answers, or fail with
    the log's tail."""
    proc = Process(argv, root / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}{health}", timeout=30, proc=proc.proc, ok=ok)
    except (TimeoutError, RuntimeError) as err:
        proc.stop()
        raise RuntimeError(f"{name} did not start: {err}\n{proc.log_text()[-2000:]}") from err
    return proc, url


def start_influxd(tmp_path: Path, port: int | None = None) -> tuple[Process, str]:
    """influxd 1.x with its meta/data/wal under ``tmp_path/influxd``; answers /ping when returned."""
    binary = require_binary("influxd", "/usr/bin/influxd")
    root = tmp_path / "influxd"
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = root / "influxd.conf"
    conf.write_text(INFLUXD_CONF.format(root=root, port=port, rpc_port=free_port()))
    return _started("influxd", [binary, "-config", str(conf)], root, port, "/ping", lambda code: code < 500)


def start_victoria_metrics(tmp_path: Path, port: int | None = None, extra: Sequence[str] = ()) -> tuple[Process, str]:
    """VictoriaMetrics single-node with its data under ``tmp_path/victoria-metrics``; ``extra``: more flags."""
    binary = require_binary("victoria-metrics", "/usr/bin/victoria-metrics")
    root = tmp_path / "victoria-metrics"
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        binary,
        f"-storageDataPath={root / 'data'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        # Test points carry timestamps near now; keep a year so nothing is refused as too old.
        "-retentionPeriod=1y",
        # Queries see samples as soon as they are stored (the default hides the last 30 s).
        "-search.latencyOffset=0s",
        "-loggerLevel=WARN",
        *extra,
    ]
    return _started("victoria-metrics", argv, root, port, "/health")


def start_vmagent(tmp_path: Path, remote_write_url: str, port: int | None = None) -> tuple[Process, str]:
    """vmagent (same Debian package) forwarding what it receives to ``remote_write_url``; its
    queue lives under ``tmp_path/vmagent``. It accepts Prometheus remote write at /api/v1/write."""
    binary = require_binary("vmagent", "/usr/bin/vmagent")
    root = tmp_path / "vmagent"
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-remoteWrite.url={remote_write_url}",
            f"-remoteWrite.tmpDataPath={root / 'queue'}", "-remoteWrite.flushInterval=200ms", "-loggerLevel=WARN"]
    return _started("vmagent", argv, root, port, "/health")


def start_vmalert(tmp_path: Path, rules: list[Path], datasource: str, notifiers: list[str], *,
                  remote_write: str | None = None, remote_read: str | None = None,
                  interval: str = "1s", port: int | None = None) -> tuple[Process, str]:
    """vmalert (same Debian package) evaluating ``rules`` over ``datasource`` (a VictoriaMetrics
    URL) every ``interval`` and sending to the Alertmanagers ``notifiers``; with ``remote_write``
    / ``remote_read`` it keeps ALERTS/ALERTS_FOR_STATE there and restores ``for`` state."""
    binary = require_binary("vmalert", "/usr/bin/vmalert")
    root = tmp_path / "vmalert"
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-datasource.url={datasource}",
            f"-evaluationInterval={interval}", "-loggerLevel=WARN",
            *(f"-rule={r}" for r in rules), *(f"-notifier.url={n}" for n in notifiers)]
    if remote_write:
        argv += [f"-remoteWrite.url={remote_write}", "-remoteWrite.flushInterval=200ms"]
    if remote_read:
        argv.append(f"-remoteRead.url={remote_read}")
    return _started("vmalert", argv, root, port, "/health")


@dataclass
class Server:
    proc: Process
    url: str
    root: Path


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("influxd")
    proc, url = start_influxd(root)
    try:
        yield Server(proc, url, root)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("vm")
    proc, url = start_victoria_metrics(root)
    try:
        yield Server(proc, url, root)
    finally:
        proc.stop()


def _request(url: str, data: dict[str, str] | None = None, timeout: float = 10) -> bytes:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    with urllib.request.urlopen(url, data=body, timeout=timeout) as resp:
        return bytes(resp.read())


def influx_create_database(url: str, database: str) -> None:
    influx_query(url, f'CREATE DATABASE "{database}"')


def influx_query(url: str, q: str, database: str | None = None) -> list[dict[str, Any]]:
    """InfluxQL through plain HTTP (independent of the sink under test); series with ns times."""
    data = {"q": q, "epoch": "ns"}
    if database:
        data["db"] = database
    doc = json.loads(_request(f"{url}/query", data))
    series: list[dict[str, Any]] = []
    for result in doc.get("results", []):
        if "error" in result:
            raise RuntimeError(f"InfluxQL {q!r} failed: {result['error']}")
        series.extend(result.get("series", []))
    return series


def influx_write(url: str, database: str, body: str) -> None:
    """A raw line-protocol POST (the baseline the sinks are compared with)."""
    req = urllib.request.Request(f"{url}/write?db={urllib.parse.quote(database)}&precision=ns",
                                 data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status != 204:
            raise RuntimeError(f"influxd answered {resp.status}")


def remote_write(vm_url: str, points: list[Point]) -> None:
    """Write ``points`` to VictoriaMetrics through fleetmon's remote-write sink, then make them readable."""
    sink = RemoteWriteSink(RemoteWriteConfig(url=f"{vm_url}/api/v1/write"))

    async def go() -> None:
        await sink.start()
        try:
            await sink.write(SinkBatch(1, points))
        finally:
            await sink.aclose()

    asyncio.run(go())
    vm_flush(vm_url)


def vm_flush(url: str) -> None:
    """VictoriaMetrics buffers ingested rows for about a second; make them readable now."""
    _request(f"{url}/internal/force_flush")


def vm_export(url: str, match: str, *, series: int | None = None, samples: int | None = None,
              timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every stored sample of the series matching ``match``, as VictoriaMetrics' JSON lines
    (``metric``, ``values``, ``timestamps`` in ms). ``/api/v1/export`` is used rather than
    ``/api/v1/query`` because queries hide the last 30 s (``-search.latencyOffset``).

    Rows become visible a moment after the write was acknowledged, even after a force_flush, so
    with ``series``/``samples`` this polls until at least that many are there (or the timeout).
    """
    deadline = time.monotonic() + timeout
    while True:
        vm_flush(url)
        raw = _request(f"{url}/api/v1/export", {"match[]": match, "start": "0"})
        got = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        enough = (series is None or len(got) >= series) and (
            samples is None or sum(len(g["values"]) for g in got) >= samples)
        if enough or time.monotonic() > deadline:
            return got
        time.sleep(0.2)
