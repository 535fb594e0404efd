"""``fleetmon query``'s engine (collector/queryengine.py) over a history: Prometheus's answers.

A range query is Prometheus's instant query at every step. So every step of fleetmon's range
queries, over a history with gaps, a stale marker and a counter reset, read chunk by chunk, is
written as a ``promql_expr_test`` and checked by Debian's ``promtool test rules`` (Prometheus
2.42): lookback, staleness, offset, ``@``, subqueries and functions as Prometheus evaluates them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from alerts.promql.labels import NAME, Labels, Matcher, drop_name, get, render
from alerts.promql.values import STALE_NAN
from alerts.unittest import STALE, expand_values, parse_series_desc
from collector.queryengine import (
    MAX_STEPS,
    InstantVector,
    QueryError,
    RangeMatrix,
    Scalar,
    collect_matrix,
    instant_query,
    parse_query,
    range_query,
    selector_windows,
)
from tests.services import require_binary

INTERVAL_MS = 15_000
# 45 minutes at 15 s. x: a gap past the 5-minute lookback, a stale marker; c: a counter that
# resets; y on one node only; z comes and goes.
INPUT = {
    'x{node="n1",gpu="0"}': "1+1x40 _x30 50+2x20 stale _x10 90+1x40",
    'x{node="n2",gpu="0"}': "10 10 10 12 14 16 18 20x60 30-1x20 5x60",
    'c{node="n1"}': "0+5x60 3+7x60 0+1x60",
    'c{node="n2"}': "100+10x180",
    'y{node="n2",gpu="1"}': "_x20 7+0.5x100",
    'z{node="n1"}': "1x10 _x40 2x10 _x40 3x60",
}
EXPRS = [
    "x",
    "x offset 2m",
    "x @ 600",
    "x > 20",
    "x - x offset 1m",
    "-x",
    "sum(x)",
    "max by (node) (x)",
    "count by (node) ({__name__=~\"x|y\"})",
    "topk(1, x)",
    "rate(c[2m])",
    "increase(c[5m])",
    "irate(c[1m])",
    "resets(c[10m])",
    "avg_over_time(x[3m])",
    "last_over_time(z[10m])",
    "changes(x[10m])",
    "max_over_time(rate(c[1m])[5m:30s])",
    "max_over_time(x[3m:])",
    "timestamp(x)",
    "absent(y{node=\"n1\"})",
    "absent_over_time(z[2m])",
    "z",
    "x and on (node) y",
    "x / on (node) group_left sum by (node) (x)",
    "time()",
    "scalar(sum(c))",
    "vector(1)",
    "label_replace(y, \"dev\", \"gpu$1\", \"gpu\", \"(.*)\")",
]


@dataclass
class Stored:
    labels: Mapping[str, str]
    ts_ms: list[int]
    values: list[float]


class MemoryHistory:
    """A HistoryReader over series in memory (collector/history.py's interface, as a remote
    TSDB's reader would implement it): counts what it was asked for."""

    description = "memory"

    def __init__(self, series: dict[Labels, tuple[list[int], list[float]]]) -> None:
        self.series = series
        self.asked: list[tuple[int, int]] = []

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Iterator[Stored]:
        self.asked.append((start_ms, end_ms))
        for labels, (ts, vals) in self.series.items():
            d = dict(labels)
            if all(m.matches(d.get(m.name, "")) for m in matchers):
                keep = [i for i, t in enumerate(ts) if start_ms <= t <= end_ms]
                yield Stored(d, [ts[i] for i in keep], [vals[i] for i in keep])

    def close(self) -> None:
        pass


def history() -> MemoryHistory:
    series: dict[Labels, tuple[list[int], list[float]]] = {}
    for desc, text in INPUT.items():
        ts: list[int] = []
        vals: list[float] = []
        for i, v in enumerate(expand_values(text)):
            if v is False:
                continue
            ts.append(i * INTERVAL_MS)
            vals.append(STALE_NAN if v is STALE else float(v))
        series[parse_series_desc(desc)] = (ts, vals)
    return MemoryHistory(series)


def _desc(labels: Labels) -> str:
    name = get(labels, NAME)
    rest = drop_name(labels)
    return name + render(rest) if rest or not name else name


def _promtool_file(tmp: Path, cases: list[tuple[str, int, list[tuple[Labels, float]]]], interval: str) -> Path:
    doc = {
        "evaluation_interval": interval,
        "tests": [{
            "interval": f"{INTERVAL_MS}ms",
            "input_series": [{"series": k, "values": v} for k, v in INPUT.items()],
            "promql_expr_test": [
                {"expr": expr, "eval_time": f"{t}ms",
                 "exp_samples": [{"labels": _desc(lb), "value": v} for lb, v in samples]}
                for expr, t, samples in cases
            ],
        }],
    }
    path = tmp / "range_test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# promtool appends input samples as its evaluation loop reaches them (a step of
# evaluation_interval), and an expression evaluated between two steps sees only the samples up
# to the earlier one. Off the minute grid, a loop of 1 s keeps every eval time on it; then a
# subquery without a step would take 1 s from it instead of Prometheus's default 1 m: left out.
@pytest.mark.parametrize(("start_ms", "end_ms", "step_ms", "interval"),
                         [(0, 45 * 60_000, 60_000, "1m"), (7_000, 44 * 60_000, 53_000, "1s")],
                         ids=["aligned", "unaligned"])
def test_range_queries_are_prometheus_instant_queries_at_every_step(tmp_path: Path, start_ms: int, end_ms: int,
                                                                     step_ms: int, interval: str) -> None:
    promtool = require_binary("promtool")
    cases: list[tuple[str, int, list[tuple[Labels, float]]]] = []
    for text in EXPRS:
        if interval != "1m" and ":]" in text:
            continue
        expr = parse_query(text)
        # Ten-minute chunks: each step must see what it would see with the whole history read at once.
        chunked = list(range_query(history(), expr, start_ms, end_ms, step_ms, chunk_ms=600_000, chunk_samples=None))
        whole = list(range_query(history(), expr, start_ms, end_ms, step_ms, chunk_ms=10**9))
        sized = list(range_query(history(), expr, start_ms, end_ms, step_ms, chunk_ms=120_000, chunk_samples=200))
        assert chunked == whole == sized, text
        assert len(chunked) == (end_ms - start_ms) // step_ms + 1
        cases.extend((text, t, vec) for t, vec in chunked)
    assert sum(len(v) for _e, _t, v in cases) > 500  # the answers are not empty
    res = subprocess.run([promtool, "test", "rules", str(_promtool_file(tmp_path, cases, interval))],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_instant_query_of_a_range_returns_the_stored_samples_without_stale_markers() -> None:
    h = history()
    # x{node="n1"} holds 50, 52, … from sample 71 on; at sample 80, [3m] reaches back to sample 68.
    res = instant_query(h, parse_query('x{node="n1"}[3m]'), 80 * INTERVAL_MS)
    assert isinstance(res, RangeMatrix) and (res.start_ms, res.end_ms) == (68 * INTERVAL_MS, 80 * INTERVAL_MS)
    [(labels, ts, vals)] = list(res.series)
    assert dict(labels) == {NAME: "x", "node": "n1", "gpu": "0"}
    assert ts == [i * INTERVAL_MS for i in range(71, 81)]
    assert vals == [50.0 + 2 * (i - 71) for i in range(71, 81)]
    # Over the stale marker (sample 92): the marker is not a sample of the answer.
    res = instant_query(h, parse_query('x{node="n1"}[1m]'), 93 * INTERVAL_MS)
    assert isinstance(res, RangeMatrix)
    [(_lb, ts, vals)] = list(res.series)
    assert vals == [86.0, 88.0, 90.0] and ts == [89 * INTERVAL_MS, 90 * INTERVAL_MS, 91 * INTERVAL_MS]


def test_instant_answers_by_type() -> None:
    h = history()
    res = instant_query(h, parse_query("scalar(sum(c))"), 600_000)
    assert isinstance(res, Scalar) and res.value == 200 + 500
    res = instant_query(h, parse_query("sort_desc(x)"), 600_000)
    assert isinstance(res, InstantVector) and res.ordered
    assert [v for _lb, v in res.samples] == [41.0, 20.0]
    res = instant_query(h, parse_query("x @ start()"), 600_000)
    assert isinstance(res, InstantVector) and not res.ordered and len(res.samples) == 2


def test_at_start_and_end_are_the_range_ends() -> None:
    h = history()
    steps = list(range_query(h, parse_query("x @ start() - x @ end()"), 300_000, 900_000, 60_000))
    pinned = list(range_query(h, parse_query("x @ 300 - x @ 900"), 300_000, 900_000, 60_000))
    assert steps == pinned and len(steps) == 11 and all(vec for _t, vec in steps)


def test_each_selector_reads_only_what_its_window_needs() -> None:
    expr = parse_query("rate(c[5m] offset 1m) + on (node) max_over_time(x[2m:30s] offset 30s) + y @ 100")
    windows = {str(sel.name): w for sel, w in selector_windows(expr, 3_600_000, 3_900_000).items()}
    assert windows["c"] == (3_600_000 - 60_000 - 300_000, 3_900_000 - 60_000)
    # The subquery's steps span [t - 30s - 2m, t - 30s]; each step looks back 5 minutes.
    assert windows["x"] == (3_600_000 - 30_000 - 120_000 - 300_000, 3_900_000 - 30_000)
    assert windows["y"] == (100_000 - 300_000, 100_000)
    h = history()
    list(range_query(h, parse_query("rate(c[5m])"), 0, 3 * 3_600_000, 60_000, chunk_ms=3_600_000, chunk_samples=None))
    # 181 steps in chunks of an hour's 60: each read is its chunk plus the 5-minute range before it.
    assert h.asked == [(-300_000, 3_540_000), (3_300_000, 7_140_000), (6_900_000, 10_740_000),
                       (10_500_000, 10_800_000)]


def test_chunks_hold_about_the_sample_budget() -> None:
    h = history()  # two c series with a sample every 15 s: 8 samples a minute
    list(range_query(h, parse_query("rate(c[5m])"), 0, 45 * 60_000, 60_000, chunk_ms=120_000, chunk_samples=100))
    # Chunk 1, two steps, read [-5m, 1m]: 10 samples (the history starts at 0) in 420 s, so 100 would take
    # 4,200 s, less the 5-minute reach: 65 steps, capped at 8 x 2. Chunk 2 read [-3m, 17m]: 138 samples in
    # 1,260 s; 100 take 913 s, less the reach: 10 steps, 18m to 27m.
    assert h.asked[:3] == [(-300_000, 60_000), (-180_000, 1_020_000), (780_000, 1_620_000)]


def test_matrix_answers_are_sorted_and_bounded() -> None:
    steps = range_query(history(), parse_query("x"), 0, 40 * 60_000, 60_000)
    series = collect_matrix(steps)
    assert [dict(lb)["node"] for lb, _t, _v in series] == ["n1", "n2"]
    with pytest.raises(QueryError, match="more than 10 points"):
        collect_matrix(range_query(history(), parse_query("x"), 0, 40 * 60_000, 60_000), max_points=10)


@pytest.mark.parametrize(("text", "message"), [
    ("max by (node) (", "parse error at column 16"),
    ("", "empty expression"),
    ("rate(x)", "parse error at column 6: expected type range vector"),
])
def test_parse_errors_point_at_the_column(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(text)


def test_range_query_refusals() -> None:
    with pytest.raises(QueryError, match="invalid expression type 'range vector'"):
        list(range_query(history(), parse_query("x[5m]"), 0, 60_000, 1_000))
    with pytest.raises(QueryError, match=f"more than {MAX_STEPS} points per series; give a step of at least 8s"):
        list(range_query(history(), parse_query("x"), 0, 86_400_000, 1_000))
    with pytest.raises(QueryError, match="many-to-many"):
        list(range_query(history(), parse_query("x + on (gpu) c"), 0, 600_000, 60_000))
