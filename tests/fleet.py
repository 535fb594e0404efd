"""Start real fleetmon collector and agent processes for end-to-end and chaos tests."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.services import Process, free_port

PY = [sys.executable, "-m", "fleetmon"]


class CollectorProc:
    def __init__(self, tmp: Path, *, rules: list[Path] | None = None, extra: dict[str, Any] | None = None,
                 port: int | None = None, name: str = "collector") -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.http_port = free_port()
        self.data_dir = tmp / f"{name}-data"
        cfg: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}", "http": f"127.0.0.1:{self.http_port}",
            "data_dir": str(self.data_dir), "log_level": "info", "node_timeout": 5,
            "alerting": {"rules": [str(r) for r in rules or []], "notifiers": {"log": {}}},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        self.config = tmp / f"{name}.yml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = tmp / f"{name}.log"
        self.proc: Process | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30) -> CollectorProc:
        mark = self.log.stat().st_size if self.log.exists() else 0
        self.proc = Process([*PY, "collector", "--config", str(self.config)], self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"collector exited: {self.proc.log_text()[-2000:]}")
            if "collector ready" in self.log.read_text(errors="replace")[mark:]:
                return self
            time.sleep(0.05)
        raise TimeoutError(f"collector not ready: {self.proc.log_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.http + path, timeout=5) as resp:
            return json.loads(resp.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.http + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def db(self) -> Path:
        return self.data_dir / "fleetmon.sqlite"


class AgentProc:
    def __init__(self, tmp: Path, node: str, collectors: list[str], *, plugins: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.node = node
        self.data_dir = tmp / f"agent-{node}"
        self.audit = tmp / f"audit-{node}.jsonl"
        cfg: dict[str, Any] = {
            "node": node, "labels": {"cluster": "test", "rack": "r1"}, "collectors": collectors,
            "data_dir": str(self.data_dir), "batch_interval": 0.5, "log_level": "info",
            "audit_log": str(self.audit),
            "plugins": plugins or {"simulated": {"interval": 0.5, "gpus": 2, "ib_ports": 1, "lanes": 2}},
        }
        cfg.update(extra or {})
        self.config = tmp / f"agent-{node}.yml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = tmp / f"agent-{node}.log"
        self.proc: Process | None = None

    def start(self) -> AgentProc:
        self.proc = Process([*PY, "agent", "--config", str(self.config)], self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def audit_rows(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]

    def log_lines(self, pattern: str) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [ln for ln in text.splitlines() if re.search(pattern, ln)]


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text (``labels`` as printed: ``sink="influx"``)."""
    head = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(head):
            return float(line[len(head):])
    raise AssertionError(f"no {head.strip()} in the metrics:\n{text}")


def stored(db: Path, node: str) -> dict[tuple[str, tuple[tuple[str, str], ...], int], float]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = {}
    for name, labels, ts, value in con.execute(
            "SELECT name, labels, ts, value FROM samples JOIN series ON series.id = samples.series_id "
            "WHERE series.node = ?", (node,)):
        lab = json.loads(labels)
        out[(name, tuple(sorted(lab.items())), ts)] = value
    con.close()
    return out


def durable_seq(db: Path, node: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    row = con.execute("SELECT contiguous FROM nodes WHERE node = ?", (node,)).fetchone()
    con.close()
    return int(row[0]) if row else 0


def assert_store_equals_audit(db: Path, agent: AgentProc, unaudited_batches: int = 0) -> int:
    """Every sample of every durable sequence is stored once with its value; nothing else is.

    ``unaudited_batches``: an agent killed with SIGKILL may have put a batch in its WAL without
    writing its audit line; that many batches' worth of stored samples may lack an audit row.
    """
    upto = durable_seq(db, agent.node)
    sent = [r for r in agent.audit_rows() if r["seq"] <= upto]
    have = stored(db, agent.node)
    expect = {}
    for r in sent:
        labels = {**r["labels"], "node": agent.node, "cluster": "test", "rack": "r1"}
        expect[(r["name"], tuple(sorted(labels.items())), r["ts_ms"])] = r["value"]
    assert len(expect) == len(sent), "the agent sent one series twice at one instant"
    missing = set(expect) - set(have)
    extra = set(have) - set(expect)
    # Samples of batches past the durable mark may be stored (acked-but-not-contiguous): allow only those.
    later = {(r["name"], tuple(sorted({**r["labels"], "node": agent.node, "cluster": "test", "rack": "r1"}.items())),
              r["ts_ms"]) for r in agent.audit_rows() if r["seq"] > upto}
    assert not missing, f"{len(missing)} acked samples missing, e.g. {sorted(missing)[:3]}"
    unexplained = extra - later
    per_batch = max((sum(1 for r in sent if r["seq"] == s) for s in {r["seq"] for r in sent}), default=0)
    assert len(unexplained) <= unaudited_batches * per_batch, \
        f"{len(unexplained)} stored samples the agent never sent"
    assert all(have[k] == v for k, v in expect.items())
    return len(expect)
