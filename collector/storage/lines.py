"""Line protocol from columns: the InfluxDB sinks' encoder, vectorised.

The per-sample work of a naive encoder (a dict per line, an f-string per field, escaping per
series) made the sinks reach 0.2–0.7x of a raw POST of the same lines (issue 14). Here:

* what a series contributes to a line is computed once per series and catalog, and kept by series
  id: ``head`` (``measurement,tags field=``, which opens a line) and ``mid`` (``,field=``);
* grouping samples into lines (one line per series prefix and instant) is one numpy sort, which
  leaves each sample a token id (its series' mid, or head where it opens a line);
* a chunk is made by the C module (``_native.c``, built by ``pip install``): it copies each
  sample's token and value and each line's tail (`` <ts>\\n``) into one buffer, writing whole
  numbers itself and copying the other values from orjson's text of the column (orjson's Ryu
  formatter is ~3x faster per float than ``repr``). That is 19.5 M points per CPU-second against
  5-6 M for the pure-Python path, which is used when the module was not built: one
  ``bytes.join`` over the tokens (picked by numpy indexing), the values (orjson's text split)
  and the tails. Both give the same bytes (``tests/test_fuzz_sink_encoders.py``).

Every line is byte-identical to :func:`proto.lineprotocol.encode_line` given the same fields (the
escaping is that module's, and :func:`proto.lineprotocol.format_float` writes floats as orjson
does; ``tests/test_sink_encoders.py`` compares the two): NaN/±Inf left out, timestamps in ns.
Lines are ordered by instant, then series prefix; fields within a line by series id (the order
the source first saw them). Two samples of one series and instant: the later one wins, as when a
dict grouped them.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from collector.storage.base import Int64Array, Samples, SeriesCatalog, SeriesKey, SinkBatch, StoredEvent
from collector.storage.columnar import TABLE_SLICE, ByteTable, Grow, last_of_runs, rank, stable_order
from collector.storage.retry import MAX_BYTES, MAX_LINES, chunk_lines, cut_chunks
from proto.lineprotocol import Dialect, encode_line, escape_field_key, series_prefix

try:  # built from _native.c by `pip install` where a C compiler is present (pyproject.toml)
    from collector.storage import _native
except ImportError:  # the same bytes, from the pure-Python path: ~3x slower to render
    _native = None  # type: ignore[assignment]

#: Upper bounds used to size chunks before their text exists: the longest ``repr`` of a float
#: (``-2.2250738585072014e-308``) and the longest tail (`` -9223372036854775808\n``).
_MAX_VALUE_CHARS = 24
_MAX_TAIL_CHARS = 22


class _SeriesTokens:
    """For one catalog and dialect: each series' line group, tokens (UTF-8) and width.

    ``tokens`` holds two per series, back to back: token ``2 * id`` is its mid (``,field=``),
    ``2 * id + 1`` its head (``measurement,tags field=``).
    """

    def __init__(self, dialect: Dialect) -> None:
        self.dialect: Dialect = dialect
        self.group = Grow(np.int64)  # -1: the series cannot be written (nothing left of its names)
        self.tokens = ByteTable()
        self.width = Grow(np.int64)  # the longer of the two tokens, in bytes, for sizing chunks
        self.n_groups = 0
        self._groups: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[int, str | None]] = {}
        self._fields: dict[str, str] = {}

    def update(self, catalog: SeriesCatalog) -> None:
        for start in range(self.group.n, len(catalog), TABLE_SLICE):
            self._add(catalog.keys[start:start + TABLE_SLICE])

    def _add(self, keys: Sequence[SeriesKey]) -> None:
        groups: list[int] = []
        tokens: list[bytes] = []
        widths: list[int] = []
        for key in keys:
            gkey = (key.measurement, key.tags)
            found = self._groups.get(gkey)
            if found is None:
                prefix = series_prefix(key.measurement, key.tags, self.dialect)
                found = self._groups[gkey] = (-1 if prefix is None else self.n_groups, prefix)
                self.n_groups += prefix is not None
            gid, prefix = found
            fkey = self._fields.get(key.field)
            if fkey is None:
                fkey = self._fields[key.field] = escape_field_key(key.field, self.dialect)
            if prefix is None or not fkey:
                groups.append(-1)
                tokens += (b"", b"")
                widths.append(0)
                continue
            head = f"{prefix} {fkey}=".encode()
            groups.append(gid)
            tokens += (f",{fkey}=".encode(), head)
            widths.append(len(head))
        self.group.extend(groups)
        self.tokens.extend(tokens)
        self.width.extend(widths)


def format_array(values: npt.NDArray[np.float64]) -> bytes:
    """Finite floats as one JSON array (``[47.0,0.5]``) of line-protocol field values: orjson
    writes shortest round-trip numbers, exactly :func:`proto.lineprotocol.format_float`."""
    return orjson.dumps(np.ascontiguousarray(values, np.float64), option=orjson.OPT_SERIALIZE_NUMPY)


def whole_numbers(values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Where a value is a whole number below 1e15 in magnitude (and not -0.0): ``format_float``
    writes those as their digits and ``.0`` (``47.0``), which the native splice writes itself, so
    only the others go through orjson. Most telemetry is whole: degrees, bytes, hertz, counts."""
    return (np.trunc(values) == values) & (np.abs(values) < 1e15) & ~((values == 0) & np.signbit(values))


