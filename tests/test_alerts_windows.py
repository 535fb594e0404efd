"""Live windows keep only the series the rules select, each for as long as its readers need,
indexed by name, node and rule selector."""

from __future__ import annotations

from pathlib import Path

from alerts import AlertEngine
from alerts.promql import ast
from alerts.promql.parser import parse
from alerts.promql.values import is_stale
from alerts.schedule import needs
from alerts.windows import Need, Windows

RULES = """\
groups:
  - name: g
    rules:
      - alert: SymbolErrors
        expr: rate(ib_port_symbol_errors_total[10m]) > 0
      - alert: Hot
        expr: gpu_temperature_celsius > 90
      - alert: AnyPsu
        expr: '{__name__=~"psu_.*", psu="1"} == 0'
      - alert: PowerDoubled
        expr: node_power_watts > 2 * node_power_watts offset 1h
      - alert: OnlyXid79
        expr: increase(gpu_xid_errors_total{xid="79"}[10m]) > 0
"""


def _engine(tmp_path: Path) -> AlertEngine:
    p = tmp_path / "r.yml"
    p.write_text(RULES)
    return AlertEngine.from_files([p])


def _sel(text: str) -> ast.VectorSelector:
    node = parse(text)
    assert isinstance(node, ast.VectorSelector)
    return node


