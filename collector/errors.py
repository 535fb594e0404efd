"""The collector's exception family."""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class ConfigError(CollectorError):
    """A collector configuration value is wrong; the message names the file, key and fix."""


class IngestError(CollectorError):
    """An agent sent input the collector refuses; the message names what was wrong.

    Raised for a batch, it refuses that batch (the stream goes on); raised while opening a
    stream, it ends the stream with INVALID_ARGUMENT."""


class IdentityError(IngestError):
    """The peer is not who its Hello says (certificate, token): PERMISSION_DENIED."""


class StreamSuperseded(IngestError):
    """A newer stream of the same node took over: this one ends with ABORTED."""


class LimitError(IngestError):
    """A limit was reached (series, streams, events per second...): RESOURCE_EXHAUSTED.

    ``limit`` names the limit (the key under ``limits:``), for the refusal counters."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


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
