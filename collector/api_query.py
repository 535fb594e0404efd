"""The HTTP API's history: PromQL as Prometheus's query API serves it, and stored samples.

| path | parameters | answer |
|---|---|---|
| ``/api/v1/query`` | ``query``, ``time``, ``timeout`` | an instant query (Prometheus's format) |
| ``/api/v1/query_range`` | ``query``, ``start``, ``end``, ``step``, ``timeout`` | a range query (Prometheus's format) |
| ``/api/v1/query`` | ``selector``, ``since``, ``until``, ``step`` | stored samples (the dashboard's plots) |

``query`` answers are Prometheus's (``{"status": "success", "data": {"resultType": …,
"result": …}}``, values as strings; errors ``{"status": "error", "errorType": …, "error": …}``
with 400 for a bad parameter or expression, 422 when evaluation fails, 503 on timeout), so
``fleetmon query`` and any Prometheus API client read them; evaluated by
collector/queryengine.py on the collector's store thread. Times as collector/api.py takes
them; ``step`` a duration or seconds. ``selector`` answers are a JSON array of
``{"name", "labels", "values": [[t, v], …]}``, as before.

Answers are written series by series as they are encoded, off the event loop: memory holds
the answer's points (a range query's; bounded by queryengine.MAX_POINTS) or, for stored
samples and an instant query of a range selector, one node's series at a time.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import numpy as np
from aiohttp import web

from alerts.promql import ast
from alerts.promql.labels import NAME, Labels
from collector.api import BadParameter, _clean, json_response, params, parse_time
from collector.history import HistoryError, HistoryReader
from collector.queryengine import (
    MAX_STEPS,
    InstantVector,
    QueryError,
    RangeMatrix,
    Scalar,
    collect_matrix,
    instant_query,
    parse_query,
    range_query,
)
from collector.storage.logreader import LogStoreReader
from collector.view import CollectorView
from fleetmon_common.timespec import TimeSpecError, parse_step

#: Samples per series a ``selector`` answer holds at most without ``step`` (the oldest).
QUERY_POINTS = 10_000
#: A query's evaluation stops after this long (Prometheus's default ``query.timeout``).
QUERY_TIMEOUT = 120.0


# --- encoding -----------------------------------------------------------------------------------
def prom_float(v: float) -> str:
    """A value as Prometheus's API writes it (Go's ``FormatFloat(v, 'f', -1, 64)``): shortest
    round-trip digits, never an exponent; ``NaN``, ``+Inf``, ``-Inf``."""
    if math.isfinite(v):
        text = format(Decimal(repr(v)), "f")
        return text[:-2] if text.endswith(".0") else text
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")


def _metric(labels: Labels) -> dict[str, str]:
    return dict(labels)


def _encode_series(labels: Labels, ts: Any, vals: Any) -> bytes:
    return json.dumps({"metric": _metric(labels),
                       "values": [[t / 1000, prom_float(v)] for t, v in zip(ts, vals, strict=True)]}).encode()


def _encode_sample(labels: Labels, t_ms: int, v: float) -> bytes:
    return json.dumps({"metric": _metric(labels), "value": [t_ms / 1000, prom_float(v)]}).encode()


def prom_error(kind: str, message: str, status: int, parameter: str | None = None) -> web.Response:
    body: dict[str, Any] = {"status": "error", "errorType": kind, "error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return json_response(body, status=status)


# --- streaming off the event loop ---------------------------------------------------------------
Produce = Callable[[LogStoreReader], "Answer"]


async def stream_answer(req: web.Request, c: CollectorView, produce: Produce) -> web.StreamResponse:
    """Run ``produce`` on the store thread: it returns a head, the encoded items and a tail.
    Errors it raises before its first item (a bad query, a timeout, a full answer refused) come
    back here before anything is sent, so they get their own status; the items are written
    as the thread encodes them (a bounded queue between the two)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=8)

    def put(kind: str, value: Any) -> None:
        asyncio.run_coroutine_threadsafe(queue.put((kind, value)), loop).result()

    def run(reader: LogStoreReader) -> None:
        try:
            head, items, tail = produce(reader)
            first = next(items, None)
        except Exception as err:  # noqa: BLE001 - relayed to the request, which answers it or re-raises
            put("error", err)
            return
        put("head", head)
        try:
            sep = b""
            while first is not None:
                put("item", sep + first)
                sep = b","
                first = next(items, None)
            put("tail", tail)
        except Exception as err:  # noqa: BLE001 - relayed to the request, which re-raises it
            put("failed", err)

    done = asyncio.ensure_future(c.read_store(run))
    kind, value = await queue.get()
    if kind == "error":
        await done
        raise value
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(req)
    await resp.write(value)
    while True:
        kind, value = await queue.get()
        if kind == "item":
            await resp.write(value)
        elif kind == "tail":
            await resp.write(value)
            break
        else:  # failed midway: the status is sent; end the body short so no client takes it as whole
            await done
            raise value
    await done
    await resp.write_eof()
    return resp


