"""The collector's JSON API (``/api/v1/…``), read-only, on a :class:`~collector.view.CollectorView`.

Every parameter is checked before anything is read: a wrong value, an unknown parameter or
one given twice is a ``400`` whose JSON body names the parameter and what it accepts, never a
``500``. Unknown API paths answer ``404`` and other methods ``405``, in JSON too; a bug in a
handler answers a JSON ``500`` and logs its traceback once.

Times (``since``, ``until``) are unix seconds, RFC 3339 (``2024-05-01T12:00:00Z``), or a
duration meaning that long ago (``15m``, ``2h``).

| path | parameters | answer |
|---|---|---|
| ``/api/v1/summary`` | | fleet counters, nodes by health, accelerators by vendor and model, firing alerts |
| ``/api/v1/nodes`` | ``health`` | every node: health roll-up, reasons, accelerators up/total by vendor and model |
| ``/api/v1/nodes/{node}`` | | one node, its devices (accelerators) and its active alerts |
| ``/api/v1/alerts`` | ``state``, ``node`` | pending and firing alerts with their runbook ``action`` and ``for`` |
| ``/api/v1/alerts/transitions`` | ``since``, ``node``, ``limit`` | alert history: each state change, newest last |
| ``/api/v1/events`` | ``since``, ``limit`` | hardware events, newest first |
| ``/api/v1/query`` | ``selector`` or ``expr``, ``since``, ``until``, ``step`` | stored samples of the matching series |

With a query API configured (``query.url``: the shared TSDB, VictoriaMetrics), ``/api/v1/query``
reads from it, so it answers for every node of the fleet and a moved node's whole history (the
embedded store when the API does not answer); ``expr`` passes any PromQL through to it as a
range query (``step`` defaults to the range / 300).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from alerts.model import Alert, AlertState
from alerts.rulefile import AlertingRule
from collector.errors import StoreError
from collector.fleet import HEALTH_STATES, NodeHealth, fleet_by_model, node_health
from collector.promquery import QueryError
from collector.query import DEFAULT_POINTS, Selector, SeriesReader, iter_query, parse_selector
from collector.remote_read import promql_range
from collector.view import CollectorView, NodeRow
from fleetmon_common.settings import parse_duration

log = logging.getLogger("fleetmon.collector.http")

#: Samples per series an ``/api/v1/query`` answer holds at most without ``step`` (the oldest).
QUERY_POINTS = 10_000
#: Points per series a ``step`` may ask for at most (Prometheus's range-query bound).
MAX_STEPS = 11_000
MAX_EVENTS = 1000
MAX_TRANSITIONS = 1000


# --- JSON ---------------------------------------------------------------------------------------
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


# --- parameters ---------------------------------------------------------------------------------
class BadParameter(Exception):
    """A request parameter is wrong: answered 400 with the parameter named."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


def params(req: web.Request, allowed: Collection[str]) -> dict[str, str]:
    """The query parameters, each given at most once and each one this endpoint takes."""
    out: dict[str, str] = {}
    for key in req.query:
        if key not in allowed:
            takes = ", ".join(sorted(allowed)) if allowed else "no parameters"
            raise BadParameter(key, f"unknown parameter; {req.path} takes {takes}")
        values = req.query.getall(key)
        if len(values) > 1:
            raise BadParameter(key, "given more than once")
        out[key] = values[0]
    return out


