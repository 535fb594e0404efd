"""Secrets in configs, and keeping them out of logs and error messages.

A :class:`Secret` setting takes one of three forms, so a config file never has to hold it::

    token: "s3cret"                           # inline (the file then is a secret too)
    token: {env: FLEETMON_TOKEN}              # from an environment variable
    token: {file: /etc/fleetmon/token}        # from a file (trailing newline dropped)

A ``Secret`` prints as ``'***'`` (repr, str, f-strings, tracebacks of dataclasses holding it);
only :meth:`Secret.reveal` gives the value, at the one place that sends it. URLs that may
carry credentials go through :func:`redact_url` before they reach a log line or a message.
"""

from __future__ import annotations

import hmac
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_QUERY_SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "pass", "sig", "auth", "credential")


class Secret:
    __slots__ = ("_source", "_value")

    def __init__(self, value: str, source: str = "inline") -> None:
        self._value = value
        self._source = source

    def reveal(self) -> str:
        return self._value

    @property
    def source(self) -> str:
        """Where it came from (``env FLEETMON_TOKEN``, ``file /etc/...``, ``inline``): safe to log."""
        return self._source

    def matches(self, offered: str | bytes) -> bool:
        """Constant-time comparison (a token check must not leak the token by timing)."""
        given = offered.encode() if isinstance(offered, str) else offered
        return hmac.compare_digest(given, self._value.encode())

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._source))

    @classmethod
    def from_setting(cls, value: Any, where: str) -> Secret:
        """A config value (string, ``{env: NAME}`` or ``{file: PATH}``) as a Secret; ValueError
        naming ``where`` (never the value) when it cannot be had."""
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            if not value:
                raise ValueError(f"{where}: empty secret")
            return cls(value)
        if isinstance(value, Mapping) and len(value) == 1:
            ((kind, ref),) = value.items()
            if kind == "env" and isinstance(ref, str):
                got = os.environ.get(ref)
                if not got:
                    raise ValueError(f"{where}: environment variable {ref} is not set or empty")
                return cls(got, f"env {ref}")
            if kind == "file" and isinstance(ref, str):
                try:
                    text = Path(ref).read_text().rstrip("\r\n")
                except OSError as err:
                    raise ValueError(f"{where}: cannot read secret file {ref}: {err.strerror}") from err
                if not text:
                    raise ValueError(f"{where}: secret file {ref} is empty")
                return cls(text, f"file {ref}")
        raise ValueError(f"{where}: expected a string, {{env: NAME}} or {{file: PATH}}")


def reveal(value: str | Secret | None) -> str | None:
    """The text of a setting that may be given inline (str) or as a Secret."""
    return value.reveal() if isinstance(value, Secret) else value


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` fit for a log line: no password, no secret-looking query values.

    ``keep_path=False`` also drops the path (webhook URLs often *are* the secret: Slack,
    Teams, ...)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6
        netloc = f"[{netloc}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc += f":{port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    if not keep_path:
        return urllib.parse.urlunsplit((parts.scheme, netloc, "/…" if parts.path.strip("/") else "", "", ""))
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    safe = [(k, "***" if any(w in k.lower() for w in _QUERY_SECRET_WORDS) else v) for k, v in query]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, urllib.parse.urlencode(safe, safe="*"), ""))


__all__ = ["Secret", "redact_url", "reveal"]