def format_values(values: npt.NDArray[np.float64]) -> list[bytes]:
    """Finite floats as line-protocol field values, one ``bytes`` each."""
    if len(values) == 0:
        return []
    return format_array(values)[1:-1].split(b",")


class _Tails:
    """`` <ts>\\n`` per line; a batch has few distinct instants, so they are remembered (bounded)."""

    def __init__(self, max_cache: int = 10_000) -> None:
        self.max_cache = max_cache
        self._known: dict[int, bytes] = {}

    def __call__(self, ts: Int64Array) -> np.ndarray:
        """An object array of the tails of ``ts``."""
        known = self._known
        stamps = ts.tolist()
        found = list(map(known.get, stamps))
        if None in found:
            if len(known) > self.max_cache:
                known.clear()
            for i, text in enumerate(found):
                if text is None:
                    found[i] = known[stamps[i]] = b" %d\n" % stamps[i]
        out = np.empty(len(found), object)
        out[:] = found
        return out


@dataclass
class LinePlan:
    """A batch's samples grouped into lines and cut into chunks; :meth:`render` makes a chunk's body.

    Planning is numpy work on the whole batch; rendering, the byte work, is per chunk, so a sink
    can render the next chunk while the previous one is on the wire.
    """

    tokens: ByteTable  # the catalog's tokens (_SeriesTokens.tokens)
    ids: Int64Array  # each sample's token, in line order: 2 * series id, + 1 where it opens a line
    values: npt.NDArray[np.float64]
    line_starts: Int64Array  # sample positions where a line opens
    line_ts: Int64Array  # each line's timestamp
    chunks: list[tuple[int, int]]  # (first line, end line)
    tails: _Tails

    @property
    def n_lines(self) -> int:
        return len(self.line_starts)

    def render(self, chunk: int) -> bytes:
        first, end = self.chunks[chunk]
        a = int(self.line_starts[first])
        b = int(self.line_starts[end]) if end < self.n_lines else len(self.values)
        if _native is not None:
            values = self.values[a:b]
            whole = whole_numbers(values)
            closes = np.ones(b - a, np.uint8)
            closes[:-1] = (self.ids[a + 1:b] & 1).astype(np.uint8)  # the next sample opens a line
            return _native.splice_lines(self.tokens.blob, self.tokens.offsets.view, self.ids[a:b], values,
                                        whole.view(np.uint8), format_array(values[~whole]), closes,
                                        self.line_ts[first:end])
        return self._render_python(first, end, a, b)

    def _render_python(self, first: int, end: int, a: int, b: int) -> bytes:
        """The same bytes without the native module: one ``bytes.join`` of the pieces."""
        # Each sample is two pieces, its token and its value; a line's tail (" <ts>\n") goes in
        # front of the next line's head token, the last one at the end: one join makes the chunk.
        tokens = self.tokens.objects()[self.ids[a:b]]
        tails = self.tails(self.line_ts[first:end])
        opens = self.line_starts[first + 1:end] - a
        if len(opens):
            tokens[opens] = tails[:-1] + tokens[opens]  # object arrays: bytes + bytes, element-wise
        parts: list[bytes] = [b""] * (2 * (b - a) + 1)
        parts[0:-1:2] = tokens.tolist()
        parts[1:-1:2] = format_values(self.values[a:b])
        parts[-1] = tails[-1]
        return b"".join(parts)


