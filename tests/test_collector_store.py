"""The collector's store and scale behaviour: default rules, bulk series definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alerts.engine import AlertEngine
from alerts.rules import default_rule_files
from collector.app import Collector
from collector.config import CollectorConfig, load_config
from collector.rulefeed import NO_REF, RuleFeed


def test_collector_loads_the_default_rule_pack_unless_told_otherwise(tmp_path: Path) -> None:
    cfg = CollectorConfig(listen="127.0.0.1:0", http="", data_dir=tmp_path / "a")
    cfg.alerting.notifiers = {}
    c = Collector(cfg)
    assert c.engine is not None
    names = {r.name for r in c.engine.rules()}
    assert "GPUXidWarning" in names
    assert {g.file for g in c.engine.groups} == {str(p) for p in default_rule_files()}
    c.store.close()
    conf = tmp_path / "collector.yml"
    conf.write_text(f"data_dir: {tmp_path / 'b'}\nalerting:\n  rules: []\n  notifiers: {{}}\n")
    c = Collector(load_config(conf))
    assert c.engine is None
    c.store.close()


def test_rule_feed_passes_only_what_rules_read_and_clamps_future_stamps(tmp_path: Path) -> None:
    rules = tmp_path / "r.yml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - alert: Hot\n    expr: gpu_temperature_celsius > 90\n")
    engine = AlertEngine.from_files([rules])
    feed = RuleFeed(engine)
    hot = feed.ref("gpu_temperature_celsius", {"node": "n1", "gpu": "0"})
    cool = feed.ref("gpu_temperature_celsius", {"node": "n1", "gpu": "1"})
    unread = feed.ref("gpu_power_watts", {"node": "n1", "gpu": "0"})
    assert unread == NO_REF and hot != NO_REF and cool != NO_REF
    now = 1_800_000_000.0
    refs = np.array([hot, unread, cool], np.int64)
    # Stamped a minute ahead of the collector's clock: the rules see it now, not in a minute.
    feed.block(refs, int((now + 60) * 1000), np.array([95.0, 300.0, 40.0]), now=now)
    assert feed.samples == 2
    changed = engine.evaluate(now)
    assert [(a.labels["alertname"], a.labels["gpu"]) for a in changed] == [("Hot", "0")]
