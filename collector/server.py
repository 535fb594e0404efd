"""The ``fleetmon.v1.Telemetry/Stream`` handler.

Requests arrive as raw bytes (no deserializer) so that garbage gets a clear INVALID_ARGUMENT
naming the peer, instead of grpc's generic deserialization failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from collector import __version__
from collector.errors import IngestError
from collector.ingest import Decoded, Ingestor, StreamSession
from proto import telemetry_pb2 as pb

log = logging.getLogger("fleetmon.collector.server")

SERVICE = "fleetmon.v1.Telemetry"


class StoreFailure(IngestError):
    """The batch was valid but could not be made durable; the stream ends unacked."""


class TelemetryService:
    def __init__(self, ingestor: Ingestor, on_batch: Callable[[StreamSession, Decoded], None],
                 on_node: Callable[[str, bool], None], backpressure: Callable[[], Any] | None = None) -> None:
        self.ingestor = ingestor
        self.on_batch = on_batch
        self.on_node = on_node
        self.backpressure = backpressure
        self.streams = 0

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_stream_rpc_method_handler(
            self.stream, request_deserializer=None, response_serializer=pb.CollectorMessage.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, {"Stream": method})

    async def _abort(self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, who: str, why: str) -> None:
        log.warning("refused stream from %s: %s", who, why)
        self.ingestor.refused_total += 1
        await context.abort(code, why)

    async def _parse(self, context: grpc.aio.ServicerContext, raw: bytes, who: str,
                     what: str) -> pb.AgentMessage | None:
        """``raw`` as an AgentMessage, or None after aborting the stream with INVALID_ARGUMENT
        (``what`` names the message in the reason: "first message", "message")."""
        msg = pb.AgentMessage()
        try:
            msg.ParseFromString(raw)
        except DecodeError as err:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, who,
                              f"undecodable {what} ({len(raw)} bytes): {err}")
            return None
        return msg

    async def stream(self, requests: AsyncIterator[bytes],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.CollectorMessage]:
        peer = context.peer()
        limits = self.ingestor.limits
        it = requests.__aiter__()
        try:
            raw = await asyncio.wait_for(it.__anext__(), limits.hello_timeout)
        except StopAsyncIteration:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, peer,
                              "empty stream: the first message must be a Hello")
            return
        except TimeoutError:
            await self._abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, peer,
                              f"no Hello within {limits.hello_timeout:g}s")
            return
        msg = await self._parse(context, raw, peer, "first message")
        if msg is None:
            return
        if not msg.HasField("hello"):
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, peer,
                              "the first message must be a Hello, got " + (msg.WhichOneof("msg") or "nothing"))
            return
        hello = msg.hello
        try:
            self.ingestor.check_hello(hello, peer)
        except IngestError as err:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, peer, str(err))
            return
        node = self.ingestor.node(hello.node)
        who = f"node {hello.node} ({peer})"
        token = object()
        node.stream_token = token  # a newer stream for the same node supersedes this one
        async with node.lock:
            state = await self.ingestor.writer.run_in_thread(self.ingestor.store.load_node, hello.node)
            labels = dict(hello.labels)
            if state.wal_id != hello.wal_id:
                if state.wal_id:
                    log.warning("node %s: new agent WAL %s (was %s); its sequences start again",
                                hello.node, hello.wal_id, state.wal_id)
                await self.ingestor.writer.run_in_thread(self.ingestor.store.reset_node, hello.node,
                                                         hello.wal_id, labels)
                state = await self.ingestor.writer.run_in_thread(self.ingestor.store.load_node, hello.node)
            state.skip_below(hello.oldest_sequence)
            node.state = state
            node.labels = labels
        node.connected = True
        node.connected_at = time.time()
        node.agent_version = hello.agent_version
        node.plugins = [(p.name, p.enabled, p.detail) for p in hello.plugins]
        if hello.sent_at_ms:
            node.clock_skew = hello.sent_at_ms / 1000 - time.time()
        session = StreamSession(node, peer)
        self.streams += 1
        self.on_node(hello.node, True)
        log.info("node %s connected from %s (agent %s, durable up to %d)", hello.node, peer,
                 hello.agent_version, state.contiguous)
        yield pb.CollectorMessage(welcome=pb.Welcome(
            last_durable_sequence=state.contiguous, collector_version=__version__,
            max_batch_bytes=limits.max_message_bytes))
        try:
            async for raw in it:
                if node.stream_token is not token:
                    await self._abort(context, grpc.StatusCode.ABORTED, who,
                                      "superseded by a newer stream from the same node")
                    return
                msg = await self._parse(context, raw, who, "message")
                if msg is None:
                    return
                if not msg.HasField("batch"):
                    await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, who,
                                      f"expected a Batch after the Hello, got {msg.WhichOneof('msg') or 'nothing'}")
                    return
                try:
                    ack = await self._batch(session, msg.batch, who)
                except StoreFailure as err:
                    # Not acked, so not lost: the agent keeps it in its WAL and resends.
                    await self._abort(context, grpc.StatusCode.UNAVAILABLE, who, f"store unavailable: {err}")
                    return
                yield pb.CollectorMessage(ack=ack)
        finally:
            if node.stream_token is token:
                node.connected = False
                self.on_node(hello.node, False)
                log.info("node %s disconnected", hello.node)

    async def _batch(self, session: StreamSession, batch: pb.Batch, who: str) -> pb.Ack:
        node = session.node
        async with node.lock:
            state = node.state
            assert state is not None
            if batch.oldest_sequence:
                state.skip_below(batch.oldest_sequence)
            seq = batch.sequence
            if seq and state.has(seq):
                self.ingestor.duplicates_total += 1
                # Still learn its definitions: later batches on this stream may use them.
                if batch.series:
                    with contextlib.suppress(IngestError):
                        await self.ingestor.writer.run_in_thread(self.ingestor.define, session, batch.series)
                return pb.Ack(sequence=seq, contiguous=state.contiguous)
            try:
                if batch.series:
                    # New series are inserted in one transaction with an fsync: do it on the
                    # store's thread, not on the event loop that serves every other stream.
                    await self.ingestor.writer.run_in_thread(self.ingestor.define, session, batch.series)
                decoded = self.ingestor.decode(session, batch, time.time())
            except IngestError as err:
                self.ingestor.refused_total += 1
                log.warning("%s: refused batch %d: %s", who, seq, err)
                if seq:
                    state.add(seq)  # never coming back in an acceptable form: don't wait for it
                return pb.Ack(sequence=seq, contiguous=state.contiguous, refused=str(err))
            if self.backpressure is not None:
                await self.backpressure()
            state.add(seq)
            try:
                await self.ingestor.writer.submit(decoded.item)
            except IngestError as err:
                state.held.discard(seq)
                if state.contiguous >= seq:
                    state.contiguous = seq - 1
                raise StoreFailure(str(err)) from err
            node.samples += decoded.samples
            node.batches += 1
            node.last_batch_at = time.time()
            self.ingestor.samples_total += decoded.samples
        self.on_batch(session, decoded)
        return pb.Ack(sequence=seq, contiguous=state.contiguous)
