"""The ``fleetmon.v1.Telemetry/Stream`` handler: framing, deadlines and gRPC statuses, nothing else.

Requests arrive as raw bytes (no deserializer) so that garbage gets a clear INVALID_ARGUMENT
naming the peer, instead of grpc's generic deserialization failure. What a Hello or a Batch
means (identity, node state, sequences, limits, storage) is the
:class:`collector.ingest.Ingestor`'s; this module maps its exceptions to statuses:

===========================  ===================
``AuthenticationError``      UNAUTHENTICATED
``IdentityError``            PERMISSION_DENIED
``LimitError``               RESOURCE_EXHAUSTED (nothing acked: the agent resends after its back-off)
``StreamSuperseded``         ABORTED
``IngestError``              INVALID_ARGUMENT
``StoreError``               UNAVAILABLE (not acked: the agent keeps the batch and resends it)
no Hello in time, idle       DEADLINE_EXCEEDED
===========================  ===================
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from collector import __version__
from collector.config import Limits
from collector.errors import (
    AuthenticationError,
    IdentityError,
    IngestError,
    LimitError,
    StoreError,
    StreamSuperseded,
)
from collector.ingest import Ingestor
from collector.security import Authenticator, PeerIdentity
from proto import telemetry_pb2 as pb

SERVICE = "fleetmon.v1.Telemetry"


def status_for(err: Exception) -> grpc.StatusCode:
    if isinstance(err, AuthenticationError):
        return grpc.StatusCode.UNAUTHENTICATED
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

    def __init__(self, code: grpc.StatusCode, details: str, reason: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.reason = reason


def parse_message(raw: bytes, what: str) -> pb.AgentMessage:
    """``raw`` as an AgentMessage; ``what`` names the message in the reason."""
    msg = pb.AgentMessage()
    try:
        msg.ParseFromString(raw)
    except DecodeError as err:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"undecodable {what} ({len(raw)} bytes): {err}",
                       "undecodable") from err
    return msg


def _shape_class() -> Any:
    """AgentMessage as the wire sees it, with Batch.series and Batch.events as plain ``bytes``:
    parsing it only counts them (C speed, memory about the message's size), where a full parse
    builds a message with a label map per definition (~14x the message's size)."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="fleetmon_shape.proto", package="fleetmon.shape", syntax="proto3")
    batch = file.message_type.add(name="BatchShape")
    batch.field.add(name="series", number=2, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)  # Batch.series
    batch.field.add(name="events", number=4, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)  # Batch.events
    msg = file.message_type.add(name="AgentMessageShape")
    msg.field.add(name="batch", number=2, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,  # AgentMessage.batch
                  type_name=".fleetmon.shape.BatchShape")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("fleetmon.shape.AgentMessageShape"))


_Shape = _shape_class()


def precheck(raw: bytes, limits: Limits) -> None:
    """Refuse, before parsing it, a message whose parse alone would cost the collector far more
    memory than its size (issue 12: 100K series definitions in one batch took RSS from 69 to
    187 MB). A malformed message is left to the real parser to name."""
    try:
        shape = _Shape.FromString(raw)
    except DecodeError:
        return
    series, events = len(shape.batch.series), len(shape.batch.events)
    if series > limits.max_series_per_node:
        raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"a batch defining {series} series, more than limits.max_series_per_node "
                       f"({limits.max_series_per_node}); not parsed", "max_series_per_node")
    if events > limits.max_event_burst:
        raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"a batch of {events} events, more than limits.max_event_burst "
                       f"({limits.max_event_burst}); not parsed", "max_event_burst")


class _Reader:
    """Reads the request stream with a deadline per message; :meth:`interrupt` ends a read now
    (a newer stream of the same node took over)."""

    def __init__(self, requests: AsyncIterator[bytes]) -> None:
        self._requests = requests
        self._it: AsyncIterator[bytes] | None = None  # made on the first read (grpc warns about an unused one)
        self._deadline: Any = None

    async def next(self, timeout: float) -> bytes | None:
        """The next message; None at the end of the stream; TimeoutError after ``timeout``."""
        if self._it is None:
            self._it = self._requests.__aiter__()
        try:
            # One timer per read, no task: cheap on the ingest hot path.
            async with asyncio.timeout(timeout) as self._deadline:
                return await self._it.__anext__()
        except StopAsyncIteration:
            return None
        finally:
            self._deadline = None

    def interrupt(self) -> None:
        if self._deadline is not None:
            self._deadline.reschedule(asyncio.get_running_loop().time())


