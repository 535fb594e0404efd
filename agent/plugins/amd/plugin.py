"""AMD Instinct/Radeon GPUs: the ``amdsmi`` Python library, else ``amd-smi``, else ``rocm-smi``.

Each source is a small reader (STYLE 4) that hands text or library answers to a pure parser and
returns :class:`~agent.plugins.accel.AccelReading` per GPU; the plugin emits them with the shared
``gpu_*`` vocabulary. ``source: auto`` tries them in that order at discover time and keeps the
first that works, logging which one it took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent.errors import PluginError, PluginUnavailable
from agent.model import Collection
from agent.plugin import GpuRef, Plugin
from agent.plugins.accel import AccelReading, to_collection
from agent.plugins.amd.amd_smi import parse_amd_smi_list, parse_amd_smi_metric
from agent.plugins.amd.rocm_smi import parse_rocm_smi
from agent.toolrun import Tool, ToolError

_SOURCES = ("auto", "amdsmi", "amd-smi", "rocm-smi")

#: Fixed argument lists (issue 8: no shell, nothing built from strings).
# The queries whose labels rocm_smi.py reads (telegraf's amd_rocm_smi runs a superset of these,
# and its captures are the test fixtures); --showallinfo would add slow ones (pids, topology,
# firmware, retired pages) that the parser ignores.
ROCM_SMI_ARGS = (
    "--showid", "--showproductname", "--showserial", "--showuniqueid", "--showbus", "--showvbios",
    "--showdriverversion", "--showtemp", "--showuse", "--showmemuse", "--showpower", "--showmaxpower",
    "--showclocks", "--showfan", "--showvoltage", "--showreplaycount", "--showmeminfo", "vram", "--json",
)
AMD_SMI_METRIC_ARGS = ("metric", "--json")
AMD_SMI_LIST_ARGS = ("list", "--json")


@dataclass
class AmdConfig:
    #: auto | amdsmi (Python library) | amd-smi | rocm-smi
    source: str = "auto"
    #: Path of amd-smi; empty: look it up on PATH.
    amd_smi: str = ""
    #: Path of rocm-smi; empty: look it up on PATH.
    rocm_smi: str = ""
    #: Deadline for one tool run, seconds (below the plugin's own timeout).
    tool_timeout: float = 8.0

    def validate(self) -> None:
        if self.source not in _SOURCES:
            raise ValueError(f"source must be one of {', '.join(_SOURCES)}, got {self.source!r}")
        if self.tool_timeout <= 0:
            raise ValueError("tool_timeout must be positive (seconds)")


class _Source(Protocol):
    name: str

    def read(self) -> list[AccelReading]: ...

    def close(self) -> None: ...


class RocmSmiSource:
    name = "rocm-smi"

    def __init__(self, tool: Tool) -> None:
        self.tool = tool

    def read(self) -> list[AccelReading]:
        # rocm-smi exits non-zero when any one of its queries is unsupported
        # on the card, yet still prints the JSON for the rest: judge it by its output.
        result = self.tool.run(*ROCM_SMI_ARGS, ok_codes=range(256))
        if result.returncode != 0 and not result.stdout.strip():
            raise ToolError(f"rocm-smi {' '.join(ROCM_SMI_ARGS)} exited with status {result.returncode} "
                            f"and printed nothing: {result.stderr.strip()[:200]}")
        return parse_rocm_smi(result.stdout, source="rocm-smi " + " ".join(ROCM_SMI_ARGS))

    def close(self) -> None:
        pass


class AmdSmiCliSource:
    """``amd-smi list --json`` once for identity, ``amd-smi metric --json`` every cycle."""

    name = "amd-smi"

    def __init__(self, tool: Tool) -> None:
        self.tool = tool
        self.identity = parse_amd_smi_list(
            tool.run(*AMD_SMI_LIST_ARGS).stdout, source="amd-smi " + " ".join(AMD_SMI_LIST_ARGS)
        )

    def read(self) -> list[AccelReading]:
        text = self.tool.run(*AMD_SMI_METRIC_ARGS).stdout
        return parse_amd_smi_metric(text, self.identity, source="amd-smi " + " ".join(AMD_SMI_METRIC_ARGS))

    def close(self) -> None:
        pass


class AmdPlugin(Plugin):
    name = "amd"
    Config = AmdConfig
    default_interval = 10.0
    config: AmdConfig

    _source: _Source | None = None

    def discover(self) -> None:
        cfg = self.config
        reasons: list[str] = []
        for choice in (("amdsmi", "amd-smi", "rocm-smi") if cfg.source == "auto" else (cfg.source,)):
            try:
                source = self._open(choice)
                readings = source.read()
            except PluginError as err:  # missing tool, or one that fails: try the next source
                reasons.append(str(err))
                continue
            if not readings:
                source.close()
                reasons.append(f"{choice} reports no AMD GPUs")
                continue
            self._source = source
            self._register(readings)
            self.log.info("amd: reading %d GPU(s) through %s", len(readings), source.name)
            return
        raise PluginUnavailable("; ".join(reasons))

    def _open(self, choice: str) -> _Source:
        cfg = self.config
        if choice == "amdsmi":
            from agent.plugins.amd.amdsmi_lib import AmdSmiLibSource  # noqa: PLC0415 - optional vendor library

            return AmdSmiLibSource.open()
        if choice == "amd-smi":
            tool = Tool("amd-smi", cfg.amd_smi, timeout=cfg.tool_timeout, config_key="plugins.amd.amd_smi")
            tool.resolve()
            return AmdSmiCliSource(tool)
        tool = Tool("rocm-smi", cfg.rocm_smi, timeout=cfg.tool_timeout, config_key="plugins.amd.rocm_smi")
        tool.resolve()
        return RocmSmiSource(tool)

    def _register(self, readings: list[AccelReading]) -> None:
        for r in readings:
            pci = r.info.get("pci_bus", "")
            if pci:
                self.ctx.directory.register_gpu(pci, GpuRef(r.index, r.uuid, r.model, r.vendor))

    def collect(self) -> Collection:
        if self._source is None:
            raise PluginUnavailable("amd: collect() before a successful discover()")
        return to_collection(self._source.read())

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
