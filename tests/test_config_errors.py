"""Config errors: every problem in one pass, each once, as ``file: key: problem; fix``;
durations wherever a duration is meant; rule globs and the shipped pack."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.config import load_config as load_agent
from alerts.notifiers import build_notifiers
from collector.alerting_config import builtin_rules_dir
from collector.config import load_config as load_collector
from collector.errors import ConfigError
from fleetmon_common.settings import parse_duration

_DURATION_FIX = "write a number, or a duration such as 500ms, 30s, 5m, 1h30m, 30d"


def _stderr_lines(cmd: list[str], cwd: Path | None = None) -> list[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    return out.stderr.splitlines()


def test_agent_every_error_in_one_pass_printed_once(fleetmon_cmd: list[str], tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yml"
    cfg.write_text("batch_interval: soon\nwal: {max_bytes: 256Mb}\nnodee: x\n"
                   "plugins:\n  simulated: {gpuz: 3, interval: fast}\n  host: {mountpoints: 5}\n  nosuch: {}\n")
    lines = _stderr_lines([*fleetmon_cmd, "agent", "--once", "--config", str(cfg)])
    f = str(cfg)
    assert sorted(lines) == sorted([
        f"{f}: batch_interval: 'soon' is neither a number nor a duration; {_DURATION_FIX}",
        f"{f}: wal.max_bytes: '256Mb' is not a size; write e.g. 64KB, 256MiB or 1GiB",
        f"{f}: unknown key 'nodee'; did you mean 'node'?",
        f"{f}: plugins.simulated.interval: 'fast' is neither a number nor a duration; {_DURATION_FIX}",
        f"{f}: plugins.simulated: unknown key 'gpuz'; did you mean 'gpus'?",
        f"{f}: plugins.host.mountpoints: expected a list, got int 5",
        next(line for line in lines if line.startswith(f"{f}: unknown plugin 'nosuch'")),
    ])


def test_collector_every_error_in_one_pass_printed_once(fleetmon_cmd: list[str], tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    bad = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up >\n"
    (tmp_path / "rules" / "bad.yml").write_text(bad)
    cfg = tmp_path / "collector.yml"
    cfg.write_text("retention: forever\nnode_timeout: 1h30m\nlimits: {max_labelz: 3}\n"
                   "alerting:\n  rules: [rules/*.yml, nothing/*.yml]\n  evaluation_interval: often\n"
                   "  notifiers: {mqtt: {host: m, keepalive: 30s, qos: 3}, pager: {}}\n"
                   "sinks:\n  vm: {type: remote_write, url: 'http://127.0.0.1:1/api/v1/write', flush_interval: 5s,"
                   " batch_sise: 5}\n  old: {type: influxdb_v9}\n")
    lines = _stderr_lines([*fleetmon_cmd, "collector", "--config", str(cfg)])
    f = str(cfg)
    assert len(lines) == len(set(lines)) == 9, lines
    # a wrong value in the alerting section: its rules, notifiers and the sinks are still checked
    assert lines.pop(2) == (f"{f}: alerting.evaluation_interval: 'often' is neither a number nor a duration; "
                            f"{_DURATION_FIX}")
    assert lines[-2:] == [f"{f}: sinks.vm: unknown key 'batch_sise'; did you mean 'batch_size'?",
                          f"{f}: sinks.old.type: 'influxdb_v9' is not one of influxdb, influxdb_v1, influxdb2, "
                          "influxdb_v2, victoriametrics, remote_write"]
    del lines[-2:]
    assert lines[:2] == [
        f"{f}: retention: 'forever' is neither a number nor a duration; {_DURATION_FIX}",
        f"{f}: limits: unknown key 'max_labelz'; did you mean 'max_labels'?",
    ]
    assert lines[2] == (f"{f}: alerting.rules[1]: 'nothing/*.yml' matches no file; check the folder "
                        "(the rule pack shipped with fleetmon is builtin:*.yml)")
    assert lines[3].startswith(f"{f}: alerting.rules: {tmp_path / 'rules' / 'bad.yml'}:5:")
    assert lines[4:] == [f"{f}: alerting.notifiers.mqtt.qos: 3 is not an MQTT QoS (0, 1 or 2)",
                         f"{f}: alerting.notifiers.pager: unknown notifier; known: alertmanager, log, mqtt, webhook"]


def test_durations_wherever_a_duration_is_meant(tmp_path: Path) -> None:
    assert [parse_duration(x) for x in ("500ms", "1h30m", "30d", "2w", "1y", "15")] == [
        0.5, 5400.0, 2592000.0, 1209600.0, 31536000.0, 15.0]
    cfg = tmp_path / "collector.yml"
    cfg.write_text("retention: 52w\nnode_timeout: 1m30s\nalerting: {evaluation_interval: 500ms, resend_delay: 2m}\n")
    c = load_collector(cfg)
    assert (c.retention, c.node_timeout, c.alerting.evaluation_interval, c.alerting.resend_delay) == (
        52 * 7 * 86400, 90.0, 0.5, 120.0)
    agent = tmp_path / "agent.yml"
    agent.write_text("batch_interval: 2s\nplugins: {host: {interval: 1m, timeout: 10s}}\n")
    a = load_agent(agent)
    assert a.batch_interval == 2.0
    assert a.plugin_sections({})[0].interval == 60.0
    (mqtt,) = build_notifiers({"mqtt": {"host": "m", "keepalive": "1m"}}, "notifiers")
    assert mqtt.cfg.keepalive == 60.0  # type: ignore[attr-defined]


def test_no_infinite_retention(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("retention: .inf\n")
    with pytest.raises(ConfigError, match=r"c.yml: retention: inf is not a finite number; give a bound, e.g. 30d$"):
        load_collector(cfg)


def test_rule_globs_relative_to_the_config_and_the_shipped_pack(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    for name in ("b.yml", "a.yml"):
        (tmp_path / "rules" / name).write_text("groups: []\n")
    cfg = tmp_path / "collector.yml"
    cfg.write_text("alerting: {rules: ['rules/*.yml', 'builtin:*.yml', rules/a.yml]}\n")
    pack = sorted(builtin_rules_dir().glob("*.yml"))
    assert len(pack) >= 5
    assert load_collector(cfg).alerting.rules == [tmp_path / "rules" / "a.yml", tmp_path / "rules" / "b.yml", *pack]


def test_cli_rules_glob_relative_to_cwd(fleetmon_cmd: list[str], tmp_path: Path) -> None:
    lines = _stderr_lines([*fleetmon_cmd, "collector", "--rules", "x/*.yml", "--data-dir", str(tmp_path)],
                          cwd=tmp_path)
    assert lines == [f"collector config: alerting.rules[0]: '{tmp_path}/x/*.yml' matches no file; check the folder "
                     "(the rule pack shipped with fleetmon is builtin:*.yml)"]
