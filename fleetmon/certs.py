"""``fleetmon certs``: a lab PKI for mutual TLS, made with the ``openssl`` command.

For a lab or a first deployment; a site with its own PKI issues the same shapes from it:

- ``ca.crt``/``ca.key``: a CA (keep ``ca.key`` offline);
- a collector certificate: ``extendedKeyUsage = serverAuth``, subjectAltName = the names and
  addresses agents dial (``DNS:collector-1``, ``IP:10.0.0.5``);
- one certificate per node: ``extendedKeyUsage = clientAuth``, subjectAltName ``DNS:<node>``,
  the exact ``node`` of that agent's config (the collector refuses a Hello whose node name is
  not a DNS name in the certificate).

Keys are ECDSA P-256, written with mode 0600. The equivalent openssl commands are printed
with ``--print-commands`` (and in docs/security.md).
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class CertError(Exception):
    """openssl is missing or failed; the message says which command and why."""


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _run(cmd: list[str], echo: bool) -> None:
    if echo:
        print(shlex.join(cmd))
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as err:
        raise CertError("the openssl command is not installed (Debian: apt-get install openssl)") from err
    except subprocess.CalledProcessError as err:
        raise CertError(f"{shlex.join(cmd)} failed: {err.stderr.strip()}") from err


def _key(path: Path, echo: bool) -> None:
    _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)], echo)
    path.chmod(0o600)


def make_ca(out: Path, *, days: int = 3650, name: str = "fleetmon lab CA", echo: bool = False) -> Issued:
    """A self-signed CA in ``out`` (ca.crt, ca.key)."""
    out.mkdir(parents=True, exist_ok=True)
    key, cert = out / "ca.key", out / "ca.crt"
    _key(key, echo)
    _run(["openssl", "req", "-x509", "-new", "-key", str(key), "-sha256", "-days", str(days), "-subj", f"/CN={name}",
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-out", str(cert)], echo)
    return Issued(cert, key)


def issue(ca: Path, out: Path, name: str, *, server: bool, dns: Sequence[str] = (), ips: Sequence[str] = (),
          days: int = 825, echo: bool = False) -> Issued:
    """A certificate for ``name`` signed by the CA in ``ca`` (ca.crt, ca.key), into ``out``.

    ``server``: a collector (serverAuth); otherwise a node (clientAuth, SAN ``DNS:<name>``)."""
    if not name or "/" in name or name.startswith("."):
        raise CertError(f"{name!r} cannot name a certificate file")
    out.mkdir(parents=True, exist_ok=True)
    key, cert = out / f"{name}.key", out / f"{name}.crt"
    _key(key, echo)
    sans = [f"DNS:{d}" for d in (name, *dns)] + [f"IP:{ip}" for ip in ips]
    usage = "serverAuth" if server else "clientAuth"
    with tempfile.TemporaryDirectory(prefix="fleetmon-certs-") as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text(f"subjectAltName={','.join(sans)}\nextendedKeyUsage={usage}\n"
                       "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n")
        _run(["openssl", "req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr)], echo)
        _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca / "ca.crt"), "-CAkey", str(ca / "ca.key"),
              "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(days), "-sha256", "-extfile", str(ext),
              "-out", str(cert)], echo)
    return Issued(cert, key)


def main(args: argparse.Namespace) -> int:
    out: Path = args.dir
    echo = args.print_commands
    try:
        if shutil.which("openssl") is None:
            raise CertError("the openssl command is not installed (Debian: apt-get install openssl)")
        if args.certs_command == "ca":
            if (out / "ca.key").exists():
                raise CertError(f"{out / 'ca.key'} exists; refusing to replace a CA (remove it first)")
            made = make_ca(out, days=args.days or 3650, echo=echo)
            print(f"CA: {made.cert} (give it to every agent and collector); key: {made.key} (keep it offline)")
            return 0
        if not (out / "ca.key").exists():
            raise CertError(f"no CA in {out}: run `fleetmon certs --dir {out} ca` first")
        if args.certs_command == "collector":
            made = issue(out, out, args.name, server=True, dns=args.dns, ips=args.ip, days=args.days or 825,
                         echo=echo)
            print(f"collector: {made.cert} {made.key}")
        else:
            for name in args.names:
                made = issue(out, out, name, server=False, days=args.days or 825, echo=echo)
                print(f"node {name}: {made.cert} {made.key}")
    except (CertError, OSError) as err:
        print(f"fleetmon certs: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = ["CertError", "Issued", "issue", "main", "make_ca"]
