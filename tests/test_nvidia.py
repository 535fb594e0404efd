"""nvidia plugin against the fake NVML built from real nvidia-smi recordings (tests/fakenvml)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest

import tests.fakenvml as fake
from agent.config import PluginSection, build
from agent.errors import ConfigError, PluginUnavailable
from agent.model import Collection, Event, Severity
from agent.plugin import PluginContext
from agent.plugins.kmsg.plugin import KmsgConfig, KmsgPlugin
from agent.plugins.nvidia.plugin import NvidiaConfig, NvidiaPlugin
from agent.plugins.nvidia.xid import parse_catalog
from agent.scheduler import PluginRunner
from tests.services import REPO, require_binary

MIB = 1024 * 1024

# Every family the issue asks for, as the fake 8-GPU node must print it.
H100_FAMILIES = {
    "gpu_up", "gpu_info",
    "gpu_utilization_ratio", "gpu_memory_utilization_ratio", "gpu_encoder_utilization_ratio",
    "gpu_decoder_utilization_ratio",
    "gpu_memory_used_bytes", "gpu_memory_total_bytes", "gpu_memory_reserved_bytes",
    "gpu_temperature_celsius", "gpu_memory_temperature_celsius", "gpu_temperature_slowdown_celsius",
    "gpu_temperature_shutdown_celsius",
    "gpu_power_watts", "gpu_power_limit_watts", "gpu_power_enforced_limit_watts", "gpu_energy_joules_total",
    "gpu_sm_clock_hertz", "gpu_memory_clock_hertz", "gpu_graphics_clock_hertz",
    "gpu_sm_clock_max_hertz", "gpu_memory_clock_max_hertz", "gpu_graphics_clock_max_hertz",
    "gpu_performance_state", "gpu_clock_event_active",
    "gpu_ecc_errors_total", "gpu_retired_pages_total", "gpu_retired_pages_pending",
    "gpu_remapped_rows_total", "gpu_row_remap_pending", "gpu_row_remap_failed",
    "gpu_pcie_link_generation", "gpu_pcie_link_width", "gpu_pcie_link_generation_max", "gpu_pcie_link_width_max",
    "gpu_pcie_replay_total", "gpu_pcie_tx_bytes_per_second", "gpu_pcie_rx_bytes_per_second",
    "gpu_nvlink_up", "gpu_nvlink_errors_total", "gpu_mig_mode", "gpu_mig_mode_pending",
}


class Harness:
    def __init__(self, node: str, **options: object) -> None:
        self.state = fake.reset(node)
        self.events: list[Event] = []
        self.ctx = PluginContext(node="test", emit=self.events.append)
        self.plugin = NvidiaPlugin(self.ctx, NvidiaConfig(library="tests.fakenvml", event_wait_ms=20,
                                                          **options))  # type: ignore[arg-type]

    def value(self, col: Collection, name: str, **labels: str) -> float | None:
        found = [s.value for s in col.samples  # ts set: the 0 that precedes a new counter series
                 if s.name == name and s.ts is None and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None


@pytest.fixture
def harness() -> Iterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for h in made:
        for ev in h.state.hang.values():
            ev.set()
        h.plugin.close()


def start(made: list[Harness], node: str, **options: object) -> Harness:
    h = Harness(node, **options)
    made.append(h)
    h.plugin.discover()
    return h


def test_a100_values_from_the_recording(harness: list[Harness]) -> None:
    h = start(harness, "a100")
    col = h.plugin.collect()
    v = h.value
    gpu = {"gpu": "0", "uuid": "GPU-513536b6-7d19-9063-b049-1e69664bb298"}
    assert v(col, "gpu_up", **gpu) == 1
    assert v(col, "gpu_temperature_celsius", **gpu) == 27
    assert v(col, "gpu_memory_temperature_celsius", **gpu) == 44
    assert v(col, "gpu_temperature_slowdown_celsius", **gpu) == 89
    assert v(col, "gpu_temperature_shutdown_celsius", **gpu) == 92
    assert v(col, "gpu_power_watts", **gpu) == pytest.approx(67.03)
    assert v(col, "gpu_power_limit_watts", **gpu) == 500
    assert v(col, "gpu_memory_total_bytes", **gpu) == 81920 * MIB
    assert v(col, "gpu_memory_used_bytes", **gpu) == 50 * MIB
    assert v(col, "gpu_memory_reserved_bytes", **gpu) == 869 * MIB
    assert v(col, "gpu_sm_clock_hertz", **gpu) == 1275e6
    assert v(col, "gpu_sm_clock_max_hertz", **gpu) == 1410e6
    assert v(col, "gpu_memory_clock_hertz", **gpu) == 1593e6
    assert v(col, "gpu_pcie_link_generation", **gpu) == 4
    assert v(col, "gpu_pcie_link_width_max", **gpu) == 16
    assert v(col, "gpu_pcie_tx_bytes_per_second", **gpu) == 4000 * 1000
    assert v(col, "gpu_performance_state", **gpu) == 0
    assert v(col, "gpu_ecc_errors_total", type="uncorrectable", scope="aggregate") == 0
    assert v(col, "gpu_clock_event_active", reason="gpu_idle") == 0
    # MIG on: four instances of 19968 MiB with 12 MiB used, GPU instance ids 3..6.
    assert v(col, "gpu_mig_mode", **gpu) == 1
    for mig, gi in (("0", "3"), ("1", "4"), ("2", "5"), ("3", "6")):
        assert v(col, "gpu_mig_memory_total_bytes", mig=mig, gpu_instance=gi, compute_instance="0") == 19968 * MIB
        assert v(col, "gpu_mig_memory_used_bytes", mig=mig) == 12 * MIB
    # N/A in the recording is omitted, never zero: utilization under MIG, fan, retired pages, remapping.
    for absent in ("gpu_utilization_ratio", "gpu_fan_speed_ratio", "gpu_retired_pages_total",
                   "gpu_remapped_rows_total", "gpu_energy_joules_total", "gpu_mig_utilization_ratio"):
        assert v(col, absent) is None, absent
    info = next(s for s in col.samples if s.name == "gpu_info")
    assert info.labels["serial"] == "1650522003820"
    assert info.labels["board_part"] == "692-2G506-0212-002"
    assert info.labels["vbios"] == "92.00.36.00.02"
    assert info.labels["driver"] == "535.54.03"
    assert info.labels["cuda"] == "12.2"
    assert info.labels["model"] == "NVIDIA A100-SXM4-80GB"


def test_a10g_and_t4_values(harness: list[Harness]) -> None:
    a10g = start(harness, "a10g")
    col = a10g.plugin.collect()
    v = a10g.value
    assert v(col, "gpu_pcie_link_generation") == 1
    assert v(col, "gpu_pcie_link_generation_max") == 4
    assert v(col, "gpu_pcie_link_width") == 8
    assert v(col, "gpu_fan_speed_ratio") == 0
    assert v(col, "gpu_performance_state") == 8
    assert v(col, "gpu_clock_event_active", reason="gpu_idle") == 1
    assert v(col, "gpu_clock_event_active", reason="sw_power_cap") == 0
    assert v(col, "gpu_remapped_rows_total", type="correctable") == 0
    assert v(col, "gpu_row_remap_pending") == 0
    assert v(col, "gpu_row_remap_failed") == 0
    assert v(col, "gpu_power_watts") == pytest.approx(25.58)
    assert v(col, "gpu_memory_clock_max_hertz") == 6251e6
    assert v(col, "gpu_memory_temperature_celsius") is None
    assert v(col, "gpu_mig_mode") is None  # A10G has no MIG: omitted
    assert "board_part" not in next(s for s in col.samples if s.name == "gpu_info").labels
    a10g.plugin.close()

    t4 = start(harness, "t4")
    col = t4.plugin.collect()
    v = t4.value
    assert v(col, "gpu_temperature_celsius") == 40
    assert v(col, "gpu_memory_used_bytes") == 1032 * MIB
    assert v(col, "gpu_power_enforced_limit_watts") == 70
    assert v(col, "gpu_retired_pages_total", cause="single_bit") == 0
    assert v(col, "gpu_retired_pages_pending") == 0
    assert v(col, "gpu_remapped_rows_total", type="correctable") is None  # N/A on Turing
    assert v(col, "gpu_utilization_ratio") == 0
    assert v(col, "gpu_graphics_clock_max_hertz") == 1590e6


def test_h100_node_prints_every_family(harness: list[Harness]) -> None:
    h = start(harness, "h100x8")
    col = h.plugin.collect()
    names = {s.name for s in col.samples}
    assert names == H100_FAMILIES
    assert [h.value(col, "gpu_up", gpu=str(i)) for i in range(8)] == [1.0] * 8
    assert h.value(col, "gpu_energy_joules_total", gpu="5") == pytest.approx(67.03 * 86400)
    nvlinks = [s for s in col.samples if s.name == "gpu_nvlink_up" and s.labels["gpu"] == "0"]
    assert len(nvlinks) == 18
    errors = [s for s in col.samples if s.name == "gpu_nvlink_errors_total"]
    assert len(errors) == 8 * 18 * 4
    assert {s.labels["type"] for s in errors} == {"crc_flit", "crc_data", "replay", "recovery"}
    assert all(s.labels["vendor"] == "nvidia" and s.labels["model"] == "NVIDIA H100 80GB HBM3" for s in col.samples)
    # Static facts are read once; a later collection asks one field-value batch per GPU plus the
    # three questions no field id covers (utilization, memory, temperature); the slower ones wait
    # for the next detail_interval.
    def cycle_calls(h: Harness) -> int:  # the event thread's waits are not part of a collection
        return sum(n for name, n in h.state.calls.items() if not name.startswith("nvmlEventSetWait"))

    before = cycle_calls(h)
    col2 = h.plugin.collect()
    assert h.state.calls["nvmlDeviceGetMaxClockInfo"] == 8 * 3
    assert cycle_calls(h) - before == 8 * (1 + 3)
    assert h.state.calls["nvmlDeviceGetFieldValues"] == 8 * 2
    slow = {"gpu_performance_state", "gpu_pcie_link_generation", "gpu_mig_mode", "gpu_sm_clock_max_hertz",
            "gpu_sm_clock_hertz", "gpu_clock_event_active"}
    names2 = {s.name for s in col2.samples}
    assert not slow & names2 and "gpu_utilization_ratio" in names2 and "gpu_power_watts" in names2
    # No NVLink state or counter changed: none of the 8 x 90 NVLink answers is sent again.
    assert not {"gpu_nvlink_errors_total", "gpu_nvlink_up"} & names2
    h.plugin.close()

    # detail_interval 0: every collection is detailed. Per GPU: the 4 above, 12 details (encoder,
    # decoder, SM, memory and graphics clocks, clock event reasons, P-state, PCIe generation,
    # width, TX, RX, MIG mode; the fan is N/A in the recording and not asked twice) and, with
    # nvlink_crc_interval 0 too, 6 NVLinks x 2 CRC counters.
    every = start(harness, "h100x8", detail_interval=0, nvlink_crc_interval=0)
    every.plugin.collect()
    before = cycle_calls(every)
    assert {s.name for s in every.plugin.collect().samples} == H100_FAMILIES
    assert cycle_calls(every) - before == 8 * (4 + 12 + 6 * 2)
    every.plugin.close()

    # By default the CRC counters without a field id (links 12-17) are read once a minute: a
    # detailed collection in between asks the 4 + 12 and sends the CRC series of links 0-11 only.
    minute = start(harness, "h100x8", detail_interval=0)
    first = minute.plugin.collect()
    before = cycle_calls(minute)
    second = minute.plugin.collect()
    assert cycle_calls(minute) - before == 8 * (4 + 12)

    def crc_links(col: Collection) -> set[int]:
        return {int(s.labels["link"]) for s in col.samples
                if s.name == "gpu_nvlink_errors_total" and s.labels["type"] in ("crc_flit", "crc_data")}

    assert crc_links(first) == set(range(18))
    assert crc_links(second) == set(range(12))
    minute.plugin.close()


def test_the_cadences_are_checked_and_named_when_wrong() -> None:
    assert build(NvidiaConfig, {"nvlink_crc_interval": "2m"}, "plugins.nvidia").nvlink_crc_interval == 120.0
    for key in ("detail_interval", "nvlink_crc_interval"):
        with pytest.raises(ConfigError, match=f"plugins.nvidia: {key} must be 0"):
            build(NvidiaConfig, {key: -1}, "plugins.nvidia")


def test_nvlink_answers_are_sent_when_one_changes_and_with_the_details(harness: list[Harness]) -> None:
    """NVLink states and error counters are most of an H100's samples and rarely change: after the
    first collection they are sent again when one of a GPU's changes, and with every detailed
    collection, so a series still has a sample at least every detail_interval (the CRC counters
    no field id covers, links 12-17, every nvlink_crc_interval)."""
    h = start(harness, "h100x8", detail_interval=3600)

    def links(col: Collection, gpu: str) -> dict[tuple[str, str], float]:
        return {(s.labels["link"], s.labels.get("type", "up")): s.value for s in col.samples
                if s.name in ("gpu_nvlink_errors_total", "gpu_nvlink_up") and s.labels["gpu"] == gpu}

    first = h.plugin.collect()
    assert len(links(first, "2")) == 18 * 5  # up and four counters per link
    calls = h.state.calls["nvmlDeviceGetFieldValues"]
    quiet = h.plugin.collect()
    assert links(quiet, "2") == {} and h.value(quiet, "gpu_power_watts", gpu="2") is not None
    assert h.state.calls["nvmlDeviceGetFieldValues"] - calls == 8  # still asked every cycle

    # A CRC error on link 3 of GPU 2 and link 7 going down on GPU 5: those GPUs send all their links.
    assert h.state.devices is not None
    h.state.devices[2].rec.nvlinks[3].crc_flit = 4
    h.state.devices[5].rec.nvlinks[7].active = 0
    h.state.field_answers.clear()  # the fake caches its answers per request
    changed = h.plugin.collect()
    gpu2 = links(changed, "2")
    assert len(gpu2) == 18 * 3 + 12 * 2  # the CRC counters of links 12-17 have their own cadence
    assert gpu2[("3", "crc_flit")] == 4 and gpu2[("3", "crc_data")] == 0
    assert links(changed, "5")[("7", "up")] == 0
    assert links(changed, "0") == {}
    assert links(h.plugin.collect(), "2") == {}  # unchanged since: quiet again

    for state in h.plugin.gpus:
        state.detail_at = float("-inf")  # as when detail_interval has passed
    detailed = h.plugin.collect()
    assert all(len(links(detailed, str(gpu))) == 18 * 3 + 12 * 2 for gpu in range(8))
    for state in h.plugin.gpus:
        state.detail_at = state.crc_at = float("-inf")  # and nvlink_crc_interval too
    detailed = h.plugin.collect()
    assert all(len(links(detailed, str(gpu))) == 18 * 5 for gpu in range(8))


def test_not_supported_per_metric_is_omitted_for_that_gpu_only(harness: list[Harness]) -> None:
    h = start(harness, "h100x8")
    # GPU 2 has no power reading at all; GPU 3 lacks the power field, so its older call answers.
    h.state.not_supported.update({(2, "field:185"), (2, "nvmlDeviceGetPowerUsage"), (3, "field:185")})
    h.state.not_supported.add((2, "field:83"))  # energy field on GPU 2
    col = h.plugin.collect()
    assert h.value(col, "gpu_power_watts", gpu="2") is None
    assert h.value(col, "gpu_energy_joules_total", gpu="2") is None
    assert h.value(col, "gpu_power_watts", gpu="3") == pytest.approx(67.03)
    assert h.value(col, "gpu_power_watts", gpu="4") == pytest.approx(67.03)
    assert h.value(col, "gpu_up", gpu="2") == 1
    assert h.state.calls["nvmlDeviceGetPowerUsage"] == 2  # GPUs 2 and 3; the others read the field
    # Not asked again: a device that said "not supported" keeps saying it.
    calls = h.state.calls["nvmlDeviceGetPowerUsage"]
    h.plugin.collect()
    assert h.state.calls["nvmlDeviceGetPowerUsage"] - calls == 1


def test_nvlink_counters_without_the_scoped_field_are_asked_per_link(harness: list[Harness]) -> None:
    """A driver without the per-link scoped fields (pre-R525) still reports every link's counters."""
    h = start(harness, "h100x8")
    h.state.not_supported.update({(0, "field:161"), (0, "field:165")})
    col = h.plugin.collect()
    before = h.state.calls["nvmlDeviceGetNvLinkErrorCounter"], h.state.calls["nvmlDeviceGetNvLinkState"]
    h.plugin.collect()
    # GPU 0 alone: replay of links 12-17 and the state of all 18 links, one call each, every cycle.
    assert h.state.calls["nvmlDeviceGetNvLinkErrorCounter"] - before[0] == 6
    assert h.state.calls["nvmlDeviceGetNvLinkState"] - before[1] == 18
    for gpu in ("0", "1"):
        assert h.value(col, "gpu_nvlink_errors_total", gpu=gpu, link="15", type="replay") == 0
        assert h.value(col, "gpu_nvlink_up", gpu=gpu, link="15") == 1