def test_only_selected_series_are_kept(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    assert eng.wants("ib_port_symbol_errors_total")
    assert eng.wants("psu_up") and eng.wants("psu_input_power_watts")
    assert not eng.wants("gpu_power_watts") and not eng.wants("xpsu_up")
    assert eng.series_ref("gpu_power_watts", {"node": "n1"}) is None  # no rule reads the name
    assert eng.series_ref("gpu_xid_errors_total", {"node": "n1", "xid": "13"}) is None  # nor these labels
    assert eng.series_ref("psu_up", {"node": "n1", "psu": "2"}) is None
    assert eng.series_ref("gpu_xid_errors_total", {"node": "n1", "xid": "79"}) is not None
    eng.ingest("gpu_power_watts", {"node": "n1"}, 1000.0, 300.0)
    eng.ingest("gpu_temperature_celsius", {"node": "n1"}, 1000.0, 50.0)
    assert eng.windows.series_count() == 1  # the temperature; the xid 79 series has a ref but no samples yet


def test_each_series_keeps_what_its_readers_need(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    t0 = 1_700_000_000.0
    for i in range(1200):  # 20 minutes at 1 Hz
        eng.ingest("ib_port_symbol_errors_total", {"node": "n1", "port": "1"}, t0 + i, float(i))
        eng.ingest("gpu_temperature_celsius", {"node": "n1", "gpu": "0"}, t0 + i, 50.0)
    (ib,) = eng.windows.select(_sel("ib_port_symbol_errors_total"))
    (temp,) = eng.windows.select(_sel("gpu_temperature_celsius"))
    assert (ib.retention, temp.retention) == (600_000, 300_000)  # rate over 10m; the 5m lookback
    # trimmed in batches: never more than retention + 60 s of slack, never less than retention
    assert 600 <= len(ib.ts) <= 661 and ib.ts[-1] - ib.ts[0] >= 600_000
    assert 300 <= len(temp.ts) <= 361
    ref = eng.series_ref("node_power_watts", {"node": "n1"})
    assert ref is not None
    assert eng.windows._series[ref].retention == 3_900_000  # offset 1h + the lookback


def test_needs_follow_offsets_subqueries_and_pins() -> None:
    def spans(text: str) -> list[tuple[int, tuple[int, int] | None]]:
        return [(n.span_ms, n.pin) for _sel, n in needs(parse(text))]

    assert spans("x") == [(300_000, None)]
    assert spans("rate(x[10m] offset 5m)") == [(900_000, None)]
    assert spans("x offset -1m") == [(300_000, None)]
    assert spans("max_over_time(rate(x[1m])[30m:1m] offset 1h)") == [(5_460_000, None)]
    assert spans("x @ 1000") == [(0, (700_000, 1_000_000))]
    assert spans("max_over_time(x[5m:1m] @ 1000)") == [(0, (400_000, 1_000_000))]


def test_pinned_window_survives_trimming() -> None:
    sel = _sel("x")
    w = Windows([(sel, Need(60_000, (100_000, 200_000)))])
    for t in range(0, 1_000_000, 10_000):
        w.append("x", (), t, float(t))
    (s,) = w.select(sel)
    kept = list(s.ts)
    assert [t for t in kept if t <= 200_000] == list(range(100_000, 200_001, 10_000))
    assert min(t for t in kept if t > 200_000) >= 990_000 - 60_000 - 60_000


def test_gc_unindexes_quiet_series_and_refs_stay_valid() -> None:
    sel = _sel("gpu_up")
    w = Windows([(sel, Need(300_000))])
    r0 = w.ref("gpu_up", (("gpu", "0"),))
    assert r0 is not None
    w.append_ref(r0, 1_000, 1.0)
    w.append_ref(r0, 500, 0.0)  # older than the newest: refused
    w.append_ref(r0, 1_000, 0.0)  # duplicate timestamp: refused
    w.append("gpu_up", (("gpu", "1"),), 200_000, 1.0)
    (s0, _s1) = w.select(sel)
    assert (list(s0.ts), list(s0.vals)) == ([1_000], [1.0])
    assert w.gc(302_000) == 1  # gpu 0 last seen 301 s ago
    assert [s.labels for s in w.select(sel)] == [(("__name__", "gpu_up"), ("gpu", "1"))]
    w.append_ref(r0, 400_000, 1.0)  # the collector's ref still works: the series is back, in ref order
    assert [dict(s.labels)["gpu"] for s in w.select(sel)] == ["0", "1"]


def test_selection_by_node_and_changes_by_name() -> None:
    sel = _sel("gpu_up")
    w = Windows([(sel, Need(300_000))])
    for node in ("n1", "n2", "n3"):
        w.append("gpu_up", (("node", node),), 1_000, 1.0)
    assert sorted(dict(s.labels)["node"] for s in w.select(sel, {"n3", "n1"})) == ["n1", "n3"]
    assert w.take_changes() == {"gpu_up": {"n1", "n2", "n3"}}
    w.append("gpu_up", (("node", "n2"),), 2_000, 1.0)
    assert w.take_changes() == {"gpu_up": {"n2"}}
    assert w.take_changes() == {}


def test_mark_stale_only_matching_series() -> None:
    sel = _sel("gpu_up")
    w = Windows([(sel, Need(300_000))])
    w.append("gpu_up", (("node", "n1"),), 1_000, 1.0)
    w.append("gpu_up", (("node", "n2"),), 1_000, 1.0)
    w.mark_stale(2_000, {"node": "n1"})
    vals = {dict(s.labels)["node"]: [None if is_stale(v) else v for v in s.vals] for s in w.select(sel)}
    assert vals == {"n1": [1.0, None], "n2": [1.0]}


def test_a_flat_series_repeating_its_value_changes_nothing_its_readers_see() -> None:
    """rate() over a flat window and an instant read give the same answer after a repeat, so
    the repeat marks nothing changed; count_over_time() counts it, so its series is never quiet."""
    quiet_sel, counted_sel = _sel("errors_total"), _sel("samples_total")
    w = Windows([*needs(parse("rate(errors_total[1m]) > 0 or errors_total == 3")),
                 *needs(parse("count_over_time(samples_total[1m])"))])
    assert quiet_sel is not counted_sel
    for t in range(0, 400_000, 10_000):  # flat for longer than the retention (the 5m lookback)
        w.append("errors_total", (("node", "n1"),), t, 5.0)
        w.append("samples_total", (("node", "n1"),), t, 5.0)
    w.take_changes()
    w.append("errors_total", (("node", "n1"),), 400_000, 5.0)
    w.append("samples_total", (("node", "n1"),), 400_000, 5.0)
    assert w.take_changes() == {"samples_total": {"n1"}}
    w.append("errors_total", (("node", "n1"),), 410_000, 6.0)  # a change is always seen
    assert w.take_changes() == {"errors_total": {"n1"}}


def test_instant_only_series_keep_one_or_two_samples_bit_for_bit(tmp_path: Path) -> None:
    """A series read only by ``x > c`` keeps the newest sample at or before the last evaluation
    and the newer ones; flat runs share one (v, v) pair, and 0.0 and -0.0 stay apart."""
    rules = tmp_path / "r.yml"
    rules.write_text(RULES)
    eng = AlertEngine.from_files([rules])
    ref = eng.series_ref("gpu_temperature_celsius", {"node": "n1", "gpu": "0"})
    other = eng.series_ref("gpu_temperature_celsius", {"node": "n2", "gpu": "0"})
    assert ref is not None and other is not None
    s, o = eng.windows._series[ref], eng.windows._series[other]
    assert s.latest and eng.windows._series[ref].retention == 300_000
    t0 = 1_800_000_000_000
    for i, v in enumerate([50.0, 50.0, 0.0, -0.0, -0.0, -0.0, 91.0]):
        eng.append_block([ref, other], t0 + i * 10_000, [v, 50.0])
        assert len(s.ts) <= 2 and s.ts[-1] == t0 + i * 10_000 and str(s.vals[-1]) == str(v)
        eng.evaluate((t0 + i * 10_000) / 1000 + 1)
    assert list(s.vals) == [-0.0, 91.0] and str(s.vals[0]) == "-0.0"
    assert o.vals == (50.0, 50.0) and len(o.ts) == 2
    assert [a.labels["node"] for a in eng.active()] == ["n1"]
