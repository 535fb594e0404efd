"""Find samples in a Collection by metric name and labels (tests of the facility plugins)."""

from __future__ import annotations

from agent.model import Collection

Key = tuple[tuple[str, str], ...]


def values(col: Collection, metric: str, /, **labels: str) -> dict[Key, float]:
    """{the other labels: value} of the samples of ``metric`` that carry ``labels``."""
    return {tuple(sorted((k, v) for k, v in s.labels.items() if k not in labels)): s.value
            for s in col.samples if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())}


def one(col: Collection, metric: str, /, **labels: str) -> float:
    """The value of the one sample of ``metric`` with ``labels``; fails naming what was found."""
    found = values(col, metric, **labels)
    assert len(found) == 1, (metric, labels, found)
    return next(iter(found.values()))
