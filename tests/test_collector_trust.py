"""Trust at the collector's front doors (issue 12): mutual TLS and node identity, the token
mode, the loopback rule, certificate reload, the HTTP API's auth, limits, corrupt stores,
secrets. Real collectors in the test process, real gRPC, certificates made at test time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.codec import pack_values
from agent.config import load_config as load_agent
from agent.transport import METHOD
from alerts.model import NodeStatus
from alerts.notifiers import build_notifiers
from collector.app import Collector
from collector.config import CollectorConfig, Limits, TlsConfig, load_config
from collector.errors import ConfigError, CorruptStoreError
from collector.sequence import NodeState
from collector.storage.embedded import NewSeries, SampleColumns, WriteItem
from collector.storage.logreader import LogStoreReader
from collector.storage.sqlite import SqliteStore, open_store
from fleetmon.certs import issue, make_ca
from fleetmon_common.secrets import Secret, redact_url
from proto import telemetry_pb2 as pb
from tests.fleet import Pki, lab_pki
from tests.services import free_port


def _cfg(tmp: Path, **kw: Any) -> CollectorConfig:
    cfg = CollectorConfig(listen="127.0.0.1:0", http="", data_dir=tmp / "data", **kw)
    cfg.alerting.notifiers = {}
    return cfg


def _mtls(pki: Pki) -> TlsConfig:
    own = pki.collector()
    return TlsConfig(cert=own.cert, key=own.key, client_ca=pki.ca)


def _creds(pki: Pki, node: str | None) -> grpc.ChannelCredentials:
    if node is None:
        return grpc.ssl_channel_credentials(pki.ca.read_bytes())
    own = pki.node(node)
    return grpc.ssl_channel_credentials(pki.ca.read_bytes(), own.key.read_bytes(), own.cert.read_bytes())


@contextlib.asynccontextmanager
async def running(cfg: CollectorConfig) -> AsyncIterator[Collector]:
    c = Collector(cfg)
    await c.start()
    try:
        yield c
    finally:
        await c.stop(grace=1)


class Client:
    """A raw stream to the collector (what a hostile or test client can do)."""

    def __init__(self, port: int, creds: grpc.ChannelCredentials | None = None,
                 metadata: tuple[tuple[str, str], ...] | None = None) -> None:
        addr = f"127.0.0.1:{port}"
        self.channel = grpc.aio.secure_channel(addr, creds) if creds else grpc.aio.insecure_channel(addr)
        self.metadata = metadata

    def open(self) -> Any:
        return self.channel.stream_stream(METHOD, request_serializer=lambda b: b,
                                          response_deserializer=pb.CollectorMessage.FromString)(metadata=self.metadata)

    async def close(self) -> None:
        await self.channel.close()


def hello(node: str, wal: str = "w1", oldest: int = 0) -> bytes:
    return pb.AgentMessage(hello=pb.Hello(node=node, wal_id=wal, oldest_sequence=oldest)).SerializeToString()


def batch(seq: int, values: list[float], *, define: int = 0, ts_ms: int | None = None, oldest: int = 0,
          events: int = 0, event_ts_ms: int | None = None, first_gpu: int = 0) -> bytes:
    b = pb.Batch(sequence=seq, oldest_sequence=oldest)
    for i in range(define):
        b.series.add(id=i + 1, measurement="gpu", field="temperature_celsius", labels={"gpu": str(first_gpu + i)})
    now = int(time.time() * 1000)
    if values:
        b.blocks.add(timestamp_ms=ts_ms or now, series_ids=range(1, len(values) + 1), values=pack_values(values))
    for i in range(events):
        b.events.add(timestamp_ms=event_ts_ms or now, kind="gpu.xid", labels={"xid": str(i)}, message="XID")
    return pb.AgentMessage(batch=b).SerializeToString()


async def status(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        while True:
            if await call.read() is grpc.aio.EOF:
                break
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return await call.code(), await call.details() or ""


async def welcome(call: Any, msg: bytes) -> int:
    await call.write(msg)
    first = await call.read()
    assert first is not grpc.aio.EOF and first.HasField("welcome"), first
    return int(first.welcome.last_durable_sequence)


async def send(call: Any, msg: bytes) -> pb.Ack:
    await call.write(msg)
    got = await call.read()
    assert got is not grpc.aio.EOF, await status(call)
    return got.ack


# --- mutual TLS and node identity ------------------------------------------------------------------
def test_mtls_node_identity(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fleetmon")
    pki = lab_pki(tmp_path)

    async def main() -> None:
        async with running(_cfg(tmp_path, tls=_mtls(pki))) as c:
            good = Client(c.grpc_port, _creds(pki, "n1"))
            call = good.open()
            assert await welcome(call, hello("n1")) == 0
            assert (await send(call, batch(1, [40.0], define=1))).contiguous == 1
            # a valid certificate of another node: refused, naming both
            thief = Client(c.grpc_port, _creds(pki, "intruder"))
            bad = thief.open()
            await bad.write(hello("n1"))
            code, details = await status(bad)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "claims node 'n1'" in details and "names intruder" in details
            # the real node's stream was not touched
            assert (await send(call, batch(2, [41.0]))).contiguous == 2
            # no client certificate: refused in the handshake
            anon = Client(c.grpc_port, _creds(pki, None))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                c2 = anon.open()
                await c2.write(hello("n1"))
                await c2.read()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            # a certificate from another CA: refused in the handshake
            other = make_ca(tmp_path / "other")
            stranger = issue(tmp_path / "other", tmp_path / "other", "n1", server=False)
            foreign = Client(c.grpc_port, grpc.ssl_channel_credentials(
                pki.ca.read_bytes(), stranger.key.read_bytes(), stranger.cert.read_bytes()))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                c3 = foreign.open()
                await c3.write(hello("n1"))
                await c3.read()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and other.cert.exists()
            # plaintext against a TLS port: nothing gets through
            plain = Client(c.grpc_port)
            with pytest.raises(grpc.aio.AioRpcError):
                c4 = plain.open()
                await c4.write(hello("n1"))
                await c4.read()
            await call.done_writing()
            for cl in (good, thief, anon, foreign, plain):
                await cl.close()
            assert c.ingestor.counters.refusals["stream", "identity"] == 1

    asyncio.run(main())
    assert any("refused stream from" in r.getMessage() and "claims node 'n1'" in r.getMessage()
               for r in caplog.records)


def test_certificates_reload_without_restart(tmp_path: Path) -> None:
    """Renewed files take effect on the next connection; a half-written renewal changes nothing."""
    pki = lab_pki(tmp_path)
    serving = tmp_path / "serving"
    serving.mkdir()
    own = pki.collector()
    for src, name in ((own.cert, "c.crt"), (own.key, "c.key"), (pki.ca, "ca.crt")):
        shutil.copy(src, serving / name)
    tls = TlsConfig(cert=serving / "c.crt", key=serving / "c.key", client_ca=serving / "ca.crt")
    # a second CA: its node is refused until the collector's client_ca file also holds it
    make_ca(tmp_path / "ca2")
    n2 = issue(tmp_path / "ca2", tmp_path / "ca2", "n2", server=False)
    n2_creds = grpc.ssl_channel_credentials(pki.ca.read_bytes(), n2.key.read_bytes(), n2.cert.read_bytes())

    async def attempt(port: int, creds: grpc.ChannelCredentials, node: str) -> bool:
        client = Client(port, creds)
        try:
            call = client.open()
            await welcome(call, hello(node))
            await call.done_writing()
            return True
        except grpc.aio.AioRpcError:
            return False
        finally:
            await client.close()

    async def main() -> None:
        async with running(_cfg(tmp_path, tls=tls)) as c:
            assert await attempt(c.grpc_port, _creds(pki, "n1"), "n1")
            assert not await attempt(c.grpc_port, n2_creds, "n2")
            # a broken key file (a renewal half-way): the old pair keeps serving
            (serving / "c.key").write_text("-----BEGIN PRIVATE KEY-----\nbroken\n")
            assert await attempt(c.grpc_port, _creds(pki, "n1"), "n1")
            shutil.copy(own.key, serving / "c.key")
            (serving / "ca.crt").write_bytes(pki.ca.read_bytes() + (tmp_path / "ca2" / "ca.crt").read_bytes())
            assert await attempt(c.grpc_port, n2_creds, "n2")
            assert await attempt(c.grpc_port, _creds(pki, "n1"), "n1")

    asyncio.run(main())


def test_token_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETMON_TEST_TOKEN", "t0ken-from-env")
    path = tmp_path / "c.yml"
    path.write_text(f"listen: 127.0.0.1:0\nhttp: ''\ndata_dir: {tmp_path / 'data'}\n"
                    "auth_token: {env: FLEETMON_TEST_TOKEN}\nalerting: {notifiers: {}}\n")
    cfg = load_config(path)
    assert repr(cfg.auth_token) == "'***'" and "t0ken" not in repr(cfg)

    async def main() -> None:
        async with running(cfg) as c:
            for metadata, why in ((None, "no bearer token"), ((("authorization", "Bearer nope"),), "wrong bearer")):
                client = Client(c.grpc_port, metadata=metadata)
                call = client.open()
                # The collector refuses before it reads a thing, so nothing is written here: a write
                # that fails as the stream ends makes grpcio (1.85) replace the collector's status
                # with INTERNAL "Internal error from Core" (grpc/grpc#36066; 2 of ~330 runs here).
                code, details = await status(call)
                assert code == grpc.StatusCode.UNAUTHENTICATED and why in details, (code, details)
                assert "t0ken" not in details
                await client.close()
            client = Client(c.grpc_port, metadata=(("authorization", "Bearer t0ken-from-env"),))
            call = client.open()
            assert await welcome(call, hello("n1")) == 0
            assert (await send(call, batch(1, [1.0], define=1))).refused == ""
            await call.done_writing()
            await client.close()

    asyncio.run(main())


def test_secret_sources_name_the_key_not_the_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yml"
    monkeypatch.delenv("FLEETMON_NOPE", raising=False)
    for value, why in (("{env: FLEETMON_NOPE}", "environment variable FLEETMON_NOPE is not set"),
                       (f"{{file: {tmp_path / 'missing'}}}", "cannot read secret file"),
                       ("{vault: x}", "expected a string, {env: NAME} or {file: PATH}")):
        path.write_text(f"auth_token: {value}\n")
        with pytest.raises(ConfigError, match=r"auth_token: " + why.replace("{", r"\{").replace("}", r"\}")):
            load_config(path)
    (tmp_path / "tok").write_text("s3cr3t-tok\n")
    path.write_text(f"auth_token: {{file: {tmp_path / 'tok'}}}\n")
    cfg = load_config(path)
    assert cfg.auth_token is not None and cfg.auth_token.reveal() == "s3cr3t-tok"
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.auth_token)


def test_loopback_rule(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.yml"
    path.write_text("listen: 0.0.0.0:7700\n")
    with pytest.raises(ConfigError, match=r"listen: 0\.0\.0\.0:7700 is not loopback.*insecure: true"):
        load_config(path)
    path.write_text("http: '[::]:7780'\n")
    with pytest.raises(ConfigError, match=r"http: \[::\]:7780 is not loopback: set http_auth\.token"):
        load_config(path)
    path.write_text("listen: 10.1.2.3:7700\ntls: {cert: /x.crt}\n")
    with pytest.raises(ConfigError, match="cert and key go together"):
        load_config(path)
    # said loudly at start when allowed
    caplog.set_level(logging.WARNING, "fleetmon")
    cfg = _cfg(tmp_path, insecure=True)
    cfg.listen = "0.0.0.0:0"

    async def main() -> None:
        async with running(cfg):
            pass

    asyncio.run(main())
    assert any(r.getMessage().startswith("INSECURE: gRPC on 0.0.0.0:0") for r in caplog.records)


# --- the HTTP API -------------------------------------------------------------------------------------
def _get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _strict(body: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"not JSON: {name}")

    return json.loads(body, parse_constant=refuse)


def test_http_token_read_only_and_json_without_infinity(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg.http = "127.0.0.1:0"
    cfg.http_auth.token = Secret("h77p-token")

    async def main() -> None:
        async with running(cfg) as c:
            base = f"http://127.0.0.1:{c.http_port}"
            client = Client(c.grpc_port)
            call = client.open()
            await welcome(call, hello("n1"))
            assert (await send(call, batch(1, [float("inf"), float("-inf"), 5.0], define=3))).refused == ""
            await call.done_writing()
            await client.close()

            def checks() -> None:
                assert _get(base + "/api/v1/summary")[0] == 401
                assert _get(base + "/api/v1/summary", "wrong")[0] == 401
                assert _get(base + "/metrics")[0] == 401
                assert _get(base + "/healthz")[0] == 200
                assert _get(base + "/")[0] == 200  # the page holds no data; it reads #token=
                assert _get(base + "/api/v1/summary", "h77p-token", method="POST")[0] == 405
                code, body = _get(base + "/api/v1/query?selector=gpu_temperature_celsius&since=0", "h77p-token")
                assert code == 200
                values = sorted((str(v) for s in _strict(body) for _t, v in s["values"]))
                assert values == ["+Inf", "-Inf", "5.0"]
                assert _get(base + "/api/v1/query?selector=x&since=inf", "h77p-token")[0] == 400
                code, body = _get(base + "/api/v1/nodes", "h77p-token")
                assert code == 200 and [n["node"] for n in _strict(body)] == ["n1"]

            await asyncio.to_thread(checks)

    asyncio.run(main())


# --- sequence integrity and limits (in-process, plaintext on loopback) ---------------------------------
def test_victim_wal_id_and_huge_sequence_cannot_stop_a_node(tmp_path: Path) -> None:
    """Issue 12, case 1 (and a buggy agent): Hello with the victim's wal_id, then
    Batch{sequence=10^12, oldest_sequence=10^12}. Nothing the real agent sends later is lost."""

    # Each batch carries its own timestamp: batches built within one millisecond would otherwise share
    # one, and the store keeps only the first sample of a (series, timestamp).
    base = int(time.time() * 1000) - 60_000

    async def main() -> None:
        async with running(_cfg(tmp_path)) as c:
            client = Client(c.grpc_port)
            real = client.open()
            assert await welcome(real, hello("victim", "wal-v")) == 0
            for seq in (1, 2, 3):
                msg = batch(seq, [40.0 + seq], define=1 if seq == 1 else 0, ts_ms=base + seq * 1000)
                assert (await send(real, msg)).contiguous == seq
            await real.done_writing()
            hostile = client.open()
            assert await welcome(hostile, hello("victim", "wal-v", oldest=10**12)) == 3
            ack = await send(hostile, batch(10**12, [999.0], define=1, oldest=10**12))
            assert "limits.max_sequence_jump" in ack.refused and ack.contiguous == 3
            ack = await send(hostile, batch(2**63 + 5, [999.0], define=1, oldest=2**63 + 5))
            assert "out of range" in ack.refused or "max_sequence_jump" in ack.refused
            # within the jump bound, with a claim: stored, but the real agent's future is untouched
            ack = await send(hostile, batch(1000, [999.0], define=1, oldest=10**12, ts_ms=base + 3500))
            assert ack.refused == "" and ack.contiguous == 3
            await hostile.done_writing()
            real = client.open()
            assert await welcome(real, hello("victim", "wal-v", oldest=4)) == 3
            for seq in (4, 5, 6):
                ack = await send(real, batch(seq, [40.0 + seq], define=1 if seq == 4 else 0, ts_ms=base + seq * 1000))
                assert (ack.refused, ack.contiguous) == ("", seq)
            await real.done_writing()
            await client.close()

    asyncio.run(main())
    reader = LogStoreReader(tmp_path / "data")  # the collector's store (blocks + its log)
    (series,) = reader.find_series("gpu_temperature_celsius", [])
    assert [v for _t, v in reader.samples(series.id, 0, 2**62)] == [41.0, 42.0, 43.0, 999.0, 44.0, 45.0, 46.0]
    reader.close()


def test_a_newer_stream_supersedes_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(_cfg(tmp_path)) as c:  # idle timeout: the default 300 s
            client = Client(c.grpc_port)
            old = client.open()
            await welcome(old, hello("n1"))
            new = client.open()
            await welcome(new, hello("n1"))
            t0 = time.monotonic()
            code, details = await status(old)
            assert code == grpc.StatusCode.ABORTED and "superseded" in details
            assert time.monotonic() - t0 < 60  # not the idle timeout
            assert (await send(new, batch(1, [1.0], define=1))).contiguous == 1
            await new.done_writing()
            await client.close()

    asyncio.run(main())


def test_a_refused_sequence_never_fails_another_agents_commit(tmp_path: Path) -> None:
    """Sequences >= 2^63 used to fail the whole group commit, aborting other agents' streams."""

    async def main() -> None:
        async with running(_cfg(tmp_path)) as c:
            client = Client(c.grpc_port)
            a, b = client.open(), client.open()
            await welcome(a, hello("a"))
            await welcome(b, hello("b"))
            await a.write(batch(2**63, [1.0], define=1))
            await b.write(batch(1, [2.0], define=1))
            ack_a, ack_b = (await a.read()).ack, (await b.read()).ack
            assert ack_a.refused and (ack_b.refused, ack_b.contiguous) == ("", 1)
            await a.done_writing()
            await b.done_writing()
            await client.close()

    asyncio.run(main())


