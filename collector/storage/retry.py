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
import gzip
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from collector.errors import SinkError
from collector.storage.base import HealthSample, SinkBatch, StoredEvent
from proto.lineprotocol import Dialect, LineEncoder, encode_line

#: Most lines in one HTTP request (InfluxDB's own guidance is 5,000 lines per write).
MAX_LINES = 5000
#: Bytes of uncompressed line protocol per request, well under influxd's default
#: ``max-body-size`` of 25 MB.
MAX_BYTES = 8 * 1024 * 1024

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def batch_lines(batch: SinkBatch, dialect: Dialect = "influxdb1", encoder: LineEncoder | None = None,
                *, events: bool = True) -> list[str]:
    """The batch as line protocol: points grouped per series and instant, then events.

    Values are always written as floats: InfluxDB fixes a field's type per shard, so a counter
    once written as ``5i`` and later as ``5.5`` would be refused as a field type conflict.
    A sink passes its long-lived ``encoder`` so escaped series are reused across batches.
    """
    enc = encoder or LineEncoder(dialect)
    grouped: dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, float]] = {}
    # The points of one device and instant usually arrive together: while they do, skip hashing
    # the (measurement, tags, ts) key, which is most of the grouping's cost (bench_influx).
    last_meas, last_tags, last_ts = "", None, -1
    fields: dict[str, float] = {}
    for p in batch.points:
        if p.tags is not last_tags or p.ts_ns != last_ts or p.measurement != last_meas:
            last_meas, last_tags, last_ts = p.measurement, p.tags, p.ts_ns
            key = (last_meas, last_tags, last_ts)
            found = grouped.get(key)
            if found is None:
                found = grouped[key] = {}
            fields = found
        fields[p.field] = float(p.value)
    lines = []
    for (measurement, tags, ts_ns), fields in grouped.items():
        line = enc.line(measurement, tags, fields, ts_ns)
        if line is not None:
            lines.append(line)
    for ev in batch.events if events else ():
        line = encode_line("event", event_tags(ev), {"message": ev.message, "action": ev.action},
                           ev.ts_ns, dialect=enc.dialect)
        if line is not None:
            lines.append(line)
    return lines


def event_tags(ev: StoredEvent) -> dict[str, str]:
    """Tags of an event line: its labels, then node/kind/severity, which win on a clash."""
    return {**dict(ev.tags), "node": ev.node, "kind": ev.kind, "severity": ev.severity}


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


def gzip_body(text: str, level: int = 1) -> bytes:
    """Level 1: line protocol compresses ~10x even so, at a fraction of level 9's CPU."""
    return gzip.compress(text.encode("utf-8"), compresslevel=level, mtime=0)


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
    except ValueError:
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
               chunk: str, url: str) -> SinkError:
    """The SinkError for a non-2xx answer, classified by status."""
    message = error_text(body)
    retry_after = parse_retry_after((headers or {}).get("Retry-After")) if status in (429, 503) else None
    if status in RETRYABLE_STATUS:
        hint = f" (Retry-After {retry_after:g}s)" if retry_after is not None else ""
        return SinkError(f"sink {sink}: {url} answered {status}{hint}: {message}",
                         retryable=True, retry_after=retry_after)
    if status == 400:
        bad = offending_line(message, chunk)
        where = f"; first offending line: {bad[:300]!r}" if bad else ""
        return SinkError(f"sink {sink}: {url} refused data (400, not retried): {message}{where}",
                         retryable=False)
    hint = {
        401: "check the credentials (username/password or token)",
        403: "check the credentials' write permission",
        404: "does the database/bucket exist? (set create_database: true to create it)",
        413: "the server's max-body-size is below one chunk; lower batch_size",
    }.get(status, "")
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

    def success(self, batch: SinkBatch, lines: int, duration: float) -> None:
        self._failing = False
        self.written_points += len(batch.points)
        self.written_events += len(batch.events)
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

