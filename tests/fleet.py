"""Start real fleetmon collector and agent processes for end-to-end and chaos tests.

Both sides speak mutual TLS by default, as a deployment off loopback must: :func:`lab_pki`
makes a CA and certificates (``fleetmon certs``, i.e. openssl) in the test's temp dir, once.
Pass ``tls=False`` for a plaintext collector on loopback (clients in the test process).
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collector.storage.logreader import LogStoreReader
from fleetmon.certs import Issued, issue, make_ca
from tests.services import Process, free_port, require_binary

PY = [sys.executable, "-m", "fleetmon"]


@dataclass
class Pki:
    """A lab CA in ``dir`` and the certificates issued from it so far (by name)."""

    dir: Path
    issued: dict[str, Issued] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def collector(self) -> Issued:
        """The collectors' certificate: names localhost and 127.0.0.1 (what tests dial)."""
        if "localhost" not in self.issued:
            self.issued["localhost"] = issue(self.dir, self.dir, "localhost", server=True, ips=["127.0.0.1"])
        return self.issued["localhost"]

    def node(self, name: str) -> Issued:
        if name not in self.issued:
            self.issued[name] = issue(self.dir, self.dir, name, server=False)
        return self.issued[name]


_PKIS: dict[Path, Pki] = {}


def lab_pki(tmp: Path) -> Pki:
    """The PKI of one test (one temp dir), made on first use."""
    pki = _PKIS.get(tmp)
    if pki is None:
        require_binary("openssl")
        make_ca(tmp / "pki")
        pki = _PKIS[tmp] = Pki(tmp / "pki")
    return pki


class CollectorProc:
    def __init__(self, tmp: Path, *, rules: list[Path] | None = None, extra: dict[str, Any] | None = None,
                 port: int | None = None, name: str = "collector", tls: bool = True) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.http_port = free_port()
        self.data_dir = tmp / f"{name}-data"
        cfg: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}", "http": f"127.0.0.1:{self.http_port}",
            "data_dir": str(self.data_dir), "log_level": "info", "node_timeout": 5,
            "alerting": {"rules": [str(r) for r in rules or []], "notifiers": {"log": {}}},
        }
        self.pki = lab_pki(tmp) if tls else None
        if self.pki is not None:
            own = self.pki.collector()
            cfg["tls"] = {"cert": str(own.cert), "key": str(own.key), "client_ca": str(self.pki.ca)}
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
                 extra: dict[str, Any] | None = None, tls: bool = True) -> None:
        self.node = node
        self.data_dir = tmp / f"agent-{node}"
        self.audit = tmp / f"audit-{node}.jsonl"
        cfg: dict[str, Any] = {
            "node": node, "labels": {"cluster": "test", "rack": "r1"}, "collectors": collectors,
            "data_dir": str(self.data_dir), "batch_interval": 0.5, "log_level": "info",
            "audit_log": str(self.audit),
            "plugins": plugins or {"simulated": {"interval": 0.5, "gpus": 2, "ib_ports": 1, "lanes": 2}},
        }
        if tls:
            pki = lab_pki(tmp)
            own = pki.node(node)
            cfg["tls"] = {"ca": str(pki.ca), "cert": str(own.cert), "key": str(own.key)}
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
        text = self.audit.read_text()
        # A running agent may be half-way through a line: only whole lines (ending in \n) count.
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in whole.splitlines() if line.strip()]

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
    """Every sample the store holds for a node (blocks and the log's unflushed tail)."""
    reader = LogStoreReader(db)
    out = {}
    for name, labels, ts, vals in reader.stored(node):
        key = tuple(sorted(labels.items()))
        for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
            out[(name, key, t)] = v
    reader.close()
    return out


def durable_seq(db: Path, node: str) -> int:
    reader = LogStoreReader(db)
    try:
        return reader.contiguous(node)
    finally:
        reader.close()


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


def lost_gpu_pair(tmp: Path, collector: CollectorProc) -> list[AgentProc]:
    """Two small simulated nodes (not started): on n1 an XID 79 takes GPU 1 off the bus at once
    (gpu_up 0 from its first collection); n2 is healthy."""
    sim = {"interval": 0.5, "gpus": 2, "ib_ports": 1, "lanes": 2}
    xid = [{"at": "0s", "kind": "xid", "gpu": 1, "xid": 79}]
    return [AgentProc(tmp, "n1", [collector.addr], plugins={"simulated": {**sim, "faults": xid}}),
            AgentProc(tmp, "n2", [collector.addr], plugins={"simulated": sim})]