def test_function_not_found_falls_back_and_is_remembered(
        harness: list[Harness], caplog: pytest.LogCaptureFixture) -> None:
    h = Harness("t4", detail_interval=0)
    harness.append(h)
    h.state.missing.update({"nvmlDeviceGetFieldValues", "nvmlDeviceGetCurrentClocksEventReasons",
                            "nvmlDeviceGetPciInfo_v3"})
    caplog.set_level("INFO", logger="fleetmon.agent.nvidia")
    h.plugin.discover()
    col = h.plugin.collect()
    col2 = h.plugin.collect()
    # Older symbols answer instead: throttle reasons, counters one call each, PCI info without _v3
    # (the binding has no _v2 in the fake, so the plain name is the third candidate).
    assert h.value(col2, "gpu_clock_event_active", reason="gpu_idle") == 0
    assert h.value(col2, "gpu_ecc_errors_total", type="correctable", scope="volatile") == 0
    assert h.value(col2, "gpu_retired_pages_total", cause="double_bit") == 0
    info = next(s for s in col.samples if s.name == "gpu_info")
    assert info.labels["pci"] == "00000000:00:1E.0"
    assert h.state.calls["nvmlDeviceGetFieldValues"] == 1
    assert h.state.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 1
    assert h.state.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 2
    logged = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len([m for m in logged if "nvmlDeviceGetFieldValues" in m]) == 1
    assert len([m for m in logged if "nvmlDeviceGetPciInfo_v2" in m]) == 1