def parse_time(name: str, text: str, now: float) -> float:
    """Unix seconds, RFC 3339, or a duration ago (``15m``)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise BadParameter(name, f"{text!r} is not a time (unix seconds, RFC 3339, or a duration ago like 15m)")
        return value
    if text[:1].isdigit() and ("T" in text or "-" in text[1:]):
        try:
            stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise BadParameter(name, f"{text!r} is not an RFC 3339 time (e.g. 2024-05-01T12:00:00Z)") from None
        if stamp.tzinfo is None:
            raise BadParameter(name, f"{text!r} has no time zone; end it with Z or +hh:mm")
        return stamp.timestamp()
    try:
        ago = parse_duration(text)
    except ValueError:
        raise BadParameter(name, f"{text!r} is not a time (unix seconds, RFC 3339 like 2024-05-01T12:00:00Z, "
                                 "or a duration ago like 15m)") from None
    if not math.isfinite(ago) or ago < 0:
        raise BadParameter(name, f"{text!r}: a duration ago must be finite and positive")
    return now - ago


def parse_count(name: str, text: str, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, f"{text!r} is not a whole number") from None
    if not 1 <= value <= maximum:
        raise BadParameter(name, f"{value} is out of range; give 1 to {maximum}")
    return value


def parse_choice(name: str, text: str, choices: Collection[str]) -> str:
    if text not in choices:
        raise BadParameter(name, f"{text!r} is not one of {', '.join(choices)}")
    return text


def parse_step(name: str, text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as err:
        raise BadParameter(name, str(err)) from None
    if not math.isfinite(value) or value <= 0:
        raise BadParameter(name, f"{text!r} must be a positive duration (e.g. 15s)")
    return value


# --- answers ------------------------------------------------------------------------------------
def rule_for(rules: Mapping[str, list[AlertingRule]], alert: Alert) -> float | None:
    """The ``for`` of the rule that made ``alert`` (seconds); None when no loaded rule is known
    by its name. Rules sharing a name are told apart by their literal labels."""
    candidates = rules.get(alert.name, [])
    if len({r.for_ms for r in candidates}) > 1:
        candidates = [r for r in candidates
                      if all(alert.labels.get(k) == getattr(t, "text", None) for k, t in r.labels.items())]
    return candidates[0].for_ms / 1000 if candidates else None


def rules_by_name(c: CollectorView) -> dict[str, list[AlertingRule]]:
    out: dict[str, list[AlertingRule]] = {}
    for r in c.alert_rules():
        out.setdefault(r.name, []).append(r)
    return out


def alert_dict(a: Alert, rules: Mapping[str, list[AlertingRule]]) -> dict[str, Any]:
    hold = rule_for(rules, a)
    return {
        "name": a.name, "state": a.state.value, "severity": a.labels.get("severity", ""), "node": a.node,
        "summary": a.annotations.get("summary", ""), "action": a.annotations.get("runbook_action", ""),
        "for": hold, "active_at": a.active_at, "fired_at": a.fired_at, "resolved_at": a.resolved_at,
        # When a pending alert fires if its condition holds on (None once firing, or unknown).
        "fires_at": a.active_at + hold if hold is not None and a.state == AlertState.PENDING else None,
        "value": finite(a.value), "labels": a.labels, "annotations": a.annotations,
    }


def node_dict(n: NodeRow, h: NodeHealth, now: float) -> dict[str, Any]:
    return {
        "node": n.node, "health": h.health, "reasons": list(h.reasons), "up": n.up, "connected": n.connected,
        "labels": n.labels, "samples": n.samples, "batches": n.batches,
        "last_seen": n.last_batch_at or None,
        "last_batch_age": round(now - n.last_batch_at, 1) if n.last_batch_at else None,
        "clock_skew": round(n.clock_skew, 3), "agent_version": n.agent_version,
        "plugins": [{"name": p.name, "enabled": p.enabled, "detail": p.detail} for p in n.plugins],
        "accelerators": [{"vendor": m.vendor, "model": m.model, "up": m.up, "total": m.total} for m in h.models],
        "alerts": {"firing": h.firing, "pending": h.pending},
    }


def summary(c: CollectorView) -> dict[str, Any]:
    now = time.time()
    rows = node_health(c, now)
    active = c.active_alerts()
    counters = c.counters()
    rules = rules_by_name(c)
    health = dict.fromkeys(HEALTH_STATES, 0)
    for _, h in rows:
        health[h.health] += 1
    return {
        "time": now,
        "nodes_total": len(rows),
        "nodes_up": sum(n.up for n, _ in rows),
        "health": health,
        "models": [{"vendor": m.vendor, "model": m.model, "nodes": dict(m.nodes), "up": m.up, "total": m.total}
                   for m in fleet_by_model(h for _, h in rows)],
        "samples_total": counters.samples,
        "samples_per_second": round(c.samples_per_second(), 1),
        "refused_total": counters.refused_batches + counters.refused_streams,
        "duplicates_total": counters.duplicates,
        "duplicate_samples": counters.duplicate_samples,
        "firing": [alert_dict(a, rules) for a in active if a.state == AlertState.FIRING],
        "pending": sum(1 for a in active if a.state == AlertState.PENDING),
    }


def downsample(values: list[list[float]], step: float) -> list[list[float]]:
    """The last sample of each ``step``-long slot (as a Prometheus range query steps over a
    series), for plots of long ranges."""
    out: list[list[float]] = []
    slot = None
    for point in values:
        s = math.floor(point[0] / step)
        if s == slot:
            out[-1] = point
        else:
            out.append(point)
            slot = s
    return out


# --- handlers -----------------------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def stream_query(req: web.Request, c: CollectorView, sel: Selector, since: float, until: float, *,
                       limit: int, step: float | None) -> web.StreamResponse:
    """A JSON array written series by series as the store yields them (on the collector's read
    thread): memory holds one node's answer and a few encoded series, whatever the query's size."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)

    def produce(reader: SeriesReader) -> None:
        try:
            for row in iter_query(reader, sel, since, until, limit):
                if step is not None:
                    row["values"] = downsample(row["values"], step)
                item = json.dumps(_clean(row), allow_nan=False).encode()
                asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
        finally:
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    done = asyncio.ensure_future(c.read_series(since, until, produce))
    await resp.prepare(req)
    await resp.write(b"[")
    sep = b""
    while (item := await queue.get()) is not None:
        await resp.write(sep + item)
        sep = b","
    await done
    await resp.write(b"]")
    await resp.write_eof()
    return resp


