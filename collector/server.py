"""The ``fleetmon.v1.Telemetry/Stream`` handler: framing and gRPC statuses, nothing else.

Requests arrive as raw bytes (no deserializer) so that garbage gets a clear INVALID_ARGUMENT
naming the peer, instead of grpc's generic deserialization failure. What a Hello or a Batch
means (node state, sequences, storage) is the :class:`collector.ingest.Ingestor`'s; this
module maps its exceptions to statuses:

=========================  ===================
``IdentityError``          PERMISSION_DENIED
``LimitError``             RESOURCE_EXHAUSTED
``StreamSuperseded``       ABORTED
``IngestError``            INVALID_ARGUMENT
``StoreError``             UNAVAILABLE (not acked: the agent keeps the batch and resends it)
=========================  ===================
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError

from collector import __version__
from collector.errors import IdentityError, IngestError, LimitError, StoreError, StreamSuperseded
from collector.ingest import Ingestor
from proto import telemetry_pb2 as pb

SERVICE = "fleetmon.v1.Telemetry"


def status_for(err: Exception) -> grpc.StatusCode:
    if isinstance(err, IdentityError):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(err, LimitError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(err, StreamSuperseded):
        return grpc.StatusCode.ABORTED
    if isinstance(err, StoreError):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INVALID_ARGUMENT


class _Refused(Exception):
    """End the stream with this status (raised inside the handler, caught at its top)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class TelemetryService:
    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_stream_rpc_method_handler(
            self.stream, request_deserializer=None, response_serializer=pb.CollectorMessage.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, {"Stream": method})

    def _parse(self, raw: bytes, what: str) -> pb.AgentMessage:
        """``raw`` as an AgentMessage; ``what`` names the message in the reason."""
        msg = pb.AgentMessage()
        try:
            msg.ParseFromString(raw)
        except DecodeError as err:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"undecodable {what} ({len(raw)} bytes): {err}") from err
        return msg

    async def _hello(self, it: AsyncIterator[bytes]) -> pb.Hello:
        timeout = self.ingestor.limits.hello_timeout
        try:
            raw = await asyncio.wait_for(it.__anext__(), timeout)
        except StopAsyncIteration:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                           "empty stream: the first message must be a Hello") from None
        except TimeoutError:
            raise _Refused(grpc.StatusCode.DEADLINE_EXCEEDED, f"no Hello within {timeout:g}s") from None
        msg = self._parse(raw, "first message")
        if not msg.HasField("hello"):
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                           "the first message must be a Hello, got " + (msg.WhichOneof("msg") or "nothing"))
        return msg.hello

    async def stream(self, requests: AsyncIterator[bytes],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.CollectorMessage]:
        peer = context.peer()
        it = requests.__aiter__()
        try:
            hello = await self._hello(it)
            session = await self.ingestor.open_stream(hello, peer)
        except _Refused as err:
            self.ingestor.stream_refused(peer, err.details)
            await context.abort(err.code, err.details)
            return
        except IngestError as err:  # counted and logged by the ingestor
            await context.abort(status_for(err), str(err))
            return
        refused: _Refused | None = None
        try:
            yield pb.CollectorMessage(welcome=pb.Welcome(
                last_durable_sequence=session.welcome_sequence, collector_version=__version__,
                max_batch_bytes=self.ingestor.limits.max_message_bytes))
            async for raw in it:
                msg = self._parse(raw, "message")
                if not msg.HasField("batch"):
                    raise _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"expected a Batch after the Hello, got {msg.WhichOneof('msg') or 'nothing'}")
                try:
                    ack = await self.ingestor.receive(session, msg.batch)
                except StoreError as err:
                    raise _Refused(status_for(err), f"store unavailable: {err}") from err
                except IngestError as err:
                    raise _Refused(status_for(err), str(err)) from err
                yield pb.CollectorMessage(ack=ack)
        except _Refused as err:
            refused = err
        finally:
            self.ingestor.close_stream(session)
        if refused is not None:
            self.ingestor.stream_refused(session.who, refused.details)
            await context.abort(refused.code, refused.details)
