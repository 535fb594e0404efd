"""The collector's JSON API (``/api/v1/…``), read-only, on a :class:`~collector.view.CollectorView`.

Every parameter is checked before anything is read: a wrong value, an unknown parameter or
one given twice is a ``400`` whose JSON body names the parameter and what it accepts, never a
``500``. Unknown API paths answer ``404`` and other methods ``405``, in JSON too; a bug in a
handler answers a JSON ``500`` and logs its traceback once.

Times (``since``, ``until``, ``time``, ``start``, ``end``) are unix seconds, RFC 3339
(``2024-05-01T12:00:00Z``), ``now``, or a duration meaning that long ago (``15m``, ``2h``)
(fleetmon_common/timespec.py; the local-time forms of the command line are refused here).

| path | parameters | answer |
|---|---|---|
| ``/api/v1/summary`` | | fleet counters, nodes by health, accelerators by vendor and model, firing alerts |
| ``/api/v1/nodes`` | ``health`` | every node: health roll-up, reasons, accelerators up/total by vendor and model |
| ``/api/v1/nodes/{node}`` | | one node, its devices (accelerators) and its active alerts |
| ``/api/v1/alerts`` | ``state``, ``node`` | pending and firing alerts with their runbook ``action`` and ``for`` |
| ``/api/v1/alerts/transitions`` | ``since``, ``node``, ``limit`` | alert history: each state change, newest last |
| ``/api/v1/events`` | ``since``, ``limit`` | hardware events, newest first |
| ``/api/v1/query`` | ``query``, ``time`` | PromQL, an instant query (Prometheus format) |
| ``/api/v1/query_range`` | ``query``, ``start``, ``end``, ``step`` | PromQL, a range query (Prometheus format) |
| ``/api/v1/query`` | ``selector``, ``since``, ``until``, ``step`` | stored samples of the matching series |

The last three are in collector/api_query.py.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from alerts.model import Alert, AlertState
from alerts.rulefile import AlertingRule
from collector.errors import StoreError
from collector.fleet import HEALTH_STATES, NodeHealth, fleet_by_model, node_health
from collector.view import CollectorView, NodeRow
from fleetmon_common import timespec

log = logging.getLogger("fleetmon.collector.http")

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
    """Unix seconds, RFC 3339, ``now`` or a duration ago (``15m``)."""
    try:
        return timespec.parse_time(text, now, local=False, bare_floor=0)
    except timespec.TimeSpecError as err:
        raise BadParameter(name, str(err)) from None


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


# --- handlers -----------------------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def api_routes(c: CollectorView) -> list[web.RouteDef]:
    # collector/api_query.py builds on this module's parameter rules: imported here, not at the top.
    from collector.api_query import query_routes  # noqa: PLC0415

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

    return [
        web.get("/api/v1/summary", api_summary), web.get("/api/v1/nodes", api_nodes),
        web.get("/api/v1/nodes/{node}", api_node), web.get("/api/v1/alerts", api_alerts),
        web.get("/api/v1/alerts/transitions", api_transitions), web.get("/api/v1/events", api_events),
        *query_routes(c),
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
