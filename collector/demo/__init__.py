"""``fleetmon demo``: a collector and a simulated fleet as separate processes on loopback.

The collector runs with the embedded store; each agent runs the ``simulated`` plugin and
streams over real gRPC. node-01 follows a fault script. The demo shows a live summary and
prints alerts as they fire and resolve; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def default_rules() -> list[Path]:
    """The default rule pack shipped in alerts/rules/."""
    folder = Path(str(resources.files("alerts").joinpath("rules")))
    return sorted(p for p in folder.glob("*.yml"))


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _fmt_alert(a: dict[str, Any]) -> str:
    lab = a["labels"]
    extra = ",".join(f"{k}={v}" for k, v in sorted(lab.items())
                     if k not in ("alertname", "severity", "node", "cluster", "rack", "uuid", "vendor", "model"))
    where = lab.get("node", "")
    return f"{lab.get('alertname', '?')} [{lab.get('severity', '')}] {where} {extra}".rstrip()


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="fleetmon-demo-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.http = ""
        self.py = [sys.executable, "-m", "fleetmon"]

    def start_collector(self) -> None:
        rules = [Path(r) for r in (self.args.rules or default_rules())]
        cfg = {"listen": "127.0.0.1:0", "http": "127.0.0.1:0", "data_dir": str(self.data_dir),
               "node_timeout": 10, "log_level": self.args.log_level or "warning",
               "alerting": {"rules": [str(r) for r in rules], "notifiers": {"log": {}}}}
        path = self.data_dir / "collector.yml"
        path.write_text(yaml.safe_dump(cfg))
        log = open(self.data_dir / "collector.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([*self.py, "collector", "--config", str(path)], stdout=subprocess.PIPE,
                                stderr=log, start_new_session=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "ready" not in line:
            raise SystemExit(f"collector did not start; see {self.data_dir / 'collector.log'}")
        fields = dict(p.split("=") for p in line.split() if "=" in p)
        self.grpc = f"127.0.0.1:{fields['grpc']}"
        self.http = f"http://127.0.0.1:{fields['http']}"

    def start_agents(self) -> None:
        faults = self.args.faults or Path(str(resources.files("collector").joinpath("demo/faults.yml")))
        for i in range(1, self.args.nodes + 1):
            node = f"node-{i:02d}"
            sim: dict[str, Any] = {"interval": 1, "gpus": self.args.gpus}
            if i == 1:
                sim["faults_file"] = str(faults)
                sim["bess"] = True  # the site's battery storage, reported through node-01
            cfg = {"node": node, "labels": {"cluster": "demo", "rack": f"r{(i - 1) // 4 + 1}"},
                   "collectors": [self.grpc], "data_dir": str(self.data_dir / node), "batch_interval": 1,
                   "log_level": self.args.log_level or "warning", "plugins": {"simulated": sim}}
            path = self.data_dir / f"{node}.yml"
            path.write_text(yaml.safe_dump(cfg))
            log = open(self.data_dir / f"{node}.log", "ab")  # noqa: SIM115
            self.procs.append(subprocess.Popen([*self.py, "agent", "--config", str(path)], stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)

    def watch(self) -> None:
        start = time.time()
        since = 0.0
        last_summary = 0.0
        while self.args.duration <= 0 or time.time() - start < self.args.duration:
            time.sleep(1)
            for p in self.procs:
                if p.poll() is not None and p is self.procs[0]:
                    raise SystemExit(f"collector exited with {p.returncode}; see {self.data_dir / 'collector.log'}")
            try:
                for t in _get(f"{self.http}/api/v1/alerts/transitions?since={since}"):
                    since = max(since, t["time"])
                    elapsed = t["time"] - start
                    state = t["state"].upper()
                    if state == "PENDING" or (state == "RESOLVED" and not t.get("fired_at")):
                        continue  # pending, or pending that cleared: never fired, nothing to say
                    note = t["annotations"].get("summary", "")
                    action = t["annotations"].get("runbook_action", "")
                    print(f"[{elapsed:5.0f}s] {state:8s} {_fmt_alert(t)} — {note}"
                          + (f"\n{'':18s}action: {action}" if state == "FIRING" and action else ""), flush=True)
                if time.time() - last_summary >= 5:
                    last_summary = time.time()
                    s = _get(f"{self.http}/api/v1/summary")
                    firing = ", ".join(_fmt_alert(a) for a in s["firing"]) or "none"
                    print(f"[{time.time() - start:5.0f}s] nodes {s['nodes_up']}/{s['nodes_total']} up | "
                          f"{s['samples_per_second']:,.0f} samples/s | {s['samples_total']:,} stored | "
                          f"firing: {firing}", flush=True)
            except (urllib.error.URLError, OSError, ValueError) as err:
                print(f"(collector API not answering: {err})", flush=True)


def main(args: argparse.Namespace) -> int:
    fleet = Fleet(args)
    print(f"fleetmon demo: {args.nodes} simulated nodes x {args.gpus} GPUs, data in {fleet.data_dir}", flush=True)
    try:
        fleet.start_collector()
        print(f"collector: gRPC {fleet.grpc}, dashboard {fleet.http}/  (Ctrl-C stops)", flush=True)
        fleet.start_agents()
        fleet.watch()
    except KeyboardInterrupt:
        print("\nstopping the fleet…", flush=True)
    finally:
        fleet.stop()
    print(f"history is in {fleet.data_dir / 'fleetmon.sqlite'}: fleetmon query 'gpu_temperature_celsius"
          f"{{node=\"node-01\"}}' --since 5m --data-dir {fleet.data_dir}", flush=True)
    return 0