def test_gpu_lost_mid_run(harness: list[Harness]) -> None:
    h = start(harness, "h100x8")
    assert h.value(h.plugin.collect(), "gpu_up", gpu="3") == 1
    h.state.lost.add(3)
    col = h.plugin.collect()
    assert h.value(col, "gpu_up", gpu="3") == 0
    assert h.value(col, "gpu_temperature_celsius", gpu="3") is None
    assert [h.value(col, "gpu_up", gpu=str(i)) for i in (0, 1, 2, 4, 5, 6, 7)] == [1.0] * 7
    assert h.value(col, "gpu_temperature_celsius", gpu="4") == 27
    [lost] = col.events
    assert (lost.kind, lost.severity, lost.labels["gpu"]) == ("gpu.lost", Severity.CRITICAL, "3")
    assert "GPU is lost" in lost.message
    assert h.plugin.collect().events == []  # one event per outage
    h.state.lost.discard(3)
    col = h.plugin.collect()
    assert h.value(col, "gpu_up", gpu="3") == 1
    assert [e.kind for e in col.events] == ["gpu.recovered"]


def test_hanging_gpu_is_bounded_and_others_report(harness: list[Harness]) -> None:
    h = start(harness, "h100x8", gpu_timeout=0.3)
    h.plugin.collect()
    h.state.hang[5] = threading.Event()
    col = h.plugin.collect()
    # Bounded: the collection came back while GPU 5's call is still stuck in the driver.
    assert (h.state.hung_calls[5], h.state.blocked[5]) == (1, 1)
    assert h.value(col, "gpu_up", gpu="5") == 0
    assert h.value(col, "gpu_temperature_celsius", gpu="6") == 27
    assert [e.kind for e in col.events] == ["gpu.lost"]
    assert "no answer within 0.3s" in col.events[0].message
    # Still stuck: skipped, no second call (no thread piles up behind the first).
    col = h.plugin.collect()
    assert (h.state.hung_calls[5], h.state.blocked[5]) == (1, 1)
    assert h.value(col, "gpu_up", gpu="5") == 0
    h.state.hang.pop(5).set()
    deadline = time.monotonic() + 5
    while h.plugin.gpus[5].busy is not None and not h.plugin.gpus[5].busy.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert h.value(h.plugin.collect(), "gpu_up", gpu="5") == 1


