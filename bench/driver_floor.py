"""The driver's share alone: the NVML calls the nvidia plugin makes, replayed bare at its cadence.

    .venv/bin/python bench/driver_floor.py --seconds 60                     # the fake NVML
    .venv/bin/python bench/driver_floor.py --seconds 60 --library pynvml    # a GPU node's driver

What the driver and its binding cost a node for the agent's questions, with no agent code at all:
a floor no agent that asks the same questions at the same rate goes below. ``bench_agent.py``
runs it (without ``--seconds``) beside the real agent and reads its CPU over the same window.

It builds the nvidia plugin on the binding (``--library``; for the fake, ``FAKENVML_NODE`` and
``FAKENVML_LATENCY_US`` as the agent sees them), lets it collect once (the static facts, and the
questions the GPUs do not answer, which the plugin then stops asking), records the calls of one
plain collection, of one with the detail questions and of one with the details and the NVLink
CRC counters no field id covers, prints their counts, cadence and calls a second (``{"plain": N,
"detail": M, "crc": K, "period": P, "crc_period": Q, "per_second": R}``) and replays them once a
second in one thread, the details every P-th second, the CRC counters every Q-th: for
``--seconds``, then it prints its CPU, or until stdin closes.

``--per-call N`` prints instead what each question costs: every recorded call timed alone over N
rounds (wall and CPU per call, and CPU a second at the plugin's cadence), then each field of the
field-value request asked alone, with the time the driver itself reports for it (nvml.h
``nvmlFieldValue_t.latencyUsec``). On a GPU node this says which questions to drop, batch or ask
less often. (With GSP firmware, as on H100 and H200, the kernel driver waits for the GSP's answer
to a call in a spin loop, so there a call's CPU is about its wall time.)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import threading
import time
import types
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class Traces:
    """The calls of the plugin's three kinds of collection, and how often each comes."""

    plain: list[Call]
    detail: list[Call]  # with the detail questions, not the CRC counters without a field id
    crc: list[Call]  # with both
    period: int  # seconds between collections with the details (at 1 Hz)
    crc_period: int  # seconds between those that also read the CRC counters (a multiple of period)
    plugins: list[NvidiaPlugin]  # open: the recorded calls hold their handles (close them when done)
    recorder: Recorder

    def at(self, second: int) -> list[Call]:
        """The calls of the collection at ``second`` (0: the first, with everything)."""
        if second % self.crc_period == 0:
            return self.crc
        return self.detail if second % self.period == 0 else self.plain

    def rates(self) -> dict[str, float]:
        """Calls a second of each driver function at the plugin's cadence."""
        rate: dict[str, float] = defaultdict(float)
        for trace, share in ((self.plain, 1 - 1 / self.period), (self.detail, 1 / self.period - 1 / self.crc_period),
                             (self.crc, 1 / self.crc_period)):
            for name, *_ in trace:
                rate[name] += share
        return rate

    def per_second(self) -> float:
        return sum(self.rates().values())

    def close(self) -> None:
        for plugin in self.plugins:
            plugin.close()


def record(library: str, detail_interval: float, crc_interval: float) -> Traces:
    """The calls of a plain collection, of one with the details and of one with the details and the
    NVLink CRC counters without a field id, each recorded after a first collection (which reads the
    static facts and learns what the GPUs do not answer)."""
    recorder = Recorder(importlib.import_module(library))
    sys.modules[RECORDER] = recorder
    traces = []
    plugins = []
    # detail_interval 0 asks the details at every collection, nvlink_crc_interval 0 the CRC
    # counters at every detailed one; the configured (or a day) only at the first.
    for detail, crc in ((detail_interval, crc_interval), (0.0, 86400.0), (0.0, 0.0)):
        plugin = NvidiaPlugin(PluginContext(node="floor"),
                              NvidiaConfig(library=RECORDER, events=False, isolation="none",
                                           detail_interval=detail, nvlink_crc_interval=crc))
        plugins.append(plugin)
        plugin.discover()
        plugin.collect()
        recorder.calls = []
        plugin.collect()
        traces.append(recorder.calls)
        recorder.calls = None
    period = max(1, round(detail_interval))  # collections between two with the details
    crc_period = period * max(1, math.ceil(crc_interval / period))
    return Traces(traces[0], traces[1], traces[2], period, crc_period, plugins, recorder)


def replay(calls: list[Call], error: type[BaseException]) -> None:
    for _name, fn, args, kwargs in calls:
        # An error is an answer the plugin expects (a MIG slot not found): it cost the call too.
        with contextlib.suppress(error):
            fn(*args, **kwargs)


@dataclass
class CallCost:
    """One driver function, or one field of the field-value request asked alone."""

    name: str
    per_second: float  # how often the plugin asks it, at its cadence (0 for a field alone)
    wall_us: float  # per call
    cpu_us: float  # per call, the calling thread's
    answered: bool = True
    driver_us: float | None = None  # a field's latencyUsec, as the driver reports it


