"""``fleetmon status`` and ``fleetmon top``: the fleet and its alerts in the terminal.

Both read a running collector's HTTP API (``/api/v1/summary``, ``/api/v1/nodes``,
``/api/v1/alerts``); they import neither side of fleetmon, so they run anywhere that reaches
the collector. ``status`` prints once and exits 0 when every node is healthy, 1 when a node is
degraded or failed (for scripts and health checks), 2 when the collector cannot be read.
``top`` redraws every ``--interval`` seconds until Ctrl-C (or ``-n`` times).

Health per node is the collector's roll-up (``/api/v1/nodes``, collector/fleet.py): *failed*
when its agent is silent, an accelerator is down or a critical alert fires on it; *degraded*
when another alert fires or one is pending on it; else *healthy*; with the reasons.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fleetmon.client import Api, ApiError, resolve

HEALTH_ORDER = {"failed": 0, "degraded": 1, "unknown": 2, "healthy": 3}
HEALTH_STYLE = {"failed": "bold red", "degraded": "yellow", "healthy": "green", "unknown": "dim"}
#: Labels that say where an alert is (shown); identity labels the node column already shows are not.
_HIDDEN = {"alertname", "severity", "node", "cluster", "rack", "pod", "zone", "uuid", "vendor", "model",
           "xid_name", "xid_action"}
#: With more nodes than this, ``status`` lists only the unhealthy ones (``--all`` lists every one).
MAX_LISTED = 25


class FetchError(Exception):
    """The collector's API could not be read; the message says which URL and why (never a token).
    ``refused``: it answered 401/403, which retrying will not change."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass
class Snapshot:
    url: str
    summary: dict[str, Any]
    nodes: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    taken_at: float = field(default_factory=time.time)

    def health(self) -> dict[str, str]:
        """node -> failed | degraded | healthy, as the collector rolled it up ("unknown" from a
        collector too old to say)."""
        return {n["node"]: n.get("health", "unknown") for n in self.nodes}


def fetch(api: Api) -> Snapshot:
    try:
        return Snapshot(api.url, api.get_json("/api/v1/summary"), api.get_json("/api/v1/nodes"),
                        api.get_json("/api/v1/alerts"))
    except ApiError as err:
        raise FetchError(str(err), refused=err.status in (401, 403)) from err


