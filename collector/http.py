"""HTTP API and dashboard (aiohttp). Read-only (GET only); binds where ``http`` in the config says.

Built on :class:`collector.view.CollectorView` alone: a read-only view of the collector. The
routes come from their modules: the JSON API (collector/api.py), the collector's own
``/metrics`` (collector/metrics.py) and the dashboard's files (collector/dashboard.py).

Off loopback the config requires a bearer token (``http_auth.token``) or client certificates
(``http_auth.tls.client_ca``, the ``ssl_context`` here). With a token, ``/healthz`` and the
dashboard's own files (static, no data) answer without it; the API and ``/metrics`` need it. The
dashboard takes the token from its URL fragment (``/#token=...``), which browsers never send.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from collector.api import api_routes, json_errors, json_response
from collector.dashboard import dashboard_routes
from collector.metrics import build_registry, exposition
from collector.view import CollectorView
from fleetmon_common.secrets import Secret


def _needs_token(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics"


def bearer_check(token: Secret) -> Middleware:
    """401 for the API and /metrics without ``Authorization: Bearer <http_auth.token>``."""

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if _needs_token(request.path):
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.matches(value.strip()):
                resp = json_response({"error": "send Authorization: Bearer <http_auth.token>"}, status=401)
                resp.headers["WWW-Authenticate"] = 'Bearer realm="fleetmon"'
                return resp
        result: web.StreamResponse = await handler(request)
        return result

    return check


async def start_http(c: CollectorView, addr: str, *, token: Secret | None = None,
                     ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    registry = build_registry(c)

    async def metrics(req: web.Request) -> web.Response:
        body, content_type = exposition(registry, req.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_req: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    middlewares: list[Middleware] = [json_errors]
    if token is not None:
        middlewares.insert(0, bearer_check(token))
    app = web.Application(middlewares=middlewares)
    app.add_routes([*dashboard_routes(), *api_routes(c), web.get("/metrics", metrics), web.get("/healthz", healthz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = addr.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port), ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return runner, int(bound)
