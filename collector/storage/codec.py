"""Column encoding of the block store: many series at once, with numpy, losslessly.

A *segment* holds the samples of one node for a stretch of time, as columns: one per series.
Series sampled at the same instants share one timestamp column (a *group*); an agent's block
(one timestamp, many series) makes most of a node's series one group. Encoding is vectorised
over the columns of a group, so its cost follows the number of groups, not of samples.

Per column, the smallest of:

- ``CONST``: every value has the same bits (limits, thresholds, states, idle counters) — the
  value once;
- ``DELTA``/``DOD``: the values are decimals with at most ``e`` fractional digits (a sensor
  rounded to 0.1 °C, a counter of bytes): the integers ``v·10^e``, as first differences
  (gauges) or differences of differences (steady counters), zig-zag, bit-packed at the
  column's widest;
- ``XOR``: anything else: each value's IEEE-754 bits XOR the previous one's, shifted right
  past their common trailing zeros, bit-packed (the idea of Gorilla, Pelkonen et al., VLDB
  2015, with a per-column width instead of per-value control bits so that it vectorises).

The decimal path (the idea of ALP, Afroozeh et al., SIGMOD 2024) is checked value by value:
a column takes it only if ``round(v·10^e) / 10^e`` gives back the exact bits of every value.
Timestamps are integers: DELTA/DOD with e = 0 (steady intervals pack to 0 bits).

Blob layout (little-endian)::

    b"FMS1" u16 ngroups
    per group: u32 nrows, u32 ncols, u32 ts_len, ts column,
               i64[ncols] series ids (ascending), u32[ncols + 1] column offsets, columns

so a reader decodes only the columns it needs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from collector.errors import CollectorError

MAGIC = b"FMS1"
CONST, DELTA, DOD, XOR = 0, 1, 2, 3
#: Largest decimal exponent tried: 10^-9 (bias currents in amperes rounded to µA are 10^-6).
MAX_EXP = 9
_SAFE = float(2**53)  # integers beyond this are not exact in a float64
_HDR = struct.Struct("<BBBqq")  # kind, exponent or shift, width, first, first delta

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]


class CodecError(CollectorError):
    """A segment blob that cannot be decoded (corrupt file, or written by a newer version)."""


@dataclass(frozen=True)
class Block:
    """One timestamp, many series: what an agent's batch block becomes after resolving ids."""

    ts_ms: int
    sids: I64
    values: F64


@dataclass
class Encoded:
    blob: bytes
    samples: int
    duplicates: int  # samples dropped because an earlier block had the same (series, ts)
    t_min: int
    t_max: int


# --- bit packing ---------------------------------------------------------------------------------
def _bit_width(x: U64) -> npt.NDArray[np.uint8]:
    """Bits needed for each row's largest value (rows of a 2-D uint64 array)."""
    if x.shape[1] == 0:
        return np.zeros(x.shape[0], np.uint8)
    top = x.max(axis=1)
    out = np.zeros(x.shape[0], np.uint8)
    nz = top > 0
    # float64 log2 is exact enough except near powers of two: fix up with a comparison.
    w = np.floor(np.log2(top[nz].astype(np.float64))).astype(np.int64) + 1
    w = np.clip(w, 1, 64)
    over = (w < 64) & (top[nz] >> np.minimum(w, 63).astype(np.uint64) > 0)
    w = w + over
    under = (w > 1) & (top[nz] >> (w - 1).astype(np.uint64) == 0)
    w = w - under
    out[nz] = w
    return out


