"""Several real agents in one process, for fleet tests that need many nodes.

Each agent runs :func:`agent.service.run_agent` with its own config, WAL, audit log, scheduler
and gRPC transport, exactly as ``fleetmon agent --config`` runs it; only the Python process and
its event loop are shared. Twenty agent processes would cost the 2-core CI machine ~15
CPU-seconds of interpreter start-up and imports before the first batch; a pack costs one.

    python -m tests.agent_pack CONFIG...     (SIGTERM: every agent stops as on its own SIGTERM)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from agent.config import load_config
from agent.service import run_agent
from fleetmon_common import logs
from tests.fleet import AgentProc
from tests.services import Process


class AgentPack:
    """Agents configured as :class:`tests.fleet.AgentProc` does (not started one by one), run
    together in one process; their audit logs are read as each AgentProc's."""

    def __init__(self, tmp: Path, agents: list[AgentProc], name: str = "agents") -> None:
        self.agents = agents
        self.log = tmp / f"{name}.log"
        self.proc: Process | None = None

    def start(self) -> AgentPack:
        self.proc = Process([sys.executable, "-m", "tests.agent_pack", *(str(a.config) for a in self.agents)],
                            self.log, cwd=Path(__file__).resolve().parents[1])
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


async def _run(paths: list[str]) -> None:
    cfgs = [load_config(Path(p)) for p in paths]
    logs.setup(cfgs[0].log_level)
    tasks = [asyncio.create_task(run_agent(cfg), name=cfg.node) for cfg in cfgs]
    for t in tasks:
        t.add_done_callback(_report)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t


def _report(task: asyncio.Task[int]) -> None:
    """An agent that ends on its own (it should not): say so, with why, as its own process would."""
    if not task.cancelled() and task.exception() is not None:
        print(f"agent {task.get_name()} failed: {task.exception()!r}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(_run(sys.argv[1:]))