def test_limits_hold_and_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fleetmon")
    limits = Limits(max_series_per_node=50, max_series_total=80, max_events_per_second=1.0, max_event_burst=5,
                    max_streams_per_node=1, stream_idle_timeout=0.5, hello_timeout=0.5)

    async def main() -> None:
        async with running(_cfg(tmp_path, limits=limits)) as c:
            client = Client(c.grpc_port)
            call = client.open()
            await welcome(call, hello("n1"))
            ack = await send(call, batch(1, [1.0] * 60, define=60))
            assert "limits.max_series_per_node (50)" in ack.refused
            assert (await send(call, batch(2, [1.0] * 40, define=40))).refused == ""
            ack = await send(call, batch(3, [1.0] * 15, define=15, first_gpu=100))  # 40 + 15 new would pass 50
            assert "has 40 series and this batch defines 15 more" in ack.refused
            year_3000 = 32503680000000
            ack = await send(call, batch(4, [], events=1, event_ts_ms=year_3000))
            assert "outside the window samples are accepted in" in ack.refused
            ack = await send(call, batch(5, [], events=6))
            assert "limits.max_event_burst (5)" in ack.refused
            assert (await send(call, batch(6, [], events=5))).refused == ""
            await call.write(batch(7, [], events=5))  # the bucket is empty: the stream ends, nothing acked
            code, details = await status(call)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_events_per_second" in details
            # the per-collector bound, from another node
            other = client.open()
            await welcome(other, hello("n2"))
            ack = await send(other, batch(1, [1.0] * 45, define=45))
            assert "limits.max_series_total (80)" in ack.refused
            await other.done_writing()
            # streams per node; an idle stream times out; a node that stored nothing is not listed after
            idle = client.open()
            await welcome(idle, hello("phantom"))
            second = client.open()
            await second.write(hello("phantom"))
            code, details = await status(second)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limits.max_streams_per_node" in details
            code, details = await status(idle)
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "no message for 0.5s (idle stream)" in details
            assert "phantom" not in c.ingestor.nodes and "n1" in c.ingestor.nodes
            silent = client.open()  # says nothing at all
            code, details = await status(silent)
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "no Hello within 0.5s" in details
            await client.close()
            refusals = c.ingestor.counters.refusals
            for key in (("batch", "max_series_per_node"), ("batch", "timestamp"), ("batch", "max_event_burst"),
                        ("stream", "max_events_per_second"), ("batch", "max_series_total"), ("stream", "idle"),
                        ("stream", "hello_timeout"), ("stream", "max_streams_per_node")):
                assert refusals[key] >= 1, key
            text = "\n".join(f"{h.name}{dict(h.labels)} {h.value}" for h in c.health())
            assert "fleetmon_collector_refusals_total{'reason': 'max_series_per_node', 'what': 'batch'}" in text

    asyncio.run(main())


