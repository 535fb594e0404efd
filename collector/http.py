"""HTTP API and dashboard (aiohttp). Read-only; binds where ``http`` in the config says."""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from alerts.model import Alert
from collector.query import parse_selector, run_query
from collector.storage.sqlite import StoreReader

if TYPE_CHECKING:
    from collector.app import Collector


def alert_dict(a: Alert) -> dict[str, Any]:
    return {"labels": a.labels, "annotations": a.annotations, "state": a.state.value, "active_at": a.active_at,
            "fired_at": a.fired_at, "resolved_at": a.resolved_at,
            "value": a.value if math.isfinite(a.value) else str(a.value)}


def summary(c: Collector) -> dict[str, Any]:
    now = time.time()
    up = c.node_up(now)
    active = c.engine.active() if c.engine is not None else []
    return {
        "time": now,
        "nodes_total": len(up),
        "nodes_up": sum(up.values()),
        "samples_total": c.ingestor.samples_total,
        "samples_per_second": round(c.samples_per_second(), 1),
        "refused_total": c.ingestor.refused_total,
        "duplicates_total": c.ingestor.duplicates_total,
        "duplicate_samples": c.store.duplicate_samples,
        "firing": [alert_dict(a) for a in active if a.state.value == "firing"],
        "pending": sum(1 for a in active if a.state.value == "pending"),
    }


async def start_http(c: Collector, addr: str) -> tuple[web.AppRunner, int]:
    reader: dict[str, StoreReader] = {}

    def store() -> StoreReader:
        if "r" not in reader:
            reader["r"] = StoreReader(c.store.path)
        return reader["r"]

    async def index(_req: web.Request) -> web.Response:
        html = resources.files("collector").joinpath("static/dashboard.html").read_text()
        return web.Response(text=html, content_type="text/html")

    async def api_summary(_req: web.Request) -> web.Response:
        return web.json_response(summary(c))

    async def api_nodes(_req: web.Request) -> web.Response:
        now = time.time()
        up = c.node_up(now)
        out = [{"node": n, "up": up[n], "connected": i.connected, "labels": i.labels, "samples": i.samples,
                "batches": i.batches, "last_batch_age": round(now - i.last_batch_at, 1) if i.last_batch_at else None,
                "clock_skew": round(i.clock_skew, 3), "agent_version": i.agent_version,
                "plugins": [{"name": p, "enabled": e, "detail": d} for p, e, d in i.plugins]}
               for n, i in sorted(c.ingestor.nodes.items())]
        return web.json_response(out)

    async def api_alerts(_req: web.Request) -> web.Response:
        active = c.engine.active() if c.engine is not None else []
        return web.json_response([alert_dict(a) for a in active])

    async def api_transitions(req: web.Request) -> web.Response:
        since = float(req.query.get("since", "0"))
        return web.json_response([{"time": t, **alert_dict(a)} for t, a in c.transitions if t > since])

    async def api_events(req: web.Request) -> web.Response:
        since = float(req.query.get("since", str(time.time() - 3600)))
        return web.json_response(await c.writer.run_in_thread(store().events, int(since * 1000)))

    async def api_query(req: web.Request) -> web.Response:
        sel = req.query.get("selector", "")
        try:
            parsed = parse_selector(sel)
            since = float(req.query.get("since", str(time.time() - 600)))
            until = float(req.query.get("until", str(time.time())))
        except ValueError as err:
            return web.json_response({"error": str(err)}, status=400)
        rows = await c.writer.run_in_thread(run_query, store(), parsed, since, until, 10_000)
        return web.Response(text=json.dumps(rows), content_type="application/json")

    async def metrics(_req: web.Request) -> web.Response:
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
        if c.spool is not None:
            for h in c.spool.health():
                lab = ",".join(f'{k}="{v}"' for k, v in h.labels)
                lines.append(f"{h.name}{{{lab}}} {h.value}" if lab else f"{h.name} {h.value}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

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
