"""What every HTTP sink shares: chunking, gzip, Retry-After, back-off, error classes, health.

Retry policy (the spool's contract with the InfluxDB sinks):

* ``write()`` either returns (every line of the batch is durable at the server) or raises
  :class:`~collector.errors.SinkError`.
* ``retryable=True``: connection refused/reset, timeouts, 5xx, 429, 408. Sending the same batch
  again is safe because InfluxDB and VictoriaMetrics overwrite a point with the same series and
  timestamp, so the spool keeps the batch and calls ``write()`` again after
  :meth:`Backoff.delay` (which honours ``retry_after``); :func:`write_with_retry` does exactly that.
* ``retryable=False``: the server refused the data itself (400 bad line / field type conflict,
  404 database not found, 401/403 credentials, 413 too large after chunking). Sending it again
  cannot succeed, so the spool should drop the batch from this sink's queue, count it, and log the
  message, which names the sink and the first offending line. A 400 from InfluxDB 1.x is a *partial*
  write: the good lines of that request were stored, only the named ones were dropped.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from isal import igzip

from collector.errors import SinkError
from collector.storage.base import HealthSample, SinkBatch

#: Most lines in one HTTP request (InfluxDB's own guidance is 5,000 lines per write).
MAX_LINES = 5000
#: Bytes of uncompressed line protocol per request, well under influxd's default
#: ``max-body-size`` of 25 MB.
MAX_BYTES = 8 * 1024 * 1024

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_INFLUX_HINTS = {
    401: "check the credentials (username/password or token)",
    403: "check the credentials' write permission",
    404: "does the database/bucket exist? (set create_database: true to create it)",
    413: "the server's max-body-size is below one chunk; lower batch_size",
}


def chunk_lines(lines: Sequence[str], max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> list[str]:
    """Request bodies of at most ``max_lines`` lines and about ``max_bytes`` bytes each."""
    if max_lines < 1:
        raise ValueError(f"max_lines must be at least 1, got {max_lines}")
    chunks: list[str] = []
    start = 0
    size = 0
    for i, line in enumerate(lines):
        size += len(line) + 1
        if i - start >= max_lines or (size > max_bytes and i > start):
            chunks.append("\n".join(lines[start:i]) + "\n")
            start, size = i, len(line) + 1
    if start < len(lines):
        chunks.append("\n".join(lines[start:]) + "\n")
    return chunks


def cut_chunks(cum_counts: npt.NDArray[np.int64], cum_bytes: npt.NDArray[np.int64], max_count: int,
               max_bytes: int, *, ramp: int = 4) -> list[tuple[int, int]]:
    """(first, end) ranges over units (lines, series) whose running totals of samples-or-lines
    and of bytes are ``cum_counts`` and ``cum_bytes``: at most ``max_count`` and ``max_bytes``
    per range; a single unit larger than that still gets a range of its own.

    When more than one range is needed, the first holds at most ``1/ramp`` of the limits: the
    sink renders the next request while one is on the wire (:mod:`collector.storage.poster`), and a
    small first request puts the server to work sooner.
    """
    if max_count < 1:
        raise ValueError(f"max_count must be at least 1, got {max_count}")
    n = len(cum_counts)
    several = n and (int(cum_counts[-1]) > max_count or int(cum_bytes[-1]) > max_bytes)
    chunks = []
    first = 0
    while first < n:
        count0 = int(cum_counts[first - 1]) if first else 0
        bytes0 = int(cum_bytes[first - 1]) if first else 0
        most, most_bytes = (max_count, max_bytes) if first or not several else (
            max(1, max_count // ramp), max(1, max_bytes // ramp))
        end = min(int(np.searchsorted(cum_counts, count0 + most, side="right")),
                  int(np.searchsorted(cum_bytes, bytes0 + most_bytes, side="right")))
        end = max(end, first + 1)
        chunks.append((first, end))
        first = end
    return chunks


def gzip_body(text: str | bytes, level: int = 1) -> bytes:
    """A gzip member (RFC 1952), made by ISA-L's igzip: at its level 1 ~5x faster than zlib's
    level 1 on line protocol and ~8 % smaller (``bench/bench_sinks.py`` prints both), which is
    most of what a gzip sink spends beyond the plain one. Levels 0-3 (igzip's range)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return igzip.compress(data, level, mtime=0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass
class Backoff:
    """Exponential back-off with full jitter (AWS architecture blog, "Exponential Backoff And
    Jitter"), never shorter than the server's Retry-After and never longer than ``maximum``
    unless the server asked for more (then its wish, capped at ``retry_after_cap``)."""

    initial: float = 0.5
    maximum: float = 60.0
    multiplier: float = 2.0
    retry_after_cap: float = 600.0
    jitter: bool = True

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        wait = random.uniform(ceiling / 2, ceiling) if self.jitter else ceiling
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_cap))
        return wait


_LINE_NO = re.compile(r"\bline (\d+)\b")
_UNABLE = re.compile(r"unable to parse '(.*?)': ", re.S)
_FIELD = re.compile(r'input field \\?"(.+?)\\?" on measurement \\?"(.+?)\\?"')


