"""``fleetmon demo``: a collector and a simulated fleet as separate processes on loopback.

The collector runs with the embedded store; each agent runs the ``simulated`` plugin and
streams over real gRPC. node-01 follows a fault script. The demo shows a live summary and
prints alerts as they fire and resolve. By default it ends once every scripted fault has fired
and resolved (``--duration`` sets a time instead, 0 runs until stopped); Ctrl-C, SIGTERM
(``timeout``, a service manager) and SIGHUP (the terminal closed) stop every child process.
Every line it prints fits in 120 columns; the closing hint is a command that runs as printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from collector.alerting_config import builtin_rules_dir

#: The longest a default demo runs: every scripted fault fires and resolves well before this
#: (the XID alert looks back 10 minutes; ``tests/test_demo.py`` checks the script against it).
MAX_DEFAULT_DURATION = 900.0
WIDTH = 120


class Stop(BaseException):  # like KeyboardInterrupt: no "except Exception" swallows it
    """SIGTERM or SIGHUP: stop the fleet as Ctrl-C does."""


def default_rules() -> list[Path]:
    """The default rule pack shipped in alerts/rules/."""
    return sorted(builtin_rules_dir().glob("*.yml"))


def default_faults() -> Path:
    return Path(str(resources.files("collector").joinpath("demo/faults.yml")))


def script_end(path: Path) -> float:
    """Seconds from an agent's start until the last scripted fault is over."""
    from agent.plugins.simulated.faults import load_faults  # noqa: PLC0415 - the agent side, only for this

    faults = load_faults(path)
    return max((f.at + (f.duration or 0.0) for f in faults), default=0.0)


def fleetmon_command() -> str:
    """How to run ``fleetmon`` from here, as a user would type it: on PATH, or this venv's script."""
    script = Path(sys.executable).parent / "fleetmon"
    on_path = shutil.which("fleetmon")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "fleetmon"
    if script.exists():
        with contextlib.suppress(ValueError):
            return shlex.quote(str(script.relative_to(Path.cwd())))
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m fleetmon"


def shell_lines(words: list[str], width: int = WIDTH) -> str:
    """A command, indented, continued with `` \\`` where it would pass ``width``: pasted into a
    shell, it runs as printed."""
    lines = ["  " + words[0]]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) + 2 > width:
            lines[-1] += " \\"
            lines.append("    " + word)
        else:
            lines[-1] += " " + word
    return "\n".join(lines)


def _si(n: float) -> str:
    """1234 -> 1.2k, 123456789 -> 123.5M: a summary line has no room for 123,456,789,012."""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def fit(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _fmt_alert(a: dict[str, Any]) -> str:
    lab = a["labels"]
    extra = ",".join(f"{k}={v}" for k, v in sorted(lab.items())
                     if k not in ("alertname", "severity", "node", "cluster", "rack", "uuid", "vendor", "model",
                                  "xid_action", "xid_name"))
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
        faults = self.args.faults or default_faults()
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
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second signal must not cut this short
            signal.signal(sig, signal.SIG_IGN)
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
        duration = self.args.duration
        # Default: until every scripted fault has fired and resolved (agents start ~2 s after us).
        quiet_after = None if duration is not None else script_end(self.args.faults or default_faults()) + 5
        limit = MAX_DEFAULT_DURATION if duration is None else duration
        self.fired = self.resolved = 0
        while limit <= 0 or time.time() - start < limit:
            time.sleep(1)
            for p in self.procs:
                if p.poll() is not None and p is self.procs[0]:
                    raise SystemExit(f"collector exited with {p.returncode}; see {self.data_dir / 'collector.log'}")
            try:
                for t in _get(f"{self.http}/api/v1/alerts/transitions?since={since}"):
                    since = max(since, t["time"])
                    self._print_transition(t, t["time"] - start)
                s = _get(f"{self.http}/api/v1/summary")
                if time.time() - last_summary >= 5:
                    last_summary = time.time()
                    self._print_summary(s, time.time() - start)
                if quiet_after is not None and time.time() - start > quiet_after and not s["firing"] \
                        and not s["pending"] and self.fired:
                    print(f"[{time.time() - start:5.0f}s] every scripted fault has fired and resolved "
                          f"({self.fired} alerts fired, {self.resolved} resolved)", flush=True)
                    return
            except (urllib.error.URLError, OSError, ValueError) as err:
                print(fit(f"(collector API not answering: {err})"), flush=True)

    def _print_transition(self, t: dict[str, Any], elapsed: float) -> None:
        state = t["state"].upper()
        if state == "PENDING" or (state == "RESOLVED" and not t.get("fired_at")):
            return  # pending, or pending that cleared: never fired, nothing to say
        if state == "FIRING":
            self.fired += 1
        else:
            self.resolved += 1
        print(fit(f"[{elapsed:5.0f}s] {state:8s} {_fmt_alert(t)}"), flush=True)
        note = t["annotations"].get("summary", "")
        action = t["annotations"].get("runbook_action", "") if state == "FIRING" else ""
        for text, label in ((note, ""), (action, "action: ")):
            if text:
                print("\n".join(textwrap.wrap(text, WIDTH, initial_indent=" " * 9 + label,
                                               subsequent_indent=" " * (9 + len(label)))), flush=True)

    def _print_summary(self, s: dict[str, Any], elapsed: float) -> None:
        """One line: the fleet, then the firing alerts by name (each alert's details were printed
        when it fired), as many as fit, then "+N more"."""
        head = (f"[{elapsed:5.0f}s] nodes {s['nodes_up']}/{s['nodes_total']} up | "
                f"{_si(s['samples_per_second'])} samples/s | {_si(s['samples_total'])} stored | ")
        pending = f", {s['pending']} pending" if s["pending"] else ""
        by_name = Counter(a["labels"].get("alertname", "?") for a in s["firing"])
        if not by_name:
            print(f"{head}firing: none{pending}", flush=True)
            return
        names = [name if n == 1 else f"{name} x{n}" for name, n in by_name.most_common()]
        line = f"{head}firing {len(s['firing'])}{pending}: "
        for i, name in enumerate(names):
            rest = len(names) - i - 1
            more = f", +{rest} more" if rest else ""
            if len(line) + len(name) + len(more) > WIDTH:
                line += f"+{len(names) - i} more"
                break
            line += name + (", " if rest else "")
        print(fit(line), flush=True)


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def main(args: argparse.Namespace) -> int:
    # SIGTERM (timeout, systemd) and SIGHUP (the terminal closed) stop the fleet like Ctrl-C: the
    # children run in their own sessions, so without this they would outlive the demo.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)
    fleet = Fleet(args)
    print(f"fleetmon demo: {args.nodes} simulated nodes x {args.gpus} GPUs; data in\n  {fleet.data_dir}", flush=True)
    try:
        fleet.start_collector()
        print(f"collector: gRPC {fleet.grpc}, dashboard {fleet.http}/  (Ctrl-C stops)", flush=True)
        fleet.start_agents()
        fleet.watch()
    except (KeyboardInterrupt, Stop) as why:
        print(f"\nstopping the fleet ({type(why).__name__ if isinstance(why, KeyboardInterrupt) else why})…",
              flush=True)
    finally:
        fleet.stop()
    print("the history stays in the data folder; for example:", flush=True)
    # A row per GPU of node-01 with its trend: GPU 3's scripted overheat stands out.
    words = [fleetmon_command(), "query", shlex.quote('gpu_temperature_celsius{node="node-01"}'),
             "--since", "15m", "--data-dir", shlex.quote(str(fleet.data_dir))]
    print(shell_lines(words), flush=True)
    return 0
