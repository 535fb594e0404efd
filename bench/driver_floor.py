"""The driver's share alone: the NVML calls the nvidia plugin makes, replayed bare at its cadence.

    .venv/bin/python bench/driver_floor.py --seconds 60                     # the fake NVML
    .venv/bin/python bench/driver_floor.py --seconds 60 --library pynvml    # a GPU node's driver

What the driver and its binding cost a node for the agent's questions, with no agent code at all:
a floor no agent that asks the same questions at the same rate goes below. ``bench_agent.py``
runs it (without ``--seconds``) beside the real agent and reads its CPU over the same window.

It builds the nvidia plugin on the binding (``--library``; for the fake, ``FAKENVML_NODE`` and
``FAKENVML_LATENCY_US`` as the agent sees them), lets it collect once (the static facts, and the
questions the GPUs do not answer, which the plugin then stops asking), records the calls of one
plain collection and of one with the detail questions, prints ``{"plain": N, "detail": M,
"period": P}`` and replays them once a second in one thread, the detail calls every P-th second:
for ``--seconds``, then it prints its CPU, or until stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.plugin import PluginContext
from agent.plugins.nvidia.plugin import NvidiaConfig, NvidiaPlugin

#: One recorded call: the driver function's name, the function, its arguments.
Call = tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]
RECORDER = "driver_floor_binding"  # the module name the plugin is given


class Recorder(types.ModuleType):
    """The NVML binding as the plugin sees it, each driver call appended to ``calls`` when set."""

    def __init__(self, binding: types.ModuleType) -> None:
        super().__init__(RECORDER)
        self.binding = binding
        self.calls: list[Call] | None = None

    def __getattr__(self, name: str) -> Any:  # only for what the instance itself lacks
        value = getattr(self.binding, name)
        if name.startswith("nvml") and callable(value) and not isinstance(value, type):
            return self._recording(name, value)
        if name == "_nvmlGetFunctionPointer":  # the C functions some callers reach directly
            return lambda symbol: self._recording(symbol, value(symbol))
        return value

    def _recording(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.calls is not None:
                self.calls.append((name, fn, args, kwargs))
            return fn(*args, **kwargs)

        return call


def record(library: str, detail_interval: float) -> tuple[list[Call], list[Call], list[NvidiaPlugin], Recorder]:
    """The calls of a plain collection and of one with the details, after a first collection.

    The plugins stay open: the recorded calls hold their handles (close them when done)."""
    recorder = Recorder(importlib.import_module(library))
    sys.modules[RECORDER] = recorder
    traces = []
    plugins = []
    # detail_interval 0 asks the details at every collection; the configured one only at the first.
    for interval in (detail_interval, 0.0):
        plugin = NvidiaPlugin(PluginContext(node="floor"),
                              NvidiaConfig(library=RECORDER, events=False, isolation="none",
                                           detail_interval=interval))
        plugins.append(plugin)
        plugin.discover()
        plugin.collect()
        recorder.calls = []
        plugin.collect()
        traces.append(recorder.calls)
        recorder.calls = None
    return traces[0], traces[1], plugins, recorder


def replay(calls: list[Call], error: type[BaseException]) -> None:
    for _name, fn, args, kwargs in calls:
        # An error is an answer the plugin expects (a MIG slot not found): it cost the call too.
        with contextlib.suppress(error):
            fn(*args, **kwargs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", default="tests.fakenvml", help="the NVML binding (pynvml on a GPU node)")
    ap.add_argument("--detail-interval", type=float, default=NvidiaConfig.detail_interval)
    ap.add_argument("--seconds", type=float, default=0.0,
                    help="run this long, then print the CPU (0: until stdin closes)")
    args = ap.parse_args()
    plain, detail, plugins, recorder = record(args.library, args.detail_interval)
    period = max(1, round(args.detail_interval))  # collections between two with the details
    print(json.dumps({"plain": len(plain), "detail": len(detail), "period": period}), flush=True)
    done = threading.Event()
    if args.seconds > 0:
        threading.Timer(args.seconds, done.set).start()
    else:
        def until_stdin_closes() -> None:
            sys.stdin.read()
            done.set()

        threading.Thread(target=until_stdin_closes, daemon=True).start()
    error = recorder.binding.NVMLError
    cpu0, start, i = time.process_time(), time.monotonic(), 0
    while not done.is_set():
        replay(detail if i % period == 0 else plain, error)
        i += 1
        done.wait(max(0.0, start + i - time.monotonic()))
    if args.seconds > 0:
        elapsed = time.monotonic() - start
        cpu = (time.process_time() - cpu0) / elapsed
        calls = (len(plain) * (period - 1) + len(detail)) / period
        print(f"{args.library}: {calls:.0f} NVML calls/s in one thread: CPU {cpu * 1e3:.2f} ms/s "
              f"= {cpu * 100:.3f} % of a core over {elapsed:.0f} s")
    for plugin in plugins:
        plugin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
