"""The agent's gRPC client (agent/rpc.py) against a real collector and against hostile peers.

The ordinary path (Hello, batches, acks, failover, a paused collector) runs in every agent test
that streams; these are the edges: messages larger than HTTP/2's flow-control windows, and
peers that answer junk, nothing, or oversized and compressed gRPC messages (a peer that is not
a well-behaved collector gets an error that names what was wrong, never a hang).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from agent.rpc import MAX_RECEIVE, Call, Connection, RpcError, connect
from agent.tls import AgentTlsConfig, ChannelSecurity
from agent.transport import METHOD
from proto import telemetry_pb2 as pb
from tests.fleet import CollectorProc


def _security(col: CollectorProc, node: str) -> ChannelSecurity:
    assert col.pki is not None
    own = col.pki.node(node)
    return ChannelSecurity(AgentTlsConfig(col.pki.ca, own.cert, own.key), None)


@pytest.mark.services
def test_a_batch_larger_than_the_flow_control_windows_reaches_the_collector(tmp_path: Path) -> None:
    """~1.5 MiB in one gRPC message: many times HTTP/2's initial 64 KiB window, so the client
    must wait for the collector's window updates. The collector acks it, and stores it."""
    col = CollectorProc(tmp_path).start()
    try:
        async def stream() -> pb.Ack:
            conn = await _security(col, "big").connect(col.addr, 10)
            try:
                call = conn.open(METHOD)
                hello = pb.Hello(node="big", wal_id="b1g", agent_version="test")
                await call.write(pb.AgentMessage(hello=hello).SerializeToString())
                welcome = pb.CollectorMessage.FromString(await _next(call))
                seq = welcome.welcome.last_durable_sequence + 1
                batch = pb.Batch(sequence=seq, oldest_sequence=seq)
                n = 40_000
                for i in range(n):
                    batch.series.add(id=i + 1, measurement="big_test", field="value", type=pb.GAUGE,
                                     labels={"i": str(i)})
                batch.blocks.add(timestamp_ms=int(time.time() * 1000), series_ids=range(1, n + 1), values=bytes(8 * n))
                body = pb.AgentMessage(batch=batch).SerializeToString()
                assert len(body) > 1 << 20
                await call.write(body)
                while True:
                    msg = pb.CollectorMessage.FromString(await _next(call))
                    if msg.HasField("ack"):
                        call.cancel()
                        return msg.ack
            finally:
                await conn.aclose()

        ack = asyncio.run(stream())
        assert ack.sequence > 0 and not ack.refused, ack
    finally:
        col.stop()


async def _next(call: Call) -> bytes:
    body = await asyncio.wait_for(call.read(), 30)
    assert body is not None, f"the collector ended the stream: {call.status_text()}"
    return body


@contextlib.asynccontextmanager
async def _peer(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]) -> AsyncIterator[str]:
    """A TCP peer on a free loopback port, running ``handle`` per connection."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)  # type: ignore[misc]
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()


async def _open(addr: str, *, keepalive: float = 2.0) -> Connection:
    return await connect(addr, None, timeout=5, keepalive=keepalive, keepalive_timeout=keepalive)


def test_a_peer_that_answers_junk_is_an_error_that_says_so() -> None:
    async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await reader.read(100)

    async def main() -> RpcError:
        async with _peer(junk) as addr:
            conn = await _open(addr)
            call = conn.open(METHOD)
            with pytest.raises(RpcError) as err:
                await asyncio.wait_for(call.read(), 10)
            await conn.aclose()
            return err.value

    err = asyncio.run(main())
    assert err.code == "UNAVAILABLE" and "not an HTTP/2 server: it answered HTTP/1 ('HTTP/1.1 400 Bad Request')" \
        in err.details


def test_a_peer_that_answers_tls_to_plaintext_is_named() -> None:
    async def tls_alert(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(bytes.fromhex("15030300020250"))  # a TLS alert record, as a TLS server answers
        await writer.drain()
        await reader.read(100)

    async def main() -> RpcError:
        async with _peer(tls_alert) as addr:
            conn = await _open(addr)
            with pytest.raises(RpcError) as err:
                await asyncio.wait_for(conn.open(METHOD).read(), 10)
            await conn.aclose()
            return err.value

    assert "answered in TLS" in asyncio.run(main()).details


def test_a_silent_peer_is_noticed_by_the_keepalive() -> None:
    """TCP accepted, then nothing (a paused process: the kernel accepts): the ping goes
    unanswered and the call fails within keepalive + its timeout."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1 << 16):
            pass

    async def main() -> tuple[RpcError, float]:
        async with _peer(silent) as addr:
            conn = await _open(addr, keepalive=0.3)
            t0 = time.monotonic()
            with pytest.raises(RpcError) as err:
                await asyncio.wait_for(conn.open(METHOD).read(), 30)
            await conn.aclose()
            return err.value, time.monotonic() - t0

    err, _took = asyncio.run(main())
    assert err.code == "UNAVAILABLE" and "keepalive ping not answered" in err.details


def _h2_peer(frames: Callable[[h2.connection.H2Connection, int], None]) -> Callable[..., object]:
    """An HTTP/2 server that answers every request with ``frames(conn, stream_id)``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(1 << 16):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    frames(conn, event.stream_id)
            writer.write(conn.data_to_send())
            await writer.drain()

    return handle


@pytest.mark.parametrize(("prefix", "code", "says"), [
    ((MAX_RECEIVE + 1).to_bytes(5, "big"), "RESOURCE_EXHAUSTED", f"at most {MAX_RECEIVE}"),
    (b"\x01" + (3).to_bytes(4, "big") + b"abc", "INTERNAL", "compressed message"),
], ids=["oversized", "compressed"])
def test_oversized_and_compressed_answers_are_refused(prefix: bytes, code: str, says: str) -> None:
    def answer(conn: h2.connection.H2Connection, stream_id: int) -> None:
        conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
        conn.send_data(stream_id, prefix)

    async def main() -> RpcError:
        async with _peer(_h2_peer(answer)) as addr:
            conn = await _open(addr)
            with pytest.raises(RpcError) as err:
                await asyncio.wait_for(conn.open(METHOD).read(), 10)
            await conn.aclose()
            return err.value

    err = asyncio.run(main())
    assert err.code == code and says in err.details


def test_a_status_in_the_trailers_is_read_and_decoded() -> None:
    def answer(conn: h2.connection.H2Connection, stream_id: int) -> None:
        conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                      ("grpc-status", "16"), ("grpc-message", "no%20token")], end_stream=True)

    async def main() -> tuple[bytes | None, str]:
        async with _peer(_h2_peer(answer)) as addr:
            conn = await _open(addr)
            call = conn.open(METHOD)
            got = await asyncio.wait_for(call.read(), 10)
            await conn.aclose()
            return got, call.status_text()

    assert asyncio.run(main()) == (None, "UNAUTHENTICATED: no token")
