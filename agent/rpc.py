"""The agent's gRPC client: one HTTP/2 connection to a collector, its one bidirectional stream
and the health probe's unary call, on h2 (the python-hyper HTTP/2 state machine) over asyncio.

Why not grpc.aio, which the collector serves with: on a GPU node the agent is the only gRPC
client, with one stream and a batch a second, and grpcio costs it more than the rest of its
runtime. Importing it is ~9 MiB of RSS; in use, its native code pages alone are ~12 MiB (cygrpc),
and it runs six threads of its own that wake ~20 times a second. h2 is ~1.5 MiB and no thread:
its frames are read and written on the event loop the agent runs anyway (issue 18 has the
figures; README, "What the agent costs a node").

Only what the agent uses: one address (host:port, no name-resolution policy, no load
balancing), no compression, no retries (the transport reconnects with back-off), keepalive
pings with a timeout, a message size limit on what is received. Every failure surfaces as
:class:`RpcError` with a gRPC status name, so the transport's logs read as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Sequence
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from hpack import NeverIndexedHeaderTuple

from agent import __version__

# hpack logs every header it encodes at debug level, the token's value included: never.
for _name in ("hpack", "h2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

#: gRPC status codes by number (grpc/doc/statuscodes.md).
STATUS = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
          "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
          "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
#: RST_STREAM codes as gRPC maps them (grpc/doc/PROTOCOL-HTTP2.md, "Errors").
_RESET_STATUS = {h2.errors.ErrorCodes.REFUSED_STREAM: "UNAVAILABLE", h2.errors.ErrorCodes.CANCEL: "CANCELLED",
                 h2.errors.ErrorCodes.ENHANCE_YOUR_CALM: "RESOURCE_EXHAUSTED",
                 h2.errors.ErrorCodes.INADEQUATE_SECURITY: "PERMISSION_DENIED"}
#: A ping after 2 s without a frame from the collector, the connection dropped when its answer
#: takes 2 s more: a dead or paused collector host is noticed within 4 s (issue 14 asks 5 s). The
#: collector permits pings this often (collector/app.py, ``min_ping_interval_without_data_ms``).
KEEPALIVE = 2.0
KEEPALIVE_TIMEOUT = 2.0
_USER_AGENT = f"fleetmon-agent/{__version__}"
#: Messages above this are refused (the collector's acks and welcome are a few bytes).
MAX_RECEIVE = 4 << 20
_HEADER = 5  # compressed flag + big-endian length


class RpcError(Exception):
    """A call that failed: ``code`` is the gRPC status name, ``details`` what happened."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def split_address(addr: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RpcError("INVALID_ARGUMENT", f"collector address {addr!r} is not host:port")
    return host.strip("[]"), int(port)