async def promql_query(c: CollectorView, expr: str, since: float, until: float, step: float) -> web.Response:
    """``expr`` through the query API; its errors (a PromQL mistake, the API away) are the caller's: 422/503."""
    if (until - since) / step > MAX_STEPS:
        raise BadParameter("step", f"gives more than {MAX_STEPS} points over this range")
    try:
        rows = await c.read_promql(lambda client: [_clean(r) for r in promql_range(client, expr, since, until, step)])
    except QueryError as err:
        status = 422 if "HTTP 4" in str(err) else 503
        return json_response({"error": str(err), "parameter": "expr"}, status=status)
    return json_response(rows)


def api_routes(c: CollectorView) -> list[web.RouteDef]:
    async def api_summary(req: web.Request) -> web.Response:
        params(req, ())
        return json_response(summary(c))

    async def api_nodes(req: web.Request) -> web.Response:
        p = params(req, ("health",))
        want = parse_choice("health", p["health"], HEALTH_STATES) if "health" in p else None
        now = time.time()
        return json_response([node_dict(n, h, now) for n, h in node_health(c, now)
                              if want is None or h.health == want])

    async def api_node(req: web.Request) -> web.Response:
        params(req, ())
        name = req.match_info["node"]
        now = time.time()
        found = [(n, h) for n, h in node_health(c, now) if n.node == name]
        if not found:
            return json_response({"error": f"node {name!r} is not known to this collector"}, status=404)
        [(n, h)] = found
        rules = rules_by_name(c)
        devices = [{"gpu": a.index, "uuid": a.uuid, "vendor": a.vendor, "model": a.model, "up": a.up,
                    "last_sample": a.ts} for a in c.accelerators(n.node, now, streaming=n.up)]
        alerts = [alert_dict(a, rules) for a in c.active_alerts() if a.node == name]
        return json_response({**node_dict(n, h, now), "devices": devices, "active_alerts": alerts})

    async def api_alerts(req: web.Request) -> web.Response:
        p = params(req, ("state", "node"))
        state = parse_choice("state", p["state"], ("pending", "firing")) if "state" in p else None
        node = p.get("node")
        rules = rules_by_name(c)
        return json_response([alert_dict(a, rules) for a in c.active_alerts()
                              if (state is None or a.state.value == state) and (node is None or a.node == node)])

    async def api_transitions(req: web.Request) -> web.Response:
        p = params(req, ("since", "node", "limit"))
        since = parse_time("since", p["since"], time.time()) if "since" in p else 0.0
        limit = parse_count("limit", p["limit"], MAX_TRANSITIONS) if "limit" in p else MAX_TRANSITIONS
        node = p.get("node")
        rules = rules_by_name(c)
        rows = [{"time": t.time, **alert_dict(t.alert, rules)} for t in c.transitions(since)
                if node is None or t.alert.node == node]
        return json_response(rows[-limit:])

    async def api_events(req: web.Request) -> web.Response:
        p = params(req, ("since", "limit"))
        now = time.time()
        since = parse_time("since", p["since"], now) if "since" in p else now - 3600
        limit = parse_count("limit", p["limit"], MAX_EVENTS) if "limit" in p else 200
        since_ms = int(since * 1000)
        return json_response(await c.read_store(lambda r: r.events(since_ms, limit)))

    async def api_query(req: web.Request) -> web.StreamResponse:
        p = params(req, ("selector", "expr", "since", "until", "step"))
        expr = p.get("expr", "").strip()
        if not expr and not p.get("selector", "").strip():
            raise BadParameter("selector", 'required, e.g. gpu_temperature_celsius{node="n1"} (or expr: any PromQL)')
        if expr and "selector" in p:
            raise BadParameter("expr", "give selector or expr, not both")
        now = time.time()
        since = parse_time("since", p["since"], now) if "since" in p else now - 600
        until = parse_time("until", p["until"], now) if "until" in p else now
        if since > until:
            raise BadParameter("since", "is after until")
        step = parse_step("step", p["step"]) if "step" in p else None
        if expr:
            return await promql_query(c, expr, since, until, step or max(1.0, (until - since) / DEFAULT_POINTS))
        try:
            sel = parse_selector(p["selector"])
        except ValueError as err:
            raise BadParameter("selector", str(err)) from None
        if step is None:
            return await stream_query(req, c, sel, since, until, limit=QUERY_POINTS, step=None)
        if (until - since) / step > MAX_STEPS:
            raise BadParameter("step", f"{p['step']} gives more than {MAX_STEPS} points over this range; "
                                       f"give at least {math.ceil((until - since) / MAX_STEPS)}s")
        # The whole range is read (no cap), so a long range is not cut to its oldest samples.
        return await stream_query(req, c, sel, since, until, limit=0, step=step)

    return [
        web.get("/api/v1/summary", api_summary), web.get("/api/v1/nodes", api_nodes),
        web.get("/api/v1/nodes/{node}", api_node), web.get("/api/v1/alerts", api_alerts),
        web.get("/api/v1/alerts/transitions", api_transitions), web.get("/api/v1/events", api_events),
        web.get("/api/v1/query", api_query),
    ]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under ``/api/``: a bad parameter is a 400, an unknown path a 404, another method a 405,
    all in JSON; a bug is a JSON 500 (and a traceback in the log, once per request)."""
    try:
        return await handler(request)
    except BadParameter as err:
        return json_response({"error": str(err), "parameter": err.parameter}, status=400)
    except StoreError as err:
        return json_response({"error": f"store unavailable: {err}"}, status=503)
    except web.HTTPException as err:
        if not request.path.startswith("/api/") or err.status < 400:
            raise
        return json_response({"error": f"{err.reason}: {request.method} {request.path}"}, status=err.status)
    except Exception:  # supervision boundary: one failing request must not take the API down
        if not request.path.startswith("/api/"):
            raise
        log.exception("HTTP %s %s failed", request.method, request.path_qs)
        return json_response({"error": "internal error (the collector's log has the details)"}, status=500)
