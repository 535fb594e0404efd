"""``fleetmon query``: read history with a PromQL selector, from the embedded store or, when a
query API is given (``--query-url``, or ``query.url`` of the collector config given with
``--config``), from the shared TSDB: the whole fleet and a moved node's whole history. With a
query API any PromQL expression passes through to it as a range query."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from collector.errors import CollectorError
from collector.promquery import PromQuerySync, QueryConfig
from collector.remote_read import RemoteReader, promql_range
from collector.storage.codec import F64, I64
from collector.storage.logreader import LogStoreReader
from collector.storage.sqlite import Matcher, SeriesRow
from fleetmon_common import logs
from fleetmon_common.settings import parse_duration

_NAME = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')


@dataclass
class Selector:
    name: str | None
    matchers: list[Matcher]


def _unquote(text: str) -> str:
    return json.loads(f'"{text}"')


def parse_selector(text: str) -> Selector:
    """``name{label="v", other=~"re.*"}``; errors say where the selector went wrong."""
    m = _NAME.match(text)
    assert m is not None
    name = m.group(1)
    pos = m.end()
    matchers: list[Matcher] = []
    if pos < len(text):
        if text[pos] != "{":
            raise ValueError(f"selector {text!r}: expected '{{' at column {pos + 1}")
        pos += 1
        if text[pos:].strip() == "}":
            pos = len(text)
        while pos < len(text):
            mm = _MATCHER.match(text, pos)
            if mm is None:
                raise ValueError(f"selector {text!r}: expected label=\"value\" at column {pos + 1}")
            label, op, value = mm.group(1), mm.group(2), _unquote(mm.group(3))
            if op in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as err:
                    raise ValueError(f"selector {text!r}: bad regular expression {value!r}: {err}") from err
            if label == "__name__" and op == "=":
                name = value
            else:
                matchers.append(Matcher(label, op, value))
            pos = mm.end()
            if mm.group(4) == "}":
                if text[pos:].strip():
                    raise ValueError(f"selector {text!r}: unexpected text after '}}' at column {pos + 1}")
                break
        else:
            raise ValueError(f"selector {text!r}: missing '}}'")
    if not name and not any(mt.op in ("=", "=~") and mt.value for mt in matchers):
        raise ValueError(f"selector {text!r}: give a metric name or at least one non-empty matcher")
    return Selector(name, matchers)


class SeriesReader(Protocol):
    """What a query reads through: the embedded store
    (:class:`collector.storage.logreader.LogStoreReader`) or the shared TSDB's query API
    (:class:`collector.remote_read.RemoteReader`)."""

    def find_series(self, name: str | None, matchers: Sequence[Matcher]) -> list[SeriesRow]: ...

    def query(self, series: Sequence[SeriesRow], since_ms: int, until_ms: int) -> Iterator[tuple[SeriesRow, I64, F64]]:
        ...


def iter_query(reader: SeriesReader, sel: Selector, since: float, until: float,
               limit: int = 0) -> Iterator[dict[str, Any]]:
    """Series by series (memory holds one node's answer at a time); ``limit`` points each."""
    series = reader.find_series(sel.name, sel.matchers)
    for s, ts, vals in reader.query(series, int(since * 1000), int(until * 1000)):
        n = limit or len(ts)
        yield {"name": s.name, "labels": s.labels,
               "values": [[t / 1000, v] for t, v in zip(ts[:n].tolist(), vals[:n].tolist(), strict=True)]}


def run_query(reader: SeriesReader, sel: Selector, since: float, until: float,
              limit: int = 0) -> list[dict[str, Any]]:
    return list(iter_query(reader, sel, since, until, limit))


def _fmt_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


#: Points a PromQL range query returns per series when no --step is given.
DEFAULT_POINTS = 300


def _sources(args: argparse.Namespace) -> tuple[str, Path]:
    """(query API url or "", embedded store dir): --query-url / $FLEETMON_QUERY_URL, --data-dir,
    else the collector config's ``query.url`` and ``data_dir``."""
    url = args.query_url or os.environ.get("FLEETMON_QUERY_URL", "")
    data_dir = args.data_dir
    if args.config is not None:
        from collector.config import load_config  # noqa: PLC0415 - the config's checks only when one is given

        cfg = load_config(args.config)
        url = url or cfg.query.url
        data_dir = data_dir or cfg.data_dir
    return url, Path(data_dir or Path(".fleetmon/demo"))


def _rows(args: argparse.Namespace, url: str, data_dir: Path, since: float,
          until: float) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]:
    """The answer's rows and how to close what they were read from."""
    try:
        sel: Selector | None = parse_selector(args.selector)
    except ValueError as err:
        if not url:
            raise ValueError(f"{err}; PromQL beyond a selector needs a query API (--query-url, or query.url in "
                             "the collector config given with --config)") from None
        sel = None
    if not url:
        reader = LogStoreReader(data_dir)
        return iter_query(reader, sel, since, until, args.limit) if sel else iter(()), reader.close
    client = PromQuerySync(QueryConfig(url=url))
    if sel is None:
        step = parse_duration(args.step) if args.step else max(1.0, (until - since) / DEFAULT_POINTS)
        return promql_range(client, args.selector, since, until, step), client.close
    return iter_query(RemoteReader(client, since, until), sel, since, until, args.limit), client.close


def main(args: argparse.Namespace) -> int:
    logs.setup("warning")
    try:
        url, data_dir = _sources(args)
        now = time.time()
        since = now - parse_duration(args.since)
        until = now - parse_duration(args.until) if args.until else now
        rows, close = _rows(args, url, data_dir, since, until)
    except (ValueError, CollectorError, FileNotFoundError) as err:
        print(f"fleetmon query: {err}", file=sys.stderr)
        return 2
    found = False
    w = csv.writer(sys.stdout)
    if args.format == "csv":
        w.writerow(["name", "labels", "time", "value"])
    # Printed series by series as the store (or the query API, node by node) yields them.
    try:
        for r in rows:
            found = True
            if args.format == "json":
                print(json.dumps(r))
            elif args.format == "csv":
                for t, v in r["values"]:
                    w.writerow([r["name"], _fmt_labels(r["labels"]), f"{t:.3f}", v])
            else:
                print(f"{r['name']}{_fmt_labels(r['labels'])}")
                for t, v in r["values"]:
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
                    print(f"  {stamp}.{int(t * 1000) % 1000:03d}  {v:g}")
    except CollectorError as err:
        print(f"fleetmon query: {err}", file=sys.stderr)
        return 2
    finally:
        close()
    if not found:
        print(f"no samples match {args.selector} in the last {args.since}", file=sys.stderr)
    return 0
