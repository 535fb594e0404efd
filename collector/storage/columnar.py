"""numpy helpers the column encoders share (:mod:`collector.storage.lines`,
:mod:`collector.storage.remote_write`)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from collector.storage.base import Int64Array


class Grow:
    """A numpy column that grows by doubling, so extending it for new series is amortised O(1)."""

    def __init__(self, dtype: npt.DTypeLike) -> None:
        self.data: np.ndarray = np.empty(64, dtype)
        self.n = 0

    def extend(self, values: Sequence[object]) -> None:
        need = self.n + len(values)
        if need > len(self.data):
            bigger = np.empty(max(need, 2 * len(self.data)), self.data.dtype)
            bigger[: self.n] = self.data[: self.n]
            self.data = bigger
        chunk = np.empty(len(values), self.data.dtype)
        chunk[:] = values  # element by element: bytes/str stay the objects given
        self.data[self.n:need] = chunk
        self.n = need

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.n]


#: Series whose tokens or labels an encoder makes at a time, so that a catalog of millions of
#: series (a restarted collector's) never has an object per item all at once.
TABLE_SLICE = 65_536


class ByteTable:
    """Byte strings back to back in one growing ``bytearray``: item ``i`` is
    ``blob[offsets[i]:offsets[i + 1]]``. What the C encoders read (one buffer, no object per item:
    at a collector's 2.5 M series an object per token would cost 50 bytes each on top); the
    pure-Python encoders get the items as an object array from :meth:`objects`, made once.

    Not thread-safe: a sink uses its tables from one thread at a time (its write lock), and a
    ``bytearray`` cannot grow while the C code reads it.
    """

    def __init__(self) -> None:
        self.blob = bytearray()
        self.offsets = Grow(np.int64)
        self.offsets.extend([0])
        self._objects = Grow(object)

    def __len__(self) -> int:
        return self.offsets.n - 1

    def extend(self, items: Sequence[bytes]) -> None:
        if not items:
            return
        ends = np.cumsum([len(item) for item in items]) + len(self.blob)
        self.blob += b"".join(items)
        self.offsets.extend(ends.tolist())

    def objects(self) -> np.ndarray:
        """Every item as a ``bytes`` object (an object array), made for the new items only."""
        have, n = self._objects.n, len(self)
        if have < n:
            offsets, blob = self.offsets.view[have:].tolist(), self.blob  # the new items' bounds only
            self._objects.extend([bytes(blob[start:end]) for start, end in itertools.pairwise(offsets)])
        return self._objects.view


def rank(col: Int64Array) -> tuple[Int64Array, int]:
    """Dense ranks of arbitrary integers (equal values, equal ranks) and how many there are; an
    O(n) pass when ``col`` is already non-decreasing, as a batch's timestamps usually are."""
    if len(col) == 0:
        return col, 1
    if len(col) < 2 or bool(np.all(col[1:] >= col[:-1])):
        ranks = np.empty(len(col), np.int64)
        ranks[0] = 0
        np.cumsum(col[1:] != col[:-1], out=ranks[1:])
    else:
        ranks = np.unique(col, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return ranks, int(ranks.max()) + 1


def stable_order(columns: Sequence[Int64Array], bounds: Sequence[int]) -> tuple[Int64Array, Int64Array]:
    """A stable sort of rows by ``columns`` (the first column first), and a key per row that is
    equal exactly where all columns but the last are equal.

    ``bounds`` are the columns' exclusive upper bounds (all values are ``0 <= v < bound``). When
    they fit in 63 bits together, this is one stable sort of a packed integer key, several
    times faster than ``numpy.lexsort``; otherwise it is ``lexsort``.
    """
    widths = [max(1, int(bound - 1).bit_length()) for bound in bounds]
    n = len(columns[0])
    if sum(widths) <= 63:
        key = np.zeros(n, np.int64)
        for col, bits in zip(columns, widths, strict=True):
            key <<= bits
            key |= col
        return np.argsort(key, kind="stable"), key >> widths[-1]
    order = np.lexsort(list(columns)[::-1])
    prefix = np.zeros(n, np.int64)
    if n:
        changed = np.zeros(n, bool)
        for col in columns[:-1]:
            ordered = col[order]
            changed[1:] |= ordered[1:] != ordered[:-1]
        prefix[order] = np.cumsum(changed)
    return order, prefix


def last_of_runs(a: Int64Array, b: Int64Array) -> npt.NDArray[np.bool_]:
    """For rows sorted so that equal (a, b) pairs are adjacent: True on the last row of each pair
    run (with a stable sort, the latest of duplicates)."""
    keep = np.ones(len(a), bool)
    if len(a) > 1:
        keep[:-1] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return keep
