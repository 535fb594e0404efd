"""The ``alerting`` section checked whole at load: rule paths (globs, the shipped pack), rule
files, notifiers; every problem goes into the config's one report (``file: key: problem; fix``).

Rule paths follow Prometheus' ``rule_files``: shell globs (``/etc/fleetmon/rules/*.yml``) and
paths relative to the config file's folder. ``builtin:`` names files of the rule pack shipped
with fleetmon (``builtin:*.yml`` is the whole pack, ``builtin:gpu.yml`` one file), so a config
needs no site-packages path. Unlike Prometheus, a pattern that matches nothing is an error: an
alerting config that silently loads no rule is the failure nobody notices.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from alerts.errors import AlertsError
from alerts.notifiers import build_notifiers
from alerts.rulefile import load_files
from fleetmon_common.settings import Problems

BUILTIN = "builtin:"


def builtin_rules_dir() -> Path:
    """The folder of the rule pack shipped in ``alerts/rules/``."""
    return Path(str(resources.files("alerts").joinpath("rules")))


def expand_rule_paths(patterns: list[Path], base_dir: Path, problems: Problems) -> list[Path]:
    """Each pattern as files: ``builtin:`` resolved, globs expanded (sorted), relative paths
    taken from ``base_dir``; a pattern that names nothing is a problem."""
    out: list[Path] = []
    for i, pattern in enumerate(patterns):
        text = str(pattern)
        key = f"alerting.rules[{i}]"
        if text.startswith(BUILTIN):
            path = builtin_rules_dir() / text[len(BUILTIN):]
        else:
            path = Path(text).expanduser()
            path = path if path.is_absolute() else base_dir / path
        if glob.has_magic(str(path)):
            found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not found:
                problems.add(f"{key}: {text!r} matches no file; check the folder "
                             f"(the rule pack shipped with fleetmon is {BUILTIN}*.yml)")
            out.extend(found)
        elif not path.is_file():
            problems.add(f"{key}: {text!r}: no such file"
                         + (f" (looked at {path})" if str(path) != text else "")
                         + f"; check the path (the rule pack shipped with fleetmon is {BUILTIN}*.yml)")
        else:
            out.append(path)
    return list(dict.fromkeys(out))  # a file named twice (a glob and its own path) loads once


def check_rules(paths: list[Path], problems: Problems) -> None:
    """Parse each rule file, so its errors (``file:line:col``) join the config's report."""
    for path in paths:
        try:
            load_files([path])
        except AlertsError as err:
            problems.add(f"alerting.rules: {err}")


def check_notifiers(section: Mapping[str, Any] | None, problems: Problems) -> None:
    with problems.gather(AlertsError):
        build_notifiers(section, "alerting.notifiers")
