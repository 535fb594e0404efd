"""Live windows: the recent samples of exactly the series the loaded rules select.

A series whose metric name no rule selects is never stored (``wants`` is one set lookup), and
each stored series keeps only the lookback the rules need: the longest range selector, or the
5-minute instant-vector lookback, whichever is longer. Timestamps are integer milliseconds.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping

from alerts.promql import ast
from alerts.promql.labels import NAME, Labels, Matcher, from_pairs
from alerts.promql.values import LOOKBACK_MS, STALE_NAN, is_stale

# Trim a series only when its oldest sample is this far past the retention, so trimming is a
# rare batched ``del list[:k]`` rather than a shift on every sample.
_TRIM_SLACK_MS = 60_000


class Series:
    """One series' window: parallel typed arrays (8 + 8 bytes a sample, no Python objects).

    ``dec_ts`` is the timestamp of the newest sample lower than the sample before it: a range
    starting after it holds no counter reset, so rate() can skip its reset scan.
    """

    __slots__ = ("chg_ts", "dec_ts", "key", "labels", "last", "name", "part", "ref", "stale", "ts", "vals")

    def __init__(self, labels: Labels, ref: int, name: str = "", key: Labels = ()) -> None:
        self.labels = labels
        self.name = name
        self.key = key
        self.ref = ref  # creation order, like a Prometheus series reference
        self.ts = array("q")
        self.vals = array("d")  # stale markers are STALE_NAN, as in Prometheus
        self.stale = 0
        self.dec_ts = -(2**62)
        self.chg_ts = -(2**62)
        self.part = dict(labels).get("node", "")
        self.last = math.nan  # newest non-stale value


class Windows:
    """Per-series sample windows, indexed by metric name; the ``SeriesSource`` the evaluator reads."""

    def __init__(self, selectors: Iterable[ast.VectorSelector] = (), retention_ms: int = LOOKBACK_MS,
                 keep_all: bool = False) -> None:
        self.retention_ms = retention_ms
        self.keep_all = keep_all  # unit tests: every series is wanted (promql_expr_test may read any)
        self._by_name: dict[str, dict[Labels, Series]] = {}
        self._names: set[str] = set()
        self._name_matchers: list[list[Matcher]] = []
        self._name_cache: dict[str, bool] = {}
        # id(selector) -> (generation, selector, series); the selector is kept so a recycled id
        # of a freed selector can never hit.
        self._select_cache: dict[int, tuple[int, ast.VectorSelector, list[Series]]] = {}
        self.generation = 0  # bumped when a series is added or removed: invalidates select caches
        self._refs = 0
        self._by_ref: dict[int, Series] = {}
        for sel in selectors:
            self.want(sel)

    # -- what to keep -------------------------------------------------------------------------
    def want(self, sel: ast.VectorSelector) -> None:
        if sel.name:
            self._names.add(sel.name)
        else:
            # A selector without a fixed name ({__name__=~"gpu_.*"}) wants every name its
            # name matchers accept; wants() caches the answer per name.
            self._name_matchers.append([m for m in sel.matchers if m.name == NAME])
        self._name_cache.clear()

    def wants(self, name: str) -> bool:
        if name in self._names or self.keep_all:
            return True
        if not self._name_matchers:
            return False
        hit = self._name_cache.get(name)
        if hit is None:
            hit = any(all(m.matches(name) for m in ms) for ms in self._name_matchers)
            self._name_cache[name] = hit
        return hit

    # -- writing ------------------------------------------------------------------------------
    def series(self, name: str, key: Labels) -> Series:
        """The series ``name`` + ``key`` (sorted label pairs, with or without ``__name__``),
        created on first use."""
        by_labels = self._by_name.get(name)
        if by_labels is None:
            by_labels = self._by_name[name] = {}
        s = by_labels.get(key)
        if s is None:
            d = dict(key)
            d[NAME] = name
            self._refs += 1
            s = by_labels[key] = Series(from_pairs(d.items()), self._refs, name, key)
            self._by_ref[s.ref] = s
            self.generation += 1
        return s

    def append(self, name: str, key: Labels, t: int, value: float | None) -> None:
        """Add one sample (None = stale marker). Out-of-order and duplicate timestamps are
        dropped, as Prometheus's TSDB refuses them."""
        self.append_series(self.series(name, key), t, value)

    def append_ref(self, ref: int, t: int, value: float | None) -> None:
        s = self._by_ref.get(ref)
        if s is None:
            return
        by_labels = self._by_name.setdefault(s.name, {})
        if by_labels.get(s.key) is not s:  # dropped by gc() while quiet: the ref stays valid
            by_labels[s.key] = s
            self.generation += 1
        self.append_series(s, t, value)

    def append_series(self, s: Series, t: int, value: float | None) -> None:
        ts = s.ts
        if ts:
            if t <= ts[-1]:
                return
            if ts[0] < t - self.retention_ms - _TRIM_SLACK_MS:
                self._trim(s, t - self.retention_ms)
        ts.append(t)
        if value is None:
            s.vals.append(STALE_NAN)
            s.stale += 1
            s.chg_ts = t
            return
        prev = s.vals[-1] if s.vals else math.nan
        s.vals.append(value)
        if value != prev:
            s.chg_ts = t
        if value < s.last:
            s.dec_ts = t
        s.last = value

    @staticmethod
    def _trim(s: Series, cutoff: int) -> None:
        k = bisect_left(s.ts, cutoff)
        if k:
            if s.stale:
                s.stale -= sum(1 for v in s.vals[:k] if is_stale(v))
            del s.ts[:k]
            del s.vals[:k]

    def mark_stale(self, t: int, match: Mapping[str, str]) -> None:
        """Append a stale marker at ``t`` to every live series whose labels include ``match``."""
        items = match.items()
        for by_labels in self._by_name.values():
            for s in by_labels.values():
                if s.vals and not is_stale(s.vals[-1]) and s.ts[-1] < t:
                    d = dict(s.labels)
                    if all(d.get(k, "") == v for k, v in items):
                        s.ts.append(t)
                        s.vals.append(STALE_NAN)
                        s.stale += 1

    def gc(self, now: int) -> int:
        """Forget series with no sample within the retention; returns how many were dropped."""
        cutoff = now - self.retention_ms
        dropped = 0
        for name in list(self._by_name):
            by_labels = self._by_name[name]
            for key in [k for k, s in by_labels.items() if not s.ts or s.ts[-1] < cutoff]:
                del by_labels[key]
                dropped += 1
            if not by_labels:
                del self._by_name[name]
            else:
                for s in by_labels.values():
                    if s.ts[0] < cutoff - _TRIM_SLACK_MS:
                        self._trim(s, cutoff)
        if dropped:
            self.generation += 1
        return dropped

    # -- reading ------------------------------------------------------------------------------
    def select(self, sel: ast.VectorSelector, parts: Collection[str] | None = None) -> list[Series]:
        if parts is not None:
            return [s for s in self._select(sel) if s.part in parts]
        return self._select(sel)

    def _select(self, sel: ast.VectorSelector) -> list[Series]:
        cached = self._select_cache.get(id(sel))
        if cached is not None and cached[0] == self.generation and cached[1] is sel:
            return cached[2]
        out: list[Series] = []
        if sel.name:
            candidates: Iterable[Series] = self._by_name.get(sel.name, {}).values()
            matchers = [m for m in sel.matchers if not (m.name == NAME and m.op == "=")]
        else:
            candidates = (s for d in self._by_name.values() for s in d.values())
            matchers = sel.matchers
        for s in candidates:
            d = dict(s.labels)
            if all(m.matches(d.get(m.name, "")) for m in matchers):
                out.append(s)
        # Prometheus's head hands series to the engine in postings order, i.e. the order the
        # series were created; keeping it makes sums and averages add up in the same order.
        out.sort(key=lambda s: s.ref)
        self._select_cache[id(sel)] = (self.generation, sel, out)
        return out

    def series_count(self) -> int:
        return sum(len(d) for d in self._by_name.values())

    def sample_count(self) -> int:
        return sum(len(s.ts) for d in self._by_name.values() for s in d.values())
