"""DCGM-compatible names (opt-in): fleetmon's GPU series under dcgm-exporter's names and labels.

A site that already has dashboards and alert rules written for NVIDIA's dcgm-exporter
(``DCGM_FI_DEV_GPU_TEMP{gpu, UUID, modelName, Hostname}``) can point them at fleetmon agents:
``prometheus: {names: dcgm}`` in the agent config (or ``both`` while migrating), or
``fleetmon agent --once --format prom --names dcgm``. The mapping lives here, in the output
layer, not in the plugins: every NVIDIA series is renamed on its way out, whichever plugin
(nvidia, simulated) produced it. Series that dcgm-exporter does not have keep their fleetmon
names, so nothing is lost.

Names, types, units and labels follow dcgm-exporter's ``etc/default-counters.csv`` and
``dcp-metrics-included.csv`` (DCGM field identifiers) and its label set: ``gpu`` (index),
``UUID``, ``modelName``, ``Hostname``, ``pci_bus_id`` and ``DCGM_FI_DRIVER_VERSION`` (the last
two from ``gpu_info`` of the same GPU). Values are converted back to DCGM's units (MiB, MHz,
percent, millijoules). Not mapped, on purpose:

- ``DCGM_FI_DEV_XID_ERRORS`` is the *code of the last XID* (a gauge), not a count: fleetmon
  keeps ``gpu_xid_errors_total{xid}``, which rules can use without losing XIDs between scrapes.
- ``DCGM_FI_DEV_FB_FREE`` (total - used - reserved) and ``device="nvidiaN"`` (the device minor
  number, which is not the index): not known exactly, so not invented.

The table is ``docs/prometheus.md``; ``tests/test_exposition.py`` checks it against this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MIB = float(1 << 20)


@dataclass(frozen=True, slots=True)
class DcgmField:
    """One dcgm-exporter metric made from one fleetmon metric (optionally one label value of it)."""

    name: str
    type: str  # "gauge" | "counter", as dcgm-exporter declares it
    help: str
    scale: float = 1.0  # DCGM value = fleetmon value * scale
    when: tuple[tuple[str, str], ...] = ()  # only samples with these labels
    consumes: tuple[str, ...] = field(default=())  # labels turned into the name, dropped

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.when)


def _f(name: str, type_: str, help_: str, scale: float = 1.0, **when: str) -> DcgmField:
    return DcgmField(name, type_, help_, scale, tuple(sorted(when.items())), tuple(sorted(when)))


#: fleetmon name -> the dcgm-exporter fields it becomes.
MAPPING: dict[str, tuple[DcgmField, ...]] = {
    "gpu_sm_clock_hertz": (_f("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", 1e-6),),
    "gpu_memory_clock_hertz": (_f("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", 1e-6),),
    "gpu_memory_temperature_celsius": (_f("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),),
    "gpu_temperature_celsius": (_f("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),),
    "gpu_power_watts": (_f("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),),
    "gpu_power_limit_watts": (_f("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W)."),),
    "gpu_energy_joules_total": (_f("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
                                   "Total energy consumption since boot (in mJ).", 1e3),),
    "gpu_pcie_replay_total": (_f("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),),
    "gpu_pcie_link_generation": (_f("DCGM_FI_DEV_PCIE_LINK_GEN", "gauge", "PCIe link generation."),),
    "gpu_pcie_link_width": (_f("DCGM_FI_DEV_PCIE_LINK_WIDTH", "gauge", "PCIe link width (lanes)."),),
    "gpu_utilization_ratio": (_f("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", 100.0),),
    "gpu_memory_utilization_ratio": (_f("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", 100.0),),
    "gpu_encoder_utilization_ratio": (_f("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %).", 100.0),),
    "gpu_decoder_utilization_ratio": (_f("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %).", 100.0),),
    "gpu_memory_used_bytes": (_f("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", 1 / MIB),),
    "gpu_memory_total_bytes": (_f("DCGM_FI_DEV_FB_TOTAL", "gauge", "Framebuffer memory total (in MiB).", 1 / MIB),),
    "gpu_ecc_errors_total": (
        _f("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Total number of single-bit volatile ECC errors.",
           type="correctable", scope="volatile"),
        _f("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Total number of double-bit volatile ECC errors.",
           type="uncorrectable", scope="volatile"),
        _f("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "counter", "Total number of single-bit persistent ECC errors.",
           type="correctable", scope="aggregate"),
        _f("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "counter", "Total number of double-bit persistent ECC errors.",
           type="uncorrectable", scope="aggregate"),
    ),
    "gpu_retired_pages_total": (
        _f("DCGM_FI_DEV_RETIRED_SBE", "counter", "Total number of retired pages due to single-bit errors.",
           cause="single_bit"),
        _f("DCGM_FI_DEV_RETIRED_DBE", "counter", "Total number of retired pages due to double-bit errors.",
           cause="double_bit"),
    ),
    "gpu_remapped_rows_total": (
        _f("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for correctable errors",
           type="correctable"),
        _f("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for uncorrectable errors",
           type="uncorrectable"),
    ),
    "gpu_row_remap_failed": (_f("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed"),),
}

#: fleetmon label -> dcgm-exporter label (``vendor`` is dropped: dcgm-exporter is NVIDIA only).
LABELS = {"uuid": "UUID", "model": "modelName", "node": "Hostname"}
_DROP = {"vendor"}


def dcgm_labels(labels: Mapping[str, str], consumed: tuple[str, ...], info: Mapping[str, str]) -> dict[str, str]:
    """dcgm-exporter's label names; ``info`` adds what ``gpu_info`` knows (PCI bus, driver)."""
    out = {LABELS.get(k, k): v for k, v in labels.items() if k not in consumed and k not in _DROP}
    if info.get("pci"):
        out["pci_bus_id"] = info["pci"]
    if info.get("driver"):
        out["DCGM_FI_DRIVER_VERSION"] = info["driver"]
    return out


def applies(name: str, labels: Mapping[str, str]) -> bool:
    """Whether a series has a DCGM name: an NVIDIA GPU series that dcgm-exporter also exports."""
    return name in MAPPING and labels.get("vendor") == "nvidia"
