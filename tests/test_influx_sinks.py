"""InfluxDB v1 and v2 sinks against real influxd 1.x and VictoriaMetrics, and a local HTTP stub
(:mod:`tests.http_stub`) for what a healthy server will not do on demand (429 + Retry-After,
counting requests)."""

from __future__ import annotations

import asyncio
import email.utils
import time
import urllib.request
from typing import Any

import pytest

from collector.errors import ConfigError, SinkError
from collector.storage.base import Point, SinkBatch, StoredEvent
from collector.storage.influx_factory import build_sink
from collector.storage.influx_v1 import InfluxV1Config, InfluxV1Sink
from collector.storage.influx_v2 import InfluxV2Config, InfluxV2Sink
from collector.storage.retry import Backoff, chunk_lines, http_error, parse_retry_after, write_with_retry
from tests.fleet import metric_value
from tests.http_stub import Stub, keepalive_stub, stub, tls_stub
from tests.influx_servers import (
    Server,
    influx_create_database,
    influx_query,
    influxd,
    start_influxd,
    victoria_metrics,
    vm_export,
)
from tests.services import Process, free_port, wait_for_port, wait_until

_ = (influxd, victoria_metrics, stub, keepalive_stub, tls_stub)  # pytest fixtures used by name below

NOW_MS = time.time_ns() // 1_000_000 // 1000 * 1000  # whole seconds: VictoriaMetrics keeps ms


def _points(n_gpus: int = 4, instants: int = 3, node: str = "gpu-node-01") -> list[Point]:
    pts = []
    for t in range(instants):
        ts = (NOW_MS + t * 1000) * 1_000_000
        for g in range(n_gpus):
            tags = tuple(sorted({"node": node, "gpu": str(g), "model": "NVIDIA H100 80GB HBM3"}.items()))
            pts.append(Point("gpu", "temperature_celsius", tags, 40.0 + g + t / 4, ts))
            pts.append(Point("gpu", "power_watts", tags, 300.5 + 10 * g - t, ts))
    return pts


