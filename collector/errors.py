"""The collector's exception family."""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class ConfigError(CollectorError):
    """A collector configuration value is wrong; the message names the file, key and fix."""


class IngestError(CollectorError):
    """An agent sent input the collector refuses; the message names what was wrong.

    Raised for a batch, it refuses that batch (the stream goes on); raised while opening a
    stream, it ends the stream with INVALID_ARGUMENT. ``reason`` is a short fixed key for the
    refusal counters in ``/metrics`` (never built from the input)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class IdentityError(IngestError):
    """The peer is not who its Hello says (its certificate names another node): PERMISSION_DENIED."""

    def __init__(self, message: str, reason: str = "identity") -> None:
        super().__init__(message, reason)


class AuthenticationError(IdentityError):
    """No credentials, or wrong ones (bearer token): UNAUTHENTICATED."""

    def __init__(self, message: str, reason: str = "unauthenticated") -> None:
        super().__init__(message, reason)


class StreamSuperseded(IngestError):
    """A newer stream of the same node took over: this one ends with ABORTED."""

    def __init__(self, message: str, reason: str = "superseded") -> None:
        super().__init__(message, reason)


class LimitError(IngestError):
    """A limit that passes with time was reached (streams per node, events per second): the
    stream ends with RESOURCE_EXHAUSTED, nothing is acked, the agent resends after its back-off.
    ``reason`` is the limit's key under ``limits:``."""


class StoreError(CollectorError):
    """The embedded store failed (disk, file); the message names the file and the cause."""


class CorruptStoreError(StoreError):
    """The embedded store's file is damaged; the message says what to do about it."""


class SinkError(CollectorError):
    """A storage sink could not take a batch.

    ``retryable`` says whether sending the same batch again may succeed (server down, 5xx,
    429); ``retry_after`` carries the server's Retry-After in seconds when it gave one.
    """

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
