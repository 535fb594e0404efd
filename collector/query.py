"""``fleetmon query EXPR``: PromQL over the history, as Prometheus evaluates it.

At one time (``--at``, default now) or over a range (``--since [--until] [--step]``; times as
fleetmon_common/timespec.py reads them). Where the history comes from is
fleetmon/client.py's order: ``--url`` or ``--data-dir``, ``$FLEETMON_URL``, the running
collector, the default URL. Over HTTP the collector evaluates where the data is
(``/api/v1/query``, ``/api/v1/query_range``, in Prometheus's answer format); with a data dir
this process evaluates over the store (collector/queryengine.py) — the same engine either way,
so both print the same. Output: collector/queryout.py. A reader that goes away (``| head``)
ends the command quietly (fleetmon/cli.py).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from alerts.promql import ast
from alerts.promql.labels import Labels, from_map
from collector.errors import StoreError
from collector.history import HistoryError, HistoryReader
from collector.queryengine import (
    InstantVector,
    QueryError,
    RangeMatrix,
    Scalar,
    check_range,
    collect_matrix,
    instant_query,
    keeps_order,
    matrix_window,
    parse_query,
    range_query,
)
from collector.queryout import Points, Table, human, unit_of_expr
from fleetmon import client
from fleetmon_common import logs
from fleetmon_common.timespec import TimeSpecError, parse_step, parse_time

#: The default step gives about this many points over the range (as Prometheus's graph page).
DEFAULT_POINTS = 250
_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


@dataclass(frozen=True)
class Plan:
    text: str
    expr: ast.Expr
    at: float | None = None  # instant query
    start: float = 0.0  # range query (seconds)
    end: float = 0.0
    step: float = 0.0

    @property
    def is_range(self) -> bool:
        return self.at is None


def auto_step(seconds: float) -> float:
    """The smallest of 1s, 2s, 5s, 10s, 15s, 30s, 1m, … 1d giving at most DEFAULT_POINTS steps."""
    want = seconds / DEFAULT_POINTS
    return float(next((s for s in _NICE_STEPS if s >= want), math.ceil(want / 86400) * 86400))


def plan(args: argparse.Namespace, now: float) -> Plan:
    expr = parse_query(args.expr)
    if args.at is not None and (args.since or args.until or args.step):
        raise QueryError("--at is one instant; --since, --until and --step make a range: give one or the other")
    if args.since is None:
        if args.until or args.step:
            raise QueryError("--until and --step make a range query: give --since too (e.g. --since 2h)")
        at = now if args.at is None else _when("--at", args.at, now)
        return Plan(args.expr, expr, at=round(at, 3))
    start = round(_when("--since", args.since, now), 3)
    end = round(now if args.until is None else _when("--until", args.until, now), 3)
    if start > end:
        raise QueryError(f"--since {args.since} is after --until {args.until or 'now'}")
    try:
        step = auto_step(end - start) if args.step is None else parse_step(args.step)
    except TimeSpecError as err:
        raise QueryError(f"--step: {err}") from None
    if expr.type not in (ast.VECTOR, ast.SCALAR):
        raise QueryError(f"{args.expr!r} is a {expr.type}: query it at one time (without --since) to get its "
                         "samples, or wrap it in a function (e.g. rate(...))")
    s_ms, e_ms, st_ms = round(start * 1000), round(end * 1000), round(step * 1000)
    check_range(s_ms, e_ms, st_ms)
    # Steps are counted back from the end, so the newest step is --until (now): the last value
    # shown is the latest, not up to a step older. (Prometheus steps from start; same semantics.)
    s_ms = e_ms - (e_ms - s_ms) // st_ms * st_ms
    return Plan(args.expr, expr, start=s_ms / 1000, end=e_ms / 1000, step=st_ms / 1000)


def _when(flag: str, text: str, now: float) -> float:
    try:
        return parse_time(text, now)
    except TimeSpecError as err:
        raise QueryError(f"{flag}: {err}") from None


# --- where the answer comes from ---------------------------------------------------------------
class Sink:
    """The output: a table, or every point (collector/queryout.py)."""

    def __init__(self, out: TextIO, fmt: str, plan: Plan) -> None:
        self.table = Table(out, unit=unit_of_expr(plan.expr)) if fmt == "table" else None
        self.scalars = 0
        self.points = None if self.table is not None else Points(out, fmt)
        if plan.is_range and self.table is not None:
            self.table.range(plan.start, plan.end, plan.step)

    def window(self, start: float, end: float) -> None:
        if self.table is not None:
            self.table.range(start, end, None)

    def series(self, labels: Labels, ts: list[float], vals: list[float]) -> None:
        if self.table is not None:
            self.table.series(labels, ts, vals)
        else:
            assert self.points is not None
            self.points.series(labels, ts, vals)

    def vector(self, t: float, samples: list[tuple[Labels, float]], ordered: bool) -> None:
        if self.table is not None:
            self.table.vector(t, samples, ordered)
        else:
            assert self.points is not None
            self.points.vector(t, samples)

    def scalar(self, t: float, v: float | str, kind: str) -> None:
        if self.table is not None:
            self.table.out.write(f"{v}\n" if isinstance(v, str) else f"{human(v)}\n")
            self.scalars += 1
        else:
            assert self.points is not None
            self.points.scalar(t, v, kind)

    def finish(self) -> int:
        """Print what is held (the table); how many series (or scalars) there were."""
        if self.table is not None:
            return self.table.finish() + self.scalars
        assert self.points is not None
        return self.points.count


def run_local(hist: HistoryReader, p: Plan, sink: Sink) -> None:
    if p.is_range:
        steps = range_query(hist, p.expr, round(p.start * 1000), round(p.end * 1000), round(p.step * 1000))
        if sink.table is not None:
            for t, vec in steps:
                sink.table.step_values(t / 1000, vec)
            return
        for labels, m_ts, m_vals in collect_matrix(steps):
            sink.series(labels, [t / 1000 for t in m_ts], list(m_vals))
        return
    assert p.at is not None
    res = instant_query(hist, p.expr, round(p.at * 1000))
    if isinstance(res, RangeMatrix):
        sink.window(res.start_ms / 1000, res.end_ms / 1000)
        for labels, ts, vals in res.series:
            sink.series(labels, [t / 1000 for t in ts], list(vals))
    elif isinstance(res, InstantVector):
        sink.vector(res.t_ms / 1000, res.samples, res.ordered)
    elif isinstance(res, Scalar):
        sink.scalar(res.t_ms / 1000, res.value, "scalar")
    else:
        sink.scalar(res.t_ms / 1000, res.value, "string")


def run_http(api: client.Api, p: Plan, sink: Sink) -> None:
    if p.is_range:
        params = {"query": p.text, "start": f"{p.start:.3f}", "end": f"{p.end:.3f}", "step": f"{p.step:.3f}"}
        resp = api.open("/api/v1/query_range", params)
    else:
        assert p.at is not None
        resp = api.open("/api/v1/query", {"query": p.text, "time": f"{p.at:.3f}"})
    with resp:
        kind, items = prom_result(resp, api.url)
        if kind == "matrix":
            if not p.is_range:
                assert p.at is not None
                lo, hi = matrix_window(p.expr, round(p.at * 1000))
                sink.window(lo / 1000, hi / 1000)
            for item in items:
                values = item.get("values") or []
                sink.series(from_map(item.get("metric") or {}), [float(t) for t, _ in values],
                            [float(v) for _, v in values])
        elif kind == "vector":
            assert p.at is not None
            sink.vector(p.at, [(from_map(i.get("metric") or {}), float(i["value"][1])) for i in items],
                        keeps_order(p.expr))
        elif kind in ("scalar", "string"):
            [pair] = list(items)
            sink.scalar(float(pair[0]), float(pair[1]) if kind == "scalar" else str(pair[1]), kind)
        else:
            raise client.ApiError(f"{api.url}: unknown resultType {kind!r}")


_RESULT = re.compile(rb'"result"\s*:\s*\[')
_TYPE = re.compile(rb'"resultType"\s*:\s*"(\w+)"')
_DECODER = json.JSONDecoder()


def prom_result(resp: client.Readable, url: str) -> tuple[str, Iterator[Any]]:
    """A Prometheus API answer's ``resultType`` and its ``result`` items, parsed as they arrive
    (a long matrix is never held whole). An answer whose ``resultType`` follows ``result`` (not
    fleetmon's or Prometheus's order) is read whole."""
    buf = b""
    chunks = client.iter_chunks(resp)
    for chunk in chunks:
        buf += chunk
        m = _RESULT.search(buf)
        if m is not None:
            break
    else:
        m = None
    t = _TYPE.search(buf, 0, m.start() if m else len(buf))
    if m is None or t is None:
        rest = buf + b"".join(chunks)
        try:
            doc = json.loads(rest)
        except ValueError:
            raise client.ApiError(f"{url}: not a query API answer: {rest[:200]!r}") from None
        if not isinstance(doc, dict) or doc.get("status") != "success":
            why = doc.get("error") if isinstance(doc, dict) else None
            raise client.ApiError(f"{url}: the query failed: {why if why else repr(rest[:200])}")
        data = doc.get("data") or {}
        result = data.get("result")
        if data.get("resultType") in ("scalar", "string"):
            return str(data["resultType"]), iter([result])
        return str(data.get("resultType")), iter(result or [])
    kind = t.group(1).decode()
    if kind in ("scalar", "string"):
        doc = json.loads(buf + b"".join(chunks))
        return kind, iter([doc["data"]["result"]])
    return kind, _items(buf[m.end():].decode(), chunks, url)


def _items(text: str, chunks: Iterator[bytes], url: str) -> Iterator[Any]:
    """JSON values of an array whose ``[`` was consumed, as the text arrives."""
    pending = b""
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos < len(text) and text[pos] == "]":
            return
        try:
            item, end = _DECODER.raw_decode(text, pos)
        except ValueError:
            more = next(chunks, None)
            if more is None:
                raise client.ApiError(f"{url}: the answer ended early") from None
            pending += more
            try:
                fresh = pending.decode()
            except UnicodeDecodeError:
                continue  # a character split between chunks: wait for its rest
            pending = b""
            text, pos = text[pos:] + fresh, 0
            continue
        yield item
        pos = end


# --- the command --------------------------------------------------------------------------------
def describe_empty(p: Plan, where: str) -> str:
    when = (f"between {_clock(p.start)} and {_clock(p.end)}" if p.is_range else f"at {_clock(p.at or 0)}")
    return f"no data: {p.text} has no value {when} ({where})"


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def main(args: argparse.Namespace) -> int:
    logs.setup("warning")
    now = time.time()
    try:
        p = plan(args, now)
        target = client.resolve(args)
        sink = Sink(sys.stdout, args.format, p)
        if target.url is not None:
            api = client.Api.from_args(target.url, args)
            where = api.url
            run_http(api, p, sink)
        else:
            assert target.data_dir is not None
            from collector.history import EmbeddedHistory  # noqa: PLC0415 - numpy only when reading a store here

            hist = EmbeddedHistory(target.data_dir)
            where = hist.description
            try:
                run_local(hist, p, sink)
            finally:
                hist.close()
        shown = sink.finish()
    except (QueryError, client.ApiError, HistoryError, StoreError) as err:
        print(f"fleetmon query: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    sys.stdout.flush()
    if not shown:
        print(describe_empty(p, where), file=sys.stderr)
    return 0
