"""What the collector holds of one agent's WAL, and the only rules that move it.

Sequences count batches within one agent WAL, strictly increasing (DESIGN.md, Wire protocol).
Per node the collector remembers, durably, the sequences it *settled* — stored, or refused for
their content (the agent was told, and drops them) — as disjoint ranges: normally one,
``1..N``; a second while live data runs ahead of the backfill after an outage. Nothing a
message claims can change what those ranges say (issue 12):

- a batch is a duplicate only if its own sequence was settled, never because it lies below
  some watermark: no claim can make the collector drop that agent's future data;
- ``contiguous`` (Welcome.last_durable_sequence and Ack.contiguous, on which the agent trims
  its WAL) is the top of the range that starts at 1: every sequence up to it was settled.
  It never passes a sequence the collector did not receive, whatever the agent says;
- ``oldest_sequence`` (the agent's WAL dropped everything older, being full) is remembered as
  ``floor``, bounded by the highest sequence settled. It only lets the collector forget the
  exact gaps below it once too many ranges pile up (``max_ranges``); a gap it forgets stays
  out of ``contiguous``. A sequence the agent gave up leaves ``contiguous`` below it for that
  WAL: harmless, the agent's WAL holds nothing there to resend;
- sequences are bounded: at most ``MAX_SEQUENCE`` (SQLite's integer) and at most ``max_jump``
  past the highest settled; a batch outside is refused on its own, and not settled.

A change is planned (:meth:`NodeState.plan`), made durable together with its batch (one store
transaction), and applied in memory only once that commit succeeded (:meth:`NodeState.apply`):
a failed commit leaves nothing to undo. One plan per node is in flight at a time (the
ingestor holds the node's lock from plan to apply).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from collector.errors import IngestError

#: SQLite integers are signed 64-bit; a larger sequence could not even be stored.
MAX_SEQUENCE = (1 << 63) - 1


class SeqRange(NamedTuple):
    """Sequences ``lo..hi`` inclusive."""

    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class SeqUpdate:
    """What settling one batch changes for its node; the store persists exactly this.

    ``ranges`` are now settled: each replaces every stored range that lies inside it.
    ``reset``: the first write under a new WAL identity; the node's previous ranges go.
    """

    node: str
    wal_id: str
    reset: bool
    seq: int
    ranges: tuple[SeqRange, ...]
    floor: int
    contiguous: int
    version: int  # the state it was planned against (see NodeState.apply)


@dataclass(frozen=True, slots=True)
class SequenceLimits:
    max_jump: int = 1 << 32
    max_ranges: int = 1024


class NodeState:
    """Which sequences of one agent WAL the collector holds durably (see the module doc)."""

    __slots__ = ("_contiguous", "_his", "_los", "_version", "floor", "node", "persisted", "wal_id")

    def __init__(self, node: str, wal_id: str = "", ranges: Iterable[SeqRange] = (), floor: int = 0, *,
                 persisted: bool = True) -> None:
        self.node = node
        self.wal_id = wal_id
        self.floor = floor
        #: False for a WAL the store has not heard of yet: its first commit resets the node.
        self.persisted = persisted
        self._los: list[int] = []
        self._his: list[int] = []
        for r in sorted(ranges):
            if self._his and r.lo <= self._his[-1] + 1:
                self._his[-1] = max(self._his[-1], r.hi)
            else:
                self._los.append(r.lo)
                self._his.append(r.hi)
        self._contiguous = _contiguous(self._los, self._his)
        self._version = 0

    @classmethod
    def new_wal(cls, node: str, wal_id: str) -> NodeState:
        """A WAL the collector holds nothing of (first contact, or the agent's disk was wiped)."""
        return cls(node, wal_id, persisted=False)

    # --- reading -------------------------------------------------------------------------
    @property
    def contiguous(self) -> int:
        """Every sequence up to this one was settled (0: not even the first)."""
        return self._contiguous

    @property
    def high(self) -> int:
        """The highest sequence settled (0: none)."""
        return self._his[-1] if self._his else 0

    @property
    def ranges(self) -> tuple[SeqRange, ...]:
        return tuple(SeqRange(lo, hi) for lo, hi in zip(self._los, self._his, strict=True))

    def has(self, seq: int) -> bool:
        """Settled already: a replay, to be acked without storing it again."""
        i = bisect.bisect_right(self._los, seq) - 1
        return i >= 0 and seq <= self._his[i]

    # --- changing ------------------------------------------------------------------------
    def check(self, seq: int, limits: SequenceLimits) -> None:
        """IngestError (the batch is refused, alone) for a sequence the collector will not take."""
        if seq <= 0:
            raise IngestError("batch has no sequence number", "sequence")
        if seq > MAX_SEQUENCE:
            raise IngestError(f"sequence {seq} is out of range (the limit is 2^63-1)", "sequence")
        if seq - self.high > limits.max_jump:
            raise IngestError(f"sequence {seq} is {seq - self.high} past the highest this agent WAL has sent "
                              f"({self.high}); more than limits.max_sequence_jump ({limits.max_jump})", "sequence")

    def plan(self, seq: int, oldest: int = 0, limits: SequenceLimits = SequenceLimits()) -> SeqUpdate:
        """The change settling batch ``seq`` makes; ``oldest`` is the agent's oldest_sequence claim.

        Call :meth:`check` first, and only for a sequence not :meth:`has`. IngestError: too many gaps."""
        los, his = list(self._los), list(self._his)
        i = bisect.bisect_right(los, seq)  # los[i - 1] <= seq < los[i]
        lo, hi = seq, seq
        start, end = i, i
        if i > 0 and his[i - 1] >= seq - 1:
            lo, start = los[i - 1], i - 1
        if i < len(los) and los[i] <= seq + 1:
            hi, end = his[i], i + 1
        los[start:end] = [lo]
        his[start:end] = [hi]
        written = [SeqRange(lo, hi)]
        floor = self.floor
        if oldest > 1:
            # The agent no longer has anything below ``oldest``; believe it only as far as
            # sequences the collector has really settled (a claim is not data).
            floor = max(floor, min(oldest - 1, his[-1]))
        if len(los) > limits.max_ranges:
            # Too many gaps: forget the lowest one the agent gave up (never the one that ends
            # the range from 1: contiguous must not pass it). None given up: the agent skips
            # around without saying why; refuse rather than track without bound.
            first = 1 if los[0] == 1 else 0
            fold = next((j for j in range(first, len(los) - 1) if los[j + 1] - 1 <= floor), None)
            if fold is None:
                raise IngestError(f"sequence {seq} would open gap number {len(los)} in this agent's sequence "
                                  f"(limit limits.max_sequence_ranges = {limits.max_ranges}); the agent is "
                                  "skipping sequences", "max_sequence_ranges")
            los[fold:fold + 2], his[fold:fold + 2] = [los[fold]], [his[fold + 1]]
            written.append(SeqRange(los[fold], his[fold]))
        return SeqUpdate(self.node, self.wal_id, not self.persisted, seq, tuple(written), floor,
                         _contiguous(los, his), self._version)

    def apply(self, update: SeqUpdate) -> None:
        """Make a committed plan the state (the plan must be against this very state)."""
        if update.version != self._version or update.node != self.node:
            raise RuntimeError(f"node {self.node}: sequence plan for {update.seq} is stale "
                               "(another change was applied since it was planned)")
        for r in update.ranges:
            start = bisect.bisect_left(self._los, r.lo)
            end = bisect.bisect_right(self._los, r.hi)
            self._los[start:end] = [r.lo]
            self._his[start:end] = [r.hi]
        self.floor = update.floor
        self._contiguous = update.contiguous
        self.persisted = True
        self._version += 1


def _contiguous(los: list[int], his: list[int]) -> int:
    return his[0] if los and los[0] == 1 else 0
