"""``fleetmon query``'s engine over a long history: memory and time, chunked against whole.

A synthetic history (``--series`` GPU temperatures on ``--series / 8`` nodes, a sample every
10 s for ``--days``) generated lazily by a HistoryReader, so what is measured is the query
engine (collector/queryengine.py), not a store. Three queries, each as ``fleetmon query`` runs
it for the default table:

* ``max by (node) (gpu_temperature_celsius)`` over the whole history at the default step (the
  range / 250), read in chunks as the engine does by default, and all at once (``chunk_ms``
  past the range: what an engine without chunks would hold);
* ``max_over_time(gpu_temperature_celsius[1h])`` the same (a range function reaching back);
* ``gpu_temperature_celsius[<days>d]`` at one time: every stored sample, series by series,
  against the size of those samples.

For each history length (``--days``): peak Python-traced memory (numpy included; a run under
tracemalloc) and wall time (a run without it), and the ratios chunked / whole. Bounded memory
means the chunked figure stays put as the history grows. On a shared machine read the ratios,
not the seconds.

Usage: python bench/bench_query.py [--series 200] [--days 1,4]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from alerts.promql.labels import Matcher
from collector.queryengine import CHUNK_MS, RangeMatrix, instant_query, parse_query, range_query
from collector.queryout import Table

INTERVAL_MS = 10_000


@dataclass
class Generated:
    labels: dict[str, str]
    ts_ms: np.ndarray
    values: np.ndarray


class SyntheticHistory:
    """Each series' samples made when asked for (deterministic per series and time)."""

    description = "synthetic"

    def __init__(self, series: int, days: float, end_ms: int) -> None:
        self.labels = [{"__name__": "gpu_temperature_celsius", "node": f"node-{i // 8:04d}", "gpu": str(i % 8)}
                       for i in range(series)]
        self.end_ms = end_ms
        self.start_ms = end_ms - int(days * 86_400_000)
        self.samples = 0

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> Iterator[Generated]:
        lo = max(start_ms, self.start_ms)
        hi = min(end_ms, self.end_ms)
        first = -(-lo // INTERVAL_MS) * INTERVAL_MS
        ts = np.arange(first, hi + 1, INTERVAL_MS, dtype=np.int64)
        for i, labels in enumerate(self.labels):
            if all(m.matches(labels.get(m.name, "")) for m in matchers):
                self.samples += len(ts)
                yield Generated(labels, ts, 60.0 + 10.0 * np.sin(ts / 3.6e6 + i) + (i % 7))

    def close(self) -> None:
        pass


def measure(fn: Callable[[], None]) -> tuple[float, float]:
    """Peak traced memory (MiB; a run under tracemalloc) and wall time (s; a run without it)."""
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--days", default="1,4", help="history lengths, comma-separated")
    args = ap.parse_args()
    end = 1_796_025_600_000
    print(f"{args.series} series, a sample every 10 s; range queries at the default step (range / 250)")
    for text in ("max by (node) (gpu_temperature_celsius)", "max_over_time(gpu_temperature_celsius[1h])", None):
        print(text or "gpu_temperature_celsius[<days>] at one time: every sample, series by series")
        print("   days  samples    chunked: MiB      s     whole: MiB      s    chunked/whole: memory  time")
        for days in (float(d) for d in args.days.split(",")):
            span = int(days * 86_400_000)
            samples = args.series * span // INTERVAL_MS
            step = max(1000, span // 250 // 1000 * 1000)

            def table(expr: str, chunk_ms: int, days: float = days, span: int = span, step: int = step) -> None:
                with open("/dev/null", "w") as sink:
                    out = Table(sink)
                    out.range((end - span) / 1000, end / 1000, step / 1000)
                    h = SyntheticHistory(args.series, days, end)
                    for t, vec in range_query(h, parse_query(expr), end - span, end, step, chunk_ms=chunk_ms):
                        out.step_values(t / 1000, vec)
                    out.finish()

            def raw(days: float = days, samples: int = samples) -> None:
                h = SyntheticHistory(args.series, days, end)
                res = instant_query(h, parse_query(f"gpu_temperature_celsius[{int(days * 86400)}s]"), end)
                assert isinstance(res, RangeMatrix)
                assert sum(len(ts) for _lb, ts, _v in res.series) >= samples - args.series

            if text is None:
                mem_c, sec_c = measure(raw)
                mem_w, sec_w = samples * 16 / 2**20, math.nan  # the samples themselves, 16 bytes each
            else:
                mem_c, sec_c = measure(functools.partial(table, text, CHUNK_MS))
                mem_w, sec_w = measure(functools.partial(table, text, span * 2))
            print(f"  {days:5g} {samples / 1e6:6.1f}M     {mem_c:10.1f} {sec_c:6.2f}   {mem_w:10.1f} {sec_w:6.2f}"
                  f"                  {mem_c / mem_w:5.3f} {sec_c / sec_w:5.2f}")


if __name__ == "__main__":
    main()
