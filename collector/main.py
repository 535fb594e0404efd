"""``fleetmon collector``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from collector.app import Collector
from collector.config import load_config
from collector.errors import ConfigError, StoreError
from fleetmon_common import logs, runtime

log = logging.getLogger("fleetmon.collector")


def main(args: argparse.Namespace) -> int:
    logs.setup(args.log_level or "warning")
    overrides: dict[str, Any] = {"listen": args.listen, "http": args.http,
                                 "data_dir": str(args.data_dir) if args.data_dir else None,
                                 "rules": args.rules, "log_level": args.log_level}
    source = str(args.config) if args.config else "collector config"
    try:
        cfg = load_config(args.config, overrides)
        logs.setup(cfg.log_level)
        return asyncio.run(serve(cfg))
    except ConfigError as err:
        # Once, on stderr, one ``file: key: problem; fix`` line per problem. Errors found while
        # building the collector (sinks, a port that cannot be bound) get the file name too.
        print("\n".join(line if line.startswith(source + ":") else f"{source}: {line}"
                        for line in str(err).splitlines()), file=sys.stderr)
        return 2
    except StoreError as err:
        print(f"fleetmon collector: {err}", file=sys.stderr)
        return 2


async def serve(cfg: Any, ready: Any = None) -> int:
    collector = Collector(cfg)
    await collector.start()
    if ready is not None:
        ready(collector)
    # So that `fleetmon query/status/top` find this collector without --url (fleetmon_common/runtime.py).
    http = runtime.dial_url(cfg.http, collector.http_port, cfg.http_auth.tls.enabled) if collector.http_port else ""
    registration = runtime.register(http, cfg.data_dir)
    # A line on stdout that scripts (the demo, tests) can wait for.
    print(f"fleetmon collector ready grpc={collector.grpc_port} http={collector.http_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        runtime.unregister(registration)
    log.info("collector stopping: finishing in-flight batches")
    await collector.stop()
    return 0
