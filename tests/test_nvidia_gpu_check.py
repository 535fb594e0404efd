"""bench/gpu_check.py's parsing and comparison, fed the fake T4 (the script itself needs a real GPU);
bench/driver_floor.py's recording of the plugin's NVML calls, and its price of each call."""

from __future__ import annotations

import json
from collections import Counter

import pytest

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
    gc = bench_script("gpu_check")
    [gpu] = gc.parse_smi_csv(T4_CSV)
    assert (gpu.uuid, gpu.temperature, gpu.power, gpu.memory_total_mib, gpu.sm_clock_mhz) == (
        "GPU-d37e67a5-91dd-3774-a5cb-99096249601a", 40.0, 26.78, 15360.0, 585.0)
    [na] = gc.parse_smi_csv(T4_CSV.replace("26.78 W", "[N/A]"))
    assert na.power is None


def test_compare_passes_on_agreement_and_flags_drift() -> None:
    gc = bench_script("gpu_check")
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
    traces = floor.record("tests.fakenvml", 10.0, 60.0)
    try:
        names = Counter(name for name, _fn, _args, _kwargs in traces.plain)
        # What a collection after the first asks, as the fake itself counts it.
        fake.state.calls.clear()
        traces.plugins[0].collect()
        assert names == fake.state.calls
        assert names["nvmlDeviceGetFieldValues"] == 8  # one field-value call per GPU (h100x8)
        detail_names = Counter(name for name, _fn, _args, _kwargs in traces.detail)
        assert detail_names - names, "the detail collection asks more than a plain one"
        assert not names - detail_names
        crc_names = Counter(name for name, _fn, _args, _kwargs in traces.crc)
        # The CRC counters of links 12-17 (no field id): 6 links x 2 counters per GPU, with the details.
        assert crc_names - detail_names == Counter({"nvmlDeviceGetNvLinkErrorCounter": 8 * 6 * 2})
        assert (traces.period, traces.crc_period) == (10, 60)
        assert [traces.at(i) is traces.crc for i in range(61)].count(True) == 2  # seconds 0 and 60
        assert [traces.at(i) is traces.detail for i in range(61)].count(True) == 5
        fake.state.calls.clear()
        floor.replay(traces.crc, traces.recorder.binding.NVMLError)
        assert fake.state.calls == crc_names
        per_second = (sum(names.values()) * 54 + sum(detail_names.values()) * 5 + sum(crc_names.values())) / 60
        assert abs(traces.per_second() - per_second) < 1e-9
    finally:
        traces.close()


def test_the_driver_floor_prices_each_call_and_each_field(capsys: pytest.CaptureFixture[str]) -> None:
    floor = bench_script("driver_floor")
    fake.reset("h100x8")
    traces = floor.record("tests.fakenvml", 10.0, 60.0)
    plain = traces.plain
    try:
        calls, fields = floor.per_call(traces, 2)
        # Each function once, at the rate the plugin asks it: plain every second, details every
        # 10th, the CRC counters without a field id every 60th.
        plain_names = Counter(name for name, _fn, _args, _kwargs in plain)
        detail_names = Counter(name for name, _fn, _args, _kwargs in traces.detail)
        crc_names = Counter(name for name, _fn, _args, _kwargs in traces.crc)
        assert {c.name: round(c.per_second * 60) for c in calls} == {
            name: plain_names[name] * 54 + detail_names[name] * 5 + crc_names[name] for name in crc_names}
        assert all(c.wall_us > 0 and c.cpu_us >= 0 for c in calls)
        # The first GPU's field-value request, field by field, per link where asked per link.
        request = next(args for name, _fn, args, _kw in plain if name == "nvmlDeviceGetFieldValues")
        assert len(fields) == request[1].value
        names = [f.name for f in fields]
        assert "NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION" in names
        assert "NVML_FI_DEV_NVLINK_GET_STATE scope 17" in names
        # The fake H100 answers the 1 s average power, so not the instant one (as the driver does).
        assert [f.name for f in fields if not f.answered] == ["NVML_FI_DEV_POWER_INSTANT"]
        floor.print_per_call("tests.fakenvml", 2, traces, calls, fields)
        out = capsys.readouterr().out
        assert "nvmlDeviceGetFieldValues" in out and "NVML_FI_DEV_NVLINK_GET_STATE scope 17" in out
    finally:
        traces.close()
