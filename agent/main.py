"""``fleetmon agent``: one collection (``--once``) or the long-running agent."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from typing import Any

from agent.config import AgentConfig, load_config, start_only_yaml
from agent.errors import AgentError, ConfigError
from agent.model import Collection
from agent.scheduler import PLUGIN_SUCCESS, EventBuffer, PluginRunner, build_runners, collect_once, make_context
from fleetmon_common import logs, memory
from fleetmon_common.settings import Problems

log = logging.getLogger("fleetmon.agent")


def config_from_args(args: argparse.Namespace, problems: Problems | None = None) -> AgentConfig:
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
        yaml = start_only_yaml()
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
    return load_config(cfg_path, overrides, problems)


def main(args: argparse.Namespace) -> int:
    logs.setup(args.log_level or "warning")
    try:
        problems = Problems()
        cfg = config_from_args(args, problems)
        only = [p.strip() for p in args.plugins.split(",") if p.strip()] if args.plugins else None
        # The plugin sections are checked in the same pass as the rest of the file, so every
        # error is reported at once (instantiating a plugin probes nothing; discover() does).
        for runner in build_runners(cfg, make_context(cfg, EventBuffer()), only, problems):
            runner.close()
        problems.raise_if_any(ConfigError)
        logs.setup(cfg.log_level)
        if args.once:
            return asyncio.run(_once(cfg, only, args.format, args.names or cfg.prometheus.names))
        # Before any thread: each one that allocates would get a glibc arena of its own, which
        # keeps its high-water mark (~0.8 MiB of the agent's RSS on bench_agent's node).
        memory.limit_arenas()
        # The YAML parser is not needed again: forget it before the streaming agent's modules
        # load, so that they reuse the memory it held instead of adding to it.
        drop_modules(START_ONLY)
        gc.collect()
        from agent.service import run_agent  # noqa: PLC0415 - the stream's modules only for a streaming agent

        return asyncio.run(_run_until_signal(run_agent(cfg, only)))
    except ConfigError as err:
        # Once, on stderr, one ``file: key: problem; fix`` line per problem (not also logged:
        # under systemd stderr is the journal already).
        print(err, file=sys.stderr)
        return 2
    except AgentError as err:  # e.g. a WAL that cannot be created: say so, do not print a traceback
        print(f"fleetmon agent: {err}", file=sys.stderr)
        return 1


#: Modules the long-running agent needs only while it starts: the YAML parser (the config is
#: read by then; it was imported without its C extension, agent.config.start_only_yaml).
#: Forgetting them before the streaming modules load lets those reuse its memory (with the
#: extension not loaded too: 40.2 -> 39.3 MiB of RSS on bench_agent's node); an import later,
#: should one come, loads them again.
START_ONLY = ("yaml",)


def drop_modules(packages: tuple[str, ...]) -> None:
    for name in [m for m in sys.modules if m.split(".", 1)[0] in packages]:
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            with contextlib.suppress(AttributeError):
                delattr(sys.modules[parent], child)
        del sys.modules[name]


async def _once(cfg: AgentConfig, only: list[str] | None, fmt: str, names: str = "fleetmon") -> int:
    from agent.output import FORMATS, to_prom  # noqa: PLC0415 - the text formats serve --once only

    events = EventBuffer()
    ctx = make_context(cfg, events)
    runners = build_runners(cfg, ctx, only)
    try:
        ts, col = await collect_once(runners, events)
    finally:
        for r in runners:
            r.close()
    unusable = _no_usable_plugin(runners, col)
    if unusable:
        print(f"fleetmon agent: {unusable}", file=sys.stderr)
        return 1
    node_labels = {**cfg.labels, "node": cfg.node}
    sys.stdout.write(to_prom(ts, col, node_labels, names) if fmt == "prom" else FORMATS[fmt](ts, col, node_labels))
    sys.stdout.flush()
    return 0


def _no_usable_plugin(runners: list[PluginRunner], col: Collection) -> str:
    """Why ``--once`` has nothing to print ("" when some plugin collected): an empty output
    with exit 0 would read as "all is well" to a script or a health check."""
    if not runners:
        return "no plugin to run: every plugin in the config is disabled; enable one or pass --plugins host"
    disabled = [f"{r.name} ({r.detail or 'disabled'})" for r in runners if not r.enabled]
    if len(disabled) == len(runners):
        return ("no usable plugin: " + "; ".join(disabled)
                + "; run where the hardware is, or choose plugins with --plugins (host works everywhere)")
    ok = {s.labels.get("plugin") for s in col.samples if s.metric is PLUGIN_SUCCESS and s.value == 1}
    if not ok:
        failed = ", ".join(r.name for r in runners if r.enabled)
        return f"no usable plugin: every collection failed ({failed}); the log above says why"
    return ""


async def _run_until_signal(coro: Any) -> int:
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return int(await task or 0)
    except asyncio.CancelledError:
        return 0
