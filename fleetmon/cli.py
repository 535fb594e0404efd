"""``fleetmon`` command: a thin dispatcher; each subcommand imports only its own side.

The arguments of every command are defined here, so parsing imports nothing else: the agent on
every node does not carry the HTTP client (urllib, http.client, email: ~1 MiB) or the certificate
tool it never runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fleetmon import __version__
from fleetmon_common import logs

#: The collector's HTTP API when nothing else says where (``fleetmon.client``).
DEFAULT_URL = "http://127.0.0.1:7780"


def _agent_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="agent YAML config")
    p.add_argument("--once", action="store_true", help="print one collection and exit")
    p.add_argument("--format", choices=("json", "prom", "influx"), default="json", help="output of --once")
    p.add_argument("--names", choices=("fleetmon", "dcgm", "both"), default=None,
                   help="metric names of --format prom (default: the config's prometheus.names); "
                        "dcgm: dcgm-exporter's names for NVIDIA GPU series")
    p.add_argument("--plugins", help="comma-separated plugin names (overrides the config)")
    p.add_argument("--node", help="node name (default: config, then hostname)")
    p.add_argument("--collector", action="append", help="collector host:port (repeatable)")
    p.add_argument("--data-dir", type=Path, help="where the WAL lives")
    p.add_argument("--sysfs-root", type=Path, help="sysfs mount point (default /sys)")
    p.add_argument("--procfs-root", type=Path, help="procfs mount point (default /proc)")
    p.add_argument("--dev-root", type=Path, help="dev mount point (default /dev)")
    p.add_argument("--set", action="append", default=[], metavar="PLUGIN.KEY=VALUE",
                   help="override one plugin setting, e.g. simulated.gpus=8 (repeatable)")
    p.add_argument("--log-level", help="debug, info, warning (default) or error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetmon", description="Hardware monitor for AI computing centers")
    parser.add_argument("--version", action="version", version=f"fleetmon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    _agent_args(sub.add_parser("agent", help="run the node agent"))

    c = sub.add_parser("collector", help="run the collector")
    c.add_argument("--config", type=Path, help="collector YAML config")
    c.add_argument("--listen", help="gRPC listen address host:port")
    c.add_argument("--http", help="HTTP API/dashboard address host:port")
    c.add_argument("--data-dir", type=Path)
    c.add_argument("--rules", action="append", type=Path, help="rule file (repeatable)")
    c.add_argument("--log-level")

    d = sub.add_parser("demo", help="collector + a simulated fleet with scripted faults, on loopback")
    d.add_argument("--nodes", type=int, default=4)
    d.add_argument("--gpus", type=int, default=8)
    d.add_argument("--duration", type=float, default=None,
                   help="seconds; default: until every scripted fault has fired and resolved (at most 15 min); "
                        "0: until Ctrl-C")
    d.add_argument("--data-dir", type=Path)
    d.add_argument("--faults", type=Path, help="fault script for node 1 (default: the built-in demo script)")
    d.add_argument("--rules", action="append", type=Path)
    d.add_argument("--log-level")

    q = sub.add_parser(
        "query", help="PromQL over the stored history (the running collector's, or a data dir)",
        description="Evaluate a PromQL expression over the history, as Prometheus would: at one time "
                    "(default now; --at), or over a range (--since [--until] [--step]). Times: 2h (ago), "
                    "now, today, yesterday, RFC 3339 (2026-11-30T08:00:00Z), unix seconds.")
    q.add_argument("expr", metavar="EXPR",
                   help="e.g. 'max by (node) (gpu_temperature_celsius)', 'rate(ib_port_symbol_errors_total[5m])'")
    q.add_argument("--at", help="instant query at this time (default: now)")
    q.add_argument("--since", help="range query from this time, e.g. 2h, yesterday, 2026-11-30T08:00:00Z")
    q.add_argument("--until", help="end of the range (default: now)")
    q.add_argument("--step", help="range query resolution, e.g. 30s (default: the range / 250, rounded)")
    q.add_argument("--format", choices=("table", "raw", "csv", "json"), default="table",
                   help="table (default): one row per series (last, min, max, avg, count, trend); "
                        "raw, csv, json: every point")
    _connection_args(q, data_dir=True)

    st = sub.add_parser("status", help="the fleet and its alerts, once (exit 1 if anything is unhealthy)")
    _connection_args(st)
    st.add_argument("--all", action="store_true", help="list every node, not only the unhealthy ones")
    st.add_argument("--json", action="store_true", help="print the collector's answers as JSON, with health")
    tp = sub.add_parser("top", help="the fleet and its alerts, redrawn until Ctrl-C")
    _connection_args(tp)
    tp.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default 2)")
    tp.add_argument("-n", "--iterations", type=int, default=0, help="stop after this many redraws")

    r = sub.add_parser("rules", help="check or unit-test rule files")
    rsub = r.add_subparsers(dest="rules_command", required=True)
    rc = rsub.add_parser("check", help="validate rule files")
    rc.add_argument("files", nargs="+", type=Path)
    rt = rsub.add_parser("test", help="run promtool-format rule unit tests")
    rt.add_argument("files", nargs="+", type=Path)

    _certs_args(sub)
    return parser


def _connection_args(p: argparse.ArgumentParser, *, data_dir: bool = False) -> None:
    where = "the collector's HTTP API (default: $FLEETMON_URL, else the running collector, else " + DEFAULT_URL + ")"
    p.add_argument("--url", help=where)
    if data_dir:
        p.add_argument("--data-dir", type=Path, help="read this embedded store directly instead of an API")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="file holding the API's bearer token (default: $FLEETMON_TOKEN)")
    p.add_argument("--cacert", type=Path, metavar="FILE", help="CA certificate(s) to verify an https collector")
    p.add_argument("--cert", type=Path, metavar="FILE", help="client certificate (http_auth.tls.client_ca)")
    p.add_argument("--key", type=Path, metavar="FILE", help="the client certificate's key")


def _certs_args(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("certs", help="make a lab CA and certificates for mutual TLS (needs openssl)")
    c.add_argument("--dir", type=Path, default=Path("pki"), help="where the CA lives and certificates go (./pki)")
    c.add_argument("--days", type=int, default=0, help="validity (default: CA 10 years, others 825 days)")
    c.add_argument("--print-commands", action="store_true", help="print each openssl command as it runs")
    csub = c.add_subparsers(dest="certs_command", required=True)
    csub.add_parser("ca", help="make the CA (ca.crt, ca.key)")
    col = csub.add_parser("collector", help="a collector (server) certificate")
    col.add_argument("name", help="the collector's DNS name (also the SAN)")
    col.add_argument("--dns", action="append", default=[], help="another DNS name agents dial (repeatable)")
    col.add_argument("--ip", action="append", default=[], help="an IP address agents dial (repeatable)")
    node = csub.add_parser("node", help="node (agent) certificates, one per name")
    node.add_argument("names", nargs="+", help="node names, exactly as in each agent's `node:`")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly. Point stdout at /dev/null so the
        # interpreter's last flush at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "agent":
        from agent.main import main as agent_main  # noqa: PLC0415 - import only the side that runs

        return agent_main(args)
    if args.command == "collector":
        from collector.main import main as collector_main  # noqa: PLC0415 - import only the side that runs

        return collector_main(args)
    if args.command == "demo":
        from collector.demo import main as demo_main  # noqa: PLC0415 - import only the side that runs

        return demo_main(args)
    if args.command == "query":
        from collector.query import main as query_main  # noqa: PLC0415 - import only the side that runs

        return query_main(args)
    if args.command in ("status", "top"):
        from fleetmon.status import status_main, top_main  # noqa: PLC0415 - rich only for these commands

        return status_main(args) if args.command == "status" else top_main(args)
    if args.command == "rules":
        from alerts.cli import main as rules_main  # noqa: PLC0415 - import only the side that runs

        return rules_main(args)
    if args.command == "certs":
        from fleetmon import certs  # noqa: PLC0415 - import only the side that runs

        return certs.main(args)
    logs.setup()
    print(f"unknown command {args.command}", file=sys.stderr)
    return 2
