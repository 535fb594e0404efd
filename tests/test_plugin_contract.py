"""Every registered plugin through the life cycle: close before discover, discover, collect,
close twice (STYLE 3). Roots point at a captured sysfs tree and an empty /dev, so nothing
depends on this machine's hardware; a plugin without its hardware must say so with
PluginUnavailable, never crash."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from agent import registry
from agent.config import build
from agent.errors import PluginError, PluginUnavailable
from agent.model import Collection, MetricType, check_label_name
from agent.plugin import AsyncPlugin, PluginContext


@pytest.mark.parametrize("name", registry.builtin_names())
def test_plugin_life_cycle(name: str, fixtures_dir: Path, tmp_path: Path) -> None:
    cls = registry.load(name)
    dev = tmp_path / "dev"
    dev.mkdir()
    ctx = PluginContext(node="contract", sysfs_root=fixtures_dir / "sysfs" / "node-exporter" / "sys",
                        procfs_root=Path("/proc"), dev_root=dev)
    plugin = cls(ctx, build(cls.Config, {}, f"plugins.{name}"))
    plugin.close()  # safe without discover
    try:
        plugin.discover()
    except PluginUnavailable as err:
        assert str(err), f"{name}: PluginUnavailable needs a reason"
        plugin.close()
        plugin.close()
        return
    try:
        if isinstance(plugin, AsyncPlugin):
            result = asyncio.run(asyncio.wait_for(plugin.collect(), 60))
        else:
            result = plugin.collect()
    except PluginError:
        result = Collection()  # a failed cycle is allowed; a crash (any other exception) is not
    finally:
        plugin.close()
        plugin.close()
    assert isinstance(result, Collection)
    for s in result.samples:
        assert s.metric.name == f"{s.metric.measurement}_{s.metric.field}"
        assert s.metric.help, f"{s.name} has no help text"
        assert all(check_label_name(k) for k in s.labels), f"{s.name} {s.labels}"
        assert not math.isnan(s.value), f"{s.name} {s.labels} is NaN"
        if s.metric.type is MetricType.COUNTER:
            assert s.name.endswith("_total") and math.isfinite(s.value) and s.value >= 0, s
    for e in result.events:
        assert e.kind and "." in e.kind and e.message