def test_slow_gpus_each_get_their_own_deadline(harness: list[Harness]) -> None:
    """GPUs are collected in turn: eight slow-but-answering GPUs take longer together than one
    gpu_timeout, and none of them is reported down for it."""
    h = start(harness, "h100x8", gpu_timeout=1.0)
    h.plugin.collect()  # the first collection asks the details too
    h.state.latency_s = 0.05  # 4 calls x 50 ms a GPU: 0.2 s each (5x inside its deadline), 1.6 s for the eight
    col = h.plugin.collect()
    assert [h.value(col, "gpu_up", gpu=str(i)) for i in range(8)] == [1.0] * 8
    assert col.events == []


def test_no_library_or_driver_disables_the_plugin() -> None:
    state = fake.reset("t4")
    state.init_error = fake.NVML_ERROR_LIBRARY_NOT_FOUND
    plugin = NvidiaPlugin(PluginContext(node="t"), NvidiaConfig(library="tests.fakenvml"))
    with pytest.raises(PluginUnavailable, match=r"libnvidia-ml\.so\.1 not found"):
        plugin.discover()
    plugin.close()
    plugin.close()
    missing = NvidiaPlugin(PluginContext(node="t"), NvidiaConfig(library="no_such_nvml_binding"))
    with pytest.raises(PluginUnavailable, match="no_such_nvml_binding"):
        missing.discover()
    NvidiaPlugin(PluginContext(node="t"), NvidiaConfig()).close()  # without discover


