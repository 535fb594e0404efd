"""The one place where the collector hands samples to the rule engine.

The engine contract (``/work/notes/engine-contract.md``; wt-promql): a series gets a ref once
(``series_ref``, None when no loaded rule can select it), then samples travel a block at a time
(``append_block``: one timestamp, many refs). Engines without that interface get the older
``wants``/``ingest`` calls from here, so switching is this file only.

Samples stamped ahead of the collector's clock (agent clock skew) are clamped to now for the
rules, which would otherwise not see them until the clock caught up; the store keeps the
agent's time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

NO_REF = -1


class RuleFeed:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._blocks = hasattr(engine, "series_ref") and hasattr(engine, "append_block")
        self._series: list[tuple[str, dict[str, str]]] = []  # ref -> series, for ingest()
        self._names: dict[int, str] = {}  # ref -> metric name
        self.samples = 0

    def ref(self, name: str, labels: Mapping[str, str]) -> int:
        """The engine's handle for a series, or ``NO_REF`` when no rule reads it."""
        if self._blocks:
            r = self.engine.series_ref(name, labels)
            if r is None:
                return NO_REF
            self._names[int(r)] = name
            return int(r)
        if not self.engine.wants(name):
            return NO_REF
        self._series.append((name, dict(labels)))
        self._names[len(self._series) - 1] = name
        return len(self._series) - 1

    def names(self, refs: Iterable[int]) -> set[str]:
        """The metric names of these refs (for ``evaluate_urgent``)."""
        return {self._names[r] for r in refs if r != NO_REF and r in self._names}

    def block(self, refs: npt.NDArray[np.int64], ts_ms: int, values: npt.NDArray[np.float64],
              now: float | None = None) -> None:
        """One block of a batch; ``refs`` from ``ref`` (``NO_REF`` entries are skipped)."""
        keep = refs != NO_REF
        if not keep.any():
            return
        now_ms = int((time.time() if now is None else now) * 1000)
        ts_ms = min(ts_ms, now_ms)
        r, v = refs[keep], values[keep]
        self.samples += len(r)
        if self._blocks:
            self.engine.append_block(r.tolist(), ts_ms, v.tolist())
            return
        ingest = self.engine.ingest
        ts = ts_ms / 1000
        series = self._series
        for ref, value in zip(r.tolist(), v.tolist(), strict=True):
            name, labels = series[ref]
            ingest(name, labels, ts, value)