# --- PromQL -------------------------------------------------------------------------------------
def _expr(p: dict[str, str]) -> ast.Expr:
    text = p.get("query", "")
    try:
        return parse_query(text)
    except QueryError as err:
        raise BadParameter("query", str(err)) from None


def _timeout(p: dict[str, str]) -> float:
    if "timeout" not in p:
        return QUERY_TIMEOUT
    try:
        return min(QUERY_TIMEOUT, parse_step(p["timeout"]))
    except TimeSpecError as err:
        raise BadParameter("timeout", str(err)) from None


def _head(kind: str) -> bytes:
    return b'{"status":"success","data":{"resultType":"' + kind.encode() + b'","result":['


_TAIL = b"]}}"


Answer = tuple[bytes, Iterator[bytes], bytes]


def instant_answer(hist: HistoryReader, expr: ast.Expr, t_ms: int, timeout: float) -> Answer:
    res = instant_query(hist, expr, t_ms, timeout=timeout)
    if isinstance(res, RangeMatrix):
        # An empty answer still needs its first item fetched to find out: kept lazy.
        return _head("matrix"), (_encode_series(lb, ts, vals) for lb, ts, vals in res.series), _TAIL
    if isinstance(res, InstantVector):
        return _head("vector"), (_encode_sample(lb, res.t_ms, v) for lb, v in res.samples), _TAIL
    kind = "scalar" if isinstance(res, Scalar) else "string"
    shown = prom_float(res.value) if isinstance(res, Scalar) else str(res.value)
    return (b'{"status":"success","data":{"resultType":"' + kind.encode() + b'","result":',
            iter([json.dumps([res.t_ms / 1000, shown]).encode()]), b"}}")


def range_answer(hist: HistoryReader, expr: ast.Expr, start_ms: int, end_ms: int, step_ms: int, *,
                 timeout: float) -> Answer:
    series = collect_matrix(range_query(hist, expr, start_ms, end_ms, step_ms, timeout=timeout))
    return _head("matrix"), (_encode_series(lb, ts, vals) for lb, ts, vals in series), _TAIL


async def _evaluate(req: web.Request, c: CollectorView, produce: Produce) -> web.StreamResponse:
    try:
        return await stream_answer(req, c, produce)
    except QueryError as err:
        timed_out = "timed out" in str(err)
        return prom_error("timeout" if timed_out else "execution", str(err), 503 if timed_out else 422)
    except HistoryError as err:
        return prom_error("unavailable", str(err), 503)


def promql_instant(c: CollectorView) -> Callable[[web.Request, dict[str, str]], Any]:
    async def handler(req: web.Request, p: dict[str, str]) -> web.StreamResponse:
        expr = _expr(p)
        t = parse_time("time", p["time"], time.time()) if "time" in p else time.time()
        timeout = _timeout(p)
        t_ms = round(t * 1000)
        return await _evaluate(req, c, lambda r: instant_answer(c.history(r), expr, t_ms, timeout))

    return handler


