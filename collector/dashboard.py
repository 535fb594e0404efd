"""The web dashboard's files: the page, its script and style (``collector/static/``), and the
chart library.

Charts are drawn by plotly.js, taken from the ``plotly`` Python package (a dependency of the
``collector`` extra, which ships ``plotly.min.js`` as package data) and served from here: the
dashboard works on an air-gapped site once fleetmon is installed, with no CDN and no JavaScript
build step. The library is read once, gzip-compressed in a thread, and served with a long cache
lifetime under a URL that carries its version.
"""

from __future__ import annotations

import asyncio
import gzip
from importlib import metadata, resources
from importlib.abc import Traversable

from aiohttp import web

#: The dashboard's own files under collector/static/ and their content types.
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
PLOTLY_URL = "/static/vendor/plotly.min.js"


def _plotly_js() -> Traversable | None:
    try:
        path = resources.files("plotly").joinpath("package_data/plotly.min.js")
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def plotly_version() -> str:
    try:
        return metadata.version("plotly")
    except metadata.PackageNotFoundError:
        return ""


class _Vendor:
    """plotly.min.js as bytes, plain and gzipped, loaded on first request."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.plain = b""
        self.gzipped = b""

    async def load(self) -> bool:
        async with self._lock:
            if not self.plain:
                source = _plotly_js()
                if source is None:
                    return False
                self.plain = await asyncio.to_thread(source.read_bytes)
                self.gzipped = await asyncio.to_thread(gzip.compress, self.plain, 6)
        return True


def dashboard_routes() -> list[web.RouteDef]:
    vendor = _Vendor()
    version = plotly_version()

    def static(name: str) -> web.Response:
        body = resources.files("collector").joinpath(f"static/{name}").read_text()
        if name == "index.html":
            body = body.replace("{{plotly}}", f"{PLOTLY_URL}?v={version}")
        # Small files, re-validated on each load, so an upgrade shows at once.
        return web.Response(text=body, content_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    async def index(_req: web.Request) -> web.Response:
        return static("index.html")

    async def asset(req: web.Request) -> web.Response:
        name = req.match_info["name"]
        if name not in STATIC_FILES or name == "index.html":
            raise web.HTTPNotFound(text=f"no dashboard file {name!r}\n")
        return static(name)

    async def plotly(req: web.Request) -> web.Response:
        if not await vendor.load():
            return web.Response(status=503, text="the dashboard's charts need the plotly package: "
                                "pip install 'fleetmon[collector]'\n")
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}
        if "gzip" in req.headers.get("Accept-Encoding", ""):
            return web.Response(body=vendor.gzipped, content_type="text/javascript",
                                headers={**headers, "Content-Encoding": "gzip"})
        return web.Response(body=vendor.plain, content_type="text/javascript", headers=headers)

    return [web.get("/", index), web.get(PLOTLY_URL, plotly), web.get("/static/{name}", asset)]