def error_text(body: bytes | str | None) -> str:
    """The server's message: InfluxDB puts it in JSON ``error`` (1.x) or ``message`` (2.x)."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting past the stack
        return text.strip()[:500]
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])[:500]
    return text.strip()[:500]


def offending_line(message: str, chunk: str) -> str | None:
    """Best guess at the first line of ``chunk`` that the server refused, from its message."""
    lines = chunk.splitlines()
    if m := _UNABLE.search(message):
        return m.group(1)
    if m := _LINE_NO.search(message):
        idx = int(m.group(1)) - 1  # InfluxDB 2.x counts lines from 1
        if 0 <= idx < len(lines):
            return lines[idx]
    if m := _FIELD.search(message):
        field, meas = m.group(1), m.group(2)
        for line in lines:
            if line.startswith((meas + " ", meas + ",")) and (f" {field}=" in line or f",{field}=" in line):
                return line
    return None


def http_error(sink: str, status: int, *, headers: Mapping[str, str] | None, body: bytes | str | None,
               chunk: str, url: str, hints: Mapping[int, str] | None = None) -> SinkError:
    """The SinkError for a non-2xx answer, classified by status; ``hints`` replaces the
    InfluxDB-flavoured advice appended to a refusal."""
    message = error_text(body)
    retry_after = parse_retry_after((headers or {}).get("Retry-After")) if status in (429, 503) else None
    if status in RETRYABLE_STATUS:
        hint = f" (Retry-After {retry_after:g}s)" if retry_after is not None else ""
        return SinkError(f"sink {sink}: {url} answered {status}{hint}: {message}",
                         retryable=True, retry_after=retry_after)
    if status == 400 and hints is None:
        bad = offending_line(message, chunk)
        where = f"; first offending line: {bad[:300]!r}" if bad else ""
        return SinkError(f"sink {sink}: {url} refused data (400, not retried): {message}{where}",
                         retryable=False)
    hint = (_INFLUX_HINTS if hints is None else hints).get(status, "")
    return SinkError(f"sink {sink}: {url} answered {status} (not retried): {message}"
                     + (f" — {hint}" if hint else ""), retryable=False)


class SinkHealth:
    """A sink's own metrics (``fleetmon_sink_*{sink=…}``).

    ``retries_total`` counts writes made while the previous write to this sink failed retryably,
    so the sink knows it without the spool telling it (the spool may merge more rows into the
    batch it retries, so spool ids do not identify a retry).
    """

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self.written_points = 0
        self.written_events = 0
        self.written_lines = 0
        self.requests = 0
        self.failed_writes = 0
        self.rejected_batches = 0
        self.retries = 0
        self.last_duration: float | None = None
        self.last_success: float | None = None
        self._failing = False

    def attempt(self, batch: SinkBatch) -> None:
        if self._failing:
            self.retries += 1

    def success(self, batch: SinkBatch, lines: int, duration: float, *, events: int | None = None) -> None:
        """``lines``: line-protocol lines or remote-write series sent; ``events``: events written
        (all of the batch's unless told)."""
        self._failing = False
        self.written_points += batch.n_points
        self.written_events += len(batch.events) if events is None else events
        self.written_lines += lines
        self.last_duration = duration
        self.last_success = time.time()

    def failure(self, batch: SinkBatch, err: SinkError, duration: float) -> None:
        self.failed_writes += 1
        self.last_duration = duration
        self._failing = err.retryable
        if not err.retryable:
            self.rejected_batches += 1

    def samples(self) -> list[HealthSample]:
        labels = (("sink", self.sink),)
        out = [
            HealthSample("fleetmon_sink_written_points_total", labels, float(self.written_points)),
            HealthSample("fleetmon_sink_written_events_total", labels, float(self.written_events)),
            HealthSample("fleetmon_sink_written_lines_total", labels, float(self.written_lines)),
            HealthSample("fleetmon_sink_requests_total", labels, float(self.requests)),
            HealthSample("fleetmon_sink_failed_writes_total", labels, float(self.failed_writes)),
            HealthSample("fleetmon_sink_rejected_batches_total", labels, float(self.rejected_batches)),
            HealthSample("fleetmon_sink_retries_total", labels, float(self.retries)),
        ]
        # Before the first write there is no duration or success time: omitted, not zero.
        if self.last_duration is not None:
            out.append(HealthSample("fleetmon_sink_last_write_duration_seconds", labels, self.last_duration))
        if self.last_success is not None:
            out.append(HealthSample("fleetmon_sink_last_success_timestamp_seconds", labels, self.last_success))
        return out


class _WritesBatches(Protocol):
    """What :func:`write_with_retry` needs of a sink."""

    name: str

    async def write(self, batch: SinkBatch) -> None: ...


async def write_with_retry(
    sink: _WritesBatches,
    batch: SinkBatch,
    backoff: Backoff | None = None,
    *,
    max_attempts: int | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Write until durable, sleeping per ``backoff`` between retryable failures.

    Raises the last SinkError when it is not retryable or ``max_attempts`` is used up; with
    ``max_attempts=None`` it tries until cancelled (the spool's task is cancelled at shutdown).
    """
    backoff = backoff or Backoff()
    attempt = 0
    while True:
        attempt += 1
        try:
            await sink.write(batch)
            return
        except SinkError as err:
            if not err.retryable or (max_attempts is not None and attempt >= max_attempts):
                raise
            await sleep(backoff.delay(attempt, err.retry_after))





def raise_refused(rejected: list[SinkError]) -> None:
    """After every chunk of a batch was tried: report the chunks the server refused, if any.

    A refused chunk does not stop the others (they may be fine), so the refusals are collected
    and raised together, not retryable, naming the first.
    """
    if rejected:
        first = rejected[0]
        more = f" (and {len(rejected) - 1} more refused requests)" if len(rejected) > 1 else ""
        raise SinkError(f"{first}{more}", retryable=False) from first
