"""How the agent reaches a collector that wants TLS, a client certificate or a token.

Config (``agent.yml``)::

    tls:
      ca: /etc/fleetmon/pki/ca.crt          # verify the collector (default: the system's CAs)
      cert: /etc/fleetmon/pki/gpu-a17-03.crt  # this node's certificate: its subjectAltName
      key: /etc/fleetmon/pki/gpu-a17-03.key   #   DNS must be this node's `node` name
      server_name: collector-1              # only when the address dialled is not in the collector's certificate
    auth_token: {file: /etc/fleetmon/token}  # sites without a PKI (inline, {env: NAME} or {file: PATH})

The files are read again for every connection, so a renewed certificate is used from the next
reconnect on, without a restart. The transport (agent/transport.py) asks :class:`ChannelSecurity`
for its connection and call metadata and nothing else.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError
from agent.rpc import Connection, connect
from fleetmon_common.secrets import Secret


@dataclass
class AgentTlsConfig:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""

    def validate(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")


class TlsFilesError(OSError):
    """A certificate file went missing or bad while the agent runs (a renewal half-way): a
    failed connection attempt, retried with back-off, never the end of the agent."""


def _read(path: Path, key: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"tls.{key}: cannot read {path}: {err.strerror}") from err
    if b"-----BEGIN" not in data:
        raise ConfigError(f"tls.{key}: {path} is not a PEM file")
    return data


class ChannelSecurity:
    def __init__(self, tls: AgentTlsConfig | None, token: Secret | None) -> None:
        self.tls = tls
        self.token = token

    def check(self) -> None:
        """At start: the files are there and the key belongs to the certificate (ConfigError
        naming the file otherwise), so a typo is not an endless reconnect loop."""
        tls = self.tls
        if tls is None:
            return
        if tls.ca is not None:
            _read(tls.ca, "ca")
        if tls.cert is not None and tls.key is not None:
            _read(tls.cert, "cert")
            _read(tls.key, "key")
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(tls.cert, tls.key)
            except ssl.SSLError as err:
                raise ConfigError(f"tls: {tls.key} does not go with {tls.cert}: {err.reason or err}") from err

    def context(self) -> ssl.SSLContext | None:
        """The TLS settings for one connection, the files read now (None: plaintext)."""
        tls = self.tls
        if tls is None:
            return None
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the collector's certificate and name
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if tls.ca is not None:
                ctx.load_verify_locations(cadata=_read(tls.ca, "ca").decode("ascii", "replace"))
            else:
                ctx.load_default_certs()
            if tls.cert is not None and tls.key is not None:
                _read(tls.cert, "cert")
                _read(tls.key, "key")
                ctx.load_cert_chain(tls.cert, tls.key)
        except ConfigError as err:
            raise TlsFilesError(str(err)) from err
        except ssl.SSLError as err:  # a renewal half-way: a key that does not go with its certificate yet
            raise TlsFilesError(f"tls: {tls.cert} or {tls.key}: {err.reason or err}") from err
        ctx.set_alpn_protocols(["h2"])
        return ctx

    async def connect(self, addr: str, timeout: float) -> Connection:
        """An HTTP/2 connection to the collector at ``addr`` (agent/rpc.py, its keepalive)."""
        return await connect(addr, self.context(), server_name=self.tls.server_name if self.tls else "",
                             timeout=timeout)

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        if self.token is None:
            return None
        return (("authorization", f"Bearer {self.token.reveal()}"),)

    def explain(self, why: str) -> str:
        """A failed connection's reason, with what to check when TLS is the likely cause (the
        collector refusing a client certificate shows here only as a closed connection or a TLS
        alert after the handshake)."""
        lowered = why.lower()
        if self.tls is None:
            if "ssl" in lowered or "tls" in lowered:
                return f"{why} (the collector wants TLS? set tls: in the agent config)"
            return why
        refused = ("socket closed", "handshake", "alert", "connection reset", "eof occurred")
        if self.tls.cert is not None and any(word in lowered for word in refused):
            return (f"{why} (TLS: if this persists, the collector refused {self.tls.cert}: check that it is "
                    "signed by the collector's client_ca, not expired, and names this node; the collector's log "
                    "says which)")
        return why
