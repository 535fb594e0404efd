"""The collector's exception family."""

from __future__ import annotations


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class ConfigError(CollectorError):
    """A collector configuration value is wrong; the message names the file, key and fix."""


class IngestError(CollectorError):
    """An agent sent input the collector refuses; the message names what was wrong."""


class SinkError(CollectorError):
    """A storage sink could not take a batch.

    ``retryable`` says whether sending the same batch again may succeed (server down, 5xx,
    429); ``retry_after`` carries the server's Retry-After in seconds when it gave one.
    """

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
