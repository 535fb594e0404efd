"""bench/gpu_check.py's parsing and comparison, fed the fake T4 (the script itself needs a real GPU);
bench/driver_floor.py's recording of the plugin's NVML calls."""

from __future__ import annotations

import json
from collections import Counter

import tests.fakenvml as fake
from agent.output import to_json
from agent.plugin import PluginContext
from agent.plugins.nvidia.plugin import NvidiaConfig, NvidiaPlugin
from tests.services import bench_script

# nvidia-smi --query-gpu=uuid,temperature.gpu,power.draw,memory.total,clocks.sm --format=csv, with the
# T4 recording's values (tesla-t4.xml).
T4_CSV = """uuid, temperature.gpu, power.draw [W], memory.total [MiB], clocks.sm [MHz]
GPU-d37e67a5-91dd-3774-a5cb-99096249601a, 40, 26.78 W, 15360 MiB, 585 MHz
"""


def t4_rows() -> list[dict[str, object]]:
    fake.reset("t4")
    plugin = NvidiaPlugin(PluginContext(node="t"), NvidiaConfig(library="tests.fakenvml", events=False))
    plugin.discover()
    try:
        col = plugin.collect()
    finally:
        plugin.close()
    return [json.loads(line) for line in to_json(0.0, col, {"node": "t"}).splitlines()]


def test_parse_smi_csv() -> None:
    gc = bench_script()
    [gpu] = gc.parse_smi_csv(T4_CSV)
    assert (gpu.uuid, gpu.temperature, gpu.power, gpu.memory_total_mib, gpu.sm_clock_mhz) == (
        "GPU-d37e67a5-91dd-3774-a5cb-99096249601a", 40.0, 26.78, 15360.0, 585.0)
    [na] = gc.parse_smi_csv(T4_CSV.replace("26.78 W", "[N/A]"))
    assert na.power is None


def test_compare_passes_on_agreement_and_flags_drift() -> None:
    gc = bench_script()
    smi = gc.parse_smi_csv(T4_CSV)
    lines = gc.compare(t4_rows(), smi, smi)
    assert [line for line in lines if line.startswith("FAIL")] == []
    assert sum(line.startswith("ok ") for line in lines) == 3
    hot = gc.parse_smi_csv(T4_CSV.replace(", 40,", ", 43,").replace("26.78 W", "30.00 W"))
    fails = [line for line in gc.compare(t4_rows(), hot, hot) if line.startswith("FAIL")]
    assert len(fails) == 2 and "temperature" in fails[0] and "power" in fails[1]


def test_the_driver_floor_replays_the_calls_a_collection_makes() -> None:
    """The floor beside the agent is only a floor if it asks what the plugin asks, no more, no less."""
    floor = bench_script("driver_floor")
    fake.reset("h100x8")
    plain, detail, plugins, recorder = floor.record("tests.fakenvml", 10.0)
    try:
        names = Counter(name for name, _fn, _args, _kwargs in plain)
        # What a collection after the first asks, as the fake itself counts it.
        fake.state.calls.clear()
        plugins[0].collect()
        assert names == fake.state.calls
        assert names["nvmlDeviceGetFieldValues"] == 8  # one field-value call per GPU (h100x8)
        detail_names = Counter(name for name, _fn, _args, _kwargs in detail)
        assert detail_names - names, "the detail collection asks more than a plain one"
        assert not names - detail_names
        fake.state.calls.clear()
        floor.replay(detail, recorder.binding.NVMLError)
        assert fake.state.calls == detail_names
    finally:
        for plugin in plugins:
            plugin.close()