def _health_classes() -> tuple[Any, Any]:
    """``grpc.health.v1`` HealthCheckRequest{string service = 1} and HealthCheckResponse{
    ServingStatus status = 1} (grpc/health/v1/health.proto), built here: two fields do not
    need the grpcio-health-checking package."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="fleetmon_health.proto", package="grpc.health.v1",
                                              syntax="proto3")
    req = file.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    resp = file.message_type.add(name="HealthCheckResponse")
    resp.field.add(name="status", number=1, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)  # the enum, as its number
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")))


_HealthRequest, _HealthResponse = _health_classes()
SERVING, NOT_SERVING = 1, 2  # HealthCheckResponse.ServingStatus


def health_handler(serving: Callable[[], bool]) -> grpc.GenericRpcHandler:
    """gRPC's standard health check (``grpc.health.v1.Health/Check``) for the service ``""`` and
    ``fleetmon.v1.Telemetry``: SERVING while the collector takes streams. Agents probe it before
    moving back to their preferred collector (agent/failback.py); load balancers can use it too."""

    async def check(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            service = _HealthRequest.FromString(raw).service
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "undecodable HealthCheckRequest")
        if service not in ("", SERVICE):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service[:128]!r}")
        return bytes(_HealthResponse(status=SERVING if serving() else NOT_SERVING).SerializeToString())

    method = grpc.unary_unary_rpc_method_handler(check, request_deserializer=None, response_serializer=None)
    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": method})


class TelemetryService:
    def __init__(self, ingestor: Ingestor, auth: Authenticator | None = None) -> None:
        self.ingestor = ingestor
        self.auth = auth or Authenticator(token=None, mutual_tls=False)

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_stream_rpc_method_handler(
            self.stream, request_deserializer=None, response_serializer=pb.CollectorMessage.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, {"Stream": method})

    async def _hello(self, reader: _Reader) -> pb.Hello:
        timeout = self.ingestor.limits.hello_timeout
        try:
            raw = await reader.next(timeout)
        except TimeoutError:
            raise _Refused(grpc.StatusCode.DEADLINE_EXCEEDED, f"no Hello within {timeout:g}s",
                           "hello_timeout") from None
        if raw is None:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "empty stream: the first message must be a Hello",
                           "no_hello")
        msg = parse_message(raw, "first message")
        if not msg.HasField("hello"):
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                           "the first message must be a Hello, got " + (msg.WhichOneof("msg") or "nothing"),
                           "no_hello")
        return msg.hello

    def _identify(self, context: grpc.aio.ServicerContext) -> PeerIdentity:
        return self.auth.identify(context.auth_context(), context.invocation_metadata())

    async def stream(self, requests: AsyncIterator[bytes],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.CollectorMessage]:
        peer = context.peer()
        reader = _Reader(requests)
        try:
            identity = self._identify(context)
            hello = await self._hello(reader)
            session = await self.ingestor.open_stream(hello, peer, identity, interrupt=reader.interrupt)
        except _Refused as err:
            self.ingestor.stream_refused(peer, err.details, err.reason)
            await context.abort(err.code, err.details)
            return
        except IngestError as err:
            self.ingestor.stream_refused(peer, str(err), err.reason)
            await context.abort(status_for(err), str(err))
            return
        refused: _Refused | None = None
        idle = self.ingestor.limits.stream_idle_timeout
        try:
            yield pb.CollectorMessage(welcome=pb.Welcome(
                last_durable_sequence=session.welcome_sequence, collector_version=__version__,
                max_batch_bytes=self.ingestor.limits.max_message_bytes))
            while True:
                if session.superseded:
                    raise _Refused(grpc.StatusCode.ABORTED, "superseded by a newer stream from the same node",
                                   "superseded")
                try:
                    raw = await reader.next(idle)
                except TimeoutError:
                    if session.superseded:
                        raise _Refused(grpc.StatusCode.ABORTED, "superseded by a newer stream from the same node",
                                       "superseded") from None
                    raise _Refused(grpc.StatusCode.DEADLINE_EXCEEDED, f"no message for {idle:g}s (idle stream)",
                                   "idle") from None
                if raw is None:
                    break
                if len(raw) > 65536:  # small batches cannot be expensive to parse
                    precheck(raw, self.ingestor.limits)
                msg = parse_message(raw, "message")
                if not msg.HasField("batch"):
                    raise _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"expected a Batch after the Hello, got {msg.WhichOneof('msg') or 'nothing'}",
                                   "no_batch")
                try:
                    ack = await self.ingestor.receive(session, msg.batch)
                except StoreError as err:
                    raise _Refused(status_for(err), f"store unavailable: {err}", "store") from err
                except IngestError as err:
                    raise _Refused(status_for(err), str(err), err.reason) from err
                yield pb.CollectorMessage(ack=ack)
        except _Refused as err:
            refused = err
        finally:
            self.ingestor.close_stream(session)
        if refused is not None:
            self.ingestor.stream_refused(session.who, refused.details, refused.reason)
            await context.abort(refused.code, refused.details)
