"""Two real agents side by side, measured in the same window: what one change costs the node.

    .venv/bin/python bench/agent_ab.py [--seconds 120] [--b 'JSON'] [--b-env K=V] [--b-repo PATH]
    .venv/bin/python bench/agent_ab.py --breakdown [--seconds 120]

``bench/bench_agent.py`` gives the agent's CPU beside node_exporter's, but the host's speed
drifts by more than most single changes are worth (the same agent read 0.52-0.80 % of a core over
one day, 0.64-0.80 % within 15 minutes). Here two agents run at once (A and B, each with the benchmark's
plugins: nvidia on the fake NVML with 8 GPUs at ``--latency-us`` per driver call, kmsg, optics,
power, all at 1 Hz on the captured tree), stream to one collector, and are measured over the
same window, so the host's speed cancels out of B/A; an A/A run reads 1.000.

B differs from A by plugin options (``--b``: JSON merged into the plugin sections; ``null``
drops a plugin), environment (``--b-env``) or source tree (``--b-repo``: a git worktree of
another commit, run with this virtual environment).

``--breakdown`` runs one pair for each part of the agent and prints what it costs: B without
that part, A minus B. The parts: the NVIDIA plugin (and within it, the driver's time — the
fake's per-call latency set to 0 — and the NVML event thread), optics, power, kmsg, and the
agent with only kmsg (its scheduler, encoding, WAL and stream at 1 Hz with next to nothing
to collect).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_agent import PLUGINS, agent_options, proc_cpu  # noqa: E402

from tests.fleet import AgentProc, CollectorProc  # noqa: E402
from tests.services import FIXTURES, Process, wait_until  # noqa: E402

#: --breakdown: (what B lacks, B's plugin changes, B's environment).
PARTS: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("nvidia plugin (all of it)", {"nvidia": None}, {}),
    ("  of which the driver's time (fake latency -> 0)", {}, {"FAKENVML_LATENCY_US": "0"}),
    ("  of which the NVML event thread", {"nvidia": {"events": False}}, {}),
    ("optics plugin", {"optics": None}, {}),
    ("power plugin", {"power": None}, {}),
    ("kmsg plugin", {"kmsg": None}, {}),
    ("nvidia + optics + power (B: kmsg alone)", {"nvidia": None, "optics": None, "power": None}, {}),
]


def plugins_with(changes: dict[str, Any]) -> dict[str, Any]:
    out = {name: dict(section) for name, section in PLUGINS.items()}
    for name, section in changes.items():
        if section is None:
            out.pop(name, None)
        else:
            out[name] = {**out.get(name, {}), **section}
    return out


#: One side of a pair: plugin changes, environment, source tree.
Side = tuple[dict[str, Any], dict[str, str], Path]


class Pair(NamedTuple):
    cpu_a: float  # % of a core over the window
    cpu_b: float
    samples_a: float  # samples a second the collector stored from each over the window
    samples_b: float


def pair(a: Side, b: Side, *, tree: Path, seconds: float, warmup: float, latency_us: int) -> Pair:
    """Agents A and B over the same window."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        col = CollectorProc(t, extra={"log_level": "warning"}).start()
        agents: list[tuple[AgentProc, Process]] = []
        try:
            for name, (changes, env, repo) in zip(("a", "b"), (a, b), strict=True):
                agent = AgentProc(t, name, [col.addr], plugins=plugins_with(changes), extra=agent_options(tree))
                proc_env = {**os.environ, "FAKENVML_LATENCY_US": str(latency_us), "PYTHONPATH": str(repo), **env}
                proc = Process([sys.executable, "-m", "fleetmon", "agent", "--config", str(agent.config)],
                               agent.log, env=proc_env, cwd=repo)
                agents.append((agent, proc))
            wait_until(lambda: col.get("/api/v1/summary")["nodes_up"] == 2, 60, "both agents streaming")
            time.sleep(warmup)  # past discovery, the first batches and the one-off memory settle (30 s)
            s0 = stored(col)
            c0 = [proc_cpu(p.pid) for _a, p in agents]
            w0 = time.monotonic()
            time.sleep(seconds)
            c1 = [proc_cpu(p.pid) for _a, p in agents]
            wall = time.monotonic() - w0
            s1 = stored(col)
            for agent, p in agents:
                if not p.alive():
                    raise RuntimeError(f"agent {agent.node} exited: {agent.log.read_text()[-2000:]}")
        finally:
            for _agent, p in agents:
                p.stop()
            col.stop()
    cpu_a, cpu_b = ((after - before) / wall * 100 for before, after in zip(c0, c1, strict=True))
    return Pair(cpu_a, cpu_b, (s1["a"] - s0["a"]) / wall, (s1["b"] - s0["b"]) / wall)


def stored(col: CollectorProc) -> dict[str, int]:
    """Samples the collector has stored from each node."""
    return {n["node"]: n["samples"] for n in col.get("/api/v1/nodes")}


def env_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--b-env {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--warmup", type=float, default=40.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tree", default="node-exporter", help="captured sysfs tree the agents read")
    ap.add_argument("--latency-us", type=int, default=100, help="fake NVML: driver time per call")
    ap.add_argument("--b", default="{}", help="JSON: B's plugin sections merged into A's (null drops one)")
    ap.add_argument("--b-env", action="append", default=[], help="NAME=VALUE in B's environment")
    ap.add_argument("--b-repo", type=Path, default=REPO, help="source tree B runs (a worktree of another commit)")
    ap.add_argument("--breakdown", action="store_true", help="the cost of each part of the agent")
    args = ap.parse_args()
    tree = FIXTURES / "sysfs" / args.tree / "sys"
    common = {"tree": tree, "seconds": args.seconds, "warmup": args.warmup, "latency_us": args.latency_us}
    a: Side = ({}, {}, REPO)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"{args.seconds:g} s windows on {args.tree}, fake NVML at {args.latency_us} us/call")
    if not args.breakdown:
        b: Side = (json.loads(args.b), env_pairs(args.b_env), args.b_repo.resolve())
        for i in range(args.repeat):
            r = pair(a, b, **common)
            print(f"run {i + 1}: A {r.cpu_a:.3f} % of a core   B {r.cpu_b:.3f} %   B/A {r.cpu_b / r.cpu_a:.3f}   "
                  f"(samples stored a second: A {r.samples_a:.0f}, B {r.samples_b:.0f})")
        return 0
    print(f"{'part of the agent (B runs without it)':52s} {'A':>7s} {'B':>7s} {'A-B':>7s} {'share':>6s}")
    for what, changes, env in PARTS:
        cpu_a, cpu_b, *_ = pair(a, (changes, env, REPO), **common)
        print(f"{what:52s} {cpu_a:6.3f}% {cpu_b:6.3f}% {cpu_a - cpu_b:6.3f}% {(cpu_a - cpu_b) / cpu_a:6.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
