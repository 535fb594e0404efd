"""Live windows: the recent samples of exactly the series the loaded rules select, indexed.

Like Prometheus's head block, every series gets a reference (an int the collector keeps, so
appending costs no label work) and sits in an index: by metric name, by shard (the value of
the ``node`` label: the unit of incremental evaluation, see ``alerts/schedule.py``) and, for
each selector of a loaded rule, in a posting list computed once when the series is created —
selecting is a list lookup, never a scan. A series no rule can select is not stored at all.

Each series keeps two typed arrays (8 + 8 bytes a sample, no Python object per sample) for as
long as the selectors that read it need: its lookback, its longest range plus offsets and
enclosing subqueries, or a window pinned by ``@``. Appends record which (name, shard) pairs
changed so rule evaluation can be limited to them.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import copysign

from alerts.promql import ast
from alerts.promql.labels import NAME, Labels, Matcher, from_pairs
from alerts.promql.values import LOOKBACK_MS, STALE_NAN, is_stale

#: The label whose value partitions series for incremental evaluation (every fleetmon series
#: carries it: DESIGN.md, "Every series carries the node's identity labels").
SHARD_LABEL = "node"

# Trim a series only when its oldest sample is this far past the retention, so trimming is a
# rare batched ``del array[:k]`` rather than a shift on every sample.
_TRIM_SLACK_MS = 60_000
_OLDEST = -(2**62)
# Distinct values whose (v, v) pair is shared by flat series (see Windows._flat_pair).
_FLAT_PAIRS = 4096


class Sizing:
    """What a series' readers need kept, shared by every series with the same readers (a
    million series have a handful of these)."""

    __slots__ = ("latest", "min_range", "pin", "quiet", "retention")

    def __init__(self, retention: int, quiet: bool, min_range: int, pin: tuple[int, int] | None,
                 latest: bool) -> None:
        self.retention = retention  # how far back from the newest sample to keep
        # Every reader gives the same answer when a flat series repeats its value, so such a
        # repeat changes nothing a rule sees (see append_series); min_range: the shortest range read.
        self.quiet = quiet
        self.min_range = min_range
        self.pin = pin  # [lo, hi] kept whatever the retention (@ <time>)
        # Every reader is a plain instant selector (no offset, @ or subquery): only the newest
        # sample at or before the next evaluation can be read, so older ones are dropped as
        # they are passed (Windows.floor).
        self.latest = latest

    def key(self) -> tuple[int, bool, int, tuple[int, int] | None, bool]:
        return self.retention, self.quiet, self.min_range, self.pin, self.latest


class Series:
    """One series' window: parallel typed arrays (8 + 8 bytes a sample, no Python objects).

    ``dec_ts`` is the timestamp of the newest sample lower than the sample before it (a range
    starting after it holds no counter reset, so rate() skips its reset scan); ``chg_ts`` of
    the newest sample different from the one before it (a window starting after it is flat).
    A million of these live in a large collector: every slot costs 8 MB there.
    """

    __slots__ = ("cell", "chg_ts", "dec_ts", "labels", "last", "last_t", "live", "part", "prev_t", "ref", "size",
                 "stale", "ts", "vals")

    def __init__(self, labels: Labels, ref: int, part: str, cell: _Cell, size: Sizing) -> None:
        self.labels = labels  # sorted pairs, with __name__
        self.ref = ref  # creation order, like a Prometheus series reference
        self.part = part
        self.cell = cell
        # Typed arrays; for a ``latest`` series, tuples of its one or two samples (a tuple of
        # shared objects costs less than an array: the block's timestamp int is one object).
        self.ts: array[int] | tuple[int, ...] = ()
        self.vals: array[float] | tuple[float, ...] = ()  # stale markers are STALE_NAN, as in Prometheus
        self.stale = 0
        self.dec_ts = _OLDEST
        self.chg_ts = _OLDEST
        self.last = math.nan  # newest non-stale value
        self.last_t = _OLDEST  # newest sample's time
        self.prev_t = _OLDEST  # the one before it
        self.size = size
        self.live = False  # in the index (it has samples within its retention)

    @property
    def name(self) -> str:
        return self.cell.name

    @property
    def retention(self) -> int:
        return self.size.retention

    @property
    def latest(self) -> bool:
        return self.size.latest


class _Cell:
    """Change flag shared by the series of one (name, shard): set on append, read per tick."""

    __slots__ = ("dirty", "name", "part")

    def __init__(self, name: str, part: str) -> None:
        self.name = name
        self.part = part
        self.dirty = False


@dataclass(eq=False)
class Need:
    """What one rule selector needs kept: ``span_ms`` before the evaluation time, or a pinned
    ``[lo, hi]`` (an ``@ <time>`` selector); ``quiet_ok``: its reader gives the same answer
    when a flat series repeats its value (an instant selector, ``rate`` ..., not
    ``count_over_time`` or ``timestamp``), once a range (``range_ms``) holds two samples;
    ``latest``: a plain instant selector at the evaluation time (no offset, ``@`` or enclosing
    subquery), which reads only the newest sample at or before it (within ``span_ms``)."""

    span_ms: int
    pin: tuple[int, int] | None = None
    quiet_ok: bool = False
    range_ms: int = 0
    latest: bool = False


@dataclass(eq=False)
class _Postings:
    sel: ast.VectorSelector
    need: Need
    members: list[Series] = field(default_factory=list)  # ref order
    by_part: dict[str, list[Series]] = field(default_factory=dict)


class Windows:
    """Per-series sample windows and their index; the ``SeriesSource`` the evaluator reads."""

    def __init__(self, selectors: Iterable[tuple[ast.VectorSelector, Need]] = (),
                 retention_ms: int = LOOKBACK_MS, keep_all: bool = False, shard_label: str = SHARD_LABEL) -> None:
        self.retention_ms = retention_ms  # for series no selector sizes (keep_all, ad-hoc reads)
        self.keep_all = keep_all  # unit tests: every series is kept (promql_expr_test may read any)
        self.shard_label = shard_label
        self._series: list[Series] = []
        self._by_key: dict[Labels, Series] = {}
        self._by_name: dict[str, list[Series]] = {}  # live series, ref order
        self._by_part: dict[str, list[Series]] = {}  # live series, ref order
        self._postings: dict[ast.VectorSelector, _Postings] = {}
        self._postings_by_name: dict[str, list[_Postings]] = {}
        self._postings_nameless: list[_Postings] = []
        self._name_cache: dict[str, list[_Postings]] = {}
        self._cells: dict[tuple[str, str], _Cell] = {}
        self._dirty: list[_Cell] = []
        self._strings: dict[str, str] = {}
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}
        self._flat: dict[float | tuple[float, float], tuple[float, float]] = {}
        self._sizings: dict[tuple[int, bool, int, tuple[int, int] | None, bool], Sizing] = {}
        self._gc_cursor = 0
        #: No evaluation will read the windows at or before this time again (the engine raises
        #: it as its groups evaluate): of a ``latest`` series, only the newest sample at or
        #: before it and the ones after it can still be read.
        self.floor = _OLDEST
        self._layouts: dict[bytes | tuple[int, ...], list[Series]] = {}
        # id(selector) -> (generation, selector, series) for selectors of no loaded rule
        self._adhoc: dict[int, tuple[int, ast.VectorSelector, list[Series]]] = {}
        self.generation = 0  # bumped when the live set changes: invalidates ad-hoc caches
        for sel, need in selectors:
            self.register(sel, need)

    # -- what to keep -------------------------------------------------------------------------
    def register(self, sel: ast.VectorSelector, need: Need) -> None:
        """Index the series ``sel`` selects, now and from now on."""
        got = self._postings.get(sel)
        if got is not None:
            got.need.span_ms = max(got.need.span_ms, need.span_ms)
            got.need.latest = got.need.latest and need.latest
            for s in self._series:
                if _matches(sel.matchers, s.labels):
                    self._size(s, got.need)
            return
        p = _Postings(sel, need)
        self._postings[sel] = p
        if sel.name:
            self._postings_by_name.setdefault(sel.name, []).append(p)
        else:
            self._postings_nameless.append(p)
        self._name_cache.clear()
        for s in self._series:
            if _matches(sel.matchers, s.labels):
                self._size(s, need)
                if s.live:
                    self._post(p, s)

    def _postings_for(self, name: str) -> list[_Postings]:
        got = self._name_cache.get(name)
        if got is None:
            got = list(self._postings_by_name.get(name, ()))
            got += [p for p in self._postings_nameless
                    if all(m.matches(name) for m in p.sel.matchers if m.name == NAME)]
            self._name_cache[name] = got
        return got

    def wants(self, name: str) -> bool:
        """Whether some loaded rule may select series of this name (a dict lookup once cached)."""
        return self.keep_all or bool(self._postings_for(name))

    # -- series ---------------------------------------------------------------------------------
    def ref(self, name: str, labels: Labels) -> int | None:
        """The reference of ``name{labels}`` (sorted pairs, ``__name__`` optional), created on
        first use; None when no loaded rule selects it (then it is not stored)."""
        s = self.series(name, labels)
        return None if s is None else s.ref

    def series(self, name: str, labels: Labels) -> Series | None:
        d = dict(labels)
        d[NAME] = name
        key = from_pairs(d.items())
        s = self._by_key.get(key)
        if s is not None:
            return s
        postings = [p for p in self._postings_for(name) if _matches_map(p.sel.matchers, d)]
        if not postings and not self.keep_all:
            return None
        name = self._intern(name)
        # Label pairs repeat across series (a node's name, a cluster, a model): store each once.
        pairs = self._pairs
        key = tuple(pairs.get(p) or pairs.setdefault(p, (self._intern(p[0]), self._intern(p[1]))) for p in key)
        part = self._intern(dict(key).get(self.shard_label, ""))
        cell = self._cells.get((name, part))
        if cell is None:
            cell = self._cells[(name, part)] = _Cell(name, part)
        kept = not self.keep_all
        s = Series(key, len(self._series), part, cell,
                   self._sizing(self.retention_ms if self.keep_all or not postings else 0, kept, 2**62, None, kept))
        for p in postings:
            self._size(s, p.need)
        if not s.size.latest and isinstance(s.ts, tuple):
            s.ts, s.vals = array("q"), array("d")
        self._series.append(s)
        self._by_key[key] = s
        return s

    def _intern(self, text: str) -> str:
        # Label values repeat across series (node names, label names): store each string once.
        got = self._strings.get(text)
        if got is None:
            got = self._strings[text] = sys.intern(text)
        return got

    def _sizing(self, retention: int, quiet: bool, min_range: int, pin: tuple[int, int] | None,
                latest: bool) -> Sizing:
        key = (retention, quiet, min_range, pin, latest)
        got = self._sizings.get(key)
        if got is None:
            got = self._sizings[key] = Sizing(*key)
        return got

    def _size(self, s: Series, need: Need) -> None:
        z = s.size
        latest = z.latest and need.latest and need.pin is None
        if z.latest and not latest:
            s.ts, s.vals = array("q", s.ts), array("d", s.vals)
        pin = z.pin
        if need.pin is not None:
            lo, hi = need.pin
            pin = (min(lo, pin[0]), max(hi, pin[1])) if pin else (lo, hi)
        s.size = self._sizing(max(z.retention, need.span_ms), z.quiet and need.quiet_ok and need.pin is None,
                              min(z.min_range, need.range_ms) if need.range_ms else z.min_range, pin, latest)

    def _post(self, p: _Postings, s: Series) -> None:
        _insert(p.members, s)
        _insert(p.by_part.setdefault(s.part, []), s)

    def _index(self, s: Series) -> None:
        s.live = True
        _insert(self._by_name.setdefault(s.name, []), s)
        _insert(self._by_part.setdefault(s.part, []), s)
        d = dict(s.labels)
        for p in self._postings_for(s.name):
            if _matches_map(p.sel.matchers, d):
                self._post(p, s)
        self.generation += 1

    # -- writing ------------------------------------------------------------------------------
    def append(self, name: str, labels: Labels, t: int, value: float | None) -> None:
        """Add one sample (None = stale marker) to ``name{labels}``; Out-of-order and duplicate
        timestamps are dropped, as Prometheus's TSDB refuses them."""
        s = self.series(name, labels)
        if s is not None:
            self.append_series(s, t, value)

    def append_ref(self, ref: int, t: int, value: float | None) -> None:
        self.append_series(self._series[ref], t, value)

    def append_refs(self, refs: Sequence[int], t: int, values: Sequence[float]) -> None:
        """One timestamp, many series: the collector's block. The block's layout (its refs, the
        same batch after batch) is resolved once; per sample this is two array appends and a
        few comparisons. Trimming waits for ``gc``. ``refs`` may be an int64 array (numpy's
        or ``array('q')``): its bytes are the layout's key, with no int object per series."""
        tobytes = getattr(refs, "tobytes", None)
        key: bytes | tuple[int, ...] = tobytes() if tobytes is not None else tuple(refs)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layout(key, refs)
        dirty = self._dirty
        floor = self.floor
        # The series of a block share their timestamps: a latest series' times are one tuple
        # per block (the same previous sample, the same new one), not one per series.
        one = (t,)
        shared: dict[tuple[int, ...], tuple[int, ...]] = {}
        for s, v in zip(layout, values, strict=True):
            if t <= s.last_t:
                continue  # out of order or a duplicate: refused, as Prometheus's TSDB does
            s.prev_t = s.last_t
            s.last_t = t
            ts = s.ts
            z = s.size
            if not z.latest:
                ts.append(t)  # type: ignore[union-attr]  # arrays unless latest
                s.vals.append(v)  # type: ignore[union-attr]
            elif t <= floor or not ts:
                s.ts, s.vals = one, (v,)
                s.stale = 0
            elif ts[-1] <= floor and not s.stale:
                two = shared.get(ts)  # type: ignore[arg-type]  # a tuple: the series is latest
                if two is None:
                    two = shared[ts] = (ts[-1], t)  # type: ignore[index]
                s.ts = two
                w = s.vals[-1]
                if v == w and (w or copysign(1.0, v) == copysign(1.0, w)):  # the same value, bit for bit
                    s.vals = self._flat_pair(w)
                else:
                    s.vals = (w, v)
            else:
                _append_latest(s, t, v, floor)
            last = s.last
            if v != last:  # NaN included
                if v < last:
                    s.dec_ts = t
                s.chg_ts = t
                s.last = v
            elif z.quiet and s.chg_ts <= t - z.retention and s.prev_t >= t - z.min_range:
                continue  # a flat series repeating its value: no reader's answer changes
            cell = s.cell
            if not cell.dirty:
                cell.dirty = True
                dirty.append(cell)

    def _flat_pair(self, v: float) -> tuple[float, float]:
        """``(v, v)``, one tuple for every flat series at that value (hardware states, limits
        and thresholds repeat a handful of values across a fleet)."""
        key: float | tuple[float, float] = v if v else (v, copysign(1.0, v))  # 0.0 and -0.0 apart
        got = self._flat.get(key)
        if got is None:
            got = (v, v)
            if len(self._flat) < _FLAT_PAIRS:
                self._flat[key] = got
        return got

    def _layout(self, key: bytes | tuple[int, ...], refs: Sequence[int]) -> list[Series]:
        series = [self._series[int(ref)] for ref in refs]
        for s in series:
            if not s.live:
                self._index(s)
        if len(self._layouts) > 100_000:  # layouts churn (agents restarting with new ids): start over
            self._layouts.clear()
        self._layouts[key] = series
        return series

    def append_series(self, s: Series, t: int, value: float | None) -> None:
        """One sample (None: a stale marker), trimming as it goes (the slow path: rule outputs,
        stale markers, tests)."""
        if t <= s.last_t:
            return
        ts = s.ts
        z = s.size
        if ts and ts[0] < t - z.retention - _TRIM_SLACK_MS:
            self._trim(s, t - z.retention)
        if not s.live:
            self._index(s)
        s.prev_t = s.last_t
        s.last_t = t
        v = STALE_NAN if value is None else value
        if z.latest:
            _append_latest(s, t, v, self.floor)
        else:
            ts.append(t)  # type: ignore[union-attr]  # arrays unless latest
            s.vals.append(v)  # type: ignore[union-attr]
            if value is None:
                s.stale += 1
        if value is None:
            s.chg_ts = t
            s.last = math.nan
        else:
            last = s.last
            if value != last:
                if value < last:
                    s.dec_ts = t
                s.chg_ts = t
                s.last = value
            elif z.quiet and s.chg_ts <= t - z.retention and s.prev_t >= t - z.min_range:
                return
        cell = s.cell
        if not cell.dirty:
            cell.dirty = True
            self._dirty.append(cell)

    def backfill(self, name: str, labels: Labels, ts: Sequence[int], values: Sequence[float]) -> int:
        """Older samples of ``name{labels}`` read back from history (a node a collector adopts:
        its windows start with what the node's previous collector saw). Samples at or after the
        series' first held one are dropped (live samples win); NaN is a stale marker. ``ts``
        ascending. Returns how many were added."""
        s = self.series(name, labels)
        if s is None or not ts:
            return 0
        if s.ts:
            cutoff = s.ts[0]
        elif s.last_t != _OLDEST:
            cutoff = s.last_t + 1  # trimmed already: only what came before its last sample
        else:
            cutoff = ts[-1] + 1
        keep = bisect_left(ts, cutoff)
        if keep == 0:
            return 0
        old_ts = array("q", ts[:keep])
        old_vals = array("d", (STALE_NAN if math.isnan(v) else v for v in values[:keep]))
        # The newest change and decrease among the added samples, and at the seam with the held ones.
        chg = dec = _OLDEST
        prev = math.nan
        for t, v in zip(old_ts, old_vals, strict=True):
            if not (v == prev or (math.isnan(v) and math.isnan(prev))):
                chg = t
                if v < prev:
                    dec = t
            prev = v
        if s.ts:
            first = s.vals[0]
            if first != prev:
                chg = s.ts[0]
                if first < prev:
                    dec = s.ts[0]
            s.prev_t = max(s.prev_t, old_ts[-1]) if len(s.ts) == 1 else s.prev_t
        else:
            s.last_t = old_ts[-1]
            s.prev_t = old_ts[-2] if keep > 1 else _OLDEST
            s.last = math.nan if is_stale(old_vals[-1]) else old_vals[-1]
        s.chg_ts = max(s.chg_ts, chg)
        s.dec_ts = max(s.dec_ts, dec)
        s.stale += sum(1 for v in old_vals if is_stale(v))
        old_ts.extend(s.ts)
        old_vals.extend(s.vals)
        if s.size.latest:  # such a series holds tuples (append_refs shares them between series)
            s.ts, s.vals = tuple(old_ts), tuple(old_vals)
        else:
            s.ts, s.vals = old_ts, old_vals
        if not s.live:
            self._index(s)
        cell = s.cell
        if not cell.dirty:
            cell.dirty = True
            self._dirty.append(cell)
        return keep

    def keeps(self) -> dict[str, int]:
        """The metric names loaded rules select by name, with the longest span any of them reads
        (what a collector warms an adopted node's windows with)."""
        out: dict[str, int] = {}
        for name, postings in self._postings_by_name.items():
            out[name] = max(p.need.span_ms for p in postings)
        return out

    @staticmethod
    def _trim(s: Series, cutoff: int) -> None:
        ts = s.ts
        ranges = [(0, bisect_left(ts, cutoff))]
        pin = s.size.pin
        if pin is not None:  # keep the pinned window: drop only around it
            lo, hi = pin
            i_lo, i_hi = bisect_left(ts, lo), bisect_right(ts, hi)
            ranges = [(i_hi, ranges[0][1]), (0, min(i_lo, ranges[0][1]))]
        for a, b in ranges:
            if b > a:
                if s.stale:
                    s.stale -= sum(1 for v in s.vals[a:b] if is_stale(v))
                if isinstance(ts, tuple):  # a latest series (never pinned): the oldest go
                    s.ts, s.vals = ts[b:], s.vals[b:]
                else:
                    del ts[a:b]
                    del s.vals[a:b]  # type: ignore[union-attr]

    def mark_stale(self, t: int, match: Mapping[str, str]) -> None:
        """Append a stale marker at ``t`` to every live series whose labels include ``match``."""
        items = match.items()
        shard = match.get(self.shard_label)
        candidates = list(self._by_part.get(shard, ())) if shard is not None else list(self._series)
        for s in candidates:
            if s.live and s.vals and not is_stale(s.vals[-1]) and s.ts[-1] < t:
                d = dict(s.labels)
                if all(d.get(k, "") == v for k, v in items):
                    self.append_series(s, t, None)

    def take_changes(self) -> dict[str, set[str]]:
        """The (name -> shards) that got samples since the last call."""
        out: dict[str, set[str]] = {}
        for cell in self._dirty:
            cell.dirty = False
            got = out.get(cell.name)
            if got is None:
                out[cell.name] = {cell.part}
            else:
                got.add(cell.part)
        self._dirty = []
        return out

    def gc(self, now: int, share: float = 1.0) -> int:
        """Trim series to their retention, and unindex the ones with no sample left (their
        samples are freed; their references stay valid: a later sample brings them back).
        ``share``: the fraction of all series to visit, continuing where the last call stopped,
        so a large index is swept a slice per tick instead of in one pause. Returns how many
        series were unindexed."""
        series = self._series
        n = len(series)
        if not n:
            return 0
        count = n if share >= 1 else max(1, int(n * share))
        start = self._gc_cursor % n
        end = min(n, start + count)
        self._gc_cursor = end % n
        dropped: list[Series] = []
        for s in series[start:end]:
            if not s.live:
                continue
            ts = s.ts
            cutoff = now - s.size.retention
            if ts and ts[0] < cutoff:
                self._trim(s, cutoff)
            if not ts and s.size.pin is None:
                s.live = False
                s.last = math.nan  # a sample that brings it back is a change
                dropped.append(s)
        if dropped:
            self._unindex(dropped)
        return len(dropped)

    def _unindex(self, dropped: list[Series]) -> None:
        self._layouts.clear()  # a layout holds only indexed series
        names = {s.name for s in dropped}
        parts = {s.part for s in dropped}
        for name in names:
            self._by_name[name] = [s for s in self._by_name[name] if s.live]
        for part in parts:
            self._by_part[part] = [s for s in self._by_part[part] if s.live]
        for p in self._postings.values():
            if p.sel.name and p.sel.name not in names:
                continue
            p.members = [s for s in p.members if s.live]
            for part in parts:
                if part in p.by_part:
                    p.by_part[part] = [s for s in p.by_part[part] if s.live]
        self.generation += 1

    # -- reading ------------------------------------------------------------------------------
    def select(self, sel: ast.VectorSelector, parts: Collection[str] | None = None) -> Sequence[Series]:
        """The live series ``sel`` selects, in creation order (Prometheus's postings order, which
        sets the order ``sum`` adds in); within ``parts``, node by node (a node-local rule never
        adds across nodes)."""
        p = self._postings.get(sel)
        if p is None:
            found = self._select_adhoc(sel)
            return found if parts is None else [s for s in found if s.part in parts]
        if parts is None:
            return p.members
        by_part = p.by_part
        if len(parts) == 1:
            for part in parts:
                return by_part.get(part, ())
        out: list[Series] = []
        for part in parts:
            got = by_part.get(part)
            if got:
                out.extend(got)
        return out

    def _select_adhoc(self, sel: ast.VectorSelector) -> list[Series]:
        cached = self._adhoc.get(id(sel))
        if cached is not None and cached[0] == self.generation and cached[1] is sel:
            return cached[2]
        if sel.name:
            candidates: Iterable[Series] = self._by_name.get(sel.name, ())
            matchers = [m for m in sel.matchers if not (m.name == NAME and m.op == "=")]
        else:
            candidates = (s for s in self._series if s.live)
            matchers = sel.matchers
        out = [s for s in candidates if _matches(matchers, s.labels)]
        self._adhoc[id(sel)] = (self.generation, sel, out)
        return out

    def selects_in(self, sel: ast.VectorSelector, parts: Iterable[str]) -> bool:
        """Whether ``sel`` has series in any of ``parts``."""
        p = self._postings.get(sel)
        if p is None:
            return True
        return any(part in p.by_part and p.by_part[part] for part in parts)

    def series_count(self) -> int:
        return sum(1 for s in self._series if s.live)

    def sample_count(self) -> int:
        return sum(len(s.ts) for s in self._series if s.live)

    def live_series(self) -> Iterable[Series]:
        return (s for s in self._series if s.live)


def _append_latest(s: Series, t: int, v: float, floor: int) -> None:
    """Append to a ``latest`` series, keeping only the newest sample at or before ``floor``
    and the ones after it (no evaluation reads the others again: each reads the newest sample
    at or before its time, and none is earlier than ``floor``)."""
    ts, vals = s.ts, s.vals
    i = max(0, bisect_right(ts, floor) - 1) if t > floor else len(ts)
    s.ts = (*ts[i:], t)
    s.vals = (*vals[i:], v)
    s.stale = sum(1 for x in s.vals if is_stale(x))


def _matches(matchers: Sequence[Matcher], labels: Labels) -> bool:
    return _matches_map(matchers, dict(labels))


def _matches_map(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels.get(m.name, "")) for m in matchers)


def _insert(lst: list[Series], s: Series) -> None:
    """Keep ref order (series come back after gc out of order)."""
    if not lst or lst[-1].ref < s.ref:
        lst.append(s)
    else:
        insort(lst, s, key=_by_ref)


_by_ref: Callable[[Series], int] = lambda s: s.ref  # noqa: E731 - a sort key shared by every insort
