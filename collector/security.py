"""TLS credentials that follow their files, and who a gRPC peer is.

- :func:`grpc_server_credentials`: gRPC's dynamic SSL credentials. gRPC asks our fetcher before
  every new connection's handshake; the fetcher looks at the files' identity (inode, size,
  mtime) and hands over new certificates only when they changed and the new key matches the
  new certificate, so a renewal (certbot, a cron job) takes effect without a restart, and a
  half-written renewal never breaks the port (the old pair stays until the new one is whole).
- :class:`ReloadingSslContext`: the same for the HTTP API (``ssl.SSLContext`` takes a new
  chain for later handshakes).
- :class:`Authenticator`: a stream's :class:`PeerIdentity`, from the client certificate (its
  subjectAltName DNS names: the node names it may speak for) or the bearer token.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from collector.config import TlsConfig
from collector.errors import AuthenticationError, ConfigError
from fleetmon_common.logs import Throttled
from fleetmon_common.secrets import Secret

log = logging.getLogger("fleetmon.collector.security")
_throttled = Throttled(log, burst=3, per=300.0)


@dataclass(frozen=True)
class PemSet:
    cert: bytes
    key: bytes
    ca: bytes | None


class PemFiles:
    """The certificate, key and client CA of one TlsConfig, read and re-read as they change."""

    def __init__(self, tls: TlsConfig, where: str) -> None:
        assert tls.cert is not None and tls.key is not None
        self.tls = tls
        self.where = where
        self._paths: list[tuple[str, Path]] = [("cert", tls.cert), ("key", tls.key)]
        if tls.client_ca is not None:
            self._paths.append(("client_ca", tls.client_ca))
        self._seen: tuple[tuple[int, int, int], ...] | None = None

    def _identity(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for key, path in self._paths:
            try:
                st = os.stat(path)
            except OSError as err:
                raise ConfigError(f"{self.where}.{key}: cannot read {path}: {err.strerror}") from err
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def changed(self) -> bool:
        return self._identity() != self._seen

    def load(self) -> PemSet:
        """Read and check the files; ConfigError names the key, the file and what is wrong."""
        seen = self._identity()
        data: dict[str, bytes] = {}
        for key, path in self._paths:
            try:
                data[key] = path.read_bytes()
            except OSError as err:
                raise ConfigError(f"{self.where}.{key}: cannot read {path}: {err.strerror}") from err
            if b"-----BEGIN" not in data[key]:
                raise ConfigError(f"{self.where}.{key}: {path} is not a PEM file")
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            check.load_cert_chain(self._paths[0][1], self._paths[1][1])
            if self.tls.client_ca is not None:
                check.load_verify_locations(cafile=self.tls.client_ca)
        except ssl.SSLError as err:
            raise ConfigError(f"{self.where}: {self.tls.cert} / {self.tls.key}: {err.reason or err}") from err
        self._seen = seen
        return PemSet(data["cert"], data["key"], data.get("client_ca"))


def grpc_server_credentials(tls: TlsConfig, where: str = "tls") -> grpc.ServerCredentials:
    """Server credentials for ``tls`` that pick up renewed files on the next connection."""
    files = PemFiles(tls, where)

    def configuration(pem: PemSet) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(pem.key, pem.cert)], root_certificates=pem.ca)

    initial = configuration(files.load())

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC's core before every handshake: must be cheap, and must never raise.
        try:
            if not files.changed():
                return None
            pem = files.load()
        except ConfigError as err:
            _throttled.warning("tls_reload", "%s; serving the previous certificate until the files are whole", err)
            return None
        except Exception as err:  # noqa: BLE001 - supervision boundary: an exception here would reach gRPC's core
            _throttled.warning("tls_reload", "%s: reloading failed (%s); serving the previous certificate",
                               where, err)
            return None
        log.warning("%s: certificate files changed; new connections use %s", where, tls.cert)
        return configuration(pem)

    return grpc.dynamic_ssl_server_credentials(initial, fetch,
                                               require_client_authentication=tls.client_ca is not None)


class ReloadingSslContext:
    """An SSLContext for the HTTP API; :meth:`refresh` loads renewed files (called periodically)."""

    def __init__(self, tls: TlsConfig, where: str) -> None:
        self.files = PemFiles(tls, where)
        self.files.load()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._apply(tls)

    def _apply(self, tls: TlsConfig) -> None:
        assert tls.cert is not None and tls.key is not None
        self.context.load_cert_chain(tls.cert, tls.key)
        if tls.client_ca is not None:
            self.context.load_verify_locations(cafile=tls.client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED

    def refresh(self) -> None:
        try:
            if not self.files.changed():
                return
            self.files.load()
            self._apply(self.files.tls)
        except (ConfigError, ssl.SSLError, OSError) as err:
            _throttled.warning("tls_reload", "%s; serving the previous certificate", err)
            return
        log.warning("%s: certificate files changed; new connections use %s", self.files.where, self.files.tls.cert)


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of a stream.

    ``names``: the node names its certificate vouches for (subjectAltName DNS); None when
    nothing ties it to a node (bearer token, loopback, insecure mode)."""

    names: frozenset[str] | None
    how: str  # "certificate", "token", "none"

    def allows(self, node: str) -> bool:
        return self.names is None or node in self.names


class Authenticator:
    def __init__(self, *, token: Secret | None, mutual_tls: bool) -> None:
        self.token = token
        self.mutual_tls = mutual_tls

    def identify(self, auth_context: Mapping[str, Sequence[bytes]],
                 metadata: Sequence[tuple[str, str | bytes]] | None) -> PeerIdentity:
        """The peer's identity; AuthenticationError if a configured token is missing or wrong."""
        if self.token is not None:
            offered = next((v for k, v in metadata or () if k == "authorization"), None)
            if offered is None:
                raise AuthenticationError("no bearer token: this collector needs `auth_token` in the agent config")
            text = offered.decode(errors="replace") if isinstance(offered, bytes) else offered
            scheme, _, value = text.partition(" ")
            if scheme.lower() != "bearer" or not self.token.matches(value.strip()):
                raise AuthenticationError("wrong bearer token (the agent's auth_token differs from the collector's)")
        if self.mutual_tls:
            raw = auth_context.get("peer_dns") or auth_context.get("x509_subject_alternative_name") or ()
            names = frozenset(n.decode(errors="replace") for n in raw)
            return PeerIdentity(names, "certificate")
        return PeerIdentity(None, "token" if self.token is not None else "none")
