"""The agent speaks gRPC through agent/rpc.py (h2 on asyncio), not grpcio: on a GPU node grpcio
would be the largest thing in the agent (~12 MiB of RSS in use, six threads). Nothing the agent
loads may import it again, by a stray top-level import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Everything a streaming agent loads: the CLI, the config, the scheduler, the service with its
#: WAL, transport and failback probe, and every built-in plugin through the registry.
AGENT_MODULES = ["fleetmon.cli", "agent.main", "agent.config", "agent.scheduler", "agent.service",
                 "agent.transport", "agent.failback", "agent.tls", "agent.rpc", "agent.exposition"]


def test_the_agent_never_imports_grpc() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {AGENT_MODULES!r}: importlib.import_module(name)\n"
        "from agent import registry\n"
        "for name in registry.builtin_names(): registry.load(name)\n"
        "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"the agent imports grpc: {out.stdout.strip()}"


def test_the_config_parser_is_forgotten_once_the_agent_runs(tmp_path: Path) -> None:
    """The YAML parser reads the config, without its C extension, and nothing of it stays loaded
    once the agent drops it (agent/main.py START_ONLY)."""
    cfg = tmp_path / "agent.yml"
    cfg.write_text("node: n1\nplugins: {simulated: {interval: 5s}}\n")
    code = (
        "import gc, sys\n"
        "from agent.config import load_config\n"
        "from agent.main import START_ONLY, drop_modules\n"
        f"cfg = load_config(__import__('pathlib').Path({str(cfg)!r}))\n"
        "import yaml\n"
        "print(cfg.node, yaml.__with_libyaml__)\n"
        "drop_modules(START_ONLY)\n"
        "gc.collect()\n"
        "print(sorted(m for m in sys.modules if 'yaml' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["n1 False", "[]"], out.stdout