def connect(args: argparse.Namespace, timeout: float = 10.0) -> Api:
    """The API to read (fleetmon/client.py: --url, $FLEETMON_URL, the running collector, the
    default URL), with the token and TLS settings of the command line."""
    try:
        target = resolve(args, probe=False)
        assert target.url is not None
        return Api.from_args(target.url, args, timeout=timeout)
    except ApiError as err:
        raise FetchError(str(err)) from err


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _si(n: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def render(snap: Snapshot, *, show_all: bool = False, max_nodes: int = MAX_LISTED) -> Any:
    """The view as rich renderables: a headline, the nodes worth a look, the active alerts."""
    from rich.console import Group  # noqa: PLC0415 - rich only for the terminal commands
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    s = snap.summary
    health = snap.health()
    counts = Counter(health.values())
    firing = [a for a in snap.alerts if a["state"] == "firing"]
    pending = [a for a in snap.alerts if a["state"] != "firing"]
    head = Text.assemble(
        ("fleetmon ", "bold"), (snap.url, "cyan"), "  ",
        (f"{s.get('nodes_up', 0)}/{s.get('nodes_total', 0)} nodes up", "bold"), "  ",
        *[(f"{counts[h]} {h}  ", HEALTH_STYLE[h]) for h in ("failed", "degraded", "healthy") if counts[h]],
        f"{_si(s.get('samples_per_second', 0))} samples/s  {_si(s.get('samples_total', 0))} stored  ",
        (f"{len(firing)} firing", "bold red" if firing else "green"), f", {len(pending)} pending",
    )
    alerts_by_node = Counter(a["labels"].get("node") for a in firing)
    nodes = sorted(snap.nodes, key=lambda n: (HEALTH_ORDER[health[n["node"]]], n["node"]))
    listed = nodes if show_all or len(nodes) <= max_nodes else \
        [n for n in nodes if health[n["node"]] != "healthy"][:max_nodes]
    table = Table(title=None, expand=False, box=None, header_style="bold", pad_edge=False)
    # Names, health and ages keep their width; the free-text columns give way on a narrow terminal.
    node_width = max([len(n["node"]) for n in listed] + [4])
    for col, width in (("node", node_width), ("health", 8), ("accelerators", None), ("last batch", 10),
                       ("agent", None), ("where", None), ("firing", 6), ("why", None)):
        table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=width,
                         max_width=40 if col in ("accelerators", "where") else None)
    for n in listed:
        h = health[n["node"]]
        where = " ".join(f"{k}={n['labels'][k]}" for k in ("cluster", "pod", "rack", "zone") if k in n["labels"])
        acc = ", ".join(f"{m['up']}/{m['total']} {m['model'] or m['vendor']}" for m in n.get("accelerators", []))
        table.add_row(n["node"], Text(h, HEALTH_STYLE[h]), acc or "-", _age(n.get("last_batch_age")),
                      n.get("agent_version", ""), where, str(alerts_by_node.get(n["node"], "")),
                      "; ".join(n.get("reasons", [])[:2]))
    hidden = len(nodes) - len(listed)
    parts: list[Any] = [head, ""]
    if listed:
        parts.append(table)
    if hidden:
        parts.append(Text(f"{hidden} more node(s) not listed, all healthy (--all lists them)" if
                          all(health[n["node"]] == "healthy" for n in nodes[len(listed):]) else
                          f"{hidden} more node(s) not listed (--all lists them)", "dim"))
    parts.append("")
    if snap.alerts:
        now = snap.taken_at
        alerts = Table(box=None, header_style="bold", pad_edge=False, expand=False)
        for col in ("state", "severity", "alert", "node", "where", "for", "summary"):
            alerts.add_column(col, no_wrap=True, overflow="ellipsis")
        order = {"critical": 0, "warning": 1}
        for a in sorted(snap.alerts, key=lambda a: (a["state"] != "firing",
                                                    order.get(a["labels"].get("severity", ""), 2),
                                                    a["labels"].get("alertname", ""))):
            lab = a["labels"]
            since = a.get("fired_at") if a["state"] == "firing" else a.get("active_at")
            alerts.add_row(Text(a["state"], "bold red" if a["state"] == "firing" else "yellow"),
                           lab.get("severity", ""), lab.get("alertname", ""), lab.get("node", ""),
                           ",".join(f"{k}={v}" for k, v in sorted(lab.items()) if k not in _HIDDEN),
                           _age(now - since if since else None), a.get("annotations", {}).get("summary", ""))
        parts.append(alerts)
    else:
        parts.append(Text("no alert pending or firing", "green"))
    return Group(*parts)


def _console() -> Any:
    from rich.console import Console  # noqa: PLC0415

    # A pipe gets plain text at the width COLUMNS says (or 120), not rich's 80-column default.
    return Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "120")),
                   highlight=False, soft_wrap=False)


def _rich_missing() -> int:
    print("fleetmon status/top need the 'rich' package: pip install 'fleetmon[cli]'", file=sys.stderr)
    return 2


def status_main(args: argparse.Namespace) -> int:
    try:
        console = _console()
    except ImportError:
        return _rich_missing()
    try:
        snap = fetch(connect(args))
    except FetchError as err:
        print(f"fleetmon status: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"summary": snap.summary, "alerts": snap.alerts, "nodes": snap.nodes}, indent=2))
    else:
        console.print(render(snap, show_all=args.all))
    return 0 if set(snap.health().values()) <= {"healthy"} and not snap.alerts else 1


def top_main(args: argparse.Namespace) -> int:
    try:
        from rich.live import Live  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        console = _console()
    except ImportError:
        return _rich_missing()
    try:
        api = connect(args)
    except FetchError as err:
        print(f"fleetmon top: {err}", file=sys.stderr)
        return 2
    max_nodes = max(5, console.size.height - 12) if console.is_terminal else MAX_LISTED

    def view() -> Any:
        try:
            return render(fetch(api), max_nodes=max_nodes)
        except FetchError as err:
            if err.refused:  # a missing or wrong token: retrying would not help
                raise
            return Text(f"fleetmon top: {err} (retrying every {args.interval:g}s)", "bold red")

    rounds = 0
    try:
        shown = view()
        with Live(shown, console=console, auto_refresh=False, screen=console.is_terminal) as live:
            while True:
                live.update(shown, refresh=True)
                rounds += 1
                if args.iterations and rounds >= args.iterations:
                    return 0
                time.sleep(args.interval)
                shown = view()
    except FetchError as err:
        print(f"fleetmon top: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
