"""Prometheus remote-write sink against real VictoriaMetrics and vmagent (Debian's
``victoria-metrics`` package ships both), and a local HTTP stub for headers, chunking and the
answers a healthy receiver will not give on demand."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cramjam
import pytest

from collector.errors import ConfigError, SinkError
from collector.sequence import NodeState
from collector.spool import Spool, encode_spool
from collector.storage.base import Point, SinkBatch, StoredEvent
from collector.storage.embedded import NewSeries, SampleColumns, WriteItem
from collector.storage.influx_factory import build_sink
from collector.storage.remote_write import RemoteWriteConfig, RemoteWriteSink
from collector.storage.sqlite import SqliteStore
from proto import remote_pb2
from tests.http_stub import Stub, stub
from tests.influx_servers import Server, start_vmagent, victoria_metrics, vm_export

_ = (stub, victoria_metrics)  # pytest fixtures used by name below

NOW_MS = time.time_ns() // 1_000_000 // 1000 * 1000


def _points(node: str, gpus: int = 3, instants: int = 4) -> list[Point]:
    pts = []
    for t in range(instants):
        ts = (NOW_MS - 60_000 + t * 1000) * 1_000_000
        for g in range(gpus):
            tags = (("cluster", "c1"), ("gpu", str(g)), ("model", "NVIDIA H100 80GB HBM3"), ("node", node))
            pts.append(Point("gpu", "temperature_celsius", tags, 40.0 + g + t / 4, ts))
            pts.append(Point("gpu", "power_watts", tags, 300.5 + 10 * g - t, ts))
    return pts


def _expected(points: list[Point]) -> dict[tuple[Any, ...], float]:
    return {(tuple(sorted({**dict(p.tags), "__name__": p.name}.items())), p.ts_ns // 1_000_000): p.value
            for p in points}


def _stored(url: str, node: str, series: int, samples: int) -> dict[tuple[Any, ...], float]:
    out = {}
    for g in vm_export(url, f'{{node="{node}"}}', series=series, samples=samples):
        for v, ts in zip(g["values"], g["timestamps"], strict=True):
            out[tuple(sorted(g["metric"].items())), ts] = v
    return out


def _write(sink: RemoteWriteSink, *batches: SinkBatch) -> None:
    async def go() -> None:
        await sink.start()
        try:
            for b in batches:
                await sink.write(b)
        finally:
            await sink.aclose()
    asyncio.run(go())


def _health(sink: RemoteWriteSink) -> dict[str, float]:
    return {h.name: h.value for h in sink.health()}


# --- against the stub ---------------------------------------------------------------------------

def test_requests_are_snappy_protobuf_in_chunks(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETMON_TEST_RW_TOKEN", "t0ken")
    sink = build_sink("remote_write", {"url": f"{stub.url}/api/v1/write", "batch_size": 8,
                                       "bearer_token_env": "FLEETMON_TEST_RW_TOKEN",
                                       "headers": {"X-Scope-OrgID": "fleet-a"}}, "sinks.rw")
    assert isinstance(sink, RemoteWriteSink)
    pts = _points("stub-node")  # 24 samples, 6 series of 4
    event = StoredEvent("stub-node", "gpu.xid", "critical", "XID 79", "drain", (), NOW_MS * 1_000_000)
    _write(sink, SinkBatch(1, pts, [event]))
    assert [s.path for s in stub.seen] == ["/api/v1/write"] * 4
    headers = stub.seen[0].headers
    assert headers["Content-Encoding"] == "snappy" and headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert headers["Authorization"] == "Bearer t0ken" and headers["X-Scope-OrgID"] == "fleet-a"
    got: dict[tuple[Any, ...], float] = {}
    per_request = []
    for seen in stub.seen:
        req = remote_pb2.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(seen.body)))
        per_request.append(sum(len(ts.samples) for ts in req.timeseries))
        for ts in req.timeseries:
            labels = tuple((label.name, label.value) for label in ts.labels)
            got.update({(labels, s.timestamp): s.value for s in ts.samples})
    assert per_request == [4, 8, 8, 4]  # whole series, at most batch_size samples, a small first one
    assert got == _expected(pts)
    health = _health(sink)
    assert health["fleetmon_sink_written_points_total"] == 24 and health["fleetmon_sink_requests_total"] == 4
    assert health["fleetmon_sink_written_lines_total"] == 6  # series sent
    assert health["fleetmon_sink_written_events_total"] == 0  # strings cannot travel: none written


@pytest.mark.parametrize(("status", "retryable", "retry_after"), [
    (429, True, 17.0), (503, True, 17.0), (507, True, None), (400, False, None), (404, False, None)])
def test_answers_are_classified(stub: Stub, status: int, retryable: bool, retry_after: float | None) -> None:
    stub.replies = [(status, {"Retry-After": "17"}, b"out of order sample")]
    sink = RemoteWriteSink(RemoteWriteConfig(url=f"{stub.url}/api/v1/write", name="rw"))
    with pytest.raises(SinkError, match=rf"sink rw: .* {status}") as info:
        _write(sink, SinkBatch(1, _points("n", 1, 1)))
    assert info.value.retryable is retryable and info.value.retry_after == retry_after
    if status == 400:
        assert "out of order sample" in str(info.value) and "label names" in str(info.value)
    if status == 404:
        assert "/api/v1/write" in str(info.value)
    assert _health(sink)["fleetmon_sink_failed_writes_total"] == 1


def test_basic_auth_and_an_unreachable_receiver(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETMON_TEST_RW_PW", "s3cret")
    cfg = RemoteWriteConfig(url=f"{stub.url}/w", username="writer", password_env="FLEETMON_TEST_RW_PW")
    assert "s3cret" not in repr(cfg)
    _write(RemoteWriteSink(cfg), SinkBatch(1, _points("n", 1, 1)))
    assert stub.seen[0].headers["Authorization"] == "Basic d3JpdGVyOnMzY3JldA=="  # writer:s3cret
    down = RemoteWriteSink(RemoteWriteConfig(url="http://127.0.0.1:9/api/v1/write", timeout=2, name="rw"))
    with pytest.raises(SinkError, match=r"sink rw: cannot reach http://127\.0\.0\.1:9/api/v1/write") as info:
        _write(down, SinkBatch(1, _points("n", 1, 1)))
    assert info.value.retryable


@pytest.mark.parametrize(("section", "message"), [
    ({}, "url must start with http"),
    ({"url": "http://vm/api/v1/write", "batch_size": 0}, "batch_size must be 1..100000"),
    ({"url": "http://vm/api/v1/write", "headers": {"Content-Encoding": "gzip"}}, "set by the sink itself"),
    ({"url": "http://vm/api/v1/write", "headers": ["X-Scope-OrgID"]}, r"sinks.rw.headers: expected a mapping"),
    ({"url": "http://vm/api/v1/write", "headers": {"X": [1]}}, r"sinks.rw.headers.X: expected a string"),
    ({"url": "http://vm/api/v1/write", "flush_interval": "soon", "bogus": 1},  # every key's problem at once
     r"(?s)unknown key 'bogus'.*flush_interval: 'soon' is neither a number nor a duration"),
    ({"url": "http://vm/api/v1/write", "password": "a", "password_env": "B"}, "not both"),
    ({"url": "http://vm/api/v1/write", "username": "u", "bearer_token": "t"}, "not both"),
    ({"url": "http://vm/api/v1/write", "database": "x"}, "unknown key 'database'"),
    ({"url": "http://vm/api/v1/write", "flush_interval": -1}, "flush_interval must be 0..300"),
    ({"url": "http://vm/api/v1/write", "write_samples": 0}, "write_samples must be 1..10000000"),
])
def test_config_errors_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_sink("remote_write", section, "sinks.rw")


# --- what the spool hands the sink ---------------------------------------------------------------

def _spool_rows(store: SqliteStore, instants: int) -> None:
    """``instants`` agent batches of node n1 (two series, one sample each) committed to the store,
    as the ingest path commits them (with their spool rows)."""
    sids = store.series_ids("n1", [NewSeries("gpu_power_watts", "gpu", "power_watts", {"gpu": str(g), "node": "n1"},
                                             1, "") for g in range(2)])
    state = NodeState.new_wal("n1", "wal-1")
    for seq in range(1, instants + 1):
        update = state.plan(seq)
        state.apply(update)
        cols = SampleColumns(list(sids), [NOW_MS + seq * 1000] * 2, [float(seq), float(seq + 1)])
        store.commit([WriteItem(update, '{"node": "n1"}', cols, [], spool_body=encode_spool(cols, []))])


def _per_request(stub: Stub) -> list[list[int]]:
    """Samples per series in each request the stub saw."""
    return [[len(ts.samples) for ts in remote_pb2.WriteRequest.FromString(
        bytes(cramjam.snappy.decompress_raw(seen.body))).timeseries] for seen in stub.seen]


def _drain(store: SqliteStore, sink: RemoteWriteSink, stub: Stub, requests: int) -> None:
    async def go() -> None:
        spool = Spool(store, [sink], max_bytes=1 << 30, rows_per_read=1)
        await spool.start()
        try:
            deadline = time.monotonic() + 20
            while len(stub.seen) < requests or store.spool_depth()[0]:
                assert time.monotonic() < deadline, f"spool not drained: {stub.seen}"
                await asyncio.sleep(0.05)
        finally:
            await spool.stop()
    asyncio.run(go())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "store.db")
    try:
        yield opened
    finally:
        opened.close()


def test_spool_writes_up_to_write_samples_so_series_carry_several(stub: Stub, store: SqliteStore) -> None:
    _spool_rows(store, 5)
    _drain(store, RemoteWriteSink(RemoteWriteConfig(url=f"{stub.url}/w", write_samples=4)), stub, 3)
    # Rows of 2 samples, read one at a time until 4 samples are in hand: 2 instants per series.
    assert _per_request(stub) == [[2, 2], [2, 2], [1, 1]]


def test_flush_interval_sends_what_it_has_when_it_runs_out(stub: Stub, store: SqliteStore) -> None:
    _spool_rows(store, 1)
    _drain(store, RemoteWriteSink(RemoteWriteConfig(url=f"{stub.url}/w", flush_interval=0.3)), stub, 1)
    assert _per_request(stub) == [[1, 1]]


def test_a_failing_spool_worker_says_so_and_goes_on(stub: Stub, store: SqliteStore,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    # CI once saw a worker die of an unexpected KeyError: the sink then stopped for good, silently.
    _spool_rows(store, 2)
    real, failures = store.series_meta, list[int]()

    def flaky(sid: int) -> Any:
        if not failures:
            failures.append(sid)
            raise KeyError(f"series id {sid} (injected)")
        return real(sid)

    monkeypatch.setattr(store, "series_meta", flaky)
    sink = RemoteWriteSink(RemoteWriteConfig(url=f"{stub.url}/w", write_samples=4))

    async def go() -> None:
        spool = Spool(store, [sink], max_bytes=1 << 30)
        spool.retry_s = 0.05
        await spool.start()
        try:
            deadline = time.monotonic() + 20
            while not stub.seen or store.spool_depth()[0]:
                assert time.monotonic() < deadline, "the worker did not recover"
                await asyncio.sleep(0.05)
        finally:
            await spool.stop()

    with caplog.at_level(logging.ERROR, logger="fleetmon.collector.spool"):
        asyncio.run(go())
    assert failures and _per_request(stub) == [[2, 2]]
    assert any("sink remote_write: the spool worker failed" in r.getMessage() and r.exc_info for r in caplog.records)


# --- against real receivers -----------------------------------------------------------------------

@pytest.mark.services
def test_victoria_metrics_reads_back_equal_and_idempotent(victoria_metrics: Server) -> None:
    pts = _points("rw-vm", gpus=4, instants=5)
    sink = RemoteWriteSink(RemoteWriteConfig(url=f"{victoria_metrics.url}/api/v1/write", batch_size=7))
    _write(sink, SinkBatch(1, pts), SinkBatch(1, pts))  # the spool may send a batch twice
    assert _stored(victoria_metrics.url, "rw-vm", 8, 40) == _expected(pts)


@pytest.fixture
def vmagent(victoria_metrics: Server, tmp_path: Path) -> Iterator[str]:
    proc, url = start_vmagent(tmp_path, f"{victoria_metrics.url}/api/v1/write")
    try:
        yield url
    finally:
        proc.stop()


@pytest.mark.services
def test_through_vmagent_into_victoria_metrics(vmagent: str, victoria_metrics: Server) -> None:
    pts = _points("rw-vmagent", gpus=2, instants=6)
    _write(RemoteWriteSink(RemoteWriteConfig(url=f"{vmagent}/api/v1/write")), SinkBatch(1, pts))
    assert _stored(victoria_metrics.url, "rw-vmagent", 4, 24) == _expected(pts)