def test_hostile_input_is_logged_at_a_bounded_rate(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fleetmon")

    async def main() -> None:
        async with running(_cfg(tmp_path)) as c:
            client = Client(c.grpc_port)
            call = client.open()
            await welcome(call, hello("n1"))
            for seq in range(1, 201):
                assert "never defined" in (await send(call, batch(seq, [1.0]))).refused
            await call.done_writing()
            for _ in range(30):
                bad = client.open()
                await bad.write(b"\xff garbage")
                await status(bad)
            await client.close()
            assert c.ingestor.counters.refusals["batch", "unknown_series"] == 200

    asyncio.run(main())
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) <= 20, f"{len(refused)} log lines for 230 hostile messages"


# --- the store -------------------------------------------------------------------------------------------
def _garbage_in_the_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2 - 4096)
        f.write(bytes((i * 131 + 7) % 256 for i in range(8192)))


def _filled_store(path: Path) -> None:

    store = SqliteStore(path)
    defs = [NewSeries(f"gpu_f{i}", "gpu", f"f{i}", {"node": "n1", "gpu": str(i)}, 0, "") for i in range(200)]
    sids = store.series_ids("n1", defs)
    state = NodeState.new_wal("n1", "w")
    for seq in range(1, 41):
        update = state.plan(seq)
        store.commit([WriteItem(update, "{}", SampleColumns(sids, [seq * 1000] * len(sids), [1.0] * len(sids)), [])])
        state.apply(update)
    store.close()


