"""One rule pack for every vendor: a hot Ascend NPU fires the same alert as a hot NVIDIA GPU.

The series come from the real parsers on real captures (an Atlas 800 9010 ``npu-smi info``, an
MI100 ``rocm-smi`` dump, a Hygon ``hy-smi`` dump) with one device's temperature raised to 92 °C,
next to an NVIDIA-named series at 92 °C. The default pack's ``GPUOverTemperature``
(``gpu_temperature_celsius > 85`` for 1m) is evaluated unchanged by fleetmon's engine, and the
same case is written as a promtool unit test run by both ``promtool test rules`` (the reference)
and ``fleetmon rules test``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from agent.model import Sample
from agent.plugins.accel import to_collection
from agent.plugins.amd.rocm_smi import parse_rocm_smi
from agent.plugins.ascend.npu_smi import parse_info_table, parse_mapping
from agent.plugins.ascend.readings import build_readings
from agent.plugins.hygon.plugin import parse_hy_smi
from alerts.engine import AlertEngine
from alerts.model import AlertState
from tests.services import require_binary

REPO = Path(__file__).resolve().parents[1]
GPU_RULES = REPO / "alerts" / "rules" / "gpu.yml"
TABLE = "ai-server_atlas-800-training-server_model-9010_version-24.1.RC2"
NVIDIA = {"gpu": "0", "uuid": "GPU-6f2a9c1e-0000-4000-8000-1f3e5d7c9b11", "vendor": "nvidia",
          "model": "NVIDIA A100-SXM4-40GB", "node": "dgx-01"}


def temperature_series(fixtures_dir: Path) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every gpu_temperature_celsius series, one device per vendor made hot."""
    ascend_dir = fixtures_dir / "ascend"
    text = (ascend_dir / f"{TABLE}.txt").read_text()
    hot = text.replace("| 3     xxx            | Warning       | 206.9       39 ",
                       "| 3     xxx            | Warning       | 206.9       92 ")
    assert hot != text
    ascend = build_readings(parse_info_table(hot), parse_mapping((ascend_dir / f"{TABLE}_mapping.txt").read_text()))

    mi100 = json.loads((fixtures_dir / "amd" / "mi100_rocm602.json").read_text())
    mi100["card0"]["Temperature (Sensor edge) (C)"] = "92.0"
    amd = parse_rocm_smi(json.dumps(mi100))

    dcu = json.loads((fixtures_dir / "hygon" / "hygon-gpu-24.04.3-rocm-smi.json").read_text())
    dcu["card0"]["Temperature (Sensor edge) (C)"] = "92.0"
    hygon = parse_hy_smi(json.dumps(dcu))

    out: list[tuple[dict[str, str], float]] = [(NVIDIA, 92.0)]
    for node, readings in (("atlas-01", ascend), ("mi100-01", amd), ("dcu-01", hygon)):
        samples: list[Sample] = to_collection(readings).samples
        out += [({**s.labels, "node": node}, s.value) for s in samples if s.name == "gpu_temperature_celsius"]
    return out


def test_series_come_from_the_parsers(fixtures_dir: Path) -> None:
    hot = {(lb["vendor"], lb["gpu"]) for lb, v in temperature_series(fixtures_dir) if v > 85}
    assert hot == {("nvidia", "0"), ("huawei", "3"), ("amd", "0"), ("hygon", "0")}


def test_engine_fires_the_same_alert_for_every_vendor(fixtures_dir: Path) -> None:
    engine = AlertEngine.from_files([GPU_RULES])
    series = temperature_series(fixtures_dir)
    t0 = 1_800_000_000.0
    fired_at: dict[tuple[str, str], float] = {}
    for step in range(0, 91):
        now = t0 + step
        for labels, value in series:
            engine.ingest("gpu_temperature_celsius", labels, now, value)
        for alert in engine.evaluate(now):
            if alert.name == "GPUOverTemperature" and alert.state == AlertState.FIRING:
                fired_at[alert.labels["vendor"], alert.labels["gpu"]] = now - t0
    # Every hot device fires once its 1m `for` has passed, whoever made it; cool ones never do.
    assert set(fired_at) == {("nvidia", "0"), ("huawei", "3"), ("amd", "0"), ("hygon", "0")}
    assert len(set(fired_at.values())) == 1 and 60 <= next(iter(fired_at.values())) <= 62
    active = {a.labels["vendor"]: a for a in engine.active() if a.name == "GPUOverTemperature"}
    assert active["huawei"].labels["severity"] == active["nvidia"].labels["severity"] == "critical"
    assert active["huawei"].annotations["summary"] == "GPU 3 on atlas-01 is at 92 °C"
    assert active["nvidia"].annotations["summary"] == "GPU 0 on dgx-01 is at 92 °C"


def _series_text(labels: dict[str, str]) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"gpu_temperature_celsius{{{body}}}"


def _expand(template: str, labels: dict[str, str], value: float) -> str:
    # The pack's GPUOverTemperature annotations use only {{ $labels.x }} and {{ $value }}.
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return re.sub(r"\{\{\s*\$value\s*\}\}", f"{value:g}", text)


def promtool_case(fixtures_dir: Path, tmp_path: Path) -> Path:
    rule = next(
        r for g in yaml.safe_load(GPU_RULES.read_text())["groups"] for r in g["rules"]
        if r.get("alert") == "GPUOverTemperature"
    )
    series = temperature_series(fixtures_dir)
    exp_alerts = []
    for labels, value in series:
        if value <= 85:
            continue
        exp_alerts.append({
            "exp_labels": {**labels, **rule.get("labels", {})},
            "exp_annotations": {k: _expand(v, labels, value) for k, v in rule["annotations"].items()},
        })
    case = {
        "rule_files": [str(GPU_RULES)],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [{"series": _series_text(lb), "values": f"{v:g}x8"} for lb, v in series],
            "alert_rule_test": [
                {"eval_time": "45s", "alertname": "GPUOverTemperature", "exp_alerts": []},
                {"eval_time": "90s", "alertname": "GPUOverTemperature", "exp_alerts": exp_alerts},
            ],
        }],
    }
    path = tmp_path / "gpu_vendors_test.yml"
    path.write_text(yaml.safe_dump(case, allow_unicode=True, sort_keys=False))
    return path


def test_promtool_agrees(fixtures_dir: Path, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    case = promtool_case(fixtures_dir, tmp_path)
    proc = subprocess.run([promtool, "test", "rules", str(case)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fleetmon_rules_test_agrees(fixtures_dir: Path, tmp_path: Path, fleetmon_cmd: list[str]) -> None:
    case = promtool_case(fixtures_dir, tmp_path)
    proc = subprocess.run([*fleetmon_cmd, "rules", "test", str(case)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_case_is_not_vacuous(fixtures_dir: Path, tmp_path: Path, fleetmon_cmd: list[str]) -> None:
    # Drop the Ascend alert from the expectations: both tools must now report a failure.
    case = promtool_case(fixtures_dir, tmp_path)
    doc = yaml.safe_load(case.read_text())
    last = doc["tests"][0]["alert_rule_test"][1]
    last["exp_alerts"] = [a for a in last["exp_alerts"] if a["exp_labels"]["vendor"] != "huawei"]
    case.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    proc = subprocess.run([*fleetmon_cmd, "rules", "test", str(case)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode != 0
    promtool = require_binary("promtool")
    ref = subprocess.run([promtool, "test", "rules", str(case)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert ref.returncode != 0
