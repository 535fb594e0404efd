"""The collector's HTTP API as ``fleetmon status``, ``top`` and ``query`` reach it.

Which collector, in this order (the first that applies wins):

1. ``--url URL`` (or, for ``query``, ``--data-dir DIR``: read that store directly);
2. ``$FLEETMON_URL``;
3. the collector running as this user, found through the runtime folder it registers in
   (fleetmon_common/runtime.py): its HTTP API, or its data dir when it serves none; several
   running is an error that lists them;
4. ``http://127.0.0.1:7780``, the collector's default ``http`` address.

A token for an API that requires one (``http_auth.token``) comes from ``--token-file FILE`` or
``$FLEETMON_TOKEN``, never from the command line (where ``ps`` and shell history would keep
it). It is sent only to the URL given, never along a redirect. ``https`` URLs are verified
against the system's CAs or ``--cacert``; ``--cert``/``--key`` present a client certificate
(``http_auth.tls.client_ca``). Standard library only: these commands run anywhere that
reaches the collector.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from fleetmon.cli import DEFAULT_URL
from fleetmon_common import runtime


class ApiError(Exception):
    """The API could not be read; the message says which URL and why (never the token).
    ``status``: the HTTP status when the API answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where a command reads from: an API ``url`` or (``query`` only) a ``data_dir``; ``how``
    says why (for messages)."""

    url: str | None
    data_dir: Path | None
    how: str


def resolve(args: argparse.Namespace, *, probe: bool = True) -> Target:
    """The collector to read, by the order in the module's docstring. ``probe``: check that the
    default URL answers before choosing it (``query`` says what it tried when nothing does)."""
    url = getattr(args, "url", None)
    data_dir = getattr(args, "data_dir", None)
    if url and data_dir:
        raise ApiError("give --url or --data-dir, not both")
    if url:
        return Target(url.rstrip("/"), None, "--url")
    if data_dir:
        return Target(None, data_dir, "--data-dir")
    env = os.environ.get("FLEETMON_URL")
    if env:
        return Target(env.rstrip("/"), None, "$FLEETMON_URL")
    found = runtime.running()
    if len(found) > 1:
        listed = "\n".join(f"  {c.describe()}" for c in found)
        raise ApiError(f"{len(found)} collectors are running; choose one with --url"
                       f"{' or --data-dir' if hasattr(args, 'data_dir') else ''}:\n{listed}")
    if found:
        c = found[0]
        how = f"the running collector (pid {c.pid}, {c.path})"
        if c.http:
            return Target(c.http, None, how)
        if hasattr(args, "data_dir"):
            return Target(None, Path(c.data_dir), how)
    if probe and not _answers(DEFAULT_URL):
        raise ApiError(f"no collector found: $FLEETMON_URL is not set, none is registered as running in "
                       f"{runtime.runtime_dir()}, and nothing answers at {DEFAULT_URL}; give --url URL"
                       f"{' or --data-dir DIR' if hasattr(args, 'data_dir') else ''}")
    return Target(DEFAULT_URL, None, "the default URL")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2):
            return True
    except urllib.error.HTTPError as err:
        err.close()
        return True  # something answers there; the real request will say what
    except (urllib.error.URLError, OSError):
        return False


def read_token(args: argparse.Namespace) -> tuple[str | None, str]:
    """The bearer token and where it came from (safe to print)."""
    path = getattr(args, "token_file", None)
    if path is not None:
        try:
            token = Path(path).read_text().strip()
        except OSError as err:
            raise ApiError(f"--token-file {path}: cannot read it: {err.strerror}") from err
        if not token:
            raise ApiError(f"--token-file {path}: the file is empty")
        return token, f"--token-file {path}"
    token = os.environ.get("FLEETMON_TOKEN", "").strip()
    return (token, "$FLEETMON_TOKEN") if token else (None, "")


class Api:
    """GETs against one collector's API, with its token and TLS settings."""

    def __init__(self, url: str, *, token: str | None = None, token_source: str = "",
                 cacert: Path | None = None, cert: Path | None = None, key: Path | None = None,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.token_source = token_source
        self.timeout = timeout
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(f"{url!r} is not an http:// or https:// URL")
        self.context: ssl.SSLContext | None = None
        self.client_cert = cert is not None
        if parts.scheme == "https":
            try:
                self.context = ssl.create_default_context(cafile=str(cacert) if cacert else None)
                if cert is not None:
                    self.context.load_cert_chain(str(cert), str(key) if key else None)
            except (OSError, ssl.SSLError) as err:
                raise ApiError(f"TLS files (--cacert/--cert/--key): {err}") from err
        elif cert is not None or cacert is not None:
            raise ApiError(f"--cacert/--cert are for https, and {self.url} is http")
        if token and parts.scheme == "http" and not runtime.is_loopback_host(parts.hostname):
            sys.stderr.write(f"fleetmon: warning: the API token travels in clear text to {parts.hostname} "
                             "(http://); serve the API over https (http_auth.tls)\n")

    @classmethod
    def from_args(cls, url: str, args: argparse.Namespace, timeout: float = 30.0) -> Api:
        token, source = read_token(args)
        return cls(url, token=token, token_source=source, cacert=getattr(args, "cacert", None),
                   cert=getattr(args, "cert", None), key=getattr(args, "key", None), timeout=timeout)

    def open(self, path: str, params: Mapping[str, str] | None = None) -> IO[bytes]:
        """The response body of ``GET path?params`` (a stream: the caller reads and closes it)."""
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "fleetmon"})
        if self.token:
            # Unredirected: urllib would otherwise copy it to wherever a redirect points.
            req.add_unredirected_header("Authorization", f"Bearer {self.token}")
        try:
            resp: IO[bytes] = urllib.request.urlopen(req, timeout=self.timeout, context=self.context)
        except urllib.error.HTTPError as err:
            with err:
                raise ApiError(self._http_error(url, err), err.code) from None
        except ssl.SSLError as err:
            raise ApiError(self._tls_error(url, err)) from err
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, ssl.SSLError):
                raise ApiError(self._tls_error(url, reason)) from err
            if isinstance(reason, ConnectionResetError) and self.context is not None and not self.client_cert:
                # TLS 1.3: a server that requires a client certificate hangs up after the handshake.
                raise ApiError(f"{self._shown(url)}: the server closed the connection; if it requires client "
                               "certificates (http_auth.tls.client_ca), give --cert and --key") from err
            raise ApiError(f"{self._shown(url)}: {reason}; is the collector running, and is its `http` address "
                           "this one? (--url or FLEETMON_URL)") from err
        return resp

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        with self.open(path, params) as resp:
            body = resp.read()
        try:
            return json.loads(body)
        except ValueError as err:
            raise ApiError(f"{self._shown(self.url + path)}: not a fleetmon collector API answer ({err})") from err

    @staticmethod
    def _shown(url: str) -> str:
        return url.split("?", 1)[0]

    def _http_error(self, url: str, err: urllib.error.HTTPError) -> str:
        where = self._shown(url)
        if err.code == 401:
            if self.token:
                return (f"{where}: 401 Unauthorized: the token from {self.token_source} was refused; "
                        "it must be the collector's http_auth.token")
            return (f"{where}: 401 Unauthorized: this collector's API needs its bearer token (http_auth.token): "
                    "give --token-file FILE or set FLEETMON_TOKEN")
        detail = ""
        try:
            body = json.loads(err.read() or b"null")
            if isinstance(body, dict) and body.get("error"):
                detail = f": {body['error']}"
        except (ValueError, OSError):
            pass
        return f"{where}: HTTP {err.code} {err.reason}{detail}"

    def _tls_error(self, url: str, err: ssl.SSLError) -> str:
        if isinstance(err, ssl.SSLCertVerificationError):
            return (f"{self._shown(url)}: TLS: certificate verify failed: {err.verify_message}; "
                    "give the collector's CA with --cacert")
        return (f"{self._shown(url)}: TLS: {getattr(err, 'reason', None) or err}; if it requires client "
                "certificates (http_auth.tls.client_ca), give --cert and --key")


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def iter_chunks(resp: Readable, size: int = 1 << 16) -> Iterator[bytes]:
    while chunk := resp.read(size):
        yield chunk
