"""The collector's store and scale behaviour: default rules, bulk series definitions."""

from __future__ import annotations

from pathlib import Path

from alerts.rules import default_rule_files
from collector.app import Collector
from collector.config import CollectorConfig, load_config


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
