"""Failover, hand-over and return, timed: 3 collectors + VictoriaMetrics + Alertmanager and N
real agents (one pack process, tests/agent_pack.py) on loopback, with the settings a deployment
gets by default unless given (keepalive, failback check and spread).

1. **SIGKILL** the collector of a node whose ``GPUOverTemperature`` fires: how long until each of
   its agents streams to another collector, and until the alert fires on the new collector
   (restored from VictoriaMetrics) and Alertmanager hears it from there;
2. **restart** it: how long until each agent that prefers it is back (from the collector's
   "ready"), and over how long the returns spread (the stagger);
3. **SIGSTOP** it (a host that is gone without a TCP reset): how long until each agent notices
   (its log says why: the keepalive's ping timeout) and streams elsewhere; then SIGCONT, and the
   return again;
4. loss: every sample the agents wrote before the last return is in VictoriaMetrics, once.

Times come from the agents' own log lines (millisecond stamps) and polls every 50 ms.

    .venv/bin/python bench/bench_failover.py [--agents 30] [--spread 10] [--check 2]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.transport import rendezvous_order
from collector.promquery import PromQueryClient, QueryConfig
from tests.agent_pack import AgentPack
from tests.alert_tier import alert_tier
from tests.fleet import AgentProc, CollectorProc
from tests.influx_servers import start_victoria_metrics, vm_export
from tests.services import wait_until

RULES = """\
groups:
  - name: node
    rules:
      - alert: GPUOverTemperature
        expr: gpu_temperature_celsius > 85
        for: 10s
        labels: {severity: critical}
