"""Read ``nvidia-smi -q -x`` XML (DTD v11/v12) into the numbers NVML would answer.

Values nvidia-smi printed as ``N/A`` become None: the fake answers NOT_SUPPORTED for them, as the
driver did when the capture was taken.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

_NUM = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)")

# nvidia-smi element suffix -> nvmlClocksEventReason* bit (nvml.h).
REASON_BITS = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clocks_setting": 0x100,
}


@dataclass
class MigRecord:
    index: int
    gpu_instance: int
    compute_instance: int
    total_mib: float
    used_mib: float


@dataclass
class NvLinkRecord:
    active: int
    # nvmlNvLinkErrorCounter_t order: replay, recovery, crc_flit, crc_data
    replay: int = 0
    recovery: int = 0
    crc_flit: int = 0
    crc_data: int = 0


@dataclass
class GpuRecord:
    source: str
    name: str
    uuid: str
    serial: str | None
    board_part: str | None
    vbios: str | None
    pci_bus_id: str
    driver: str
    cuda: str
    pcie_gen: float | None
    pcie_gen_max: float | None
    pcie_width: float | None
    pcie_width_max: float | None
    pcie_replay: float | None
    pcie_tx_kb: float | None
    pcie_rx_kb: float | None
    fan_percent: float | None
    pstate: int | None
    reasons: int | None
    fb_total_mib: float | None
    fb_reserved_mib: float | None
    fb_used_mib: float | None
    util_gpu: float | None
    util_mem: float | None
    util_enc: float | None
    util_dec: float | None
    ecc: dict[tuple[str, str], float | None]  # (volatile|aggregate, correctable|uncorrectable)
    retired_sbe: float | None
    retired_dbe: float | None
    retired_pending: int | None
    remap_cor: float | None
    remap_unc: float | None
    remap_pending: int | None
    remap_failure: int | None
    temp: float | None
    temp_slowdown: float | None
    temp_shutdown: float | None
    mem_temp: float | None
    power_w: float | None
    power_limit_w: float | None
    power_enforced_w: float | None
    clocks: dict[str, float | None]  # graphics, sm, mem (MHz)
    max_clocks: dict[str, float | None]
    mig_current: int | None
    mig_pending: int | None
    migs: list[MigRecord] = field(default_factory=list)
    energy_mj: float | None = None  # nvidia-smi -q -x does not record it
    nvlinks: list[NvLinkRecord] = field(default_factory=list)


def _text(node: ET.Element | None, path: str) -> str | None:
    if node is None:
        return None
    el = node.find(path)
    if el is None or el.text is None:
        return None
    value = el.text.strip()
    return None if value in ("N/A", "", "None") else value


def _num(node: ET.Element | None, path: str) -> float | None:
    value = _text(node, path)
    if value is None:
        return None
    match = _NUM.match(value)
    return float(match.group(1)) if match else None


def _yes(node: ET.Element | None, path: str) -> int | None:
    value = _text(node, path)
    if value is None:
        return None
    return 1 if value.lower() in ("yes", "enabled") else 0


def parse(path: Path) -> list[GpuRecord]:
    root = ET.parse(path).getroot()
    driver = _text(root, "driver_version") or ""
    cuda = _text(root, "cuda_version") or ""
    out = []
    for gpu in root.findall("gpu"):
        reasons_el = gpu.find("clocks_event_reasons")
        prefix = "clocks_event_reason_"
        if reasons_el is None:
            reasons_el = gpu.find("clocks_throttle_reasons")
            prefix = "clocks_throttle_reason_"
        reasons: int | None = None
        if reasons_el is not None:
            reasons = 0
            for suffix, bit in REASON_BITS.items():
                if (_text(reasons_el, prefix + suffix) or "") == "Active":
                    reasons |= bit
        # DTD v12 splits GPU and module power; "current" is the limit in force, "requested" the
        # configured one. v11 names them power_limit and enforced_power_limit.
        v12 = gpu.find("gpu_power_readings")
        if v12 is not None:
            power, limit, enforced = (_num(v12, "power_draw"), _num(v12, "requested_power_limit"),
                                      _num(v12, "current_power_limit"))
        else:
            v11 = gpu.find("power_readings")
            power, limit, enforced = (_num(v11, "power_draw"), _num(v11, "power_limit"),
                                      _num(v11, "enforced_power_limit"))
        pstate_text = _text(gpu, "performance_state")
        pstate = int(pstate_text[1:]) if pstate_text and pstate_text.startswith("P") else None
        migs = []
        for mig in gpu.findall("mig_devices/mig_device"):
            migs.append(MigRecord(
                int(_num(mig, "index") or 0), int(_num(mig, "gpu_instance_id") or 0),
                int(_num(mig, "compute_instance_id") or 0),
                _num(mig, "fb_memory_usage/total") or 0.0, _num(mig, "fb_memory_usage/used") or 0.0,
            ))
        retired = gpu.find("retired_pages")
        remap = gpu.find("remapped_rows")
        out.append(GpuRecord(
            source=path.name,
            name=_text(gpu, "product_name") or "",
            uuid=_text(gpu, "uuid") or "",
            serial=_text(gpu, "serial"),
            board_part=_text(gpu, "board_part_number"),
            vbios=_text(gpu, "vbios_version"),
            pci_bus_id=_text(gpu, "pci/pci_bus_id") or gpu.get("id", ""),
            driver=driver,
            cuda=cuda,
            pcie_gen=_num(gpu, "pci/pci_gpu_link_info/pcie_gen/current_link_gen"),
            pcie_gen_max=_num(gpu, "pci/pci_gpu_link_info/pcie_gen/max_link_gen"),
            pcie_width=_num(gpu, "pci/pci_gpu_link_info/link_widths/current_link_width"),
            pcie_width_max=_num(gpu, "pci/pci_gpu_link_info/link_widths/max_link_width"),
            pcie_replay=_num(gpu, "pci/replay_counter"),
            pcie_tx_kb=_num(gpu, "pci/tx_util"),
            pcie_rx_kb=_num(gpu, "pci/rx_util"),
            fan_percent=_num(gpu, "fan_speed"),
            pstate=pstate,
            reasons=reasons,
            fb_total_mib=_num(gpu, "fb_memory_usage/total"),
            fb_reserved_mib=_num(gpu, "fb_memory_usage/reserved"),
            fb_used_mib=_num(gpu, "fb_memory_usage/used"),
            util_gpu=_num(gpu, "utilization/gpu_util"),
            util_mem=_num(gpu, "utilization/memory_util"),
            util_enc=_num(gpu, "utilization/encoder_util"),
            util_dec=_num(gpu, "utilization/decoder_util"),
            ecc={
                (scope, kind): _sum_kind(gpu, scope, kind)
                for scope in ("volatile", "aggregate") for kind in ("correctable", "uncorrectable")
            },
            retired_sbe=_num(retired, "multiple_single_bit_retirement/retired_count"),
            retired_dbe=_num(retired, "double_bit_retirement/retired_count"),
            retired_pending=_yes(retired, "pending_retirement"),
            remap_cor=_num(remap, "remapped_row_corr"),
            remap_unc=_num(remap, "remapped_row_unc"),
            remap_pending=_yes(remap, "remapped_row_pending"),
            remap_failure=_yes(remap, "remapped_row_failure"),
            temp=_num(gpu, "temperature/gpu_temp"),
            temp_slowdown=_num(gpu, "temperature/gpu_temp_slow_threshold"),
            temp_shutdown=_num(gpu, "temperature/gpu_temp_max_threshold"),
            mem_temp=_num(gpu, "temperature/memory_temp"),
            power_w=power,
            power_limit_w=limit,
            power_enforced_w=enforced,
            clocks={k: _num(gpu, f"clocks/{k}_clock") for k in ("graphics", "sm", "mem")},
            max_clocks={k: _num(gpu, f"max_clocks/{k}_clock") for k in ("graphics", "sm", "mem")},
            mig_current=_yes(gpu, "mig_mode/current_mig"),
            mig_pending=_yes(gpu, "mig_mode/pending_mig"),
            migs=migs,
        ))
    return out


def _sum_kind(gpu: ET.Element, scope: str, kind: str) -> float | None:
    el = gpu.find(f"ecc_errors/{scope}")
    if el is None:
        return None
    values = [_num(el, child.tag) for child in el if child.tag.endswith("_" + kind)]
    numbers = [v for v in values if v is not None]
    return sum(numbers) if numbers else None


__all__ = ["GpuRecord", "MigRecord", "NvLinkRecord", "parse"]
