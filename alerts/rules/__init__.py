"""fleetmon's default rule pack: Prometheus rule files for failing GPUs, optics, power and nodes.

The files ship as package data; ``default_rule_files()`` lists them (for the collector's
``AlertEngine.from_files`` and for ``fleetmon rules check``). ``gpu_xid.yml`` is generated from the XID
catalog by ``python -m alerts.rules.xid CATALOG.csv`` (see ``alerts/rules/xid.py``); the others are
written by hand. What each rule needs from the agents is listed in ``alerts/rules/README.md``.
"""

from __future__ import annotations

from pathlib import Path

RULES_DIR = Path(__file__).resolve().parent


def default_rule_files() -> list[Path]:
    """The pack's rule files, sorted by name."""
    return sorted(RULES_DIR.glob("*.yml"))
