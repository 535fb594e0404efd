"""``fleetmon rules check|test FILE...`` (called by the ``fleetmon`` dispatcher)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from alerts.errors import AlertsError, RuleErrors
from alerts.rulefile import AlertingRule, load_file
from alerts.unittest import run_file


def check(files: Sequence[Path], out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    failed = False
    for path in files:
        print(f"Checking {path}", file=out)
        try:
            groups = load_file(path)
        except AlertsError as exc:
            print("  FAILED:", file=err)
            for problem in exc.errors if isinstance(exc, RuleErrors) else [exc]:
                print(problem, file=err)
            failed = True
            continue
        rules = [r for g in groups for r in g.rules]
        alerts = sum(isinstance(r, AlertingRule) for r in rules)
        print(f"  SUCCESS: {len(rules)} rules found ({alerts} alerting, {len(rules) - alerts} recording)",
              file=out)
    return 1 if failed else 0


def main(args: argparse.Namespace) -> int:
    if args.rules_command == "check":
        return check(list(args.files))
    if args.rules_command == "test":
        ok = True
        for path in args.files:
            ok = run_file(path, sys.stdout) and ok
        return 0 if ok else 1
    sys.stderr.write(f"unknown rules command {args.rules_command!r}\n")
    return 2
