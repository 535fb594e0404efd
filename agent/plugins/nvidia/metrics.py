"""Metric families of the nvidia plugin (names: DESIGN.md "Metrics", GPU row, plus documented extras).

Every GPU series carries ``gpu`` (index), ``uuid``, ``vendor="nvidia"`` and ``model``.
"""

from __future__ import annotations

from agent.model import counter, gauge
from agent.plugins import accel

# The names every vendor shares are declared once, in the accelerator vocabulary.
UP = accel.GPU_UP
INFO = accel.GPU_INFO
UTIL = accel.UTILIZATION
MEM_UTIL = accel.MEMORY_UTILIZATION
MEM_USED = accel.MEMORY_USED
MEM_TOTAL = accel.MEMORY_TOTAL
TEMP = accel.TEMPERATURE
MEM_TEMP = accel.MEMORY_TEMPERATURE
POWER = accel.POWER
POWER_LIMIT = accel.POWER_LIMIT
ENERGY = accel.ENERGY
SM_CLOCK = accel.SM_CLOCK
MEM_CLOCK = accel.MEMORY_CLOCK
FAN = accel.FAN_SPEED
CLOCK_EVENT = accel.CLOCK_EVENT
ECC = accel.ECC_ERRORS
PCIE_GEN = accel.PCIE_GEN
PCIE_WIDTH = accel.PCIE_WIDTH
PCIE_GEN_MAX = accel.PCIE_GEN_MAX
PCIE_WIDTH_MAX = accel.PCIE_WIDTH_MAX
PCIE_REPLAY = accel.PCIE_REPLAY


ENC_UTIL = gauge("gpu_encoder_utilization_ratio", "Video encoder utilization (0-1)", "ratio")
DEC_UTIL = gauge("gpu_decoder_utilization_ratio", "Video decoder utilization (0-1)", "ratio")

MEM_RESERVED = gauge("gpu_memory_reserved_bytes", "Frame-buffer memory reserved by the driver and firmware", "bytes")

TEMP_SLOWDOWN = gauge("gpu_temperature_slowdown_celsius", "Temperature at which the GPU slows its clocks", "celsius")
TEMP_SHUTDOWN = gauge("gpu_temperature_shutdown_celsius", "Temperature at which the GPU shuts down", "celsius")

POWER_ENFORCED = gauge("gpu_power_enforced_limit_watts", "Power limit in force (lowest of all limiters)", "watts")

GR_CLOCK = gauge("gpu_graphics_clock_hertz", "Graphics clock", "hertz")
SM_CLOCK_MAX = gauge("gpu_sm_clock_max_hertz", "Highest SM clock the GPU supports", "hertz")
MEM_CLOCK_MAX = gauge("gpu_memory_clock_max_hertz", "Highest memory clock the GPU supports", "hertz")
GR_CLOCK_MAX = gauge("gpu_graphics_clock_max_hertz", "Highest graphics clock the GPU supports", "hertz")

PSTATE = gauge("gpu_performance_state", "Performance state: 0 (P0, highest) to 15 (P15, lowest)")

RETIRED = counter("gpu_retired_pages_total", "Frame-buffer pages retired, by cause (single_bit, double_bit)")
RETIRED_PENDING = gauge("gpu_retired_pages_pending", "1 if pages wait for retirement at the next reboot")
REMAPPED = counter("gpu_remapped_rows_total", "Memory rows remapped, by type (correctable, uncorrectable)")
REMAP_PENDING = gauge("gpu_row_remap_pending", "1 if a row remap waits for a GPU reset")
REMAP_FAILED = gauge("gpu_row_remap_failed", "1 if a row remap failed (hardware inspection needed)")

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
