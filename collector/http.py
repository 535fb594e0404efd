"""HTTP API and dashboard (aiohttp). Read-only; binds where ``http`` in the config says.

Built on :class:`collector.view.CollectorView` alone: a read-only view of the collector. The
routes come from their modules: the JSON API (collector/api.py), the collector's own
``/metrics`` (collector/metrics.py) and the dashboard's files (collector/dashboard.py).
"""

from __future__ import annotations

from aiohttp import web

from collector.api import api_routes, json_errors
from collector.dashboard import dashboard_routes
from collector.metrics import build_registry, exposition
from collector.view import CollectorView


async def start_http(c: CollectorView, addr: str) -> tuple[web.AppRunner, int]:
    registry = build_registry(c)

    async def metrics(req: web.Request) -> web.Response:
        body, content_type = exposition(registry, req.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_req: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(middlewares=[json_errors])
    app.add_routes([*dashboard_routes(), *api_routes(c), web.get("/metrics", metrics), web.get("/healthz", healthz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = addr.rpartition(":")
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return runner, int(bound)
