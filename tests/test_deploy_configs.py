"""The example configs in deploy/ load and validate (without connecting to anything)."""

from __future__ import annotations

from pathlib import Path

from agent.config import load_config as load_agent
from agent.scheduler import EventBuffer, build_runners, make_context
from collector.alerting_config import builtin_rules_dir
from collector.config import load_config as load_collector
from collector.spool import build_sinks

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "config"


def test_example_agent_config() -> None:
    cfg = load_agent(DEPLOY / "agent.yml")
    assert cfg.node == "gpu-a17-03" and cfg.wal.max_bytes == 256 << 20
    assert set(cfg.plugins) == {"nvidia", "kmsg", "optics", "power", "host"}
    # every plugin section validates against its plugin's Config (instantiating probes nothing)

    runners = build_runners(cfg, make_context(cfg, EventBuffer()))
    assert [r.name for r in runners] == ["nvidia", "kmsg", "optics", "power", "host"]
    intervals = {r.name: r.section.interval for r in runners}
    assert (intervals["nvidia"], intervals["optics"], intervals["power"], intervals["host"]) == (5.0, 10.0, 10.0, 15.0)
    for r in runners:
        r.close()


def test_example_collector_config() -> None:
    cfg = load_collector(DEPLOY / "collector.yml")
    assert cfg.retention == 30 * 86400 and set(cfg.sinks) == {"history", "vm"}
    # the whole shipped rule pack, not one file of it
    assert cfg.alerting.rules == sorted(builtin_rules_dir().glob("*.yml"))

    sinks = build_sinks(cfg.sinks)
    assert [s.name for s in sinks] == ["history", "vm"]
