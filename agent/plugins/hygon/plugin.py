"""Hygon DCU through ``hy-smi --json``, parsed by the AMD rocm-smi parser.

hy-smi is Hygon's fork of rocm-smi (DTK, the Hygon ROCm distribution) and prints the same
``{"card0": {...}}`` JSON; the label differences (``DCU use (%)``, ``vram ... (MiB)``,
``Temperature (Sensor mem)``) are handled, and listed, in :mod:`agent.plugins.amd.rocm_smi`.
What differs here: ``vendor="hygon"``, ``kind="DCU"``, and ``rocminfo`` is read once at discover
time (when present) for the ISA name and marketing name, matched to hy-smi's unique id through
the HSA agent UUID (``GPU-<unique id>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import PluginError, PluginUnavailable
from agent.model import Collection
from agent.plugin import GpuRef, Plugin
from agent.plugins.accel import AccelReading, to_collection
from agent.plugins.amd.rocm_smi import parse_rocm_smi
from agent.plugins.hygon.rocminfo import HsaAgent, parse_rocminfo
from agent.toolrun import Tool

#: Fixed argument list: the queries whose labels the DTK 24.04.3 capture shows.
HY_SMI_ARGS = (
    "--showproductname", "--showserial", "--showuniqueid", "--showtemp", "--showpower", "--showuse",
    "--showmeminfo", "vram", "--json",
)


@dataclass
class HygonConfig:
    #: Path of hy-smi; empty: look it up on PATH.
    hy_smi: str = ""
    #: Path of rocminfo (optional, for the ISA name); empty: PATH; "-" to skip it.
    rocminfo: str = ""
    #: Deadline for one tool run, seconds.
    tool_timeout: float = 8.0

    def validate(self) -> None:
        if self.tool_timeout <= 0:
            raise ValueError("tool_timeout must be positive (seconds)")


def hsa_labels(agents: list[HsaAgent]) -> dict[str, dict[str, str]]:
    """unique id -> extra gpu_info labels, from rocminfo's DCU/GPU agents."""
    out = {}
    for a in agents:
        if a.device_type in ("DCU", "GPU") and a.uuid.startswith("GPU-"):
            out[a.uuid.removeprefix("GPU-")] = {"isa": a.name, "marketing_name": a.marketing_name}
    return out


def parse_hy_smi(text: str, hsa: dict[str, dict[str, str]] | None = None) -> list[AccelReading]:
    readings = parse_rocm_smi(text, source="hy-smi " + " ".join(HY_SMI_ARGS), vendor="hygon", kind="DCU")
    for r in readings:
        r.info.update((hsa or {}).get(r.uuid, {}))
    return readings


class HygonPlugin(Plugin):
    name = "hygon"
    Config = HygonConfig
    default_interval = 10.0
    config: HygonConfig

    _tool: Tool | None = None
    _hsa: dict[str, dict[str, str]] = {}  # noqa: RUF012 - replaced per instance in discover

    def discover(self) -> None:
        cfg = self.config
        tool = Tool("hy-smi", cfg.hy_smi, timeout=cfg.tool_timeout, config_key="plugins.hygon.hy_smi")
        tool.resolve()
        self._hsa = {}
        if cfg.rocminfo != "-":
            info_tool = Tool("rocminfo", cfg.rocminfo, timeout=cfg.tool_timeout, config_key="plugins.hygon.rocminfo")
            try:
                self._hsa = hsa_labels(parse_rocminfo(info_tool.run().stdout))
            except PluginError as err:  # optional: identity extras only
                self.log.info("hygon: rocminfo not used: %s", err)
        self._tool = tool
        readings = self._read()
        if not readings:
            raise PluginUnavailable("hy-smi reports no Hygon DCUs")
        for r in readings:
            if r.info.get("pci_bus"):
                self.ctx.directory.register_gpu(r.info["pci_bus"], GpuRef(r.index, r.uuid, r.model, r.vendor))

    def _read(self) -> list[AccelReading]:
        if self._tool is None:
            raise PluginUnavailable("hygon: collect() before a successful discover()")
        return parse_hy_smi(self._tool.run(*HY_SMI_ARGS).stdout, self._hsa)

    def collect(self) -> Collection:
        return to_collection(self._read())

    def close(self) -> None:
        self._tool = None
