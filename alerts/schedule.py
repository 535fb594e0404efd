"""Which part of a rule to evaluate at a tick, so the cost follows what changed.

Data arrives per node, every 10 s at fleet scale, while rules are evaluated every second; most
rules (``gpu_temperature_celsius > 85``, ``increase(x[10m]) > 0``, joins ``on (node, gpu)``,
``count by (node)``) compute each node's output from that node's series alone. For such a rule
(*node-local*, decided from its expression: every join and aggregation keeps ``node``), a tick
evaluates only the nodes whose input series received samples since the rule last ran, plus the
nodes whose result may change with the clock alone: a sample leaving the 5-minute lookback or a
range window, a future sample becoming visible, a value that moves with time (``rate`` of a
changing counter, ``time()``), found by the evaluator while it evaluates (``Evaluator.wake``).
The union over nodes is exactly what a full evaluation gives; the promtool suite in
``tests/promql/`` runs through this path. Any other rule is evaluated whole, but only when one
of its inputs changed or a wake-up is due.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable

from alerts.promql import ast, functions
from alerts.promql.evaluator import Evaluator
from alerts.promql.labels import NAME
from alerts.promql.values import LOOKBACK_MS, NEVER
from alerts.rulefile import Rule
from alerts.windows import SHARD_LABEL, Need, Windows

#: due(): evaluate every part
EVERYTHING = None
_NOTHING: frozenset[str] = frozenset()

# Functions whose output series do not keep their input's labels, or that look across series.
_CROSS_SERIES_FUNCTIONS = frozenset({"absent", "absent_over_time", "scalar"})


def _data_free(node: ast.Expr) -> bool:
    return not any(isinstance(n, ast.VectorSelector) for n in ast.walk(node))


def node_local(node: ast.Expr, label: str = SHARD_LABEL) -> bool:
    """Whether each output series carries ``label`` and depends only on input series with the
    same value of it (or on none: constants, ``time()``)."""
    if _data_free(node):
        return True
    if isinstance(node, (ast.VectorSelector, ast.MatrixSelector)):
        return True
    if isinstance(node, (ast.Paren, ast.Unary, ast.Subquery)):
        return node_local(node.expr, label)
    if isinstance(node, ast.Call):
        if node.func in _CROSS_SERIES_FUNCTIONS:
            return False
        if node.func in ("label_replace", "label_join"):
            dst = node.args[1]
            if not isinstance(dst, ast.StringLiteral) or dst.value == label:
                return False
        return all(node_local(a, label) for a in node.args)
    if isinstance(node, ast.Aggregate):
        if node.param is not None and not _data_free(node.param):
            return False
        if node.op == "count_values":
            param = ast.unwrap(node.param) if node.param is not None else None
            if not isinstance(param, ast.StringLiteral) or param.value == label:
                return False
        keeps = label not in node.grouping if node.without else label in node.grouping
        return keeps and node_local(node.expr, label)
    if isinstance(node, ast.Binary):
        if not (node_local(node.lhs, label) and node_local(node.rhs, label)):
            return False
        m = node.matching
        if m is None:  # a scalar side: constant or clock-only by the checks above
            return True
        return label in m.labels if m.on else label not in m.labels
    return False


#: Range functions that give the same answer for any flat window holding two or more samples,
#: so a flat series repeating its value changes nothing for them (windows.append_refs).
QUIET_RANGE_FUNCTIONS = functions.FLAT_STABLE | {"absent_over_time", "predict_linear"}


def needs(expr: ast.Expr, lookback_ms: int = LOOKBACK_MS) -> list[tuple[ast.VectorSelector, Need]]:
    """For each selector of ``expr``: how much history it reads (its lookback or range, plus
    offsets and the ranges of enclosing subqueries), or the fixed window an ``@ <time>`` pins,
    and whether a repeated value can change what its reader computes."""
    out: list[tuple[ast.VectorSelector, Need]] = []

    def visit(node: ast.Expr, lo: int, hi: int, ref: int | None, quiet_ok: bool) -> None:
        # [lo, hi] relative to ``ref``: the evaluation time, or a pinned time when ref is set.
        if isinstance(node, (ast.VectorSelector, ast.MatrixSelector)):
            sel = node.vector if isinstance(node, ast.MatrixSelector) else node
            span = node.range_ms if isinstance(node, ast.MatrixSelector) else lookback_ms
            range_ms = node.range_ms if isinstance(node, ast.MatrixSelector) else 0
            base, slo, shi = ref, lo, hi
            if sel.at == ast.AT_TIME:
                base, slo, shi = sel.at_ms, 0, 0
            elif sel.at:
                base, slo, shi = None, 0, 0
            first = slo - sel.offset_ms - span
            last = shi - sel.offset_ms
            if base is None:
                latest = (isinstance(node, ast.VectorSelector) and not sel.at and not sel.offset_ms
                          and lo == 0 and hi == 0 and ref is None)
                out.append((sel, Need(max(span, -first), None, quiet_ok, range_ms, latest)))
            else:
                # timestamp() of a pinned selector reads up to the pin itself: widen by the offset.
                widen = abs(sel.offset_ms)
                out.append((sel, Need(0, (base + first - widen, base + last + widen), quiet_ok, range_ms)))
            return
        if isinstance(node, ast.Subquery):
            if node.at == ast.AT_TIME:
                visit(node.expr, -node.offset_ms - node.range_ms, -node.offset_ms, node.at_ms, True)
            elif node.at:
                visit(node.expr, -node.offset_ms - node.range_ms, -node.offset_ms, None, True)
            else:
                visit(node.expr, lo - node.offset_ms - node.range_ms, hi - node.offset_ms, ref, True)
            return
        for child in ast.children(node):
            if isinstance(node, ast.Call):
                inner = ast.unwrap(child)
                if isinstance(inner, (ast.MatrixSelector, ast.Subquery)):
                    child_ok = node.func in QUIET_RANGE_FUNCTIONS
                else:
                    child_ok = node.func != "timestamp"  # a repeat moves the sample's time
                visit(child, lo, hi, ref, child_ok)
            else:
                visit(child, lo, hi, ref, True)

    visit(expr, 0, 0, None, True)
    return out


class RuleSchedule:
    """One rule's pending work: the parts with new samples, and wake-ups from the clock."""

    def __init__(self, rule: Rule, shard_label: str = SHARD_LABEL) -> None:
        self.rule = rule
        self.selectors = rule.selectors
        self.partitioned = node_local(rule.expr, shard_label) and shard_label not in rule.labels
        self.pending: set[str] = set()
        self.full_next = True  # the first evaluation, or a retry after an error, covers everything
        self.wake_all = NEVER
        self._wake: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}

    def changed(self, parts: Iterable[str]) -> None:
        self.pending.update(parts)

    def due(self, t: int, windows: Windows) -> Collection[str] | None:
        """The parts to evaluate at ``t``: ``EVERYTHING`` (None), or a set, empty when the
        previous result still stands."""
        if self.full_next or self.wake_all <= t:
            return EVERYTHING
        if not self.partitioned:
            if self.pending and any(windows.selects_in(sel, self.pending) for sel in self.selectors):
                return EVERYTHING
            return _NOTHING
        parts = self.pending
        heap = self._heap
        while heap and heap[0][0] <= t:
            when, part = heapq.heappop(heap)
            if self._scheduled.get(part) != when:
                continue  # superseded by an earlier wake-up for this part
            del self._scheduled[part]
            w = self._wake.get(part, NEVER)
            if w <= t:
                parts.add(part)
            elif w < NEVER:
                self._schedule(part, w)
        return parts

    def evaluated(self, parts: Collection[str] | None, ev: Evaluator) -> None:
        """Record what the evaluation of ``parts`` (None: everything) found about the future."""
        self.full_next = False
        self.pending = set()
        self.wake_all = ev.wake_all
        if not self.partitioned:
            return
        if parts is None:
            self._wake = {}
            self._heap = []
            self._scheduled = {}
            parts = ev.wake.keys()
        for part in list(parts):
            w = ev.wake.get(part, NEVER)
            if w < NEVER:
                self._wake[part] = w
                self._schedule(part, w)
            else:
                self._wake.pop(part, None)

    def failed(self) -> None:
        """An evaluation error: the next tick evaluates everything (Prometheus re-evaluates the
        whole rule every tick, so an error anywhere shows every tick until it is gone)."""
        self.full_next = True
        self.pending = set()

    def _schedule(self, part: str, when: int) -> None:
        current = self._scheduled.get(part)
        if current is None or when < current:
            self._scheduled[part] = when
            heapq.heappush(self._heap, (when, part))


def selects_name(sel: ast.VectorSelector, name: str) -> bool:
    """Whether ``sel`` can select series of the metric ``name``."""
    if sel.name:
        return sel.name == name
    return all(m.matches(name) for m in sel.matchers if m.name == NAME)


class Scheduler:
    """Hands the windows' changes to the rules that read them."""

    def __init__(self, windows: Windows) -> None:
        self.windows = windows
        self.schedules: list[RuleSchedule] = []
        self._readers: dict[str, list[RuleSchedule]] = {}

    def add(self, schedule: RuleSchedule) -> None:
        self.schedules.append(schedule)
        self._readers.clear()

    def _readers_of(self, name: str) -> list[RuleSchedule]:
        got = self._readers.get(name)
        if got is None:
            got = [s for s in self.schedules if any(selects_name(sel, name) for sel in s.selectors)]
            self._readers[name] = got
        return got

    def sync(self) -> None:
        changes = self.windows.take_changes()
        for name, parts in changes.items():
            for schedule in self._readers_of(name):
                schedule.changed(parts)
