"""HTTP API and dashboard (aiohttp). Read-only; binds where ``http`` in the config says.

Built on :class:`collector.view.CollectorView` alone: a read-only view of the collector.
"""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from typing import Any

from aiohttp import web

from alerts.model import Alert
from collector.query import parse_selector, run_query
from collector.view import CollectorView


def finite(value: float) -> float | str:
    """JSON has no Infinity or NaN: non-finite values travel as Prometheus spells them ("+Inf")."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return finite(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def json_response(obj: Any, status: int = 200) -> web.Response:
    """Strict JSON (``allow_nan=False``): a non-finite float anywhere becomes a string first."""
    return web.Response(text=json.dumps(_clean(obj), allow_nan=False), status=status,
                        content_type="application/json")


def alert_dict(a: Alert) -> dict[str, Any]:
    return {"labels": a.labels, "annotations": a.annotations, "state": a.state.value, "active_at": a.active_at,
            "fired_at": a.fired_at, "resolved_at": a.resolved_at, "value": finite(a.value)}


def summary(c: CollectorView) -> dict[str, Any]:
    now = time.time()
    nodes = c.nodes(now)
    active = c.active_alerts()
    counters = c.counters()
    return {
        "time": now,
        "nodes_total": len(nodes),
        "nodes_up": sum(n.up for n in nodes),
        "samples_total": counters.samples,
        "samples_per_second": round(c.samples_per_second(), 1),
        "refused_total": counters.refused_batches + counters.refused_streams,
        "duplicates_total": counters.duplicates,
        "duplicate_samples": counters.duplicate_samples,
        "firing": [alert_dict(a) for a in active if a.state.value == "firing"],
        "pending": sum(1 for a in active if a.state.value == "pending"),
    }


def _metrics_text(c: CollectorView) -> str:
    s = summary(c)
    lines = [
        "# HELP fleetmon_collector_samples_total Samples accepted from agents",
        "# TYPE fleetmon_collector_samples_total counter",
        f"fleetmon_collector_samples_total {s['samples_total']}",
        "# HELP fleetmon_collector_refused_total Streams and batches refused",
        "# TYPE fleetmon_collector_refused_total counter",
        f"fleetmon_collector_refused_total {s['refused_total']}",
        "# HELP fleetmon_collector_duplicate_samples_total Samples dropped: the store already held their "
        "series and timestamp (the first value is kept)",
        "# TYPE fleetmon_collector_duplicate_samples_total counter",
        f"fleetmon_collector_duplicate_samples_total {s['duplicate_samples']}",
        "# HELP fleetmon_collector_nodes_up Nodes streaming within the node timeout",
        "# TYPE fleetmon_collector_nodes_up gauge",
        f"fleetmon_collector_nodes_up {s['nodes_up']}",
    ]
    for h in c.health():
        lab = ",".join(f'{k}="{v}"' for k, v in h.labels)
        lines.append(f"{h.name}{{{lab}}} {h.value}" if lab else f"{h.name} {h.value}")
    return "\n".join(lines) + "\n"


async def start_http(c: CollectorView, addr: str) -> tuple[web.AppRunner, int]:
    async def index(_req: web.Request) -> web.Response:
        html = resources.files("collector").joinpath("static/dashboard.html").read_text()
        return web.Response(text=html, content_type="text/html")

    async def api_summary(_req: web.Request) -> web.Response:
        return json_response(summary(c))

    async def api_nodes(_req: web.Request) -> web.Response:
        now = time.time()
        out = [{"node": n.node, "up": n.up, "connected": n.connected, "labels": n.labels, "samples": n.samples,
                "batches": n.batches, "last_batch_age": round(now - n.last_batch_at, 1) if n.last_batch_at else None,
                "clock_skew": round(n.clock_skew, 3), "agent_version": n.agent_version,
                "plugins": [{"name": p.name, "enabled": p.enabled, "detail": p.detail} for p in n.plugins]}
               for n in sorted(c.nodes(now), key=lambda n: n.node)]
        return json_response(out)

    async def api_alerts(_req: web.Request) -> web.Response:
        return json_response([alert_dict(a) for a in c.active_alerts()])

    def _since(req: web.Request, default: float) -> float:
        try:
            value = float(req.query.get("since", str(default)))
        except ValueError as err:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"since: {err}"}),
                                     content_type="application/json") from err
        if not math.isfinite(value):
            raise web.HTTPBadRequest(text=json.dumps({"error": "since: must be a finite unix time"}),
                                     content_type="application/json")
        return value

    async def api_transitions(req: web.Request) -> web.Response:
        since = _since(req, 0)
        return json_response([{"time": t.time, **alert_dict(t.alert)} for t in c.transitions(since)])

    async def api_events(req: web.Request) -> web.Response:
        since_ms = int(_since(req, time.time() - 3600) * 1000)
        return json_response(await c.read_store(lambda r: r.events(since_ms)))

    async def api_query(req: web.Request) -> web.Response:
        sel = req.query.get("selector", "")
        try:
            parsed = parse_selector(sel)
            since = float(req.query.get("since", str(time.time() - 600)))
            until = float(req.query.get("until", str(time.time())))
            if not (math.isfinite(since) and math.isfinite(until)):
                raise ValueError("since and until must be finite unix times")
        except ValueError as err:
            return json_response({"error": str(err)}, status=400)
        rows = await c.read_store(lambda r: run_query(r, parsed, since, until, 10_000))
        return json_response(rows)

    async def metrics(_req: web.Request) -> web.Response:
        return web.Response(text=_metrics_text(c), content_type="text/plain")

    async def healthz(_req: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.add_routes([
        web.get("/", index), web.get("/api/v1/summary", api_summary), web.get("/api/v1/nodes", api_nodes),
        web.get("/api/v1/alerts", api_alerts), web.get("/api/v1/alerts/transitions", api_transitions),
        web.get("/api/v1/events", api_events), web.get("/api/v1/query", api_query),
        web.get("/metrics", metrics), web.get("/healthz", healthz),
    ])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = addr.rpartition(":")
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return runner, int(bound)
