"""A local HTTP server that records requests and answers as told: for what a healthy server will
not do on demand (429 + Retry-After, 5xx, slow answers) and for checking headers and bodies.

Test modules use the ``stub`` / ``tls_stub`` fixtures by importing them
(``from tests.http_stub import stub``).
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.services import require_binary


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        raw = gzip.decompress(self.body) if self.headers.get("Content-Encoding") == "gzip" else self.body
        return raw.decode()


@dataclass
class Stub:
    """Answers each request with the next queued (status, headers, body); 204 when none left."""

    url: str = ""
    replies: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    delay: float = 0.0
    #: HTTP/1.1 with keep-alive (the default is HTTP/1.0: a connection per request) ...
    keep_alive: bool = False
    #: ... and then close each connection after answering without saying so, as a server does
    #: whose idle timeout ran out between two requests.
    drop_idle: bool = False
    connections: int = 0


@contextlib.contextmanager
def _serve(state: Stub, tls: ssl.SSLContext | None = None) -> Iterator[Stub]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if state.keep_alive else "HTTP/1.0"

        def setup(self) -> None:
            super().setup()
            state.connections += 1

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.seen.append(Seen("POST", self.path, dict(self.headers.items()), body))
            if state.delay:
                time.sleep(state.delay)
            status, headers, payload = state.replies.pop(0) if state.replies else (204, {}, b"")
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            if state.drop_idle:
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def stub() -> Iterator[Stub]:
    with _serve(Stub()) as state:
        yield state


@pytest.fixture
def keepalive_stub() -> Iterator[Stub]:
    """An HTTP/1.1 stub: connections stay open between requests unless ``drop_idle`` is set."""
    with _serve(Stub(keep_alive=True)) as state:
        yield state


@pytest.fixture
def tls_stub(tmp_path: Any) -> Iterator[tuple[Stub, str]]:
    """An HTTPS stub with a throwaway self-signed certificate for 127.0.0.1; yields (stub, CA path)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    with _serve(Stub(), ctx) as state:
        yield state, str(cert)


