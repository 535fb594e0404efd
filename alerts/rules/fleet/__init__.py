"""Fleet-wide rules (``fleet.yml``): shares of a cluster, racks, fabrics and GPU models, for the TSDB's
rule engine (vmalert over VictoriaMetrics), never for a collector.

A collector sees only the nodes it holds, so these questions are asked where the whole fleet's
history is. The folder is a package of its own so that the files ship as package data and stay
out of :func:`alerts.rules.default_rule_files`, which lists ``alerts/rules/*.yml`` only.
"""

from __future__ import annotations

from pathlib import Path

FLEET_RULES_DIR = Path(__file__).resolve().parent


def fleet_rule_files() -> list[Path]:
    """The fleet rule files, sorted by name (for ``vmalert -rule=…``)."""
    return sorted(FLEET_RULES_DIR.glob("*.yml"))
