"""Prometheus text exposition: ``--once --format prom`` and the agent's opt-in ``/metrics``.

``prometheus: {listen: "0.0.0.0:9401"}`` in the agent config serves, on ``GET /metrics``, the
last collection of every plugin (with its self-metrics: duration, success, samples, and when it
ran) and the agent's own state (WAL bytes and batches, dropped samples, series, connected), so a
site scrapes fleetmon agents as it scrapes dcgm-exporter or node_exporter. ``names: dcgm`` (or
``both``) renames NVIDIA series to dcgm-exporter's (:mod:`agent.dcgm`).

Text format 0.0.4 (what ``promtool check metrics`` lints; no timestamps, Prometheus stamps the
scrape). The server is asyncio's own (no aiohttp on the node: the agent must stay small,
issue 18): one request per connection, bounded request head, a read deadline, gzip when asked.
A plugin whose last collection failed has only its self-metrics there (success 0): its series go
stale in Prometheus rather than repeat old values.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent import dcgm
from agent.errors import ConfigError
from agent.model import Collection, Metric, MetricType, Sample

log = logging.getLogger("fleetmon.agent")

NAMES = ("fleetmon", "dcgm", "both")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LAST_COLLECTION = Metric(
    "fleetmon_agent", "plugin_last_collection_timestamp_seconds", MetricType.GAUGE,
    "Unix time of the plugin's last collection", "seconds",
)

LabelKey = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family: HELP, TYPE and one value per label set (the last one given wins)."""

    name: str
    type: str
    help: str
    series: dict[LabelKey, float] = field(default_factory=dict)


def _kind(metric: Metric) -> str:
    return "counter" if metric.type is MetricType.COUNTER else "gauge"


def families(samples: Iterable[Sample], node_labels: Mapping[str, str], names: str = "fleetmon") -> list[Family]:
    """Group samples into families (sorted by name), under fleetmon's or dcgm-exporter's names."""
    samples = list(samples)
    out: dict[str, Family] = {}
    gpu_info: dict[tuple[str | None, str | None], dict[str, str]] = {}
    if names != "fleetmon":
        for s in samples:
            if s.name == "gpu_info":
                gpu_info[(s.labels.get("gpu"), s.labels.get("uuid"))] = dict(s.labels)
    for s in samples:
        labels = {**node_labels, **s.labels}  # a series' own label wins (the collector does the same)
        if "node" in node_labels:
            labels["node"] = node_labels["node"]
        fields = []
        if names != "fleetmon" and dcgm.applies(s.name, labels):
            fields = [f for f in dcgm.MAPPING[s.name] if f.matches(labels)]
        if names != "dcgm" or not fields:  # a series DCGM has no name for keeps fleetmon's
            fam = out.get(s.name) or out.setdefault(s.name, Family(s.name, _kind(s.metric), s.metric.help))
            fam.series[tuple(sorted(labels.items()))] = s.value
        info = gpu_info.get((labels.get("gpu"), labels.get("uuid")), {})
        for f in fields:
            fam = out.get(f.name) or out.setdefault(f.name, Family(f.name, f.type, f.help))
            key = tuple(sorted(dcgm.dcgm_labels(labels, f.consumes, info).items()))
            fam.series[key] = s.value * f.scale
    return [out[k] for k in sorted(out)]