def _timed(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
           error: type[BaseException]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        answer = fn(*args, **kwargs)
    except error:
        answer = None
    return time.perf_counter() - wall, time.thread_time() - cpu, answer


def per_call(traces: Traces, rounds: int) -> tuple[list[CallCost], list[CallCost]]:
    """Each function of the fullest trace (a superset of the others) timed call by call, and
    each field of the first GPU's field-value request asked alone."""
    recorder, detail = traces.recorder, traces.crc
    error = recorder.binding.NVMLError
    rate = traces.rates()
    spent: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # calls, wall s, CPU s
    for _ in range(rounds):
        for name, fn, args, kwargs in detail:
            wall, cpu, _answer = _timed(fn, args, kwargs, error)
            entry = spent[name]
            entry[0] += 1
            entry[1] += wall
            entry[2] += cpu
    calls = [CallCost(name, rate[name], w / n * 1e6, c / n * 1e6) for name, (n, w, c) in spent.items()]
    calls.sort(key=lambda cost: -cost.per_second * cost.cpu_us)
    names = {value: key for key, value in vars(recorder.binding).items()
             if key.startswith("NVML_FI_DEV_") and isinstance(value, int)}
    fields: list[CallCost] = []
    request = next((args for name, _fn, args, _kw in detail if name == "nvmlDeviceGetFieldValues"), None)
    if request is not None:
        handle, array = request[0], getattr(request[2], "_obj", request[2])  # byref(array) or the array
        keys = [(int(entry.fieldId), int(entry.scopeId)) for entry in array]
        scoped = {fid for fid, n in Counter(fid for fid, _scope in keys).items() if n > 1}  # asked per link
        for key in keys:
            wall = cpu = latency = 0.0
            answered = True
            for _ in range(rounds):
                w, c, answer = _timed(recorder.binding.nvmlDeviceGetFieldValues, (handle, [key]), {}, error)
                wall, cpu = wall + w, cpu + c
                answered = answer is not None and int(answer[0].nvmlReturn) == 0
                latency += int(answer[0].latencyUsec) if answered else 0
            label = names.get(key[0], str(key[0])) + (f" scope {key[1]}" if key[0] in scoped else "")
            fields.append(CallCost(label, 0.0, wall / rounds * 1e6, cpu / rounds * 1e6, answered,
                                   latency / rounds if answered else None))
    return calls, fields


def print_per_call(library: str, rounds: int, traces: Traces, calls: list[CallCost], fields: list[CallCost]) -> None:
    print(f"\n{library}: each question timed alone ({rounds} rounds); calls/s at the plugin's cadence (plain "
          f"every second, the details every {traces.period} s, the NVLink CRC counters without a field id "
          f"every {traces.crc_period} s)")
    print(f"  {'function':48s} {'calls/s':>8s} {'wall us':>9s} {'CPU us':>8s} {'CPU ms/s':>9s}")
    for cost in calls:
        print(f"  {cost.name:48s} {cost.per_second:8.1f} {cost.wall_us:9.1f} {cost.cpu_us:8.1f} "
              f"{cost.per_second * cost.cpu_us / 1e3:9.2f}")
    total = sum(cost.per_second * cost.cpu_us for cost in calls) / 1e3
    print(f"  {'all':48s} {sum(cost.per_second for cost in calls):8.1f} {'':9s} {'':8s} {total:9.2f}")
    if fields:
        print("\n  each field of the first GPU's field-value request, asked alone (driver: its latencyUsec):")
        print(f"  {'field':48s} {'wall us':>9s} {'CPU us':>8s} {'driver us':>10s}")
        for cost in fields:
            driver = f"{cost.driver_us:10.1f}" if cost.driver_us is not None else f"{'not answered':>10s}"
            print(f"  {cost.name:48s} {cost.wall_us:9.1f} {cost.cpu_us:8.1f} {driver}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", default="tests.fakenvml", help="the NVML binding (pynvml on a GPU node)")
    ap.add_argument("--detail-interval", type=float, default=NvidiaConfig.detail_interval)
    ap.add_argument("--nvlink-crc-interval", type=float, default=NvidiaConfig.nvlink_crc_interval)
    ap.add_argument("--seconds", type=float, default=0.0,
                    help="run this long, then print the CPU (0: until stdin closes)")
    ap.add_argument("--per-call", type=int, default=0, metavar="ROUNDS",
                    help="print what each call and each field costs, timed over ROUNDS rounds, and stop")
    args = ap.parse_args()
    traces = record(args.library, args.detail_interval, args.nvlink_crc_interval)
    if args.per_call > 0:
        calls, fields = per_call(traces, args.per_call)
        print_per_call(args.library, args.per_call, traces, calls, fields)
        traces.close()
        return 0
    print(json.dumps({"plain": len(traces.plain), "detail": len(traces.detail), "crc": len(traces.crc),
                      "period": traces.period, "crc_period": traces.crc_period,
                      "per_second": traces.per_second()}), flush=True)
    done = threading.Event()
    if args.seconds > 0:
        threading.Timer(args.seconds, done.set).start()
    else:
        def until_stdin_closes() -> None:
            sys.stdin.read()
            done.set()

        threading.Thread(target=until_stdin_closes, daemon=True).start()
    error = traces.recorder.binding.NVMLError
    cpu0, start, i = time.process_time(), time.monotonic(), 0
    while not done.is_set():
        replay(traces.at(i), error)
        i += 1
        done.wait(max(0.0, start + i - time.monotonic()))
    if args.seconds > 0:
        elapsed = time.monotonic() - start
        cpu = (time.process_time() - cpu0) / elapsed
        print(f"{args.library}: {traces.per_second():.0f} NVML calls/s in one thread: CPU {cpu * 1e3:.2f} ms/s "
              f"= {cpu * 100:.3f} % of a core over {elapsed:.0f} s")
    traces.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
