"""Print one collection as JSON lines, Prometheus text exposition or InfluxDB line protocol."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from agent.exposition import families, render
from agent.model import Collection, Sample
from proto.lineprotocol import encode_line, encode_points


def _labels(sample: Sample, node_labels: Mapping[str, str]) -> dict[str, str]:
    return {**sample.labels, **node_labels}


def _json_value(v: float) -> float | str:
    # JSON has no NaN/Inf; print them as Prometheus spells them.
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")


def to_json(ts: float, col: Collection, node_labels: Mapping[str, str]) -> str:
    lines = []
    for s in col.samples:
        t = s.ts if s.ts is not None else ts
        lines.append(json.dumps(
            {"name": s.name, "labels": _labels(s, node_labels), "value": _json_value(s.value), "time": round(t, 3)},
            sort_keys=False,
        ))
    for e in col.events:
        lines.append(json.dumps({
            "event": e.kind, "severity": e.severity.name.lower(), "message": e.message,
            "action": e.action, "labels": {**e.labels, **node_labels}, "time": round(e.ts, 3),
        }))
    return "\n".join(lines) + ("\n" if lines else "")


def to_prom(ts: float, col: Collection, node_labels: Mapping[str, str], names: str = "fleetmon") -> str:
    """Prometheus text format 0.0.4 (:mod:`agent.exposition`, shared with the agent's ``/metrics``)."""
    return render(families(col.samples, node_labels, names))


def to_influx(ts: float, col: Collection, node_labels: Mapping[str, str]) -> str:
    points = []
    for s in col.samples:
        t = s.ts if s.ts is not None else ts
        points.append((s.metric.measurement, _labels(s, node_labels), s.metric.field, s.value, int(t * 1e9)))
    lines = encode_points(points)
    for e in col.events:
        tags = {**e.labels, **node_labels, "kind": e.kind, "severity": e.severity.name.lower()}
        line = encode_line("event", tags, {"message": e.message, "action": e.action}, int(e.ts * 1e9))
        if line:
            lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


FORMATS = {"json": to_json, "prom": to_prom, "influx": to_influx}