def promql_range(c: CollectorView) -> Callable[[web.Request], Any]:
    async def handler(req: web.Request) -> web.StreamResponse:
        try:
            p = params(req, ("query", "start", "end", "step", "timeout"))
            for key in ("query", "start", "end", "step"):
                if not p.get(key, "").strip():
                    raise BadParameter(key, "required (query_range takes query, start, end and step)")
            expr = _expr(p)
            now = time.time()
            start, end = parse_time("start", p["start"], now), parse_time("end", p["end"], now)
            if end < start:
                raise BadParameter("end", "is before start")
            try:
                step = parse_step(p["step"])
            except TimeSpecError as err:
                raise BadParameter("step", str(err)) from None
            if (end - start) / step >= MAX_STEPS:
                raise BadParameter("step", f"more than {MAX_STEPS} points per series; give at least "
                                           f"{math.ceil((end - start) / (MAX_STEPS - 1))}s")
            if expr.type not in (ast.VECTOR, ast.SCALAR):
                raise BadParameter("query", f"invalid expression type {expr.type!r} for range query, "
                                            "must be scalar or instant vector")
            timeout = _timeout(p)
        except BadParameter as err:
            return prom_error("bad_data", str(err), 400, err.parameter)
        s_ms, e_ms, st_ms = round(start * 1000), round(end * 1000), round(step * 1000)
        return await _evaluate(req, c, lambda r: range_answer(c.history(r), expr, s_ms, e_ms, st_ms, timeout=timeout))

    return handler


# --- stored samples (the dashboard) -------------------------------------------------------------
def selector(text: str) -> ast.VectorSelector:
    try:
        expr = parse_query(text)
    except QueryError as err:
        raise BadParameter("selector", str(err)) from None
    if not isinstance(expr, ast.VectorSelector) or expr.offset_ms or expr.at:
        raise BadParameter("selector", f"{text!r} is not a series selector like gpu_temperature_celsius"
                                       '{node="n1"}; for an expression use query=')
    return expr


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


def stored_samples(hist: HistoryReader, sel: ast.VectorSelector, since: float, until: float, *,
                   limit: int, step: float | None) -> Iterator[bytes]:
    for s in hist.select(sel.matchers, int(since * 1000), int(until * 1000)):
        labels = dict(s.labels)
        name = labels.pop(NAME, "")
        n = limit or len(s.ts_ms)
        ts, vals = np.asarray(s.ts_ms)[:n].tolist(), np.asarray(s.values)[:n].tolist()
        values = [[t / 1000, v] for t, v in zip(ts, vals, strict=True)]
        if step is not None:
            values = downsample(values, step)
        yield json.dumps(_clean({"name": name, "labels": labels, "values": values}), allow_nan=False).encode()


def query_routes(c: CollectorView) -> list[web.RouteDef]:
    instant = promql_instant(c)

    async def api_query(req: web.Request) -> web.StreamResponse:
        p = params(req, ("query", "time", "timeout", "selector", "since", "until", "step"))
        if "query" in p:
            extra = sorted(set(p) - {"query", "time", "timeout"})
            try:
                if extra:
                    raise BadParameter(extra[0], "goes with selector=, not with query= (a PromQL instant query "
                                                 "takes time; ranges: /api/v1/query_range)")
                return await instant(req, p)
            except BadParameter as err:
                return prom_error("bad_data", str(err), 400, err.parameter)
        if "selector" in p and not p["selector"].strip():
            raise BadParameter("selector", 'empty; give a series selector, e.g. gpu_temperature_celsius{node="n1"}')
        if "selector" not in p:
            raise BadParameter("query", 'required: a PromQL expression (query=), or a series selector (selector=), '
                                        'e.g. gpu_temperature_celsius{node="n1"}')
        sel = selector(p["selector"])
        now = time.time()
        since = parse_time("since", p["since"], now) if "since" in p else now - 600
        until = parse_time("until", p["until"], now) if "until" in p else now
        if since > until:
            raise BadParameter("since", "is after until")
        step = None
        if "step" in p:
            try:
                step = parse_step(p["step"])
            except TimeSpecError as err:
                raise BadParameter("step", str(err)) from None
            if (until - since) / step > MAX_STEPS:
                raise BadParameter("step", f"{p['step']} gives more than {MAX_STEPS} points over this range; "
                                           f"give at least {math.ceil((until - since) / MAX_STEPS)}s")
        # With a step the whole range is read (no cap), so a long range is not cut to its oldest samples.
        limit = 0 if step is not None else QUERY_POINTS
        return await stream_answer(req, c, lambda r: (b"[", stored_samples(c.history(r), sel, since, until,
                                                                           limit=limit, step=step), b"]"))

    return [web.get("/api/v1/query", api_query), web.get("/api/v1/query_range", promql_range(c))]
