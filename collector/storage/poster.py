"""How the HTTP sinks post a batch: its request bodies over one keep-alive connection, each made
while the server works on the one before.

A batch is several requests (5,000 lines, 10,000 remote-write samples). Making a body is Python
work that holds the GIL; sending one is mostly waiting for the server. The sinks used to render
chunk *i+1* in one worker thread while an async client (or a client's blocking call in another
thread) posted chunk *i*, but the post's own Python work (building the request, writing it to the
socket) then waited for the GIL until the render let go of it: the render ran *before* the send,
not beside the server's work, and against VictoriaMetrics the sinks stayed at 0.65-0.71x of a raw
POST of the same bodies (issue 14, ``bench/bench_sinks.py``).

Here one worker thread does, per chunk: send it (the bytes are in the kernel's socket buffer when
``request`` returns), make the next body while the server parses this one, then read the answer.
Nothing else contends for the GIL in that order, and a batch costs one hop to the worker thread,
not three per chunk. The connection is plain ``http.client`` (HTTP/1.1, keep-alive, TLS by the
``ssl`` module), kept between batches; one that the server closed while idle is opened again and
the chunk sent again, once. Proxies from the environment are not used.

Errors are the sinks' (:mod:`collector.storage.retry`): a timeout or a connection failure is
retryable and stops the batch at once; an answer the sink's ``refusal`` classifies as retryable
(5xx, 429) stops it too; a refused chunk (400) does not stop the others, and the refusals are
raised together at the end (:func:`~collector.storage.retry.raise_refused`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urlencode, urlsplit

from collector.errors import SinkError
from collector.storage.retry import SinkHealth, raise_refused
from fleetmon_common.secrets import redact_url

#: chunk text (to name a refused line) and the body that goes on the wire
Rendered = tuple[bytes, bytes]
#: (status, headers, body, chunk text) -> the SinkError for a non-2xx answer
Refusal = Callable[[int, Mapping[str, str], bytes, bytes], SinkError]
#: The server closed a kept-alive connection between two requests: open it again, send again.
_DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def basic_authorization(username: str, password: str) -> str:
    """The Authorization header value of HTTP Basic authentication (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def tls_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    """What :meth:`~collector.storage.http_sink.HttpEndpointConfig.ssl_verify` says, as a context."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ChunkPoster:
    """POSTs a batch's bodies to one URL over one connection, from the calling (worker) thread.

    ``url`` may carry ``user:password@`` (sent as Basic authentication unless ``headers`` has an
    Authorization) but no query: ``params`` is the query string. One batch at a time: the sink
    calls it under its write lock (:class:`~collector.storage.http_sink.NamedSink`).
    """

    def __init__(self, sink: SinkHealth, url: str, *, params: Mapping[str, str] | None = None,
                 headers: Mapping[str, str], timeout: float, verify: bool | ssl.SSLContext,
                 refusal: Refusal) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port]/path, got {redact_url(url)!r}")
        self._health = sink
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{urlencode(dict(params))}" if params else "")
        self.url = redact_url(url)  # for messages: never the password
        self._headers = dict(headers)
        if parts.username is not None and not any(k.lower() == "authorization" for k in self._headers):
            self._headers["Authorization"] = basic_authorization(unquote(parts.username),
                                                                 unquote(parts.password or ""))
        self._timeout = timeout
        self._tls = tls_context(verify) if self._https else None
        self._refusal = refusal
        self._conn: http.client.HTTPConnection | None = None
        self._used = False  # the connection has carried a request: the server may have closed it since

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._tls is not None:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                         context=self._tls)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._used = False
        return self._conn

    def close(self) -> None:
        """Close the connection; a batch being posted from another thread fails at once (the
        socket is shut down first: closing alone would not wake a thread blocked reading it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            conn.close()

    def post_all(self, n_chunks: int, render: Callable[[int], Rendered]) -> None:
        """Post chunks ``0..n_chunks-1`` in order, rendering each next one while the server works.

        Raises :class:`SinkError`: at once for a retryable failure, after the last chunk for refusals.
        """
        if n_chunks == 0:
            return
        try:
            self._post_all(n_chunks, render)
        except SinkError:
            raise
        except TimeoutError as err:
            self.close()
            raise SinkError(f"sink {self._health.sink}: {self.url} timed out after {self._timeout:g}s: "
                            f"{type(err).__name__}", retryable=True) from err
        except (OSError, http.client.HTTPException) as err:
            self.close()  # in an unknown state: the next batch starts on a new connection
            raise SinkError(f"sink {self._health.sink}: cannot reach {self.url}: {type(err).__name__}: {err}",
                            retryable=True) from err
        except BaseException:
            self.close()  # a render failed with a request unanswered: not a connection to reuse
            raise

    def _post_all(self, n_chunks: int, render: Callable[[int], Rendered]) -> None:
        rejected: list[SinkError] = []
        upcoming = render(0)
        for i in range(n_chunks):
            chunk, body = upcoming
            conn, reused = self._send(body)
            # The body is on its way: make the next one while the server parses this one.
            if i + 1 < n_chunks:
                upcoming = render(i + 1)
            try:
                status, headers, answer = self._answer(conn)
            except _DROPPED:
                if not reused:
                    raise
                self.close()  # closed while idle (keep-alive timeout): once more on a new connection
                conn, _ = self._send(body)
                status, headers, answer = self._answer(conn)
            if 200 <= status < 300:
                continue
            err = self._refusal(status, headers, answer, chunk)
            if err.retryable:
                raise err
            rejected.append(err)
        raise_refused(rejected)

    def _send(self, body: bytes) -> tuple[http.client.HTTPConnection, bool]:
        """Send one request: the connection it went on, and whether that had carried one before."""
        conn = self._connection()
        reused = self._used
        try:
            conn.request("POST", self._target, body=body, headers=self._headers)
        except _DROPPED:
            if not reused:
                raise
            self.close()
            conn = self._connection()
            conn.request("POST", self._target, body=body, headers=self._headers)
            reused = False
        self._used = True
        self._health.requests += 1
        return conn, reused

    def _answer(self, conn: http.client.HTTPConnection) -> tuple[int, Mapping[str, str], bytes]:
        resp = conn.getresponse()
        body = resp.read()  # read whole, so the connection can carry the next request
        if resp.will_close:
            self.close()
        # Header names title-cased, as Go servers send them ("Retry-After"), whatever the server wrote.
        return resp.status, {name.title(): value for name, value in resp.getheaders()}, body
