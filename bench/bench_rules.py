"""Rule evaluation cost per 1,000 live series (issue 7, item 7).

Builds an AlertEngine with a hardware rule set of the kinds the default pack uses (thresholds,
counter rates over 5m, a many-to-one optics comparison, a recording rule, absence), fills its
live windows with 5.5 minutes of 1 Hz samples for a fleet of N series, then measures, per
simulated second, the collector's work: one ``ingest`` per series and one ``evaluate``.

Prints: ingest cost per sample, evaluate cost per call and per 1,000 series, window memory per
series, and the ratio of evaluate to a baseline measured in the same run (a bare loop reading
the newest sample of every window series: the least any evaluation must touch).

Usage: python bench/bench_rules.py [--series 1000,5000] [--seconds 10] [--storm 0.1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alerts.engine import AlertEngine
from alerts.rulefile import load_text

RULES = """\
groups:
  - name: gpu
    rules:
      - alert: GpuHot
        expr: gpu_temperature_celsius > 90
        for: 1m
        annotations: {summary: "{{ $labels.node }} GPU {{ $labels.gpu }} at {{ $value }} C"}
      - alert: GpuXid
        expr: increase(gpu_xid_errors_total[5m]) > 0
      - alert: GpuRowRemapPending
        expr: gpu_row_remap_pending == 1
      - record: node:gpu_power_watts:sum
        expr: sum by (node) (gpu_power_watts)
      - alert: NodeGpuPowerHigh
        expr: node:gpu_power_watts:sum > 6000
      - alert: GpuUpMissing
        expr: absent_over_time(gpu_up{node="n0"}[1m])
  - name: optics
    rules:
      - alert: OpticalRxLow
        expr: |
          optical_rx_power_dbm
            < on(node, interface) group_left
          optical_threshold{quantity="rx_power_dbm", level="low_alarm"}
      - alert: IbSymbolErrors
        expr: rate(ib_port_symbol_errors_total[5m]) > 1
"""


def fleet(n_series: int) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, base value) for about ``n_series`` series: 88 per node (8 GPUs x 5,
    8 interfaces x 4 lanes + 8 thresholds, 8 IB ports)."""
    out: list[tuple[str, dict[str, str], float]] = []
    node = 0
    while len(out) < n_series:
        n = f"n{node}"
        for g in range(8):
            lb = {"node": n, "gpu": str(g), "cluster": "c1", "rack": f"r{node // 16}"}
            out += [("gpu_temperature_celsius", lb, 60.0), ("gpu_xid_errors_total", lb, 0.0),
                    ("gpu_row_remap_pending", lb, 0.0), ("gpu_power_watts", lb, 500.0), ("gpu_up", lb, 1.0)]
        for i in range(8):
            out.append(("optical_threshold", {"node": n, "interface": f"eth{i}", "quantity": "rx_power_dbm",
                                              "level": "low_alarm"}, -12.0))
            out += [("optical_rx_power_dbm", {"node": n, "interface": f"eth{i}", "lane": str(lane)}, -3.0)
                    for lane in range(4)]
            out.append(("ib_port_symbol_errors_total", {"node": n, "device": f"mlx5_{i}", "port": "1"}, 0.0))
        node += 1
    return out[:n_series]


def window_bytes(engine: AlertEngine) -> int:
    """Bytes held by the windows' sample storage (the typed arrays of times and values)."""
    total = 0
    for by_labels in engine.windows._by_name.values():
        for ser in by_labels.values():
            total += sys.getsizeof(ser.ts) + sys.getsizeof(ser.vals)  # typed arrays: buffer included
    return total


def value(name: str, base: float, s: int, stormy: bool, rng: random.Random) -> float:
    if name.endswith("_total"):
        # Healthy counters stand still; in a storm the chosen ones count up every second.
        return base + s if stormy else base
    return base + rng.random()


def run(n_series: int, seconds: int, rng: random.Random, storm: float) -> dict[str, float]:
    """``storm``: fraction of the XID counters that start rising when measurement begins."""
    engine = AlertEngine(load_text(RULES, "bench"))
    series = fleet(n_series)
    xids = [i for i, (name, _lb, _b) in enumerate(series) if name == "gpu_xid_errors_total"]
    stormy = set(rng.sample(xids, int(len(xids) * storm)))
    t0 = 1_700_000_000.0
    warm = 330  # 5.5 minutes: windows full for the 5m ranges
    t_ingest = 0.0
    n_ingest = 0
    for s in range(warm):
        now = t0 + s
        start = time.perf_counter()
        for name, lb, base in series:
            engine.ingest(name, lb, now, value(name, base, s, False, rng))
        t_ingest += time.perf_counter() - start
        n_ingest += len(series)
        if s % 10 == 0:
            engine.evaluate(now)  # keeps the windows trimmed as the collector's loop would
    mem = window_bytes(engine)

    evals: list[float] = []
    base_times: list[float] = []
    windows = engine.windows
    firing = 0
    for s in range(warm, warm + seconds):
        now = t0 + s
        for i, (name, lb, base) in enumerate(series):
            engine.ingest(name, lb, now, value(name, base, s, i in stormy, rng))
        start = time.perf_counter()
        engine.evaluate(now + 0.5)
        evals.append(time.perf_counter() - start)
        firing = len(engine.active())
        start = time.perf_counter()
        acc = 0.0
        for by_labels in windows._by_name.values():
            for ser in by_labels.values():
                acc += ser.vals[-1]
        base_times.append(time.perf_counter() - start)
    first_ms = evals[0] * 1000
    evals.sort()
    eval_ms = sum(evals) / len(evals) * 1000
    base_ms = sum(base_times) / len(base_times) * 1000
    return {
        "series": float(windows.series_count()),
        "ingest_us": t_ingest / n_ingest * 1e6,
        "eval_ms": eval_ms,
        "eval_p99_ms": evals[-1] * 1000,
        "eval_ms_per_1k": eval_ms / (n_series / 1000),
        "baseline_ms": base_ms,
        "mem_per_series_kib": mem / n_series / 1024,
        "first_ms": first_ms,
        "alerts": float(firing),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", default="1000,5000", help="comma-separated fleet sizes (series)")
    ap.add_argument("--seconds", type=int, default=10, help="measured evaluations per size")
    ap.add_argument("--storm", type=float, default=0.1, help="fraction of XID counters rising in the storm")
    args = ap.parse_args()
    rng = random.Random(7)
    print(f"{'series':>8} {'scenario':>9} {'alerts':>7} {'ingest µs/sample':>17} {'evaluate ms':>12} "
          f"{'max ms':>8} {'1st ms':>7} {'ms per 1k series':>17} {'x baseline':>11} {'window KiB/series':>18}")
    for n in (int(x) for x in args.series.split(",")):
        for scenario, storm in (("steady", 0.0), ("storm", args.storm)):
            r = run(n, args.seconds, rng, storm)
            print(f"{int(r['series']):>8} {scenario:>9} {int(r['alerts']):>7} {r['ingest_us']:>17.2f} "
                  f"{r['eval_ms']:>12.2f} {r['eval_p99_ms']:>8.2f} {r['first_ms']:>7.2f} "
                  f"{r['eval_ms_per_1k']:>17.2f} {r['eval_ms'] / r['baseline_ms']:>11.1f} "
                  f"{r['mem_per_series_kib']:>18.1f}")
    print("1 Hz samples, 5.5 min of history per series. storm: that fraction of XID counters rises, so")
    print("as many GpuXid alerts start at once (1st ms = that evaluation). baseline = a bare loop reading")
    print("the newest sample of every window series.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
