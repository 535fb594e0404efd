"""What the agent imports before it streams: grpc reads GRPC_EXPERIMENTS once, when it is
imported, so agent/main.py sets it first (``tune_grpc``). Any module on the way there that
imports grpc at its top silently undoes that (it did: agent/failback.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent import main as agent_main

REPO = Path(__file__).resolve().parents[1]

#: Everything ``fleetmon agent`` loads before ``tune_grpc()``: the CLI, the config (with every
#: section's dataclass), the scheduler and the registry that loads the built-in plugins.
BEFORE_TUNE = ["fleetmon.cli", "agent.main", "agent.config", "agent.failback", "agent.tls", "agent.scheduler",
               "agent.registry"]


def test_nothing_before_the_tune_imports_grpc() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {BEFORE_TUNE!r}: importlib.import_module(name)\n"
        "from agent import registry\n"
        "for name in registry.builtin_names(): registry.load(name)\n"
        "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"grpc imported before agent.main.tune_grpc(): {out.stdout.strip()}"


def test_tune_sets_the_experiment_before_grpc_loads() -> None:
    code = (
        "import os, sys\n"
        "os.environ.pop('GRPC_EXPERIMENTS', None)\n"
        "from agent import main\n"
        "main.tune_grpc()\n"
        "import grpc\n"
        "print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    release = agent_main.grpc_release()
    tuned = release is not None and agent_main.GRPC_TUNED_RELEASES[0] <= release <= agent_main.GRPC_TUNED_RELEASES[1]
    assert out.stdout.strip() == (agent_main.GRPC_SETTINGS["GRPC_EXPERIMENTS"] if tuned else "<unset>")