def test_a_corrupt_store_is_moved_aside_or_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "fleetmon")
    path = tmp_path / "fleetmon.sqlite"
    _filled_store(path)
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    _garbage_in_the_middle(path)
    with pytest.raises(CorruptStoreError) as err:
        open_store(path, 86400, on_corrupt="refuse")
    assert "the collector did not start" in str(err.value) and f"sqlite3 {path} .recover" in str(err.value)
    assert path.exists()
    store = open_store(path, 86400)  # move_aside: the default
    assert store.series_count() == 0
    store.close()
    aside = sorted(tmp_path.glob("fleetmon.sqlite.corrupt-*"))
    assert aside and aside[0].stat().st_size > 0
    (line,) = [r.getMessage() for r in caplog.records if "embedded store damaged" in r.getMessage()]
    assert str(aside[0]) in line and ".recover" in line
    # a file that is not a database at all
    path.unlink()
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptStoreError, match="not a database"):
        open_store(path, 86400, on_corrupt="refuse")


# --- secrets ---------------------------------------------------------------------------------------------
def test_secrets_stay_out_of_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:

    assert redact_url("https://bob:hunter2@hook.example:8443/services/T1/B2/XyZ?token=abc&x=1") == \
        "https://***@hook.example:8443/services/T1/B2/XyZ?token=***&x=1"
    assert redact_url("https://bob:hunter2@hook.example/services/T1/B2/XyZ", keep_path=False) == \
        "https://***@hook.example/…"
    secret_file = tmp_path / "hook-url"

    port = free_port()  # nothing listens: every delivery fails and is logged
    secret_file.write_text(f"http://user:hunter2@127.0.0.1:{port}/hooks/s3cr3t-path?token=abc123\n")
    monkeypatch.setenv("FLEETMON_TEST_MQTT_PW", "mqtt-pw-9")
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        notifiers = build_notifiers({"webhook": {"url": {"file": str(secret_file)}, "retries": 1, "backoff": 0.01},
                                     "mqtt": {"host": "127.0.0.1", "port": port, "username": "u",
                                              "password": {"env": "FLEETMON_TEST_MQTT_PW"}}}, "test")
        for n in notifiers:
            await n.start()
        for n in notifiers:
            n.send_node_status(NodeStatus("n1", True, time.time()))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until both failed and said so in the log
            logged = " ".join(r.getMessage() for r in caplog.records)
            if "notifier webhook" in logged and "notifier mqtt" in logged:
                break
            await asyncio.sleep(0.05)
        text = " ".join(repr(n.__dict__) for n in notifiers)
        for n in notifiers:
            await n.aclose()
        assert "hunter2" not in text and "mqtt-pw-9" not in text

    asyncio.run(main())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "notifier webhook" in logged and "notifier mqtt" in logged  # failures were logged...
    for secret in ("hunter2", "s3cr3t-path", "abc123", "mqtt-pw-9"):
        assert secret not in logged  # ...without the secrets