class Connection(asyncio.Protocol):
    """One HTTP/2 connection. A collector that stops answering (host down, process paused) is
    noticed by a ping sent after ``keepalive`` s without a frame from it and not answered within
    ``keepalive_timeout`` s: the connection is then aborted (no TLS goodbye is waited for) and
    every open call fails with UNAVAILABLE."""

    def __init__(self, authority: str, scheme: str, keepalive: float, keepalive_timeout: float) -> None:
        self.authority = authority
        self.scheme = scheme
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.error: RpcError | None = None  # set once the connection is unusable
        self._calls: dict[int, Call] = {}
        self._window: asyncio.Event = asyncio.Event()  # set when the peer grants send window
        self._last_heard = time.monotonic()
        self._opening: bytes | None = b""  # its first bytes, until its first frame's type is known
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ping_at: float | None = None  # when the unanswered ping was sent
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.h2.initiate_connection()
        self._flush()
        self._last_heard = time.monotonic()
        self._arm(self.keepalive)

    def data_received(self, data: bytes) -> None:
        self._last_heard = time.monotonic()
        if self._opening is not None:
            # A server's first frame is SETTINGS (RFC 9113, 3.4): anything else is not an HTTP/2
            # server, and h2 would wait for the rest of a "frame" that never comes.
            self._opening += data
            if len(self._opening) >= 4:
                opening, self._opening = self._opening, None
                if opening[3] != _SETTINGS:
                    self._fail(RpcError("UNAVAILABLE", _not_http2(opening, self.scheme)), abort=True)
                    return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as err:
            self._fail(RpcError("UNAVAILABLE", f"HTTP/2 protocol error from the collector: {err}"), abort=True)
            return
        for event in events:
            self._handle(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        why = exc or "Socket closed"
        if self.scheme == "https" and self._opening == b"":  # not a byte from the collector
            # TLS 1.3: a collector that refuses the client certificate says so after the
            # handshake, by closing; the transport's hint names the certificate (agent/tls.py).
            self._fail(RpcError("UNAVAILABLE", f"the collector closed the connection right after the TLS "
                                               f"handshake ({why})"))
        else:
            self._fail(RpcError("UNAVAILABLE", f"connection closed: {why}"))
        if self._timer is not None:
            self._timer.cancel()
        if not self._lost.done():
            self._lost.set_result(None)

    # -- events ------------------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            call = self._calls.get(event.stream_id)
            if call is not None:
                call._data(event.data)
        elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            call = self._calls.get(event.stream_id)
            if call is not None:
                headers = [(_text(k), _text(v)) for k, v in event.headers or []]
                call._headers(headers, trailers=isinstance(event, h2.events.TrailersReceived))
        elif isinstance(event, h2.events.StreamEnded):
            call = self._calls.pop(event.stream_id, None)
            if call is not None:
                call._ended()
        elif isinstance(event, h2.events.StreamReset):
            call = self._calls.pop(event.stream_id, None)
            if call is not None:
                code = _RESET_STATUS.get(event.error_code, "INTERNAL")  # type: ignore[call-overload]
                call._fail(RpcError(code, f"stream reset by the collector ({_code_name(event.error_code)})"))
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._window.set()
        elif isinstance(event, h2.events.PingAckReceived):
            self._ping_at = None
        elif isinstance(event, h2.events.ConnectionTerminated):
            extra = f": {event.additional_data.decode(errors='replace')}" if event.additional_data else ""
            self._fail(RpcError("UNAVAILABLE", f"the collector closed the connection "
                                               f"(GOAWAY {_code_name(event.error_code)}{extra})"))
            if self.transport is not None:
                self.transport.close()

    def _fail(self, err: RpcError, *, abort: bool = False) -> None:
        if self.error is None:
            self.error = err
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call._fail(err)
        self._window.set()  # writers waiting for window see the error
        if abort and self.transport is not None:
            self.transport.abort()

    # -- keepalive ---------------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._keepalive_check)

    def _keepalive_check(self) -> None:
        if self.error is not None:
            return
        now = time.monotonic()
        if self._ping_at is not None:
            if now - self._ping_at >= self.keepalive_timeout:
                self._fail(RpcError("UNAVAILABLE", f"keepalive ping not answered within {self.keepalive_timeout:g}s "
                                                   "(collector host down or process paused?)"), abort=True)
                return
            self._arm(self._ping_at + self.keepalive_timeout - now)
        elif now - self._last_heard >= self.keepalive:
            self.h2.ping(os.urandom(8))
            self._flush()
            self._ping_at = now
            self._arm(self.keepalive_timeout)
        else:
            self._arm(self._last_heard + self.keepalive - now)

    # -- calls -------------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def open(self, path: str, metadata: Sequence[tuple[str, str]] = ()) -> Call:
        """Start a call to ``path`` (``/package.Service/Method``)."""
        if self.error is not None:
            raise self.error
        stream_id = self.h2.get_next_available_stream_id()
        headers: list[tuple[str, str]] = [
            (":method", "POST"), (":scheme", self.scheme), (":path", path), (":authority", self.authority),
            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", _USER_AGENT)]
        # A credential never goes into HPACK's shared table (RFC 7541, 7.1.3).
        headers += [NeverIndexedHeaderTuple(k, v) if k == "authorization" else (k, v)  # type: ignore[misc]
                    for k, v in metadata]
        self.h2.send_headers(stream_id, headers)
        self._flush()
        call = Call(self, stream_id)
        self._calls[stream_id] = call
        return call

    async def unary(self, path: str, request: bytes, metadata: Sequence[tuple[str, str]] = ()) -> bytes:
        """One request, one answer; RpcError when the status is not OK."""
        call = self.open(path, metadata)
        await call.write(request, last=True)
        answer = await call.read()
        while await call.read() is not None:  # the status comes with the end of the stream
            pass
        call.raise_for_status()
        if answer is None:
            raise RpcError("INTERNAL", f"{path} answered OK without a message")
        return answer

    async def _sendable(self, stream_id: int) -> int:
        while True:
            if self.error is not None:
                raise self.error
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window > 0:
                return window
            self._window.clear()
            await self._window.wait()

    def close(self) -> None:
        """End the connection (GOAWAY, then close; nothing waits for the peer)."""
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is None or self.transport.is_closing():
            return
        if self.error is None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
                self._flush()
            self._fail(RpcError("CANCELLED", "connection closed by the agent"))
        self.transport.close()

    async def aclose(self, grace: float = 1.0) -> None:
        """:meth:`close`, and wait until the socket is gone: aborted after ``grace`` seconds
        (a TLS peer that is paused never answers the goodbye)."""
        self.close()
        if self.transport is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), grace)
        except TimeoutError:
            self.transport.abort()


