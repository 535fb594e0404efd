"""Go's math, operation for operation: every elementary PromQL function over a few hundred
inputs (small, large, near the branch points, subnormal results) must give promtool's bits."""

from __future__ import annotations

import math
import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from alerts.promql import gomath
from tests.services import require_binary

FUNCTIONS: dict[str, Callable[[float], float]] = {
    "exp(v)": gomath.exp, "ln(v)": gomath.log, "log2(v)": gomath.log2, "log10(v)": gomath.log10,
    "sin(v)": gomath.sin, "cos(v)": gomath.cos, "tan(v)": gomath.tan, "asin(v)": gomath.asin,
    "acos(v)": gomath.acos, "atan(v)": gomath.atan, "sinh(v)": gomath.sinh, "cosh(v)": gomath.cosh,
    "tanh(v)": gomath.tanh, "asinh(v)": gomath.asinh, "acosh(v)": gomath.acosh, "atanh(v)": gomath.atanh,
    "v ^ 1.37": lambda v: gomath.power(v, 1.37), "v ^ -0.5": lambda v: gomath.power(v, -0.5),
    "v ^ 7": lambda v: gomath.power(v, 7.0), "v ^ -3": lambda v: gomath.power(v, -3.0),
    "v atan2 0.7": lambda v: gomath.atan2(v, 0.7), "-2.5 atan2 v": lambda v: gomath.atan2(-2.5, v),
}


def _inputs(rng: random.Random, n: int) -> list[float]:
    special = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, math.pi, 1e300, -1e300, 710.0, 709.7, -745.0, -740.0,
               0.7071067811865476, 1e-320, 2.0**29, 3.0e15]
    out = list(special)
    while len(out) < n:
        k = rng.random()
        if k < 0.3:
            out.append(rng.uniform(-1, 1))
        elif k < 0.5:
            out.append(rng.uniform(-10, 10))
        elif k < 0.7:
            out.append(rng.uniform(-800, 800))
        elif k < 0.85:
            out.append(rng.choice([-1, 1]) * 10 ** rng.uniform(-10, 20))
        else:
            out.append(rng.uniform(0, 3))
    return out


def _promtool_results(promtool: str, tmp_path: Path, values: list[float]) -> dict[str, dict[int, float]]:
    (tmp_path / "rules.yml").write_text("groups: []\n")
    spec = {"rule_files": ["rules.yml"], "tests": [{
        "interval": "1m",
        "input_series": [{"series": f'v{{i="{i}"}}', "values": repr(v)} for i, v in enumerate(values)],
        "promql_expr_test": [{"expr": e, "eval_time": "0s", "exp_samples": []} for e in FUNCTIONS],
    }]}
    path = tmp_path / "math_test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    res = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120,
                         check=False)
    out: dict[str, dict[int, float]] = {}
    lines = (res.stdout + res.stderr).splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'^\s+expr: "(.*)", time: 0s,$', line)
        if m:
            got = lines[i + 2].split("got: ", 1)[1]
            out[m.group(1)] = {int(k): float(v.replace("+Inf", "inf").replace("-Inf", "-inf"))
                               for k, v in re.findall(r'i="(\d+)"\} (\S+?)(?:, |$)', got)}
    return out


def test_elementary_functions_match_go_bit_for_bit(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    values = _inputs(random.Random(5), 300)
    ref = _promtool_results(promtool, tmp_path, values)
    assert set(ref) == set(FUNCTIONS)
    mismatches = []
    for expr, fn in FUNCTIONS.items():
        for i, v in enumerate(values):
            mine, want = fn(v), ref[expr].get(i, math.nan)
            if not (mine == want or (math.isnan(mine) and math.isnan(want))):
                mismatches.append(f"{expr} with v={v!r}: fleetmon {mine!r}, promtool {want!r}")
    assert not mismatches, f"{len(mismatches)} differ:\n" + "\n".join(mismatches[:20])


def test_fma_rounds_once() -> None:
    # (1 + 2**-52) * (1 - 2**-52) - 1 is -2**-104 exactly; unfused it rounds to 0.
    a, b = 1 + 2.0**-52, 1 - 2.0**-52
    assert gomath.fma(a, b, -1.0) == -(2.0**-104)
    assert a * b - 1.0 == 0.0