def _pack(rows: U64, width: int) -> npt.NDArray[np.uint8]:
    """Each row's values at ``width`` bits, little-endian bit order: (k, ceil(m·w/8)) bytes."""
    k, m = rows.shape
    if width == 0 or m == 0:
        return np.zeros((k, 0), np.uint8)
    bits = ((rows[:, :, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.reshape(k, m * width), axis=1, bitorder="little")


def _unpack(packed: npt.NDArray[np.uint8], m: int, width: int) -> U64:
    """Inverse of ``_pack`` for (k, nbytes) rows."""
    k = packed.shape[0]
    if width == 0 or m == 0:
        return np.zeros((k, m), np.uint64)
    bits = np.unpackbits(packed, axis=1, count=m * width, bitorder="little").reshape(k, m, width)
    weights = np.left_shift(np.uint64(1), np.arange(width, dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=2, dtype=np.uint64)


def _zigzag(x: I64) -> U64:
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _unzigzag(u: U64) -> I64:
    return ((u >> np.uint64(1)).view(np.int64)) ^ -((u & np.uint64(1)).view(np.int64))


# --- encoding ------------------------------------------------------------------------------------
def _encode_ints(ints: I64, exps: npt.NDArray[np.int64]) -> tuple[list[tuple[int, int, int, int, int]], list[bytes]]:
    """Columns of integers (k × n) as DELTA or DOD, whichever packs narrower: headers, payloads."""
    k, n = ints.shape
    heads: list[tuple[int, int, int, int, int]] = [(0, 0, 0, 0, 0)] * k
    payloads: list[bytes] = [b""] * k
    first = ints[:, 0]
    d = np.diff(ints, axis=1)
    dz = _zigzag(d)
    wd = _bit_width(dz)
    if n >= 3:
        ddz = _zigzag(np.diff(d, axis=1))
        wdd = _bit_width(ddz)
    else:
        ddz = np.zeros((k, 0), np.uint64)
        wdd = np.full(k, 255, np.uint8)
    use_dod = wdd < wd
    for mode, vals, widths, sel in ((DELTA, dz, wd, ~use_dod), (DOD, ddz, wdd, use_dod)):
        idx = np.flatnonzero(sel)
        for w in np.unique(widths[idx]):
            sub = idx[widths[idx] == w]
            packed = _pack(vals[sub], int(w))
            for j, col in enumerate(sub.tolist()):
                heads[col] = (mode, int(exps[col]), int(w), int(first[col]), int(d[col, 0]) if mode == DOD else 0)
                payloads[col] = packed[j].tobytes()
    return heads, payloads


def _decimal_exponents(m: F64) -> npt.NDArray[np.int64]:
    """Per row (column of samples): the smallest e with round(v·10^e)/10^e == v bit for bit, or -1."""
    k = m.shape[0]
    out = np.full(k, -1, np.int64)
    bits = m.view(np.int64)
    # -0.0 would come back as 0.0 from an integer: such columns take the XOR path.
    todo = np.flatnonzero(~np.any((m == 0) & np.signbit(m), axis=1))
    for e in range(MAX_EXP + 1):
        if not len(todo):
            break
        p = 10.0 ** e
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = m[todo] * p
            ok = np.all((np.abs(scaled) < _SAFE) & ((np.round(scaled) / p).view(np.int64) == bits[todo]), axis=1)
        out[todo[ok]] = e
        todo = todo[~ok]
    return out


def _encode_group(ts: I64, sids: I64, m: F64) -> bytes:
    """One group: ``m`` is (ncols × nrows), every column sampled at ``ts``."""
    k, n = m.shape
    heads: list[tuple[int, int, int, int, int]] = [(0, 0, 0, 0, 0)] * k
    payloads: list[bytes] = [b""] * k
    bits = m.view(np.int64)
    const = np.all(bits == bits[:, :1], axis=1)
    for col in np.flatnonzero(const):
        heads[col] = (CONST, 0, 0, int(bits[col, 0]), 0)
    rest = np.flatnonzero(~const)
    if len(rest):
        exps = _decimal_exponents(m[rest])
        dec = rest[exps >= 0]
        if len(dec):
            p = 10.0 ** exps[exps >= 0]
            ints = np.round(m[dec] * p[:, None]).astype(np.int64)
            h2, p2 = _encode_ints(ints, exps[exps >= 0])
            for j, col in enumerate(dec.tolist()):
                heads[col] = h2[j]
                payloads[col] = p2[j]
        raw = rest[exps < 0]
        if len(raw):
            x = (bits[raw, 1:] ^ bits[raw, :-1]).view(np.uint64)
            nz = np.where(x == 0, np.uint64(1) << np.uint64(63), x)
            # Trailing zeros shared by every XOR of the column (low mantissa bits that never change).
            low = nz & (~nz + np.uint64(1))
            shift = np.floor(np.log2(low.astype(np.float64))).astype(np.int64).min(axis=1)
            shifted = x >> shift[:, None].astype(np.uint64)
            widths = _bit_width(shifted)
            for w in np.unique(widths):
                sub = np.flatnonzero(widths == w)
                packed = _pack(shifted[sub], int(w))
                for j, i in enumerate(sub.tolist()):
                    xcol = int(raw[i])
                    heads[xcol] = (XOR, int(shift[i]), int(w), int(bits[xcol, 0]), 0)
                    payloads[xcol] = packed[j].tobytes()
    th, tp = _encode_ints(ts[None, :], np.zeros(1, np.int64))
    ts_col = _HDR.pack(*th[0]) + tp[0]
    cols = [_HDR.pack(*h) + p for h, p in zip(heads, payloads, strict=True)]
    offsets = np.zeros(k + 1, np.uint32)
    np.cumsum([len(c) for c in cols], out=offsets[1:])
    return b"".join([struct.pack("<III", n, k, len(ts_col)), ts_col, sids.astype("<i8").tobytes(),
                     offsets.astype("<u4").tobytes(), *cols])


def dedupe(blocks: Sequence[Block]) -> tuple[I64, I64, F64, int]:
    """All samples sorted by (series, ts); of equal (series, ts) the first in ``blocks`` order is
    kept (the first batch received wins), the others are counted."""
    if not blocks:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float64), 0
    sid = np.concatenate([b.sids for b in blocks]).astype(np.int64, copy=False)
    ts = np.concatenate([np.full(len(b.sids), b.ts_ms, np.int64) for b in blocks])
    val = np.concatenate([b.values for b in blocks]).astype(np.float64, copy=False)
    order = np.lexsort((ts, sid))  # stable: equal keys keep their arrival order
    sid, ts, val = sid[order], ts[order], val[order]
    keep = np.ones(len(sid), bool)
    keep[1:] = (sid[1:] != sid[:-1]) | (ts[1:] != ts[:-1])
    dups = int(len(keep) - keep.sum())
    return sid[keep], ts[keep], val[keep], dups


def encode(blocks: Sequence[Block]) -> Encoded:
    """Encode samples (in arrival order) as one segment blob."""
    sid, ts, val, dups = dedupe(blocks)
    return encode_sorted(sid, ts, val, dups)


def encode_sorted(sid: I64, ts: I64, val: F64, dups: int = 0) -> Encoded:
    """Encode samples already sorted by (series, ts) without duplicates."""
    if not len(sid):
        raise ValueError("nothing to encode")
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    counts = np.diff(np.r_[starts, len(sid)])
    groups: dict[bytes, list[int]] = {}
    if np.all(counts == counts[0]) and np.all(ts.reshape(len(starts), counts[0]) == ts[:counts[0]]):
        groups[b""] = list(range(len(starts)))  # the common case: every series at every instant
    else:
        for i, (s, c) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
            groups.setdefault(ts[s:s + c].tobytes(), []).append(i)
    parts = [MAGIC, struct.pack("<H", len(groups))]
    for members in groups.values():
        idx = np.asarray(members)
        c = int(counts[idx[0]])
        pos = (starts[idx][:, None] + np.arange(c)).ravel()
        parts.append(_encode_group(ts[pos[:c]], sid[starts[idx]], val[pos].reshape(len(idx), c)))
    return Encoded(b"".join(parts), len(sid), dups, int(ts.min()), int(ts.max()))


# --- decoding ------------------------------------------------------------------------------------
@dataclass
class _Group:
    nrows: int
    ts_col: bytes
    sids: I64
    offsets: npt.NDArray[np.uint32]
    base: int  # where the columns start in the blob


def _groups(blob: bytes | memoryview) -> list[_Group]:
    if bytes(blob[:4]) != MAGIC:
        raise CodecError(f"not a segment blob (magic {bytes(blob[:4])!r})")
    (ngroups,) = struct.unpack_from("<H", blob, 4)
    pos = 6
    out = []
    try:
        for _ in range(ngroups):
            nrows, ncols, ts_len = struct.unpack_from("<III", blob, pos)
            pos += 12
            ts_col = bytes(blob[pos:pos + ts_len])
            pos += ts_len
            sids = np.frombuffer(blob, "<i8", ncols, pos).astype(np.int64)
            pos += 8 * ncols
            offsets = np.frombuffer(blob, "<u4", ncols + 1, pos)
            pos += 4 * (ncols + 1)
            out.append(_Group(nrows, ts_col, sids, offsets, pos))
            pos += int(offsets[-1])
    except (struct.error, ValueError) as err:
        raise CodecError(f"truncated segment blob: {err}") from err
    return out


def _ints(heads: Sequence[tuple[int, int, int, int, int]], packed: npt.NDArray[np.uint8], kind: int, w: int,
          n: int) -> I64:
    """DELTA/DOD columns of one (kind, width) → (k × n) integers."""
    first = np.array([h[3] for h in heads], np.int64)
    m = n - (2 if kind == DOD else 1)
    z = _unzigzag(_unpack(packed, m, w))
    if kind == DOD:
        d0 = np.array([h[4] for h in heads], np.int64)
        d = np.concatenate([d0[:, None], d0[:, None] + np.cumsum(z, axis=1)], axis=1)
    else:
        d = z
    return np.concatenate([first[:, None], first[:, None] + np.cumsum(d, axis=1)], axis=1)


def _payloads(cols: Sequence[bytes], idx: Sequence[int], nbytes: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(b"".join(cols[i][_HDR.size:_HDR.size + nbytes] for i in idx),
                         np.uint8).reshape(len(idx), nbytes)


def _decode_cols(cols: Sequence[bytes], n: int) -> F64:
    """Columns of one group (each: header + payload) → (len(cols) × n) float64."""
    out = np.empty((len(cols), n), np.float64)
    bits = out.view(np.int64)
    by_shape: dict[tuple[int, int], list[int]] = {}
    heads = [_HDR.unpack_from(c) for c in cols]
    for i, (kind, _e, w, _f, _d) in enumerate(heads):
        by_shape.setdefault((kind, w), []).append(i)
    for (kind, w), idx in by_shape.items():
        hs = [heads[i] for i in idx]
        first = np.array([h[3] for h in hs], np.int64)
        if kind == CONST:
            bits[idx] = first[:, None]
            continue
        m = n - (2 if kind == DOD else 1)
        packed = _payloads(cols, idx, (m * w + 7) // 8)
        if kind == XOR:
            shift = np.array([h[1] for h in hs], np.uint64)
            acc = np.bitwise_xor.accumulate(_unpack(packed, m, w) << shift[:, None], axis=1)
            bits[idx, 0] = first
            bits[idx, 1:] = (acc ^ first.view(np.uint64)[:, None]).view(np.int64)
        elif kind in (DELTA, DOD):
            exps = np.array([h[1] for h in hs], np.int64)
            out[idx] = _ints(hs, packed, kind, w, n).astype(np.float64) / (10.0 ** exps)[:, None]
        else:
            raise CodecError(f"unknown column kind {kind}")
    return out


def _decode_ts(g: _Group) -> I64:
    head = _HDR.unpack_from(g.ts_col)
    kind, _e, w = head[0], head[1], head[2]
    if kind not in (DELTA, DOD):
        raise CodecError(f"timestamp column of kind {kind}")
    m = g.nrows - (2 if kind == DOD else 1)
    return _ints([head], _payloads([g.ts_col], [0], (m * w + 7) // 8), kind, w, g.nrows)[0]


def series_in(blob: bytes | memoryview) -> I64:
    """The series ids a segment holds."""
    gs = _groups(blob)
    return np.concatenate([g.sids for g in gs]) if gs else np.zeros(0, np.int64)


def decode(blob: bytes | memoryview, want: Iterable[int] | None = None) -> dict[int, tuple[I64, F64]]:
    """Series id → (timestamps ms, values), for the series in ``want`` (all when None)."""
    wanted = None if want is None else np.fromiter(want, np.int64)
    out: dict[int, tuple[I64, F64]] = {}
    for g in _groups(blob):
        pick = np.arange(len(g.sids)) if wanted is None else np.flatnonzero(np.isin(g.sids, wanted))
        if not len(pick):
            continue
        ts = _decode_ts(g)
        cols = [bytes(blob[g.base + int(g.offsets[i]):g.base + int(g.offsets[i + 1])]) for i in pick]
        vals = _decode_cols(cols, g.nrows)
        for j, i in enumerate(pick):
            out[int(g.sids[i])] = (ts, vals[j])
    return out


def decode_all(blob: bytes | memoryview) -> tuple[I64, I64, F64]:
    """Every sample of a segment as flat (series ids, ts, values), sorted by (series, ts)."""
    sids, tss, vals = [], [], []
    for g in _groups(blob):
        ts = _decode_ts(g)
        cols = [bytes(blob[g.base + int(g.offsets[i]):g.base + int(g.offsets[i + 1])])
                for i in range(len(g.sids))]
        v = _decode_cols(cols, g.nrows)
        sids.append(np.repeat(g.sids, g.nrows))
        tss.append(np.tile(ts, len(g.sids)))
        vals.append(v.ravel())
    if not sids:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float64)
    s, t, v = np.concatenate(sids), np.concatenate(tss), np.concatenate(vals)
    order = np.lexsort((t, s))
    return s[order], t[order], v[order]
