"""Print one collection as JSON lines, Prometheus text exposition or InfluxDB line protocol."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from agent.model import Collection, MetricType, Sample
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


def _prom_escape(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _prom_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**53:  # exact as an integer (byte counters pass 1e15)
        return str(int(v))
    return repr(v)


def to_prom(ts: float, col: Collection, node_labels: Mapping[str, str]) -> str:
    """Prometheus text format 0.0.4; families grouped, each with HELP and TYPE."""
    families: dict[str, list[Sample]] = {}
    for s in col.samples:
        families.setdefault(s.name, []).append(s)
    out = []
    for name in sorted(families):
        samples = families[name]
        metric = samples[0].metric
        kind = "counter" if metric.type is MetricType.COUNTER else "gauge"
        out.append(f"# HELP {name} {metric.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        out.append(f"# TYPE {name} {kind}")
        # A family may not repeat a label set; the last sample wins (a counter first sent as 0
        # just before its first event, then its value, must print the value).
        latest: dict[tuple[tuple[str, str], ...], float] = {}
        for s in samples:
            latest[tuple(sorted(_labels(s, node_labels).items()))] = s.value
        for key, value in latest.items():
            body = ",".join(f'{k}="{_prom_escape(v)}"' for k, v in key)
            out.append(f"{name}{{{body}}} {_prom_value(value)}" if body else f"{name} {_prom_value(value)}")
    return "\n".join(out) + ("\n" if out else "")


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
