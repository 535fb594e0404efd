"""Live windows keep only the series the rules select, and only the lookback they need."""

from __future__ import annotations

from pathlib import Path

from alerts import AlertEngine
from alerts.promql.parser import parse
from alerts.promql.values import is_stale
from alerts.windows import Windows

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
"""


def _engine(tmp_path: Path) -> AlertEngine:
    p = tmp_path / "r.yml"
    p.write_text(RULES)
    return AlertEngine.from_files([p])


def test_only_selected_names_are_kept(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    assert eng.wants("ib_port_symbol_errors_total")
    assert eng.wants("psu_up") and eng.wants("psu_input_power_watts")
    assert not eng.wants("gpu_power_watts") and not eng.wants("xpsu_up")
    eng.ingest("gpu_power_watts", {"node": "n1"}, 1000.0, 300.0)  # no rule reads it
    eng.ingest("gpu_temperature_celsius", {"node": "n1"}, 1000.0, 50.0)
    assert eng.windows.series_count() == 1


def test_retention_is_the_longest_range(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    assert eng.windows.retention_ms == 600_000  # rate(...[10m]) > the 5m lookback
    t0 = 1_700_000_000.0
    for i in range(1200):  # 20 minutes at 1 Hz
        eng.ingest("ib_port_symbol_errors_total", {"node": "n1", "port": "1"}, t0 + i, float(i))
    (series,) = eng.windows.select(parse("ib_port_symbol_errors_total"))  # type: ignore[arg-type]
    # trimmed in batches: never more than retention + 60 s of slack, never less than retention
    assert 600 <= len(series.ts) <= 661
    assert series.ts[-1] - series.ts[0] >= 600_000


def test_gc_forgets_quiet_series_and_out_of_order_is_dropped() -> None:
    sel = parse("gpu_up")
    w = Windows([sel], retention_ms=300_000)  # type: ignore[list-item]
    w.append("gpu_up", (("gpu", "0"),), 1_000, 1.0)
    w.append("gpu_up", (("gpu", "0"),), 500, 0.0)  # older than the newest: refused
    w.append("gpu_up", (("gpu", "0"),), 1_000, 0.0)  # duplicate timestamp: refused
    w.append("gpu_up", (("gpu", "1"),), 200_000, 1.0)
    (s0, _s1) = w.select(sel)  # type: ignore[arg-type]
    assert (list(s0.ts), list(s0.vals)) == ([1_000], [1.0])
    assert w.gc(302_000) == 1  # gpu 0 last seen 301 s ago
    assert [s.labels for s in w.select(sel)] == [(("__name__", "gpu_up"), ("gpu", "1"))]  # type: ignore[arg-type]


def test_mark_stale_only_matching_series() -> None:
    sel = parse("gpu_up")
    w = Windows([sel])  # type: ignore[list-item]
    w.append("gpu_up", (("node", "n1"),), 1_000, 1.0)
    w.append("gpu_up", (("node", "n2"),), 1_000, 1.0)
    w.mark_stale(2_000, {"node": "n1"})
    vals = {dict(s.labels)["node"]: [None if is_stale(v) else v for v in s.vals]
            for s in w.select(sel)}  # type: ignore[arg-type]
    assert vals == {"n1": [1.0, None], "n2": [1.0]}
