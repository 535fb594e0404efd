"""The machinery every notifier shares: a bounded, coalescing queue drained by one worker task.

Rule evaluation is synchronous and runs on the collector's event loop about once a second, so a
notifier's ``send_*`` methods only enqueue and return. A receiver that is slow or down costs queue
slots, never evaluation time: when the queue is full the oldest entry is dropped and counted.

Entries may carry a *key*. A new entry with the key of a queued one replaces it (and moves to the
back): an Alertmanager outage then leaves the latest state of each alert in the queue, not its
whole history, and the receiver gets the current picture as soon as it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from alerts.model import Alert, EventNotice, NodeStatus

T = TypeVar("T")

log = logging.getLogger("fleetmon.alerts.notify")


@dataclass(frozen=True)
class NotifierHealth:
    """Counters of one delivery target (one Alertmanager replica, one broker, one URL)."""

    notifier: str
    target: str
    queued: int
    capacity: int
    sent: int  # entries delivered (an alert, an event, a node status)
    failed: int  # entries given up on (permanent error, or retries exhausted)
    dropped: int  # entries pushed out of a full queue, never attempted
    retries: int  # failed delivery attempts that were retried
    connected: bool
    last_error: str
    last_success_at: float | None  # unix seconds


class DeliveryError(Exception):
    """A delivery attempt failed. ``retryable`` says whether the same entries may succeed later
    (receiver down, 5xx) or never will (the receiver rejected them, 4xx).

    Internal to the notifiers: it never leaves a worker task.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class BoundedQueue(Generic[T]):
    """FIFO of at most ``capacity`` entries; keyed entries coalesce, the oldest is dropped when full."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        self.capacity = capacity
        self.dropped = 0
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._seq = 0
        self._lock = threading.Lock()  # send_* may be called from a thread other than the loop's

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, key: Hashable | None = None) -> None:
        with self._lock:
            if key is None:
                self._seq += 1
                k: Hashable = ("seq", self._seq)
            else:
                k = ("key", key)
                self._items.pop(k, None)
            while len(self._items) >= self.capacity:
                self._items.popitem(last=False)
                self.dropped += 1
            self._items[k] = item

    def take(self, limit: int) -> list[tuple[Hashable, T]]:
        with self._lock:
            out: list[tuple[Hashable, T]] = []
            while self._items and len(out) < limit:
                out.append(self._items.popitem(last=False))
            return out

    def put_back(self, entries: Sequence[tuple[Hashable, T]]) -> None:
        """Return entries that failed to the front, unless a newer entry with the same key arrived
        meanwhile (the newer one wins) or there is no room (the entries are the oldest: dropped)."""
        with self._lock:
            for k, item in reversed(entries):
                if k in self._items:
                    continue
                if len(self._items) >= self.capacity:
                    self.dropped += 1
                    continue
                self._items[k] = item
                self._items.move_to_end(k, last=False)


@dataclass
class Backoff:
    """Exponential back-off with full jitter, capped (AWS architecture blog, "Exponential Backoff
    And Jitter": full jitter spreads retries of many collectors hitting one receiver)."""

    initial: float = 0.5
    maximum: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        cap = min(self.maximum, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return cap / 2 + random.uniform(0, cap / 2)

    def reset(self) -> None:
        self.attempt = 0


class QueueWorker(ABC, Generic[T]):
    """One delivery target: a bounded queue and the task that drains it.

    Subclasses implement ``deliver(batch)``; it raises ``DeliveryError`` on failure. Retryable
    failures go back to the queue head and the worker waits a back-off; after ``max_attempts``
    (``None`` = forever, bounded by the queue) the batch is counted failed and dropped.
    """

    def __init__(self, notifier: str, target: str, *, capacity: int = 10_000, max_batch: int = 1,
                 max_attempts: int | None = None, backoff: Backoff | None = None) -> None:
        self.notifier = notifier
        self.target = target
        self.queue: BoundedQueue[T] = BoundedQueue(capacity)
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.sent = 0
        self.failed = 0
        self.retries = 0
        self.connected = False
        self.last_error = ""
        self.last_success_at: float | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight = 0

    # -- producer side (synchronous, never blocks) --------------------------------------------
    def put(self, item: T, key: Hashable | None = None) -> None:
        self.queue.put(item, key)
        self._notify()

    def _notify(self) -> None:
        loop = self._loop
        if loop is None:
            return  # not started: entries wait in the queue, start() wakes the worker
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    # -- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"notifier-{self.notifier}-{self.target}")
        self._wake.set()

    async def aclose(self, flush_timeout: float = 2.0) -> None:
        """Deliver what is queued within ``flush_timeout`` seconds, then stop."""
        task = self._task
        if task is None:
            await self.on_close()
            return
        self._closing = True
        self._wake.set()
        deadline = time.monotonic() + flush_timeout
        while (len(self.queue) or self._inflight) and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = None
        await self.on_close()

    async def on_close(self) -> None:
        """Release connections; called once the worker has stopped."""

    @abstractmethod
    async def deliver(self, batch: list[T]) -> None:
        """Send one batch; raise DeliveryError (retryable or not) when the target refuses it."""

    def health(self) -> NotifierHealth:
        return NotifierHealth(
            notifier=self.notifier, target=self.target, queued=len(self.queue),
            capacity=self.queue.capacity, sent=self.sent, failed=self.failed,
            dropped=self.queue.dropped, retries=self.retries, connected=self.connected,
            last_error=self.last_error, last_success_at=self.last_success_at,
        )

    # -- worker ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        attempts = 0
        while True:
            entries = self.queue.take(self.max_batch)
            if not entries:
                if self._closing:
                    return
                self._wake.clear()
                if len(self.queue) == 0:
                    await self._wake.wait()
                continue
            batch = [item for _, item in entries]
            self._inflight = len(batch)
            try:
                await self.deliver(batch)
            except DeliveryError as err:
                self._inflight = 0
                self.last_error = str(err)
                attempts += 1
                exhausted = self.max_attempts is not None and attempts >= self.max_attempts
                if not err.retryable or exhausted:
                    self.failed += len(batch)
                    attempts = 0
                    self.backoff.reset()
                    log.warning("notifier %s: gave up on %d entries for %s: %s",
                                self.notifier, len(batch), self.target, err)
                    continue
                self.retries += 1
                self.queue.put_back(entries)
                delay = self.backoff.next_delay()
                log.info("notifier %s: delivery to %s failed (%s); retry in %.1fs",
                         self.notifier, self.target, err, delay)
                if self._closing:
                    return
                await asyncio.sleep(delay)
                continue
            except asyncio.CancelledError:
                self._inflight = 0
                self.queue.put_back(entries)
                raise
            except Exception as err:  # supervision boundary: a bug must not kill the worker for good
                self._inflight = 0
                self.failed += len(batch)
                self.last_error = f"{type(err).__name__}: {err}"
                log.exception("notifier %s: unexpected error delivering to %s; %d entries dropped",
                              self.notifier, self.target, len(batch))
                continue
            self._inflight = 0
            attempts = 0
            self.backoff.reset()
            self.sent += len(batch)
            self.last_success_at = time.time()


class NotifierBase(ABC):
    """Fan-out of the ``Notifier`` protocol onto one or more ``QueueWorker`` targets."""

    name = "notifier"

    def __init__(self) -> None:
        self.workers: list[QueueWorker[Any]] = []

    async def start(self) -> None:
        for w in self.workers:
            await w.start()

    async def aclose(self) -> None:
        await asyncio.gather(*(w.aclose() for w in self.workers))

    def health(self) -> tuple[NotifierHealth, ...]:
        return tuple(w.health() for w in self.workers)

    @abstractmethod
    def send_alerts(self, alerts: list[Alert]) -> None:
        """Queue alerts whose state changed or that are due again; never blocks."""

    @abstractmethod
    def send_event(self, event: EventNotice) -> None:
        """Queue a hardware event; never blocks."""

    @abstractmethod
    def send_node_status(self, status: NodeStatus) -> None:
        """Queue an agent's online/offline change; never blocks."""


def rfc3339(ts: float) -> str:
    """Unix seconds → RFC 3339 UTC with milliseconds, as Alertmanager's API expects."""
    whole = int(ts // 1)
    ms = round((ts - whole) * 1000)
    if ms == 1000:
        whole, ms = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def alert_json(alert: Alert) -> dict[str, Any]:
    """One alert as plain JSON (MQTT, webhook and log payloads share this shape)."""
    out: dict[str, Any] = {
        "labels": {k: str(v) for k, v in alert.labels.items()},
        "annotations": {k: str(v) for k, v in alert.annotations.items()},
        "state": alert.state.value,
        "activeAt": rfc3339(alert.active_at),
        # JSON has no NaN/Inf; Prometheus renders them as strings in its API too.
        "value": alert.value if math.isfinite(alert.value) else str(alert.value),
    }
    if alert.fired_at is not None:
        out["firedAt"] = rfc3339(alert.fired_at)
    if alert.resolved_at is not None:
        out["resolvedAt"] = rfc3339(alert.resolved_at)
    if alert.generator_url:
        out["generatorURL"] = alert.generator_url
    return out


def event_json(event: EventNotice) -> dict[str, Any]:
    return {
        "node": event.node, "kind": event.kind, "severity": event.severity,
        "message": event.message, "action": event.action, "ts": rfc3339(event.ts),
        "labels": {k: str(v) for k, v in event.labels.items()},
    }


def node_status_json(status: NodeStatus) -> dict[str, Any]:
    return {
        "node": status.node, "status": "online" if status.online else "offline",
        "online": status.online, "ts": rfc3339(status.ts),
        "labels": {k: str(v) for k, v in status.labels.items()},
    }