def wait_for(events: list[Event], n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(events) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_xid_event_from_nvml(harness: list[Harness]) -> None:
    h = start(harness, "h100x8")
    fake.post_event(1, fake.nvmlEventTypeXidCriticalError, 13)
    fake.post_event(2, fake.nvmlEventTypeXidCriticalError, 999)  # not in the catalog
    wait_for(h.events, 2)
    first, unknown = h.events
    assert (first.kind, first.severity, first.action) == ("gpu.xid", Severity.WARNING, "check_application")
    assert first.labels["gpu"] == "1" and first.labels["xid"] == "13"
    assert first.labels["uuid"] == "GPU-513536b6-7d19-9063-b049-1e69664bb201"
    assert unknown.severity is Severity.WARNING and unknown.labels["xid"] == "999"
    col = h.plugin.collect()
    assert h.value(col, "gpu_xid_errors_total", gpu="1", xid="13") == 1
    assert h.value(col, "gpu_xid_errors_total", gpu="2", xid="999") == 1
    # Each new series is preceded once by a 0 stamped before its first XID (rule pack: increase()).
    [zero] = [s for s in col.samples if s.name == "gpu_xid_errors_total" and s.ts is not None
              and s.labels["gpu"] == "1"]
    assert zero.value == 0 and zero.ts is not None and zero.ts < first.ts
    again = h.plugin.collect()
    assert [s for s in again.samples if s.ts is not None] == []


def test_xid_79_from_nvml_and_kernel_log_counts_once(harness: list[Harness], tmp_path: Path) -> None:
    """Acceptance: NVML and the kernel log both report XID 79 → one count, one event, gpu_up 0."""
    h = start(harness, "h100x8")
    kernel_log = tmp_path / "kmsg"
    kernel_log.write_text("")
    kmsg = KmsgPlugin(h.ctx, KmsgConfig(path=str(kernel_log)))
    kmsg.discover()
    try:
        fake.post_event(4, fake.nvmlEventTypeXidCriticalError, 79)
        wait_for(h.events, 1)
        now = datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S,%f+00:00")
        # GPU 4 of the fake HGX node is at PCI 0000:9a:00.0.
        with kernel_log.open("a") as f:
            f.write(f"{stamp} NVRM: Xid (PCI:0000:9a:00): 79, pid=0, name=<unknown>, "
                    "GPU has fallen off the bus.\n")
        kmsg.collect()
        assert kmsg.xid_lines[("0000:9a:00", 79)] == 1
        [ev] = h.events
        assert (ev.severity, ev.action, ev.labels["gpu"], ev.labels["xid"]) == (
            Severity.CRITICAL, "reboot_then_inspect", "4", "79")
        col = h.plugin.collect()
        assert h.value(col, "gpu_xid_errors_total", gpu="4", xid="79") == 1
        assert h.value(col, "gpu_up", gpu="4") == 0
        assert col.events == []  # the XID event was the one announcement of this outage
        assert h.value(col, "gpu_up", gpu="5") == 1
        # The GPU that fell off the bus is not asked again (a call would only hang).
        calls = h.state.calls["nvmlDeviceGetTemperatureV"]
        h.plugin.collect()
        assert h.state.calls["nvmlDeviceGetTemperatureV"] - calls == 7
        # Only the nvidia plugin reports the shared counter (one writer per series).
        assert [s for s in kmsg.collect().samples if s.name == "gpu_xid_errors_total"] == []
        # A second XID 79 a few seconds later is a new one.
        later = (now + datetime.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S,%f+00:00")
        with kernel_log.open("a") as f:
            f.write(f"{later} NVRM: Xid (PCI:0000:9a:00): 79, pid=0, name=<unknown>, GPU has fallen off the bus.\n")
        kmsg.collect()
        assert h.value(h.plugin.collect(), "gpu_xid_errors_total", gpu="4", xid="79") == 2
    finally:
        kmsg.close()


def test_shipped_catalog_is_the_projects_table(fixtures_dir: Path) -> None:
    shared = (fixtures_dir.parent / "xid-catalog.csv").read_text()
    shipped = (REPO / "agent/plugins/nvidia/xid_catalog.csv").read_text()
    assert shipped == shared
    table = parse_catalog(shipped)
    assert (table[79].severity, table[79].action) == (Severity.CRITICAL, "reboot_then_inspect")
    assert len(table) == 27


def _run_cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fleetmon", "agent", "--once", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_cli_once_against_the_fake_prints_every_family() -> None:
    out = _run_cli(["--format", "json", "--plugins", "nvidia", "--set", "nvidia.library=tests.fakenvml"],
                   {"FAKENVML_NODE": "h100x8"})
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    names = {r["name"] for r in rows if "name" in r}
    assert names >= H100_FAMILIES
    assert names - H100_FAMILIES == {"fleetmon_agent_plugin_duration_seconds", "fleetmon_agent_plugin_success",
                                     "fleetmon_agent_plugin_samples"}


def test_cli_prom_output_passes_promtool() -> None:
    promtool = require_binary("promtool")
    out = _run_cli(["--format", "prom", "--plugins", "nvidia", "--set", "nvidia.library=tests.fakenvml"],
                   {"FAKENVML_NODE": "a100"})
    assert out.returncode == 0, out.stderr
    check = subprocess.run([promtool, "check", "metrics"], input=out.stdout, capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_cli_on_a_node_without_nvidia_gpu_says_so() -> None:
    try:
        pynvml.nvmlInit()
    except Exception:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVIDIA driver")
    out = _run_cli(["--format", "json", "--plugins", "nvidia"], {})
    # nothing usable: exit 1 and say so (issue 15), never an empty output with exit 0
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""  # a disabled plugin prints nothing, not even self-metrics
    lines = [line for line in out.stderr.splitlines() if "plugin nvidia disabled" in line]
    assert len(lines) == 1 and "NVML" in lines[0]
    assert out.stderr.splitlines()[-1].startswith("fleetmon agent: no usable plugin: nvidia (NVML")


def test_xid_79_kernel_log_first_then_nvml(harness: list[Harness], tmp_path: Path) -> None:
    h = start(harness, "h100x8")
    kernel_log = tmp_path / "kmsg"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S,%f+00:00")
    kernel_log.write_text(f"{stamp} NVRM: Xid (PCI:0000:18:00): 79, pid=0, name=<unknown>, fell off the bus\n")
    kmsg = KmsgPlugin(h.ctx, KmsgConfig(path=str(kernel_log), from_start=True))
    kmsg.discover()
    try:
        kmsg.collect()
        [ev] = h.events
        assert (ev.kind, ev.severity, ev.action, ev.labels["gpu"]) == ("gpu.xid", Severity.CRITICAL,
                                                                       "reboot_then_inspect", "0")
        assert ev.labels["uuid"] == "GPU-513536b6-7d19-9063-b049-1e69664bb200"
        # GPU 0 is gone before NVML's copy arrives: the next collection already reports it down.
        col = h.plugin.collect()
        assert h.value(col, "gpu_up", gpu="0") == 0
        handled = threading.Event()
        handle_xid = h.plugin.handle_xid

        def spy(*args: Any, **kwargs: Any) -> None:
            handle_xid(*args, **kwargs)
            handled.set()

        h.plugin.handle_xid = spy  # type: ignore[method-assign]
        fake.post_event(0, fake.nvmlEventTypeXidCriticalError, 79)
        assert handled.wait(30), "the event watcher did not handle the XID"
        # NVML's copy of the XID the kernel log reported first: counted once, no second event.
        assert [e.kind for e in h.events] == ["gpu.xid"]
        assert h.value(h.plugin.collect(), "gpu_xid_errors_total", gpu="0", xid="79") == 1
    finally:
        kmsg.close()


def test_serial_hang_is_bounded_by_the_scheduler_deadline(harness: list[Harness]) -> None:
    """Without per-GPU workers, the scheduler's plugin deadline is what bounds a hung NVML call."""
    h = start(harness, "t4", isolation="none")
    runner = PluginRunner(h.plugin, PluginSection("nvidia", 10.0, 0.3, True, {}))
    h.state.hang[0] = threading.Event()

    async def two_runs() -> list[tuple[bool, float]]:
        out = []
        for _ in range(2):
            _col, ok, secs = await runner.collect()
            out.append((ok, secs))
        return out

    (ok1, secs1), (ok2, _secs2) = asyncio.run(two_runs())
    # Both runs came back while the first call is still stuck: the deadline (0.3 s) bounds them.
    assert h.state.blocked[0] == 1
    assert not ok1 and secs1 >= 0.3
    assert not ok2 and h.state.hung_calls[0] == 1  # still stuck: skipped, no second thread
    h.state.hang.pop(0).set()
    runner._pool.shutdown(wait=True)