def test_fleetmon_certs_command(tmp_path: Path, fleetmon_cmd: list[str]) -> None:

    out = tmp_path / "pki"
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
    no_ca = run([*fleetmon_cmd, "certs", "--dir", str(out), "node", "n1"], capture_output=True, text=True)
    assert no_ca.returncode == 2 and "no CA in" in no_ca.stderr
    for args in (["ca"], ["collector", "collector-1", "--ip", "127.0.0.1"], ["node", "gpu-a17-03", "n2"]):
        done = run([*fleetmon_cmd, "certs", "--dir", str(out), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert oct((out / "ca.key").stat().st_mode & 0o777) == "0o600"
    again = run([*fleetmon_cmd, "certs", "--dir", str(out), "ca"], capture_output=True, text=True)
    assert again.returncode == 2 and "refusing to replace a CA" in again.stderr
    # what it made works for mutual TLS, end to end, with the identity check
    pki = Pki(out)
    pki.issued["localhost"] = issue(out, out, "localhost", server=True, ips=["127.0.0.1"])

    async def main() -> None:
        async with running(_cfg(tmp_path, tls=_mtls(pki))) as c:
            node = grpc.ssl_channel_credentials(pki.ca.read_bytes(), (out / "gpu-a17-03.key").read_bytes(),
                                                (out / "gpu-a17-03.crt").read_bytes())
            client = Client(c.grpc_port, node)
            call = client.open()
            assert await welcome(call, hello("gpu-a17-03")) == 0
            await call.done_writing()
            await client.close()

    asyncio.run(main())


def test_example_configs_show_mutual_tls() -> None:

    deploy = Path(__file__).resolve().parents[1] / "deploy" / "config"
    col = load_config(deploy / "collector.yml")
    assert col.listen.startswith("0.0.0.0:") and col.tls.client_ca is not None and col.tls.cert is not None
    agent = load_agent(deploy / "agent.yml")
    assert agent.tls is not None and agent.tls.cert is not None and agent.tls.cert.stem == agent.node
