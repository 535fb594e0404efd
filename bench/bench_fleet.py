"""Load generator: N virtual agents against a real collector, per step of N.

Each virtual agent is one node: its own gRPC channel (one TCP connection: local subchannel
pool), a Hello, then one batch per ``--interval`` with ``--series`` samples (one block), sent
as pre-encoded wire bytes (bench/fleetdata.py: the simulated plugin's series and values).
Nodes start at phases spread over the interval, as a real fleet's agents do. Like a real agent,
a node keeps every unacked batch and resends it after a reconnect (from the Welcome's durable
sequence), so a reconnect storm (``--storm``) can be checked for loss.

The generator runs in ``--procs`` processes and reports its own CPU, so it is seen not to be
the bottleneck. For every step it prints: accepted samples/s, collector CPU (cores, and
CPU-seconds per million samples, all its processes), ack latency p50/p99 (batch written →
ack read, for batches sent in the measured window), collector RSS (all its processes), and
the generator's CPU. Everything is bounded in time.

    .venv/bin/python bench/bench_fleet.py --nodes 100,200,300 --duration 30
    .venv/bin/python bench/bench_fleet.py --nodes 2500 --rules none --storm

The machine is shared: compare steps and configurations from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import psutil
from fleetdata import Profile

from alerts.rules import default_rule_files
from collector.storage.logreader import LogStoreReader
from proto import telemetry_pb2 as pb
from tests.fleet import CollectorProc

METHOD = "/fleetmon.v1.Telemetry/Stream"
CHANNEL_OPTIONS = [
    # One TCP connection per node, as with real agents (channels with equal arguments would
    # otherwise share a subchannel from grpc's global pool).
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_send_message_length", 16 << 20),
    ("grpc.enable_retries", 0),
]


@dataclass
class Sent:
    at: float  # monotonic, when written
    ts_ms: int
    k: int  # frame index


@dataclass
class Agent:
    node: str
    profile: Profile
    phase: float
    seq: int = 0
    unacked: dict[int, Sent] = field(default_factory=dict)
    durable: int = 0
    connected_at: float = 0.0
    first_ack_after_connect: float = 0.0
    sessions: int = 0
    errors: int = 0
    refused: int = 0
    acked_batches: int = 0
    task: asyncio.Task[None] | None = None


class Worker:
    """One generator process: a share of the nodes, one asyncio loop."""

    def __init__(self, addr: str, names: list[str], series: int, interval: float, profiles: int) -> None:
        self.addr = addr
        self.names = names
        self.interval = interval
        self.profiles = [Profile(f"profile-{i}", series, interval) for i in range(profiles)]
        self.series = series
        self.agents: dict[str, Agent] = {}
        self.t0 = time.time()  # frame clock: frame k covers [t0 + k*interval, ...)
        self.window = (math.inf, math.inf)
        self.latencies: list[float] = []
        self.window_sent = 0
        self.window_acked_samples = 0

    def frame(self, now: float) -> int:
        return max(0, int((now - self.t0) / self.interval))

    def _batch(self, a: Agent, seq: int, sent: Sent, with_defs: bool) -> bytes:
        return a.profile.batch(seq, sent.ts_ms, sent.k, with_defs)

    async def run_agent(self, a: Agent) -> None:
        while True:
            try:
                await self.session(a)
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as err:
                a.errors += 1
                if a.errors <= 3 or a.errors % 100 == 0:
                    print(f"  {a.node}: stream ended: {_describe(err)}", file=sys.stderr, flush=True)
            await asyncio.sleep(random.uniform(0.5, 2.0))

    async def session(self, a: Agent) -> None:
        async with grpc.aio.insecure_channel(self.addr, options=CHANNEL_OPTIONS) as ch:
            call = ch.stream_stream(METHOD, request_serializer=lambda b: b,
                                    response_deserializer=pb.CollectorMessage.FromString)()
            hello = pb.Hello(node=a.node, labels={"cluster": "bench", "rack": f"r{hash(a.node) % 64}"},
                             agent_version="bench", wal_id=f"wal-{a.node}", sent_at_ms=int(time.time() * 1000),
                             oldest_sequence=min(a.unacked, default=a.seq + 1))
            await call.write(pb.AgentMessage(hello=hello).SerializeToString())
            first = await asyncio.wait_for(call.read(), 120)
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                raise ConnectionError(f"no welcome: {await call.code()} {await call.details()}")
            a.sessions += 1
            a.connected_at = time.monotonic()
            a.first_ack_after_connect = 0.0
            durable = first.welcome.last_durable_sequence
            for s in [s for s in a.unacked if s <= durable]:
                del a.unacked[s]
            a.durable = max(a.durable, durable)
            reader = asyncio.create_task(self.read_acks(a, call))
            defined = False
            try:
                # Replay what the collector does not hold yet (a real agent's WAL backfill).
                for s in sorted(a.unacked):
                    sent = a.unacked[s]
                    await call.write(self._batch(a, s, sent, not defined))
                    defined = True
                while True:
                    periods = math.floor((time.time() - self.t0 - a.phase) / self.interval) + 1
                    nxt = self.t0 + a.phase + periods * self.interval
                    await asyncio.sleep(nxt - time.time())
                    if reader.done():
                        reader.result()
                        raise ConnectionError("stream closed by the collector")
                    a.seq += 1
                    sent = Sent(time.monotonic(), int(time.time() * 1000), self.frame(time.time()))
                    a.unacked[a.seq] = sent
                    w0, w1 = self.window
                    if w0 <= time.time() < w1:
                        self.window_sent += 1
                    await call.write(self._batch(a, a.seq, sent, not defined))
                    defined = True
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await reader
                call.cancel()

    async def read_acks(self, a: Agent, call: Any) -> None:
        w0m = w1m = math.inf
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            if not msg.HasField("ack"):
                continue
            now = time.monotonic()
            ack = msg.ack
            sent = a.unacked.pop(ack.sequence, None)
            if ack.refused:
                a.refused += 1
            a.durable = max(a.durable, ack.contiguous)
            if sent is None:
                continue
            a.acked_batches += 1
            if not a.first_ack_after_connect and sent.at >= a.connected_at:
                a.first_ack_after_connect = now
            w0, w1 = self.window
            w0m, w1m = w0 - time.time() + now, w1 - time.time() + now
            if w0m <= sent.at < w1m:
                self.latencies.append(now - sent.at)
                if not ack.refused:
                    self.window_acked_samples += self.series

    def ensure(self, n: int) -> None:
        for name in self.names[len(self.agents):n]:
            i = len(self.agents)
            a = Agent(name, self.profiles[i % len(self.profiles)], random.uniform(0, self.interval))
            a.task = asyncio.create_task(self.run_agent(a))
            self.agents[name] = a

    async def ramp(self, n: int, timeout: float) -> float | None:
        """Start nodes up to ``n`` (phases spread over one interval); seconds until every node
        had a batch acked (its series defined), or None after ``timeout``."""
        t0 = time.monotonic()
        self.ensure(n)
        while time.monotonic() - t0 < timeout:
            if all(a.acked_batches for a in self.agents.values()):
                return time.monotonic() - t0
            await asyncio.sleep(0.2)
        return None

    async def caught_up(self, timeout: float) -> float | None:
        """Seconds until no node has more than one batch waiting for its ack (the backlog a
        slow ramp leaves behind is drained), or None after ``timeout``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if all(len(a.unacked) <= 1 for a in self.agents.values()):
                return time.monotonic() - t0
            await asyncio.sleep(0.5)
        return None

    async def step(self, start: float, end: float, settle: float) -> dict[str, Any]:
        self.window = (start, end)
        self.latencies = []
        self.window_sent = 0
        self.window_acked_samples = 0
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu1 = psutil.Process().cpu_times()
        await asyncio.sleep(max(0.0, end - time.time()))
        cpu2 = psutil.Process().cpu_times()
        deadline = time.time() + settle
        while len(self.latencies) < self.window_sent and time.time() < deadline:
            await asyncio.sleep(0.2)
        return {"latencies": self.latencies, "sent": self.window_sent, "acked_samples": self.window_acked_samples,
                "cpu": (cpu2.user + cpu2.system) - (cpu1.user + cpu1.system),
                "errors": sum(a.errors for a in self.agents.values()),
                "refused": sum(a.refused for a in self.agents.values()),
                "connected": sum(1 for a in self.agents.values() if a.acked_batches)}

    async def storm(self, timeout: float) -> dict[str, Any]:
        """Drop every stream at once, reconnect every node at once; time until all stream again."""
        agents = list(self.agents.values())
        for a in agents:
            assert a.task is not None
            a.task.cancel()
        for a in agents:
            with contextlib.suppress(asyncio.CancelledError):
                await a.task  # type: ignore[misc]
        t0 = time.monotonic()
        before = {a.node: a.sessions for a in agents}
        for a in agents:
            a.first_ack_after_connect = 0.0
            a.task = asyncio.create_task(self.run_agent(a))
        welcomed = streaming = None
        while time.monotonic() - t0 < timeout:
            if welcomed is None and all(a.sessions > before[a.node] for a in agents):
                welcomed = time.monotonic() - t0
            if all(a.sessions > before[a.node] and a.first_ack_after_connect for a in agents):
                streaming = max(a.first_ack_after_connect for a in agents) - t0
                break
            await asyncio.sleep(0.1)
        return {"welcomed": welcomed, "streaming": streaming,
                "waiting": sum(1 for a in agents if not a.first_ack_after_connect)}

    async def drain(self, timeout: float) -> dict[str, Any]:
        """Stop sending new batches; wait until every sent batch is acked; report per node."""
        for a in self.agents.values():
            assert a.task is not None
            a.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await a.task
        # Reconnect once more so unacked batches are replayed, then stop sending new ones.
        deadline = time.time() + timeout
        pending = [a for a in self.agents.values() if a.unacked]
        for a in pending:
            a.task = asyncio.create_task(self.replay_only(a))
        while time.time() < deadline and any(a.unacked for a in self.agents.values()):
            await asyncio.sleep(0.2)
        for a in pending:
            if a.task is not None:
                a.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await a.task
        return {"nodes": {a.node: {"sent": a.seq, "unacked": len(a.unacked)} for a in self.agents.values()}}

    async def replay_only(self, a: Agent) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, ConnectionError, TimeoutError):
            async with grpc.aio.insecure_channel(self.addr, options=CHANNEL_OPTIONS) as ch:
                call = ch.stream_stream(METHOD, request_serializer=lambda b: b,
                                        response_deserializer=pb.CollectorMessage.FromString)()
                hello = pb.Hello(node=a.node, labels={"cluster": "bench", "rack": f"r{hash(a.node) % 64}"},
                                 agent_version="bench", wal_id=f"wal-{a.node}")
                await call.write(pb.AgentMessage(hello=hello).SerializeToString())
                first = await call.read()
                durable = first.welcome.last_durable_sequence
                for s in [s for s in a.unacked if s <= durable]:
                    del a.unacked[s]
                reader = asyncio.create_task(self.read_acks(a, call))
                for i, s in enumerate(sorted(a.unacked)):
                    await call.write(self._batch(a, s, a.unacked[s], i == 0))
                while a.unacked and not reader.done():
                    await asyncio.sleep(0.1)
                reader.cancel()


