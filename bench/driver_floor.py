"""The driver's share alone: the NVML calls the nvidia plugin makes, replayed bare at its cadence.

    .venv/bin/python bench/driver_floor.py [--detail-interval 10]

``bench_agent.py`` runs this beside the real agent and reads its CPU over the same window: what the
(fake) driver and its binding cost a node for the agent's questions, with no agent code at all.

It builds the nvidia plugin on the fake NVML (``FAKENVML_NODE``, ``FAKENVML_LATENCY_US`` as the
agent sees them), lets it collect once (the static facts, and the questions the GPUs do not answer,
which the plugin then stops asking), records the calls of one plain collection and of one with the
detail questions, prints ``{"plain": N, "detail": M, "period": P}`` and replays them once a second
in one thread, the detail calls every P-th second, until stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tests.fakenvml as fake
from agent.plugin import PluginContext
from agent.plugins.nvidia.plugin import NvidiaConfig, NvidiaPlugin

Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def record(detail_interval: float) -> tuple[list[Call], list[Call], list[NvidiaPlugin]]:
    """The calls of a plain collection and of one with the details, after a first collection."""
    fake.reset()
    traces = []
    plugins = []
    # detail_interval 0 asks the details at every collection; the configured one only at the first.
    for interval in (detail_interval, 0.0):
        plugin = NvidiaPlugin(PluginContext(node="floor"),
                              NvidiaConfig(library="tests.fakenvml", events=False, isolation="none",
                                           detail_interval=interval))
        plugin.discover()
        plugin.collect()
        fake.state.trace = []
        plugin.collect()
        traces.append(fake.state.trace)
        fake.state.trace = None
        plugins.append(plugin)  # kept open: the recorded calls hold its handles
    return traces[0], traces[1], plugins


def replay(calls: list[Call]) -> None:
    for fn, args, kwargs in calls:
        # An error is an answer the plugin expects (a MIG slot not found): it cost the call too.
        with contextlib.suppress(fake.NVMLError):
            fn(*args, **kwargs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detail-interval", type=float, default=NvidiaConfig.detail_interval)
    args = ap.parse_args()
    plain, detail, plugins = record(args.detail_interval)
    period = max(1, round(args.detail_interval))  # collections between two with the details
    print(json.dumps({"plain": len(plain), "detail": len(detail), "period": period}), flush=True)
    done = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    start, i = time.monotonic(), 0
    while not done.is_set():
        replay(detail if i % period == 0 else plain)
        i += 1
        done.wait(max(0.0, start + i - time.monotonic()))
    for plugin in plugins:
        plugin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
