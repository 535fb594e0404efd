"""``fleetmon agent``: one collection (``--once``) or the long-running agent."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from agent.config import AgentConfig, load_config
from agent.errors import AgentError, ConfigError
from agent.scheduler import EventBuffer, build_runners, collect_once, make_context
from fleetmon_common import logs

log = logging.getLogger("fleetmon.agent")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    overrides: dict[str, Any] = {
        "node": args.node,
        "collectors": args.collector,
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "sysfs_root": str(args.sysfs_root) if args.sysfs_root else None,
        "procfs_root": str(args.procfs_root) if args.procfs_root else None,
        "dev_root": str(args.dev_root) if args.dev_root else None,
        "log_level": args.log_level,
    }
    cfg_path = args.config
    raw_plugins: dict[str, Any] | None = None
    if args.set:
        import yaml  # noqa: PLC0415 - needed at start only (dropped once the agent runs, see main)

        raw_plugins = {}
        if cfg_path is not None:
            with contextlib.suppress(OSError, yaml.YAMLError):
                raw_plugins = dict((yaml.safe_load(cfg_path.read_text()) or {}).get("plugins") or {})
        for item in args.set:
            key, sep, value = item.partition("=")
            plugin, dot, option = key.partition(".")
            if not sep or not dot:
                raise ConfigError(f"--set {item!r}: use PLUGIN.KEY=VALUE, e.g. simulated.gpus=8")
            section = dict(raw_plugins.get(plugin) or {})
            section[option] = yaml.safe_load(value)
            raw_plugins[plugin] = section
        overrides["plugins"] = raw_plugins
    return load_config(cfg_path, overrides)


def main(args: argparse.Namespace) -> int:
    logs.setup(args.log_level or "warning")
    try:
        cfg = config_from_args(args)
        logs.setup(cfg.log_level)
        only = [p.strip() for p in args.plugins.split(",") if p.strip()] if args.plugins else None
        if args.once:
            return asyncio.run(_once(cfg, only, args.format))
        from agent.service import run_agent  # noqa: PLC0415 - grpc (~30 MiB) only for a streaming agent, not --once

        drop_modules(START_ONLY)
        return asyncio.run(_run_until_signal(run_agent(cfg, only)))
    except ConfigError as err:
        log.error("config error: %s", err)
        print(f"fleetmon agent: {err}", file=sys.stderr)
        return 2
    except AgentError as err:  # e.g. a WAL that cannot be created: say so, do not print a traceback
        log.error("%s", err)
        print(f"fleetmon agent: {err}", file=sys.stderr)
        return 1


#: Modules the long-running agent needs only while it starts: the YAML parser (the config is
#: read by then). Forgetting them lets their objects go (~0.7 MiB for a process that runs for
#: years); an import later, should one come, loads them again.
START_ONLY = ("yaml",)


def drop_modules(packages: tuple[str, ...]) -> None:
    for name in [m for m in sys.modules if m.split(".", 1)[0] in packages]:
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            with contextlib.suppress(AttributeError):
                delattr(sys.modules[parent], child)
        del sys.modules[name]


async def _once(cfg: AgentConfig, only: list[str] | None, fmt: str) -> int:
    from agent.output import FORMATS  # noqa: PLC0415 - the text formats serve --once only

    events = EventBuffer()
    ctx = make_context(cfg, events)
    runners = build_runners(cfg, ctx, only)
    try:
        ts, col = await collect_once(runners, events)
    finally:
        for r in runners:
            r.close()
    node_labels = {**cfg.labels, "node": cfg.node}
    sys.stdout.write(FORMATS[fmt](ts, col, node_labels))
    sys.stdout.flush()
    return 0


async def _run_until_signal(coro: Any) -> int:
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return int(await task or 0)
    except asyncio.CancelledError:
        return 0
