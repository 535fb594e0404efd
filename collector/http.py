"""HTTP API and dashboard (aiohttp). Read-only; binds where ``http`` in the config says."""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from collector.query import Selector, iter_query, parse_selector
from collector.rulesproc import alert_dict, read_state
from collector.storage.logstore import LogStoreReader

if TYPE_CHECKING:
    from collector.app import Collector


def alerts_now(c: Collector) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(active alerts, transitions) from the engine here, or as the rules process published them."""
    if c.rules_process:
        return read_state(c.cfg.data_dir)
    active = c.engine.active() if c.engine is not None else []
    return [alert_dict(a) for a in active], [{"time": t, **alert_dict(a)} for t, a in c.transitions]


def summary(c: Collector, active: list[dict[str, Any]]) -> dict[str, Any]:
    now = time.time()
    up = c.node_up(now)
    return {
        "time": now,
        "nodes_total": len(up),
        "nodes_up": sum(up.values()),
        "samples_total": c.ingestor.samples_total,
        "samples_per_second": round(c.samples_per_second(), 1),
        "refused_total": c.ingestor.refused_total,
        "duplicates_total": c.ingestor.duplicates_total,
        "firing": [a for a in active if a["state"] == "firing"],
        "pending": sum(1 for a in active if a["state"] == "pending"),
    }


async def stream_query(req: web.Request, data_dir: Path, sel: Selector, since: float,
                       until: float) -> web.StreamResponse:
    """A JSON array written series by series as the store yields them: memory holds a node's
    answer and a few encoded series, whatever the query's size. Runs on its own thread with its
    own reader, so it never delays the store's writer (and the acks)."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(req)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)

    def produce() -> None:
        reader = LogStoreReader(data_dir)
        try:
            for row in iter_query(reader, sel, since, until, 10_000):
                asyncio.run_coroutine_threadsafe(queue.put(json.dumps(row).encode()), loop).result()
        finally:
            reader.close()
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    done = loop.run_in_executor(None, produce)
    await resp.write(b"[")
    sep = b""
    while (item := await queue.get()) is not None:
        await resp.write(sep + item)
        sep = b","
    await done
    await resp.write(b"]")
    await resp.write_eof()
    return resp


async def start_http(c: Collector, addr: str) -> tuple[web.AppRunner, int]:
    reader: dict[str, LogStoreReader] = {}

    def store() -> LogStoreReader:
        if "r" not in reader:
            reader["r"] = LogStoreReader(c.cfg.data_dir)
        return reader["r"]

    async def index(_req: web.Request) -> web.Response:
        html = resources.files("collector").joinpath("static/dashboard.html").read_text()
        return web.Response(text=html, content_type="text/html")

    async def api_summary(_req: web.Request) -> web.Response:
        active, _t = await asyncio.to_thread(alerts_now, c)
        return web.json_response(summary(c, active))

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
        active, _t = await asyncio.to_thread(alerts_now, c)
        return web.json_response(active)

    async def api_transitions(req: web.Request) -> web.Response:
        since = float(req.query.get("since", "0"))
        _a, trans = await asyncio.to_thread(alerts_now, c)
        return web.json_response([t for t in trans if t["time"] > since])

    async def api_events(req: web.Request) -> web.Response:
        since = float(req.query.get("since", str(time.time() - 3600)))
        # Reads run beside the store's writer thread, never on it: a query must not delay acks.
        return web.json_response(await asyncio.to_thread(store().events, int(since * 1000)))

    async def api_query(req: web.Request) -> web.StreamResponse:
        sel = req.query.get("selector", "")
        try:
            parsed = parse_selector(sel)
            since = float(req.query.get("since", str(time.time() - 600)))
            until = float(req.query.get("until", str(time.time())))
        except ValueError as err:
            return web.json_response({"error": str(err)}, status=400)
        return await stream_query(req, c.cfg.data_dir, parsed, since, until)

    async def metrics(_req: web.Request) -> web.Response:
        active, _t = await asyncio.to_thread(alerts_now, c)
        s = summary(c, active)
        lines = [
            "# HELP fleetmon_collector_samples_total Samples accepted from agents",
            "# TYPE fleetmon_collector_samples_total counter",
            f"fleetmon_collector_samples_total {s['samples_total']}",
            "# HELP fleetmon_collector_refused_total Streams and batches refused",
            "# TYPE fleetmon_collector_refused_total counter",
            f"fleetmon_collector_refused_total {s['refused_total']}",
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
