"""Metric families of the nvidia plugin (names: DESIGN.md "Metrics", GPU row, plus documented extras).

Every GPU series carries ``gpu`` (index), ``uuid``, ``vendor="nvidia"`` and ``model``.
"""

from __future__ import annotations

from agent.model import counter, gauge, info

UP = gauge("gpu_up", "1 if the GPU answered NVML this collection, 0 if lost, unresponsive or fallen off the bus")
INFO = info("gpu_info", "GPU identity: uuid, serial, board part number, VBIOS, driver and CUDA versions, PCI address")

UTIL = gauge("gpu_utilization_ratio", "Share of the last sample period a kernel ran on the GPU (0-1)", "ratio")
MEM_UTIL = gauge(
    "gpu_memory_utilization_ratio", "Share of the last sample period device memory was read or written", "ratio")
ENC_UTIL = gauge("gpu_encoder_utilization_ratio", "Video encoder utilization (0-1)", "ratio")
DEC_UTIL = gauge("gpu_decoder_utilization_ratio", "Video decoder utilization (0-1)", "ratio")

MEM_USED = gauge("gpu_memory_used_bytes", "Frame-buffer memory allocated", "bytes")
MEM_TOTAL = gauge("gpu_memory_total_bytes", "Frame-buffer memory installed", "bytes")
MEM_RESERVED = gauge("gpu_memory_reserved_bytes", "Frame-buffer memory reserved by the driver and firmware", "bytes")

TEMP = gauge("gpu_temperature_celsius", "GPU die temperature", "celsius")
MEM_TEMP = gauge("gpu_memory_temperature_celsius", "HBM/GDDR memory temperature", "celsius")
TEMP_SLOWDOWN = gauge("gpu_temperature_slowdown_celsius", "Temperature at which the GPU slows its clocks", "celsius")
TEMP_SHUTDOWN = gauge("gpu_temperature_shutdown_celsius", "Temperature at which the GPU shuts down", "celsius")

POWER = gauge("gpu_power_watts", "Board power draw", "watts")
POWER_LIMIT = gauge("gpu_power_limit_watts", "Power management limit (configured)", "watts")
POWER_ENFORCED = gauge("gpu_power_enforced_limit_watts", "Power limit in force (lowest of all limiters)", "watts")
ENERGY = counter("gpu_energy_joules_total", "Energy consumed since the driver was loaded", "joules")

SM_CLOCK = gauge("gpu_sm_clock_hertz", "SM clock", "hertz")
MEM_CLOCK = gauge("gpu_memory_clock_hertz", "Memory clock", "hertz")
GR_CLOCK = gauge("gpu_graphics_clock_hertz", "Graphics clock", "hertz")
SM_CLOCK_MAX = gauge("gpu_sm_clock_max_hertz", "Highest SM clock the GPU supports", "hertz")
MEM_CLOCK_MAX = gauge("gpu_memory_clock_max_hertz", "Highest memory clock the GPU supports", "hertz")
GR_CLOCK_MAX = gauge("gpu_graphics_clock_max_hertz", "Highest graphics clock the GPU supports", "hertz")

FAN = gauge("gpu_fan_speed_ratio", "Intended fan speed as a share of the maximum (0-1)", "ratio")
PSTATE = gauge("gpu_performance_state", "Performance state: 0 (P0, highest) to 15 (P15, lowest)")
CLOCK_EVENT = gauge("gpu_clock_event_active", "1 while this clock-event (throttle) reason holds the clocks down")

ECC = counter("gpu_ecc_errors_total", "ECC errors by type (correctable, uncorrectable) and scope (volatile, aggregate)")
RETIRED = counter("gpu_retired_pages_total", "Frame-buffer pages retired, by cause (single_bit, double_bit)")
RETIRED_PENDING = gauge("gpu_retired_pages_pending", "1 if pages wait for retirement at the next reboot")
REMAPPED = counter("gpu_remapped_rows_total", "Memory rows remapped, by type (correctable, uncorrectable)")
REMAP_PENDING = gauge("gpu_row_remap_pending", "1 if a row remap waits for a GPU reset")
REMAP_FAILED = gauge("gpu_row_remap_failed", "1 if a row remap failed (hardware inspection needed)")

PCIE_GEN = gauge("gpu_pcie_link_generation", "Current PCIe link generation")
PCIE_WIDTH = gauge("gpu_pcie_link_width", "Current PCIe link width (lanes)")
PCIE_GEN_MAX = gauge("gpu_pcie_link_generation_max", "Highest PCIe generation the GPU and its slot support")
PCIE_WIDTH_MAX = gauge("gpu_pcie_link_width_max", "Widest PCIe link the GPU supports (lanes)")
PCIE_REPLAY = counter("gpu_pcie_replay_total", "PCIe replays (link-level retransmissions)")
PCIE_TX = gauge("gpu_pcie_tx_bytes_per_second", "PCIe transmit throughput over the last 20 ms", "bytes_per_second")
PCIE_RX = gauge("gpu_pcie_rx_bytes_per_second", "PCIe receive throughput over the last 20 ms", "bytes_per_second")

NVLINK_UP = gauge("gpu_nvlink_up", "1 if the NVLink is active")
NVLINK_ERRORS = counter(
    "gpu_nvlink_errors_total", "NVLink data-link errors by type (crc_flit, crc_data, replay, recovery)")

XID = counter(
    "gpu_xid_errors_total", "XID errors the driver reported, by XID (NVML events and kernel log, de-duplicated)")

MIG_MODE = gauge("gpu_mig_mode", "1 if MIG (Multi-Instance GPU) mode is enabled")
MIG_MODE_PENDING = gauge("gpu_mig_mode_pending", "MIG mode after the next GPU reset")
MIG_MEM_USED = gauge("gpu_mig_memory_used_bytes", "Frame-buffer memory used by a MIG device", "bytes")
MIG_MEM_TOTAL = gauge("gpu_mig_memory_total_bytes", "Frame-buffer memory of a MIG device", "bytes")
MIG_UTIL = gauge("gpu_mig_utilization_ratio", "Utilization of a MIG device (0-1), where the driver reports it", "ratio")