class Call:
    """One gRPC call on a :class:`Connection`: length-prefixed messages both ways."""

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._buf = bytearray()
        self._messages: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._error: RpcError | None = None
        self._ended_flag = False
        self.status: tuple[str, str] | None = None  # (code name, message) from the trailers

    # -- from the connection -----------------------------------------------------------------

    def _headers(self, headers: list[tuple[str, str]], *, trailers: bool) -> None:
        fields = dict(headers)
        if not trailers:
            status = fields.get(":status", "")
            if status != "200":
                self._fail(RpcError(_http_status(status), f"HTTP status {status} from the collector"))
                return
            if not fields.get("content-type", "").startswith("application/grpc"):
                self._fail(RpcError("UNKNOWN", f"not a gRPC answer (content-type {fields.get('content-type')!r})"))
                return
        if "grpc-status" in fields:  # trailers, or a trailers-only answer
            number = fields["grpc-status"]
            code = STATUS[int(number)] if number.isdigit() and int(number) < len(STATUS) else "UNKNOWN"
            self.status = (code, unquote(fields.get("grpc-message", "")))

    def _data(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= _HEADER:
            if buf[0] != 0:
                self._fail(RpcError("INTERNAL", "the collector sent a compressed message; none was asked for"))
                return
            size = int.from_bytes(buf[1:_HEADER], "big")
            if size > MAX_RECEIVE:
                self._fail(RpcError("RESOURCE_EXHAUSTED", f"message of {size} bytes from the collector "
                                                          f"(at most {MAX_RECEIVE})"))
                return
            if len(buf) < _HEADER + size:
                break
            self._messages.append(bytes(buf[_HEADER:_HEADER + size]))
            del buf[:_HEADER + size]
        if self._messages:
            self._ready.set()

    def _ended(self) -> None:
        self._ended_flag = True
        if self.status is None:
            self.status = ("INTERNAL", "the stream ended without a gRPC status")
        self._ready.set()

    def _fail(self, err: RpcError) -> None:
        if self._error is None and not self._ended_flag:
            self._error = err
            with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                self._conn.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
                self._conn._flush()
        self._ready.set()

    # -- for the caller ----------------------------------------------------------------------

    async def write(self, message: bytes, *, last: bool = False) -> None:
        """Send one message (flow control respected: waits for window)."""
        frame = memoryview(len(message).to_bytes(_HEADER, "big") + message)  # flag 0: not compressed
        conn = self._conn
        while True:
            if self._error is not None:
                raise self._error
            if not frame:
                break
            window = await conn._sendable(self.stream_id)
            if self._error is not None:
                raise self._error
            chunk, frame = frame[:window], frame[window:]
            try:
                conn.h2.send_data(self.stream_id, bytes(chunk), end_stream=last and not frame)
            except h2.exceptions.StreamClosedError as err:
                raise self._error or RpcError("UNAVAILABLE", f"stream closed while sending: {err}") from err
            conn._flush()

    async def read(self) -> bytes | None:
        """The next message; None once the collector ended the stream (see :attr:`status`)."""
        while True:
            if self._messages:
                return self._messages.popleft()
            if self._error is not None:
                raise self._error
            if self._ended_flag:
                return None
            self._ready.clear()
            await self._ready.wait()

    def status_text(self) -> str:
        if self.status is None:
            return "stream closed"
        code, message = self.status
        return f"{code}: {message}" if message else code

    def raise_for_status(self) -> None:
        if self._error is not None:
            raise self._error
        if self.status is not None and self.status[0] != "OK":
            raise RpcError(*self.status)

    def cancel(self) -> None:
        """Stop the call (RST_STREAM CANCEL) unless it has ended."""
        if not self._ended_flag and self._error is None:
            self._fail(RpcError("CANCELLED", "cancelled by the agent"))
        self._conn._calls.pop(self.stream_id, None)


_SETTINGS = 0x4  # the frame type


def _not_http2(opening: bytes, scheme: str) -> str:
    if opening[:1] in (b"\x15", b"\x16") and opening[1:2] == b"\x03":
        return "the collector answered in TLS to a plaintext connection"
    if opening.startswith(b"HTTP/"):
        line = opening.split(b"\r\n", 1)[0].decode("ascii", "replace")
        return f"not an HTTP/2 server: it answered HTTP/1 ({line!r}) over {scheme}"
    return f"not an HTTP/2 server: its first bytes were {opening[:16].hex()} over {scheme}"


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _code_name(code: object) -> str:
    return getattr(code, "name", str(code))


#: gRPC's mapping of a non-200 HTTP status (grpc/doc/http-grpc-status-mapping.md).
_HTTP_STATUS = {"400": "INTERNAL", "401": "UNAUTHENTICATED", "403": "PERMISSION_DENIED", "404": "UNIMPLEMENTED",
                "429": "UNAVAILABLE", "502": "UNAVAILABLE", "503": "UNAVAILABLE", "504": "UNAVAILABLE"}


def _http_status(status: str) -> str:
    return _HTTP_STATUS.get(status, "UNKNOWN")


async def connect(addr: str, context: ssl.SSLContext | None, *, server_name: str = "", timeout: float,
                  keepalive: float = KEEPALIVE, keepalive_timeout: float = KEEPALIVE_TIMEOUT) -> Connection:
    """Open a connection to ``addr``: TCP, TLS when ``context`` is given (ALPN h2, the collector's
    certificate checked against ``server_name`` or the host dialled) and the HTTP/2 preface.
    TimeoutError after ``timeout`` seconds (a host that is down, a paused process)."""
    host, port = split_address(addr)
    loop = asyncio.get_running_loop()
    conn = Connection(addr, "https" if context is not None else "http", keepalive, keepalive_timeout)
    try:
        await asyncio.wait_for(loop.create_connection(
            lambda: conn, host, port, ssl=context, server_hostname=(server_name or host) if context else None,
            ssl_handshake_timeout=timeout if context else None), timeout)
    except TimeoutError:
        conn.close()
        raise TimeoutError(f"no answer from {addr} within {timeout:g}s (host down or process paused?)") from None
    except ssl.SSLError as err:
        raise RpcError("UNAVAILABLE", f"TLS handshake with {addr} failed: {err.reason or err}") from err
    if context is not None:
        assert conn.transport is not None
        obj = conn.transport.get_extra_info("ssl_object")
        if obj is None or obj.selected_alpn_protocol() != "h2":
            conn.close()
            raise RpcError("UNAVAILABLE", f"{addr} did not agree to HTTP/2 in the TLS handshake (ALPN)")
    return conn