def _describe(err: BaseException) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return str(err) or type(err).__name__


def worker_main(conn: Connection, addr: str, names: list[str], shape: tuple[int, float, int]) -> None:
    """A generator process; ``shape`` is (series, interval, profiles)."""

    async def serve() -> None:
        w = Worker(addr, names, *shape)
        conn.send(("ready", None))
        loop = asyncio.get_running_loop()
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            if cmd[0] == "ramp":
                conn.send(("ramp", await w.ramp(*cmd[1:])))
            elif cmd[0] == "caught_up":
                conn.send(("caught_up", await w.caught_up(*cmd[1:])))
            elif cmd[0] == "step":
                conn.send(("step", await w.step(*cmd[1:])))
            elif cmd[0] == "storm":
                conn.send(("storm", await w.storm(*cmd[1:])))
            elif cmd[0] == "drain":
                conn.send(("drain", await w.drain(*cmd[1:])))
            elif cmd[0] == "stop":
                for a in w.agents.values():
                    if a.task is not None:
                        a.task.cancel()
                conn.send(("stop", None))
                return

    asyncio.run(serve())


# --- the collector under test ---------------------------------------------------------------------
class Target:
    """A collector process started here (or an address given), its CPU and RSS (all processes)."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        rules: list[str] = []
        extra: dict[str, Any] = {"log_level": "warning", "alerting": {"notifiers": {}}}
        if args.rules == "default":
            rules = [str(p) for p in default_rule_files()]
        elif args.rules != "none":
            rules = args.rules.split(",")
        extra["alerting"]["rules"] = rules
        if args.rules == "none":
            extra["alerting"]["rules"] = []
        extra["alerting"]["process"] = not args.rules_in_collector
        # tests/fleet.py's 5 s (quick tests) is shorter than the batch interval: every node would
        # be down between two batches (its series marked stale, NodeAgentSilent pending, every
        # cycle). A fleet's collector waits several intervals, at least the default 30 s.
        extra["node_timeout"] = max(30.0, 3 * args.interval)
        for kv in args.set or []:
            key, _, value = kv.partition("=")
            extra[key] = json.loads(value)
        # Plaintext on loopback (allowed there): the load generator measures ingest, not TLS.
        self.col = CollectorProc(tmp, extra=extra, tls=False)
        self.col.start(timeout=120)
        assert self.col.proc is not None
        self.proc = psutil.Process(self.col.proc.pid)
        self.addr = self.col.addr

    def procs(self) -> list[psutil.Process]:
        assert self.proc is not None
        out = [self.proc]
        with contextlib.suppress(psutil.NoSuchProcess):
            out += self.proc.children(recursive=True)
        return out

    def cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.procs():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                name = " ".join(p.cmdline()[2:4]) or p.name()
                out[f"{p.pid} {name}"] = t.user + t.system
        return out

    def rss(self) -> dict[str, int]:
        """RSS by process (named as in ``cpu``)."""
        out: dict[str, int] = {}
        for p in self.procs():
            with contextlib.suppress(psutil.NoSuchProcess):
                name = " ".join(p.cmdline()[2:4]) or p.name()
                out[f"{p.pid} {name}"] = p.memory_info().rss
        return out

    def summary(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.col.http + "/api/v1/summary", timeout=30) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.col.stop()


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="100,250", help="steps of N, comma-separated")
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per step")
    ap.add_argument("--warmup", type=float, default=0.0, help="seconds after the ramp before measuring "
                    "(default: one interval)")
    ap.add_argument("--ramp-timeout", type=float, default=180.0, help="seconds for a step's new nodes to "
                    "stream (their first batch acked) before measuring anyway")
    ap.add_argument("--procs", type=int, default=1, help="generator processes")
    ap.add_argument("--profiles", type=int, default=8, help="distinct simulated nodes (value shapes)")
    ap.add_argument("--rules", default="default", help="default | none | comma-separated rule files")
    ap.add_argument("--rules-process", action="store_true",
                    help="rules in a process of their own (alerting.process: true, the default)")
    ap.add_argument("--rules-in-collector", action="store_true",
                    help="rules in the collector's process (alerting.process: false)")
    ap.add_argument("--set", action="append", help="collector config override KEY=JSON (repeatable)")
    ap.add_argument("--storm", action="store_true", help="after the last step: reconnect storm + loss check")
    ap.add_argument("--verify", action="store_true", help="after the run: drain and count stored samples")
    ap.add_argument("--workdir", type=Path, help="keep the collector's data dir and log here (default: a temp dir)")
    args = ap.parse_args()
    steps = [int(x) for x in args.nodes.split(",")]
    warmup = args.warmup or args.interval
    with contextlib.ExitStack() as stack:
        tmp = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
        tmp.mkdir(parents=True, exist_ok=True)
        target = Target(args, tmp)
        ctx = mp.get_context("spawn")
        names = [f"bench-{i:05d}" for i in range(max(steps))]
        conns: list[Connection] = []
        procs = []
        for w in range(args.procs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(child, target.addr, names[w::args.procs],
                                                       (args.series, args.interval, args.profiles)), daemon=True)
            p.start()
            procs.append(p)
            conns.append(parent)
        for c in conns:
            c.recv()
        print(f"collector {target.addr}, rules={args.rules}, {args.series} series/node every {args.interval:g}s, "
              f"{args.procs} generator process(es); measured {args.duration:g}s per step", flush=True)
        print(f"{'nodes':>6} {'samples/s':>10} {'expected':>9} {'col cores':>9} {'CPU-s/M':>8} {'ack p50':>8} "
              f"{'ack p99':>8} {'RSS MB':>7} {'gen cores':>9} {'conn':>6} {'err':>5}  {'ramp':>6}  "
              "per process: CPU (cores) / peak RSS", flush=True)
        try:
            for n in steps:
                # Ramp: new nodes connect at phases spread over one interval and define their
                # series; measure once all stream, after a warm-up.
                for i, c in enumerate(conns):
                    c.send(("ramp", len(names[:n][i::args.procs]), args.ramp_timeout))
                ramps = [c.recv()[1] for c in conns]
                ramp = None if None in ramps else max(ramps)
                # Measure the steady state: first let the backlog of a slow ramp drain.
                for c in conns:
                    c.send(("caught_up", args.ramp_timeout))
                drains = [c.recv()[1] for c in conns]
                drained = None if None in drains else max(drains)
                print(f"  {n} nodes streaming after {'-' if ramp is None else f'{ramp:.0f}s'}, their backlog "
                      f"drained after {'-' if drained is None else f'{drained:.0f}s'} more", flush=True)
                start = time.time() + warmup
                end = start + args.duration
                for c in conns:
                    c.send(("step", start, end, max(30.0, args.interval * 3)))
                time.sleep(max(0.0, start - time.time()))
                cpu0 = target.cpu()
                rss_peak = 0
                rss_each: dict[str, int] = {}
                while time.time() < end:
                    rss = target.rss()
                    rss_peak = max(rss_peak, sum(rss.values()))
                    for k, v in rss.items():
                        rss_each[k] = max(rss_each.get(k, 0), v)
                    time.sleep(min(1.0, max(0.0, end - time.time())))
                cpu1 = target.cpu()
                load = os.getloadavg()[1]  # the machine's 5-minute load average, other users included
                results = [c.recv()[1] for c in conns]
                lat = [x for r in results for x in r["latencies"]]
                acked = sum(r["acked_samples"] for r in results)
                col_cpu = sum(cpu1.get(k, 0) - cpu0.get(k, 0) for k in cpu1)
                split = " ".join(f"{k.split(' ', 1)[1][:24]}={(cpu1[k] - cpu0.get(k, 0)) / args.duration:.2f} "
                                 f"core/{rss_each.get(k, 0) / 2**20:.0f} MB" for k in cpu1)
                gen = sum(r["cpu"] for r in results) / args.duration
                rate = acked / args.duration
                per_m = f"{col_cpu / acked * 1e6:>8.2f}" if acked else f"{'-':>8}"
                print(f"{n:>6} {rate:>10,.0f} {n * args.series / args.interval:>9,.0f} "
                      f"{col_cpu / args.duration:>9.2f} {per_m} "
                      f"{pct(lat, 0.5) * 1000:>6.0f}ms {pct(lat, 0.99) * 1000:>6.0f}ms {rss_peak / 2**20:>7.0f} "
                      f"{gen:>9.2f} {sum(r['connected'] for r in results):>6} "
                      f"{sum(r['errors'] for r in results):>5} "
                      f"{'-' if ramp is None else f'{ramp:.0f}s':>6}  {split}  (load average {load:.1f})", flush=True)
            if args.storm:
                for c in conns:
                    c.send(("storm", 300.0))
                res = [c.recv()[1] for c in conns]
                welcomed = [r["welcomed"] for r in res]
                streaming = [r["streaming"] for r in res]
                w = None if None in welcomed else max(welcomed)
                s = None if None in streaming else max(streaming)
                print(f"reconnect storm, {steps[-1]} nodes at once: all welcomed after "
                      f"{'-' if w is None else f'{w:.1f}s'}, all streaming (a live batch acked) after "
                      f"{'-' if s is None else f'{s:.1f}s'}; still waiting: {sum(r['waiting'] for r in res)}",
                      flush=True)
            if args.storm or args.verify:
                for c in conns:
                    c.send(("drain", 300.0))
                nodes: dict[str, dict[str, int]] = {}
                for c in conns:
                    nodes.update(c.recv()[1]["nodes"])
                summary = target.summary()
                target.stop()
                verify(target, nodes, args.series, summary)
        finally:
            for c in conns:
                with contextlib.suppress(OSError, EOFError):
                    c.send(("stop",))
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.terminate()
            target.stop()


def verify(target: Target, nodes: dict[str, dict[str, int]], series: int, summary: dict[str, Any]) -> None:
    """Every acked batch stored once: per node, stored samples == batches sent x series."""
    reader = LogStoreReader(target.col.data_dir)
    unacked = sum(v["unacked"] for v in nodes.values())
    bad = []
    expected = 0
    stored = 0
    counts = reader.count_by_node()
    for node, v in sorted(nodes.items()):
        want = (v["sent"] - v["unacked"]) * series
        have = counts.get(node, 0)
        expected += want
        stored += have
        if have != want:
            bad.append((node, want, have))
    print(f"loss check: {len(nodes)} nodes, {expected:,} samples acked, {stored:,} stored, "
          f"{unacked} batches never acked, {len(bad)} nodes differ {bad[:3]}; "
          f"collector counted {summary.get('duplicates_total', 0)} replayed batches and "
          f"{summary.get('duplicate_samples', 0)} duplicate samples", flush=True)


if __name__ == "__main__":
    main()
