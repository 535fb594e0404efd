"""Values of PromQL evaluation and the series interface the evaluator reads."""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Sequence
from typing import NamedTuple, Protocol

from alerts.errors import EvalError
from alerts.promql import ast
from alerts.promql.labels import NAME, Labels

LOOKBACK_MS = 5 * 60 * 1000
NEVER = 2**62

Sample = tuple[Labels, float]
Vector = list[Sample]


class RangeSeries(NamedTuple):
    """The samples of one series inside a window (stale markers removed)."""

    labels: Labels
    ts: Sequence[int]
    vals: Sequence[float]
    may_reset: bool  # a value may be lower than the one before it (a counter reset)
    part: str


Matrix = list[RangeSeries]
Value = float | str | Vector | Matrix


# A stale marker is a NaN with a payload no arithmetic produces (Prometheus uses 0x7ff0000000000002,
# a signalling NaN; the quiet variant here survives any FPU path unchanged). Stored in float arrays
# like any value; told apart from an ordinary NaN by its bits.
_STALE_BITS = 0x7FF8000000000002
_STALE_BYTES = struct.pack("<Q", _STALE_BITS)
STALE_NAN: float = struct.unpack("<d", _STALE_BYTES)[0]


def is_stale(v: float) -> bool:
    return math.isnan(v) and struct.pack("<d", v) == _STALE_BYTES


class SeriesData(Protocol):
    """One stored series: ``ts`` ascending integer milliseconds; ``vals`` floats with stale
    markers as ``STALE_NAN``; ``stale`` counts the markers (0 lets range reads skip filtering);
    ``dec_ts`` is the time of the newest sample lower than its predecessor, ``chg_ts`` of the
    newest sample different from its predecessor; ``part`` its shard label's value."""

    @property
    def labels(self) -> Labels: ...
    @property
    def ts(self) -> Sequence[int]: ...
    @property
    def vals(self) -> Sequence[float]: ...
    @property
    def stale(self) -> int: ...
    @property
    def dec_ts(self) -> int: ...
    @property
    def chg_ts(self) -> int: ...
    @property
    def part(self) -> str: ...


class SeriesSource(Protocol):
    def select(self, sel: ast.VectorSelector, parts: Collection[str] | None = None) -> Sequence[SeriesData]:
        """The series matching the selector (within ``parts`` when given), in creation order
        (as Prometheus's head returns them)."""


def check_unique(vec: Vector) -> Vector:
    if len(vec) > 1 and len({s[0] for s in vec}) != len(vec):
        raise EvalError("vector cannot contain metrics with the same labelset")
    return vec


def absent_labels(node: ast.Expr) -> Labels:
    """Labels of ``absent(sel)``: the selector's equality matchers, minus any label that also
    has another matcher (Prometheus ``createLabelsForAbsentFunction``)."""
    node = ast.unwrap(node)
    if isinstance(node, ast.MatrixSelector):
        node = node.vector
    if not isinstance(node, ast.VectorSelector):
        return ()
    out: dict[str, str] = {}
    drop: set[str] = set()
    for m in node.matchers:
        if m.name == NAME:
            continue
        if m.op == "=" and m.name not in out:
            out[m.name] = m.value
        else:
            drop.add(m.name)
    return tuple(sorted((k, v) for k, v in out.items() if k not in drop and v != ""))
