"""Alertmanager as the fleet's alert tier sees it, for the failover tests: a real Alertmanager
notifying a webhook receiver in the test process (every notification it sends, resolved ones
included), and a watcher that reads Alertmanager's API all along a test, so "the alert stayed
firing" is checked over the whole window, not at a few instants."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.http_stub import Stub, _serve
from tests.services import Process, free_port, require_binary, wait_for_http

#: Group nothing away: one notification per change, at once; no repeats within a test.
AM_CONFIG = """\
route:
  receiver: hook
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


def node_rules(hot_for: str, silent_for: str | None = None) -> str:
    """A test rule file: GPUOverTemperature as the pack has it, with a short ``for`` (tests stay
    short), and NodeAgentSilent when ``silent_for`` is given."""
    text = f"""\
groups:
  - name: node
    rules:
      - alert: GPUOverTemperature
        expr: gpu_temperature_celsius > 85
        for: {hot_for}
        labels: {{severity: critical}}
        annotations:
          summary: "GPU {{{{ $labels.gpu }}}} on {{{{ $labels.node }}}} is at {{{{ $value }}}} °C"
"""
    if silent_for is not None:
        text += f"""\
      - alert: NodeAgentSilent
        expr: fleetmon_node_up == 0
        for: {silent_for}
        labels: {{severity: critical}}
        annotations:
          summary: "No data from {{{{ $labels.node }}}}"
"""
    return text


@dataclass
class AlertTier:
    url: str  # Alertmanager
    hook: Stub  # its webhook receiver: every notification it sent

    def alerts(self, name: str) -> list[dict[str, Any]]:
        query = urllib.parse.quote(f'alertname="{name}"')
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?filter={query}", timeout=5) as resp:
            return list(json.loads(resp.read()))

    def notifications(self, name: str) -> list[tuple[str, dict[str, str]]]:
        """(status of the alert in it, its labels) for each alert named ``name`` in each
        notification the receiver got, in order."""
        out = []
        for seen in list(self.hook.seen):
            for a in json.loads(seen.body).get("alerts", []):
                if a["labels"].get("alertname") == name:
                    out.append((a["status"], a["labels"]))
        return out


@contextlib.contextmanager
def alert_tier(tmp: Path) -> Iterator[AlertTier]:
    binary = require_binary("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", "alertmanager")
    with _serve(Stub()) as hook:
        root = tmp / "alertmanager"
        root.mkdir(parents=True, exist_ok=True)
        (root / "am.yml").write_text(AM_CONFIG.format(url=hook.url + "/hook"))
        port = free_port()
        proc = Process([binary, f"--config.file={root / 'am.yml'}", f"--storage.path={root / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], root / "am.log")
        try:
            wait_for_http(f"http://127.0.0.1:{port}/-/ready", proc=proc.proc, ok=lambda c: c == 200)
            yield AlertTier(f"http://127.0.0.1:{port}", hook)
        finally:
            proc.stop()


@dataclass
class Watch:
    """What Alertmanager said about one alert at each read: (unix time, states of the alerts
    named so with these labels: [] when it had none)."""

    readings: list[tuple[float, list[str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def gaps(self) -> list[tuple[float, list[str]]]:
        """Readings in which the alert was not there and active, exactly once."""
        return [(t, states) for t, states in self.readings if states != ["active"]]


@contextlib.contextmanager
def watching(tier: AlertTier, name: str, labels: dict[str, str], every: float = 0.2) -> Iterator[Watch]:
    """Read Alertmanager's API every ``every`` seconds while the block runs."""
    watch = Watch()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                got = [a["status"]["state"] for a in tier.alerts(name)
                       if all(a["labels"].get(k) == v for k, v in labels.items())]
                watch.readings.append((time.time(), got))
            except OSError as err:
                watch.errors.append(str(err))
            stop.wait(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join(10)