def _escape(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**53:  # exact as an integer (byte counters pass 1e15)
        return str(int(v))
    return repr(v)


def render(fams: Iterable[Family]) -> str:
    """Prometheus text format 0.0.4."""
    out = []
    for fam in fams:
        out.append(f"# HELP {fam.name} {fam.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        out.append(f"# TYPE {fam.name} {fam.type}")
        for key, value in fam.series.items():
            body = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
            out.append(f"{fam.name}{{{body}}} {_value(value)}" if body else f"{fam.name} {_value(value)}")
    return "\n".join(out) + ("\n" if out else "")


Sink = Callable[[float, Collection], Awaitable[None]]


class Exposition:
    """The last collection of each plugin, served on ``GET /metrics``."""

    def __init__(self, node_labels: Mapping[str, str], names: str = "fleetmon",
                 extra: Callable[[], list[Sample]] | None = None) -> None:
        self.node_labels = dict(node_labels)
        self.names = names
        self.extra = extra
        self.port = 0
        self.scrapes = 0
        self._last: dict[str, tuple[float, list[Sample]]] = {}
        self._server: asyncio.Server | None = None

    # -- what is served ----------------------------------------------------------------------
    def observe(self, ts: float, col: Collection) -> None:
        """Keep a plugin's collection, replacing its previous one (events alone change nothing)."""
        if not col.samples:
            return
        # The scheduler appends the plugin's self-metrics, labelled with its name, to each run.
        plugin = next((s.labels.get("plugin", "") for s in reversed(col.samples)
                       if s.name == "fleetmon_agent_plugin_success"), "")
        self._last[plugin] = (ts, list(col.samples))

    def tee(self, sink: Sink) -> Sink:
        """A scheduler sink that keeps each collection here, then hands it on."""
        async def observe_then(ts: float, col: Collection) -> None:
            self.observe(ts, col)
            await sink(ts, col)

        return observe_then

    def samples(self) -> list[Sample]:
        out: list[Sample] = []
        for plugin, (ts, samples) in self._last.items():
            out.extend(samples)
            if plugin:
                out.append(LAST_COLLECTION.sample(ts, {"plugin": plugin}))
        if self.extra is not None:
            out.extend(self.extra())
        return out

    def body(self) -> str:
        return render(families(self.samples(), self.node_labels, self.names))

    # -- HTTP ----------------------------------------------------------------------------------
    async def start(self, listen: str) -> int:
        host, _, port = listen.rpartition(":")
        bind = host.strip("[]") or None  # ":9401": every interface, as Prometheus exporters spell it
        try:
            self._server = await asyncio.start_server(self._handle, bind, int(port), limit=16 << 10)
        except OSError as err:
            raise ConfigError(f"prometheus.listen: cannot listen on {listen}: {err.strerror}; "
                              "choose a free port or address") from err
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("serving /metrics on %s (port %d)", listen, self.port)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return  # a client that sends no request (or a huge one) gets nothing
            status, headers, body = self._respond(head)
            writer.write(f"HTTP/1.1 {status}\r\n".encode()
                         + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
                         + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, head: bytes) -> tuple[str, dict[str, str], bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", {"Content-Length": "0"}, b""
        method, target = parts[0], parts[1].split("?", 1)[0]
        headers = {k.strip().lower(): v.strip() for k, sep, v in (ln.partition(":") for ln in lines[1:]) if sep}
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", {"Allow": "GET, HEAD", "Content-Length": "0"}, b""
        if target == "/metrics":
            self.scrapes += 1
            started = time.perf_counter()
            body, ctype = self.body().encode(), CONTENT_TYPE
            log.debug("scrape %d: %d bytes in %.1f ms", self.scrapes, len(body), (time.perf_counter() - started) * 1e3)
        elif target == "/":
            body = b'<html><body><h1>fleetmon agent</h1><p><a href="/metrics">/metrics</a></p></body></html>\n'
            ctype = "text/html; charset=utf-8"
        else:
            return "404 Not Found", {"Content-Type": "text/plain", "Content-Length": "10"}, b"not found\n"
        out = {"Content-Type": ctype}
        if "gzip" in headers.get("accept-encoding", "") and len(body) > 1024:
            body = gzip.compress(body, compresslevel=1)  # Prometheus asks for gzip; level 1 is cheap
            out["Content-Encoding"] = "gzip"
        out["Content-Length"] = str(len(body))
        return "200 OK", out, b"" if method == "HEAD" else body