def _events(node: str = "gpu-node-01") -> list[StoredEvent]:
    return [StoredEvent(node=node, kind="gpu.xid", severity="critical",
                        message='XID 79: GPU has fallen off the bus "0000:17:00.0"',
                        action="drain the node and reseat the GPU",
                        tags=(("gpu", "3"), ("xid", "79")), ts_ns=NOW_MS * 1_000_000)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _write(sink: InfluxV1Sink | InfluxV2Sink, *batches: SinkBatch) -> None:
    await sink.start()
    try:
        for b in batches:
            await sink.write(b)
    finally:
        await sink.aclose()


def _influx_rows(url: str, db: str, q: str) -> list[dict[str, Any]]:
    rows = []
    for s in influx_query(url, q, db):
        for v in s["values"]:
            rows.append(dict(zip(s["columns"], v, strict=True)))
    return rows


def _expected_influx_rows(points: list[Point]) -> list[dict[str, Any]]:
    grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in points:
        row = grouped.setdefault((p.ts_ns, p.tags), {"time": p.ts_ns, **dict(p.tags)})
        row[p.field] = p.value
    return sorted(grouped.values(), key=lambda r: (r["time"], r["gpu"]))


# --- line chunking, Retry-After, back-off: pure ---------------------------------------------

def test_chunks_hold_at_most_5000_lines() -> None:
    lines = [f"m v={i} {i}" for i in range(12_001)]
    chunks = chunk_lines(lines)
    assert [c.count("\n") for c in chunks] == [5000, 5000, 2001]
    assert "".join(chunks) == "\n".join(lines) + "\n"
    assert chunk_lines(lines[:5000]) == ["\n".join(lines[:5000]) + "\n"]
    assert chunk_lines([]) == []


def test_chunks_split_on_bytes_too() -> None:
    lines = ["x" * 99] * 10  # 100 bytes each with the newline
    assert [c.count("\n") for c in chunk_lines(lines, max_bytes=350)] == [3, 3, 3, 1]


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(42.0)
    assert parse_retry_after(email.utils.formatdate(now - 5, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_grows_caps_and_honours_retry_after() -> None:
    b = Backoff(initial=0.5, maximum=8, jitter=False)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1, 2, 4, 8, 8]
    assert b.delay(1, retry_after=30) == 30
    assert Backoff(retry_after_cap=60, jitter=False).delay(1, retry_after=3600) == 60
    jittered = Backoff(initial=4, maximum=4)
    assert all(2 <= jittered.delay(3) <= 4 for _ in range(50))


def test_errors_are_classified_and_name_the_first_bad_line() -> None:
    chunk = "m,a=1 f=1.0 1\nm,a=2 f=2.0 2\nm,a=3 f=3.0 3\n"
    # InfluxDB 2.x numbers the lines of the request.
    err = http_error("hist", 400, headers={}, body=b'{"code":"invalid","message":"partial write error '
                     b'(2 written): unable to parse line 2: bad timestamp"}', chunk=chunk, url="u")
    assert not err.retryable and str(err).endswith("first offending line: 'm,a=2 f=2.0 2'")
    # InfluxDB 1.x quotes the line it could not parse.
    err = http_error("hist", 400, headers={}, body=b'{"error":"unable to parse \'m,a=3 f=x 3\': invalid boolean"}',
                     chunk=chunk, url="u")
    assert str(err).endswith("first offending line: 'm,a=3 f=x 3'")
    assert http_error("hist", 502, headers={}, body=b"bad gateway", chunk=chunk, url="u").retryable
    assert http_error("hist", 408, headers={}, body=b"", chunk=chunk, url="u").retryable
    too_big = http_error("hist", 413, headers={}, body=b"", chunk=chunk, url="u")
    assert not too_big.retryable and "lower batch_size" in str(too_big)
    # Retry-After is only read on 429/503, where RFC 9110 gives it that meaning.
    assert http_error("hist", 500, headers={"Retry-After": "9"}, body=b"", chunk=chunk, url="u").retry_after is None


def _sinks_for(url: str) -> list[InfluxV1Sink | InfluxV2Sink]:
    return [InfluxV1Sink(InfluxV1Config(url=url, database="fleet", name="v1")),
            InfluxV2Sink(InfluxV2Config(url=url, org="dc", bucket="fleet", token="tok", name="v2"))]


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_gzip_and_chunks_of_5000_lines(stub: Stub, kind: str) -> None:
    sink = _sinks_for(stub.url)[0 if kind == "v1" else 1]
    pts = [Point("gpu", "power_watts", (("gpu", str(i)),), float(i), 1_000) for i in range(12_000)]
    run(_write(sink, SinkBatch(1, pts, [])))
    assert [s.headers.get("Content-Encoding") for s in stub.seen] == ["gzip"] * 4
    # A quarter-size first request starts the server while the next one is encoded.
    assert [s.text.count("\n") for s in stub.seen] == [1250, 5000, 5000, 750]
    assert stub.seen[0].text.splitlines()[7] == "gpu,gpu=7 power_watts=7.0 1000"
    path = stub.seen[0].path
    if kind == "v1":
        assert path == "/write?db=fleet&precision=ns"
    else:
        assert path.startswith("/api/v2/write?") and "bucket=fleet" in path and "precision=ns" in path
        assert stub.seen[0].headers["Authorization"] == "Token tok"
    assert {h.name: h.value for h in sink.health()}["fleetmon_sink_written_points_total"] == 12_000


def test_v1_basic_auth_password_from_env(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETMON_TEST_INFLUX_PW", "s3cret")
    cfg = InfluxV1Config(url=stub.url, database="fleet", username="writer",
                         password_env="FLEETMON_TEST_INFLUX_PW", retention_policy="week", gzip=False)
    assert "s3cret" not in repr(cfg)
    run(_write(InfluxV1Sink(cfg), SinkBatch(1, _points(1, 1), [])))
    seen = stub.seen[0]
    assert seen.headers["Authorization"] == "Basic d3JpdGVyOnMzY3JldA=="  # writer:s3cret
    assert seen.path == "/write?db=fleet&precision=ns&rp=week"
    assert "Content-Encoding" not in seen.headers
    monkeypatch.delenv("FLEETMON_TEST_INFLUX_PW")
    with pytest.raises(ConfigError, match="FLEETMON_TEST_INFLUX_PW"):
        run(InfluxV1Sink(cfg).start())


@pytest.mark.parametrize("kind", ["v1", "v2"])
@pytest.mark.parametrize("drop_idle", [False, True])
def test_one_kept_alive_connection_reopened_when_the_server_closed_it(keepalive_stub: Stub, kind: str,
                                                                      drop_idle: bool) -> None:
    """Batches share one connection; one the server closed while idle (its keep-alive timeout)
    is opened again and the request sent again, once: nothing lost, nothing stored twice."""
    keepalive_stub.drop_idle = drop_idle
    sink = _sinks_for(keepalive_stub.url)[0 if kind == "v1" else 1]
    batches = [SinkBatch(b, [Point("gpu", "power_watts", (("gpu", str(i)),), float(b), 1_000 + b)
                             for i in range(6_000)], []) for b in range(3)]
    run(_write(sink, *batches))
    assert len(keepalive_stub.seen) == 6  # 1,250 + 4,750 lines per batch, each request stored once
    assert sum(s.text.count("\n") for s in keepalive_stub.seen) == 18_000
    assert keepalive_stub.connections == (6 if drop_idle else 1)
    health = {h.name: h.value for h in sink.health()}
    assert health["fleetmon_sink_written_points_total"] == 18_000
    assert health["fleetmon_sink_failed_writes_total"] == 0


@pytest.mark.parametrize("kind", ["v1", "v2"])
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_passed_to_the_spool(stub: Stub, kind: str, status: int) -> None:
    stub.replies = [(status, {"Retry-After": "17"}, b'{"error":"slow down"}'),
                    (status, {"Retry-After": email.utils.formatdate(time.time() + 120, usegmt=True)}, b"")]
    sink = _sinks_for(stub.url)[0 if kind == "v1" else 1]
    batch = SinkBatch(5, _points(1, 1), [])

    async def go() -> list[SinkError]:
        errs = []
        await sink.start()
        try:
            for _ in range(3):
                try:
                    await sink.write(batch)
                except SinkError as err:
                    errs.append(err)
        finally:
            await sink.aclose()
        return errs

    first, second = run(go())
    assert first.retryable and first.retry_after == 17.0
    assert f"sink {kind}" in str(first) and str(status) in str(first)
    assert second.retryable and second.retry_after is not None and 100 < second.retry_after <= 120
    health = {h.name: h.value for h in sink.health()}
    assert health["fleetmon_sink_failed_writes_total"] == 2
    assert health["fleetmon_sink_retries_total"] == 2  # the 2nd and 3rd write, each after a failure
    assert health["fleetmon_sink_written_points_total"] == 2
    assert "fleetmon_sink_last_success_timestamp_seconds" in health


def test_write_with_retry_sleeps_as_told_then_succeeds(stub: Stub) -> None:
    stub.replies = [(503, {"Retry-After": "3"}, b""), (500, {}, b"oops")]
    sink = _sinks_for(stub.url)[0]
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    async def go() -> None:
        await sink.start()
        try:
            await write_with_retry(sink, SinkBatch(1, _points(1, 1), []), Backoff(initial=0.25, jitter=False),
                                   sleep=fake_sleep)
        finally:
            await sink.aclose()

    run(go())
    assert slept == [3.0, 0.5]
    assert len(stub.seen) == 3


def test_non_retryable_errors_are_not_retried(stub: Stub) -> None:
    stub.replies = [(401, {}, b'{"error":"authorization failed"}')]
    sink = _sinks_for(stub.url)[1]

    async def go() -> None:
        await sink.start()
        try:
            await write_with_retry(sink, SinkBatch(1, _points(1, 1), []), sleep=asyncio.sleep)
        finally:
            await sink.aclose()

    with pytest.raises(SinkError, match=r"sink v2: .*401 .*authorization failed.*credentials") as info:
        run(go())
    assert not info.value.retryable
    assert len(stub.seen) == 1


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_tls_with_private_ca(tls_stub: tuple[Stub, str], kind: str) -> None:
    stub, ca = tls_stub
    if kind == "v1":
        sink: InfluxV1Sink | InfluxV2Sink = InfluxV1Sink(InfluxV1Config(url=stub.url, database="d", tls_ca=ca))
        unverified: InfluxV1Sink | InfluxV2Sink = InfluxV1Sink(InfluxV1Config(url=stub.url, database="d"))
    else:
        sink = InfluxV2Sink(InfluxV2Config(url=stub.url, bucket="b", tls_ca=ca))
        unverified = InfluxV2Sink(InfluxV2Config(url=stub.url, bucket="b"))
    run(_write(sink, SinkBatch(1, _points(1, 1), [])))
    assert len(stub.seen) == 1
    # Without the CA the certificate is refused; retryable, so nothing is dropped while the
    # operator fixes the configuration (the spool logs every failure).
    with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED") as info:
        run(_write(unverified, SinkBatch(2, _points(1, 1), [])))
    assert info.value.retryable
    assert len(stub.seen) == 1


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_slow_server_times_out_retryably(stub: Stub, kind: str) -> None:
    stub.delay = 1.5
    if kind == "v1":
        sink: InfluxV1Sink | InfluxV2Sink = InfluxV1Sink(InfluxV1Config(url=stub.url, database="d", timeout=0.3))
    else:
        sink = InfluxV2Sink(InfluxV2Config(url=stub.url, bucket="b", timeout=0.3))
    with pytest.raises(SinkError, match=r"timed out|Timeout") as info:
        run(_write(sink, SinkBatch(1, _points(1, 1), [])))
    assert info.value.retryable


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_closing_a_sink_ends_a_write_waiting_on_the_server(stub: Stub, kind: str) -> None:
    """The spool stops (collector shutdown): aclose() ends a write blocked on a server that does
    not answer, retryably, instead of leaving its worker thread to the timeout."""
    stub.delay = 20.0
    sink = _sinks_for(stub.url)[0 if kind == "v1" else 1]
    sink.config.timeout = 60.0  # (read when start() opens the poster)

    async def go() -> BaseException | None:
        await sink.start()
        write = asyncio.create_task(sink.write(SinkBatch(1, _points(1, 1), [])))
        deadline = time.monotonic() + 10
        while not stub.seen:  # the request is at the stub, which holds its answer back
            assert time.monotonic() < deadline, "the write never reached the stub"
            await asyncio.sleep(0.01)
        await sink.aclose()
        try:
            await asyncio.wait_for(write, 10)
        except SinkError as err:
            return err
        return None

    err = run(go())
    assert isinstance(err, SinkError) and err.retryable and "cannot reach" in str(err)


def test_events_can_be_left_out(stub: Stub) -> None:
    sink = build_sink("victoriametrics", {"url": stub.url}, "sinks.vm")
    run(_write(sink, SinkBatch(1, _points(1, 1), _events())))  # type: ignore[arg-type]
    assert [line.split(",", 1)[0] for line in stub.seen[0].text.splitlines()] == ["gpu"]
    assert "bucket=fleetmon" in stub.seen[0].path


def test_name_set_after_build_labels_health_and_errors(stub: Stub) -> None:
    """The spool names a sink after its config key (``sink.name = "history"``)."""
    stub.replies = [(500, {}, b"boom")]
    sink = build_sink("influxdb_v2", {"url": stub.url, "bucket": "b"}, "sinks.history")
    assert sink.name == "influxdb_v2"
    sink.name = "history"
    with pytest.raises(SinkError, match=r"^sink history: .*500"):
        run(_write(sink, SinkBatch(1, _points(1, 1), [])))  # type: ignore[arg-type]
    assert {h.labels for h in sink.health()} == {(("sink", "history"),)}


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match=r"batch_size must be 1\.\.5000"):
        InfluxV1Sink(InfluxV1Config(url="http://127.0.0.1:1", database="x", batch_size=10_000))
    with pytest.raises(ValueError, match="database is required"):
        InfluxV1Sink(InfluxV1Config(url="http://127.0.0.1:1"))
    with pytest.raises(ValueError, match="dialect must be one of influxdb1, influxdb2"):
        InfluxV2Sink(InfluxV2Config(url="http://127.0.0.1:1", bucket="b", dialect="v3"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"sinks\.influx: unknown key 'databse'"):
        build_sink("influxdb", {"url": "http://127.0.0.1:1", "databse": "x"}, "sinks.influx")
    with pytest.raises(ConfigError, match=r"sinks\.influx: unknown sink kind 'influxdb9'"):
        build_sink("influxdb9", {}, "sinks.influx")


# --- real influxd 1.x -------------------------------------------------------------------------

@pytest.mark.services
def test_v1_points_and_events_read_back_equal(influxd: Server) -> None:
    pts, evs = _points(), _events()
    sink = InfluxV1Sink(InfluxV1Config(url=influxd.url, database="readback", create_database=True))
    run(_write(sink, SinkBatch(1, pts, evs)))
    assert _influx_rows(influxd.url, "readback", "SELECT * FROM gpu") == _expected_influx_rows(pts)
    assert _influx_rows(influxd.url, "readback", "SELECT * FROM event") == [{
        "time": NOW_MS * 1_000_000, "node": "gpu-node-01", "kind": "gpu.xid", "severity": "critical",
        "gpu": "3", "xid": "79", "message": evs[0].message, "action": evs[0].action,
    }]
    health = {h.name: h.value for h in sink.health()}
    assert health["fleetmon_sink_written_points_total"] == len(pts)
    assert health["fleetmon_sink_written_events_total"] == 1
    assert health["fleetmon_sink_failed_writes_total"] == 0

    async def read() -> Any:
        await sink.start()
        try:
            return await sink.query("SELECT count(power_watts) FROM gpu GROUP BY gpu")
        finally:
            await sink.aclose()

    series = run(read())
    assert [(s.tags, s.rows()) for s in series] == [
        ({"gpu": str(g)}, [{"time": 0, "count": 3}]) for g in range(4)]


@pytest.mark.services
def test_v1_same_batch_twice_stores_once(influxd: Server) -> None:
    pts = _points(8, 5)
    sink = InfluxV1Sink(InfluxV1Config(url=influxd.url, database="idem", create_database=True))
    run(_write(sink, SinkBatch(1, pts, _events()), SinkBatch(1, pts, _events())))
    assert _influx_rows(influxd.url, "idem", "SELECT count(*) FROM gpu") == [
        {"time": 0, "count_power_watts": 40, "count_temperature_celsius": 40}]
    assert _influx_rows(influxd.url, "idem", "SELECT count(message) FROM event") == [{"time": 0, "count": 1}]


@pytest.mark.services
def test_v1_missing_database_and_field_type_conflict(influxd: Server) -> None:
    sink = InfluxV1Sink(InfluxV1Config(url=influxd.url, database="absent", name="hist"))
    with pytest.raises(SinkError, match=r"sink hist: .*404 .*database not found.*create_database") as info:
        run(_write(sink, SinkBatch(1, _points(1, 1), [])))
    assert not info.value.retryable

    # 'message' is a string field of the event measurement; a float under that name conflicts.
    influx_create_database(influxd.url, "conflict")
    sink = InfluxV1Sink(InfluxV1Config(url=influxd.url, database="conflict", batch_size=2, name="hist"))
    run(_write(sink, SinkBatch(1, [], _events())))
    bad = Point("event", "message", (("node", "n9"),), 1.0, NOW_MS * 1_000_000 + 1)
    good = _points(2, 2)  # 4 lines (two fields a line); chunks: [g1 g2] [bad g3] [g4]
    batch = SinkBatch(2, [*good[:4], bad, *good[4:]], [])
    with pytest.raises(SinkError) as info:
        run(_write(sink, batch))
    err = info.value
    assert not err.retryable
    assert str(err).startswith("sink hist: ")
    assert "field type conflict" in str(err)
    assert f"first offending line: 'event,node=n9 message=1.0 {NOW_MS * 1_000_000 + 1}'" in str(err)
    # Partial write: every other line, before and after the bad one, is stored.
    assert len(_influx_rows(influxd.url, "conflict", "SELECT * FROM gpu")) == 4
    assert len(_influx_rows(influxd.url, "conflict", "SELECT * FROM event")) == 1
    health = {h.name: h.value for h in sink.health()}
    assert health["fleetmon_sink_rejected_batches_total"] == 1


@pytest.mark.services
def test_v1_server_down_is_retryable_and_nothing_is_lost(tmp_path: Any) -> None:
    proc, url = start_influxd(tmp_path)
    port = int(url.rsplit(":", 1)[1])
    sink = InfluxV1Sink(InfluxV1Config(url=url, database="outage", create_database=True, name="hist", timeout=2))
    first, second = SinkBatch(1, _points(2, 1), []), SinkBatch(2, _points(2, 2, node="gpu-node-02"), [])

    restarted: list[Any] = []

    async def go() -> SinkError:
        await sink.start()
        try:
            await sink.write(first)
            proc.stop()
            try:
                await sink.write(second)
            except SinkError as err:
                caught = err
            else:
                raise AssertionError("write to a stopped influxd returned")
            restarted.append(start_influxd(tmp_path, port=port)[0])  # same data dir and port
            await write_with_retry(sink, second, Backoff(initial=0.1, maximum=0.5), max_attempts=50)
            return caught
        finally:
            await sink.aclose()

    try:
        err = run(go())
    finally:
        proc.stop()
        for p in restarted:
            p.stop()
    assert err.retryable and err.retry_after is None
    assert f"sink hist: cannot reach {url}/write" in str(err)
    # (restarted to read back)
    proc3, url3 = start_influxd(tmp_path, port=port)
    try:
        rows = _influx_rows(url3, "outage", "SELECT count(power_watts) FROM gpu GROUP BY node")
    finally:
        proc3.stop()
    assert rows == [{"time": 0, "count": 2}, {"time": 0, "count": 4}]
    health = {h.name: h.value for h in sink.health()}
    assert health["fleetmon_sink_retries_total"] >= 1
    assert health["fleetmon_sink_written_points_total"] == len(first.points) + len(second.points)


# --- VictoriaMetrics, both APIs -----------------------------------------------------------------

def _vm_samples(url: str, match: str, series: int, samples: int) -> dict[tuple[Any, ...], float]:
    got = vm_export(url, match, series=series, samples=samples)
    out: dict[tuple[Any, ...], float] = {}
    for g in got:
        labels = tuple(sorted(g["metric"].items()))
        for v, ts in zip(g["values"], g["timestamps"], strict=True):
            out[labels, ts] = v
    return out


def _expected_vm(points: list[Point], extra: dict[str, str] | None = None) -> dict[tuple[Any, ...], float]:
    out = {}
    for p in points:
        labels = tuple(sorted({**dict(p.tags), **(extra or {}), "__name__": p.name}.items()))
        out[labels, p.ts_ns // 1_000_000] = p.value
    return out


@pytest.mark.services
@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_victoria_metrics_reads_back_equal_and_idempotent(victoria_metrics: Server, kind: str) -> None:
    node = f"vm-{kind}"
    pts = _points(node=node)
    if kind == "v2":
        sink: InfluxV1Sink | InfluxV2Sink = InfluxV2Sink(InfluxV2Config(url=victoria_metrics.url, bucket="ignored"))
        extra = {}
    else:
        sink = InfluxV1Sink(InfluxV1Config(url=victoria_metrics.url, database="fleet", dialect="influxdb2"))
        extra = {"db": "fleet"}  # VictoriaMetrics turns /write?db= into a label
    run(_write(sink, SinkBatch(1, pts, []), SinkBatch(1, pts, [])))
    got = _vm_samples(victoria_metrics.url, f'{{__name__=~"gpu_.*",node="{node}"}}', 8, 24)
    assert got == _expected_vm(pts, extra)


@pytest.mark.services
def test_v2_server_down_is_retryable(tmp_path: Any) -> None:
    sink = InfluxV2Sink(InfluxV2Config(url="http://127.0.0.1:9", bucket="b", name="vm", timeout=2))
    with pytest.raises(SinkError, match=r"sink vm: cannot reach http://127.0.0.1:9/api/v2/write") as info:
        run(_write(sink, SinkBatch(1, _points(1, 1), [])))
    assert info.value.retryable
    assert {h.name: h.value for h in sink.health()}["fleetmon_sink_failed_writes_total"] == 1


@pytest.mark.services
def test_v1_and_v2_sinks_at_once_store_the_same_points(influxd: Server, victoria_metrics: Server) -> None:
    """The acceptance case: one batch to influxd (v1 /write) and VictoriaMetrics (v2 API)."""
    pts = _points(6, 4, node="both")
    v1 = build_sink("influxdb", {"url": influxd.url, "database": "both", "create_database": True},
                    "sinks.history")
    v2 = build_sink("influxdb2", {"url": victoria_metrics.url, "org": "dc", "bucket": "both"}, "sinks.vm")
    batch = SinkBatch(7, pts, [])

    async def go() -> None:
        await asyncio.gather(v1.start(), v2.start())
        try:
            await asyncio.gather(v1.write(batch), v2.write(batch))
        finally:
            await asyncio.gather(v1.aclose(), v2.aclose())

    run(go())
    from_influx: dict[tuple[Any, ...], float] = {}
    for row in _influx_rows(influxd.url, "both", "SELECT * FROM gpu"):
        tags = {k: row[k] for k in ("gpu", "model", "node")}
        for f in ("power_watts", "temperature_celsius"):
            labels = tuple(sorted({**tags, "__name__": f"gpu_{f}"}.items()))
            from_influx[labels, row["time"] // 1_000_000] = row[f]
    from_vm = _vm_samples(victoria_metrics.url, '{__name__=~"gpu_.*",node="both"}', 12, 48)
    assert len(from_influx) == len(pts) == 48
    assert from_vm == from_influx


# --- the acceptance case, end to end: fleetmon collector + agent ------------------------------

def _influx_samples(url: str, db: str, node: str) -> dict[tuple[Any, ...], float]:
    out: dict[tuple[Any, ...], float] = {}
    try:
        series = influx_query(url, f"SELECT * FROM /.*/ WHERE node = '{node}' GROUP BY *", db)
    except RuntimeError:  # database not created yet
        return out
    for s in series:
        if s["name"] == "event":
            continue  # VictoriaMetrics keeps no strings: events are compared on influxd alone
        for row in s["values"]:
            rec = dict(zip(s["columns"], row, strict=True))
            ts = rec.pop("time")
            for f, v in rec.items():
                if v is not None:
                    labels = tuple(sorted({**s["tags"], "__name__": f"{s['name']}_{f}"}.items()))
                    labels = tuple((k, val) for k, val in labels if val != "")  # GROUP BY * lists absent tags as ""
                    out[labels, ts // 1_000_000] = float(v)
    return out


@pytest.mark.services
@pytest.mark.slow
def test_collector_with_v1_and_v2_sinks_writes_the_same_points(
        influxd: Server, victoria_metrics: Server, tmp_path: Any, fleetmon_cmd: list[str]) -> None:
    grpc_port, http_port = free_port(), free_port()
    (tmp_path / "collector.yml").write_text(f"""
data_dir: {tmp_path / "collector"}
listen: 127.0.0.1:{grpc_port}
http: 127.0.0.1:{http_port}
alerting: {{rules: [], notifiers: {{log: {{}}}}}}
sinks:
  history: {{type: influxdb_v1, url: "{influxd.url}", database: accept, create_database: true}}
  vm: {{type: influxdb_v2, url: "{victoria_metrics.url}", org: dc, bucket: accept}}
""")
    (tmp_path / "agent.yml").write_text(f"""
collectors: ["127.0.0.1:{grpc_port}"]
data_dir: {tmp_path / "agent"}
node: accept-node
batch_interval: 1
labels: {{cluster: accept}}
plugins:
  simulated: {{gpus: 2, interval: 1}}
""")
    collector = Process([*fleetmon_cmd, "collector", "--config", str(tmp_path / "collector.yml")],
                        tmp_path / "collector.log")
    agent = None
    try:
        wait_for_port(grpc_port, timeout=30, proc=collector.proc)
        agent = Process([*fleetmon_cmd, "agent", "--config", str(tmp_path / "agent.yml")], tmp_path / "agent.log")
        # Let the agent deliver a few intervals, then stop it and let the spool drain to both sinks.
        wait_until(lambda: len(_influx_samples(influxd.url, "accept", "accept-node")) >= 200, 60,
                   "200 samples in influxd")
        agent.stop()

        def spool_bytes() -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
                return metric_value(resp.read().decode(), "fleetmon_spool_bytes")

        wait_until(lambda: spool_bytes() == 0, 60, "the spool to drain into both sinks")
        from_influx = _influx_samples(influxd.url, "accept", "accept-node")

        def vm_samples() -> list[dict[str, Any]] | None:
            got = vm_export(victoria_metrics.url, '{node="accept-node"}')
            n = sum(len(g["values"]) for g in got if not g["metric"]["__name__"].startswith("event_"))
            return got if n >= len(from_influx) else None  # rows show a moment after the ack

        from_vm_raw = wait_until(vm_samples, 30, "VictoriaMetrics to show what it acknowledged")
    finally:
        if agent is not None:
            agent.stop()
        collector.stop()
    assert len(from_influx) >= 200, collector.log_text()[-2000:]
    from_vm = {}
    for g in from_vm_raw:
        if g["metric"]["__name__"] in ("event_message", "event_action"):
            continue  # string fields, kept by VictoriaMetrics 1.79 as 0-valued series
        labels = tuple(sorted(g["metric"].items()))
        for v, ts in zip(g["values"], g["timestamps"], strict=True):
            from_vm[labels, ts] = v
    names = {dict(k[0])["__name__"] for k in from_influx}
    assert {"gpu_temperature_celsius", "gpu_power_watts"} <= names
    assert from_vm.keys() == from_influx.keys()
    assert from_vm == pytest.approx(from_influx, rel=1e-12)