class ColumnLineEncoder:
    """Plans and renders line protocol for :class:`Samples`; one per sink (it caches per catalog)."""

    def __init__(self, dialect: Dialect = "influxdb1") -> None:
        self.dialect: Dialect = dialect
        self._tails = _Tails()
        self._tokens: weakref.WeakKeyDictionary[SeriesCatalog, _SeriesTokens] = weakref.WeakKeyDictionary()

    def tokens_for(self, catalog: SeriesCatalog) -> _SeriesTokens:
        tokens = self._tokens.get(catalog)
        if tokens is None:
            tokens = self._tokens[catalog] = _SeriesTokens(self.dialect)
        tokens.update(catalog)
        return tokens

    def plan(self, samples: Samples, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> LinePlan:
        tok = self.tokens_for(samples.catalog)
        sid, ts, vals = samples.series, samples.ts_ns, samples.values
        group = tok.group.view[sid]
        keep = (group >= 0) & np.isfinite(vals)  # line protocol cannot carry NaN or ±Inf
        if not keep.all():
            sid, ts, vals, group = sid[keep], ts[keep], vals[keep], group[keep]
        if len(sid) == 0:
            empty = np.empty(0, np.int64)
            return LinePlan(tok.tokens, empty, np.empty(0, np.float64), empty, empty, [], self._tails)
        # One line per (instant, group): a stable sort by instant, group, series.
        instant, n_instants = rank(ts)
        order, line_key = stable_order([instant, group, sid], [n_instants, tok.n_groups, len(samples.catalog)])
        sid, ts, vals, line_key = sid[order], ts[order], vals[order], line_key[order]
        last = last_of_runs(sid, ts)  # two samples of one series and instant: the later one wins
        if not last.all():
            sid, ts, vals, line_key = sid[last], ts[last], vals[last], line_key[last]
        opens = np.ones(len(sid), bool)
        opens[1:] = line_key[1:] != line_key[:-1]
        starts = np.flatnonzero(opens)
        ids = 2 * sid + opens
        width = tok.width.view[sid] + (_MAX_VALUE_CHARS + 1)
        line_bytes = np.add.reduceat(width, starts) + _MAX_TAIL_CHARS
        chunks = cut_chunks(np.arange(1, len(starts) + 1), np.cumsum(line_bytes), max_lines, max_bytes)
        return LinePlan(tok.tokens, ids, vals, starts, ts[starts], chunks, self._tails)


@dataclass
class EncodedBatch:
    """A batch as line-protocol request bodies: the samples' chunks, then the events' chunks."""

    plan: LinePlan
    event_chunks: list[str]
    n_event_lines: int

    @property
    def n_chunks(self) -> int:
        return len(self.plan.chunks) + len(self.event_chunks)

    @property
    def n_lines(self) -> int:
        return self.plan.n_lines + self.n_event_lines

    def render(self, chunk: int) -> bytes:
        n = len(self.plan.chunks)
        return self.plan.render(chunk) if chunk < n else self.event_chunks[chunk - n].encode()


def encode_batch(batch: SinkBatch, encoder: ColumnLineEncoder, *, events: bool = True,
                 max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> EncodedBatch:
    """Plan a batch's chunks (the samples' text is made by :meth:`EncodedBatch.render`).

    Values are always written as floats: InfluxDB fixes a field's type per shard, so a counter
    once written as ``5i`` and later as ``5.5`` would be refused as a field type conflict.
    """
    plan = encoder.plan(batch.columns(), max_lines, max_bytes)
    lines = []
    for ev in batch.events if events else ():
        line = encode_line("event", event_tags(ev), {"message": ev.message, "action": ev.action},
                           ev.ts_ns, dialect=encoder.dialect)
        if line is not None:
            lines.append(line)
    return EncodedBatch(plan, chunk_lines(lines, max_lines, max_bytes), len(lines))


def event_tags(ev: StoredEvent) -> dict[str, str]:
    """Tags of an event line: its labels, then node/kind/severity, which win on a clash."""
    return {**dict(ev.tags), "node": ev.node, "kind": ev.kind, "severity": ev.severity}


def batch_lines(batch: SinkBatch, dialect: Dialect = "influxdb1", encoder: ColumnLineEncoder | None = None,
                *, events: bool = True) -> list[str]:
    """The batch as a list of lines (samples, then events): for tests and tools."""
    encoded = encode_batch(batch, encoder or ColumnLineEncoder(dialect), events=events,
                           max_lines=1 << 30, max_bytes=1 << 62)
    return b"".join(encoded.render(i) for i in range(encoded.n_chunks)).decode().splitlines()