"""
_LINE = re.compile(r'^ts=(\S+) .*msg="node (\S+): (.*)"$')


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def agent_events(log: Path, pattern: str, since: float) -> dict[str, float]:
    """The first time after ``since`` each node logged a message matching ``pattern``."""
    out: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m and re.search(pattern, m.group(3)):
            t = stamp(m.group(1))
            if t >= since and m.group(2) not in out:
                out[m.group(2)] = t
    return out


def spread(name: str, times: dict[str, float], t0: float) -> str:
    d = sorted(t - t0 for t in times.values())
    if not d:
        return f"{name}: none"
    return (f"{name}: n={len(d)} first {d[0]:.2f} s, median {statistics.median(d):.2f} s, last {d[-1]:.2f} s "
            f"(spread {d[-1] - d[0]:.2f} s)")


def connected(col: CollectorProc) -> set[str]:
    try:
        return {n["node"] for n in col.get("/api/v1/nodes") if n["connected"]}
    except OSError:
        return set()


def hot_firing(col: CollectorProc, node: str) -> bool:
    try:
        return any(a["labels"].get("node") == node and a["state"] == "firing" for a in col.get("/api/v1/alerts"))
    except OSError:
        return False


def raw(vm: str, selector: str) -> bool:
    async def read() -> bool:
        client = PromQueryClient(QueryConfig(url=vm))
        try:
            return bool(await client.raw(selector, 60, time.time()))
        finally:
            await client.aclose()

    return asyncio.run(read())


def ready_at(col: CollectorProc) -> float:
    assert col.proc is not None
    text = col.log.read_text(errors="replace")
    stamps = [stamp(m.group(1)) for m in re.finditer(r"^ts=(\S+) .*collector listening", text, re.M)]
    return stamps[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=30)
    ap.add_argument("--spread", type=float, default=30.0, help="failback.spread (s); the default config's")
    ap.add_argument("--check", type=float, default=10.0, help="failback.check_interval (s); the default config's")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as d, alert_tier(Path(d)) as tier:
        tmp = Path(d)
        vm_proc, vm = start_victoria_metrics(tmp, extra=["-dedup.minScrapeInterval=1ms"])
        rules = tmp / "rules.yml"
        rules.write_text(RULES)
        extra = {"sinks": {"vm": {"type": "remote_write", "url": f"{vm}/api/v1/write"}}, "query": {"url": vm},
                 "alerting": {"notifiers": {"alertmanager": {"urls": [tier.url]}}}}
        cols = [CollectorProc(tmp, rules=[rules], extra=extra, name=f"c{i}") for i in range(3)]
        addrs = [c.addr for c in cols]
        nodes = [f"n{i:03d}" for i in range(args.agents)]
        hot = nodes[0]
        sim = {"interval": 1.0, "gpus": 1, "ib_ports": 0, "psus": 0}
        heat = {"faults": [{"at": "0s", "kind": "gpu_temperature", "gpu": 0, "value": 92}]}
        agents = [AgentProc(tmp, n, addrs, plugins={"simulated": {**sim, **(heat if n == hot else {})}}, extra={
            "batch_interval": 1.0, "failback": {"check_interval": args.check, "spread": args.spread}})
            for n in nodes]
        by_addr = {c.addr: c for c in cols}
        dead = by_addr[rendezvous_order(hot, addrs)[0]]
        mine = {n for n in nodes if rendezvous_order(n, addrs)[0] == dead.addr}
        others = [c for c in cols if c is not dead]
        pack = AgentPack(tmp, agents)
        try:
            for c in cols:
                c.start()
            pack.start()
            wait_until(lambda: connected(dead) >= mine, 120, "the agents on their preferred collector")
            wait_until(lambda: hot_firing(dead, hot), 120, "the alert to fire")
            wait_until(lambda: raw(vm, f'ALERTS{{alertstate="firing",node="{hot}"}}'), 60,
                       "its state in VictoriaMetrics")
            print(f"{args.agents} agents, {len(mine)} prefer the collector that fails; failback check "
                  f"{args.check:g} s, spread {args.spread:g} s; batches every 1 s")

            # 1. SIGKILL
            t_kill = time.time()
            dead.kill()
            wait_until(lambda: any(hot_firing(c, hot) for c in others), 60, "the alert on another collector")
            t_alert = time.time()
            wait_until(lambda: sum(len(connected(c) & mine) for c in others) == len(mine), 60, "the moves")
            moved = agent_events(pack.log, r"streaming to collector .* again", t_kill)
            print("SIGKILL of a collector")
            print("  " + spread("agents streaming to another collector", moved, t_kill))
            print(f"  alert firing on the new collector (restored) after {t_alert - t_kill:.2f} s (50 ms polls)")

            # 2. restart: the agents come back, staggered
            dead.start()
            t_ready = ready_at(dead)
            wait_until(lambda: connected(dead) >= mine, 300, "the agents to return")
            back = agent_events(pack.log, r"healthy again; moving back", t_ready)
            wait_until(lambda: hot_firing(dead, hot), 60, "the alert back on the restarted collector")
            print("restart (from the collector's ready)")
            print("  " + spread("agents moving back", back, t_ready))

            # 3. SIGSTOP: no TCP reset, the keepalive must notice
            assert dead.proc is not None
            t_stop = time.time()
            dead.proc.signal(signal.SIGSTOP)
            wait_until(lambda: sum(len(connected(c) & mine) for c in others) == len(mine), 60, "the moves")
            noticed = agent_events(pack.log, r"unavailable \(.*ping timeout", t_stop)
            moved = agent_events(pack.log, r"streaming to collector .* again", t_stop)
            dead.proc.signal(signal.SIGCONT)
            t_cont = time.time()
            print("SIGSTOP of a collector (no TCP reset)")
            print("  " + spread("agents noticing (keepalive ping timeout)", noticed, t_stop))
            print("  " + spread("agents streaming to another collector", moved, t_stop))
            wait_until(lambda: connected(dead) >= mine, 300, "the agents to return")
            print("  " + spread("agents moving back after SIGCONT", agent_events(
                pack.log, r"healthy again; moving back", t_cont), t_cont))

            # 4. loss: what the agents wrote until now is in VictoriaMetrics, once.
            cutoff = time.time() - 2
            written = {a.node: [r for r in a.audit_rows() if r["ts_ms"] / 1000 < cutoff] for a in agents}
            total = sum(len(v) for v in written.values())
            got = vm_export(vm, '{node=~"n[0-9]+"}', samples=total, timeout=60)
            have: dict[tuple[Any, ...], int] = {}
            for s in got:
                labels = tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__"))
                for t in s["timestamps"]:
                    key = (s["metric"]["__name__"], labels, t)
                    have[key] = have.get(key, 0) + 1
            missing = dups = 0
            for a in agents:
                for r in written[a.node]:
                    labels = tuple(sorted({**r["labels"], "node": a.node, "cluster": "test", "rack": "r1"}.items()))
                    n = have.get((r["name"], labels, r["ts_ms"]), 0)
                    missing += n == 0
                    dups += n > 1
            print(f"loss: {missing} of {total} samples missing in VictoriaMetrics, {dups} stored twice")
        except Exception:
            print(pack.log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            if dead.proc is not None:
                dead.proc.signal(signal.SIGCONT)
            pack.stop()
            for c in cols:
                c.stop()
            vm_proc.stop()


if __name__ == "__main__":
    main()
