"""``fleetmon query``: read history from the embedded store with a PromQL-style selector."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.errors import StoreError
from collector.storage.logreader import LogStoreReader
from collector.storage.sqlite import Matcher
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


def iter_query(reader: LogStoreReader, sel: Selector, since: float, until: float,
               limit: int = 0) -> Iterator[dict[str, Any]]:
    """Series by series (memory holds one node's answer at a time); ``limit`` points each."""
    series = reader.find_series(sel.name, sel.matchers)
    for s, ts, vals in reader.query(series, int(since * 1000), int(until * 1000)):
        n = limit or len(ts)
        yield {"name": s.name, "labels": s.labels,
               "values": [[t / 1000, v] for t, v in zip(ts[:n].tolist(), vals[:n].tolist(), strict=True)]}


def run_query(reader: LogStoreReader, sel: Selector, since: float, until: float,
              limit: int = 0) -> list[dict[str, Any]]:
    return list(iter_query(reader, sel, since, until, limit))


def _fmt_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def main(args: argparse.Namespace) -> int:
    logs.setup("warning")
    data_dir = Path(args.data_dir or Path(".fleetmon/demo"))
    try:
        sel = parse_selector(args.selector)
        now = time.time()
        since = now - parse_duration(args.since)
        until = now - parse_duration(args.until) if args.until else now
        reader = LogStoreReader(data_dir)
    except (ValueError, StoreError, FileNotFoundError) as err:
        print(f"fleetmon query: {err}", file=sys.stderr)
        return 2
    found = False
    w = csv.writer(sys.stdout)
    if args.format == "csv":
        w.writerow(["name", "labels", "time", "value"])
    # Printed series by series as the store yields them: memory stays bounded.
    for r in iter_query(reader, sel, since, until, args.limit):
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
    if not found:
        print(f"no samples match {args.selector} in the last {args.since}", file=sys.stderr)
    return 0
