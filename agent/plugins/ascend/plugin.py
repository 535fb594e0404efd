"""Huawei Ascend NPUs through ``npu-smi`` (no shell, fixed argv, a deadline per run).

Each cycle: ``npu-smi info`` (the table: health, power, temperature, AI-core usage, memory, HBM)
and, per NPU card, the ``-t`` queries in ``queries`` (default ``common`` and ``usages``; ``ecc`` on
request). A chip whose health is not OK is asked ``-t health -i N -c C`` for its error codes,
which become ``npu.error`` events once per appearance and ``ascend_error_code_active`` gauges
while they last. ``npu-smi info -m`` (the logic-id map) is read once at discover time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.errors import PluginError, PluginUnavailable
from agent.model import Collection
from agent.plugin import GpuRef, Plugin, PluginContext
from agent.plugins.accel import to_collection
from agent.plugins.ascend.npu_smi import (
    ChipMapping,
    KvQuery,
    parse_health,
    parse_info_table,
    parse_kv_query,
    parse_mapping,
)
from agent.plugins.ascend.readings import (
    ERROR_CODE_ACTIVE,
    ERROR_EVENTS,
    board_samples,
    build_readings,
    health_events,
)
from agent.toolrun import Tool

_QUERIES = ("common", "usages", "ecc")


@dataclass
class AscendConfig:
    #: Path of npu-smi; empty: look it up on PATH (usually /usr/local/bin/npu-smi).
    npu_smi: str = ""
    #: Per-card `npu-smi info -t QUERY -i N` queries each cycle: common, usages, ecc.
    queries: list[str] = field(default_factory=lambda: ["common", "usages"])
    #: Deadline for one npu-smi run, seconds.
    tool_timeout: float = 5.0

    def validate(self) -> None:
        for q in self.queries:
            if q not in _QUERIES:
                raise ValueError(f"queries: {q!r} is not one of {', '.join(_QUERIES)}")
        if self.tool_timeout <= 0:
            raise ValueError("tool_timeout must be positive (seconds)")


class AscendPlugin(Plugin):
    name = "ascend"
    Config = AscendConfig
    # npu-smi is slow (each run loads the DCMI library; ~0.1-1 s): a cycle runs 1 + cards x queries
    # commands in sequence, e.g. 17 on an 8-card node. 30 s leaves the default deadline (0.8 x
    # interval) room; `queries: []` with a 10 s interval reads the table alone.
    default_interval = 30.0
    config: AscendConfig

    def __init__(self, ctx: PluginContext, config: AscendConfig) -> None:
        super().__init__(ctx, config)
        self._tool: Tool | None = None
        self._mapping: list[ChipMapping] = []
        self._active_codes: set[tuple[str, str]] = set()
        self._appearances: dict[tuple[tuple[str, str], ...], int] = {}

    def discover(self) -> None:
        tool = Tool("npu-smi", self.config.npu_smi, timeout=self.config.tool_timeout,
                    config_key="plugins.ascend.npu_smi")
        tool.resolve()
        table = parse_info_table(tool.run("info").stdout)
        if not table.chips:
            raise PluginUnavailable("npu-smi info lists no NPU chips")
        try:
            self._mapping = parse_mapping(tool.run("info", "-m").stdout, source="npu-smi info -m")
        except PluginError as err:  # older npu-smi without -m: indices fall back (README)
            self.log.info("ascend: npu-smi info -m not used: %s", err)
            self._mapping = []
        self._tool = tool
        for r in build_readings(table, self._mapping):
            if r.info.get("pci_bus"):
                self.ctx.directory.register_gpu(r.info["pci_bus"], GpuRef(r.index, "", r.model, r.vendor))
        self.log.info("ascend: %d chip(s), npu-smi %s", len(table.chips), table.tool_version)

    def collect(self) -> Collection:
        tool = self._tool
        if tool is None:
            raise PluginUnavailable("ascend: collect() before a successful discover()")
        table = parse_info_table(tool.run("info").stdout)
        queries: dict[int, list[KvQuery]] = {}
        for npu in sorted({c.npu_id for c in table.chips}):
            for q in self.config.queries:
                query_argv = ("info", "-t", q, "-i", str(npu))
                queries.setdefault(npu, []).append(
                    parse_kv_query(tool.run(*query_argv).stdout, source="npu-smi " + " ".join(query_argv))
                )
        readings = build_readings(table, self._mapping, queries)
        col = to_collection(readings)
        models = {c.npu_id: c.name for c in table.chips}
        for npu, qs in queries.items():
            for metric, value, labels in board_samples(npu, models[npu], qs):
                col.add(metric, value, labels)
        active: set[tuple[str, str]] = set()
        for r, chip in zip(readings, table.chips, strict=True):
            if chip.health.strip().lower() == "ok":
                continue
            argv = ("info", "-t", "health", "-i", str(chip.npu_id), "-c", str(chip.chip_id))
            health = parse_health(tool.run(*argv).stdout, source="npu-smi " + " ".join(argv))
            for ev in health_events(r, health):
                code = ev.labels["code"]
                active.add((r.index, code))
                col.add(ERROR_CODE_ACTIVE, 1.0, {**r.labels(), "code": code})
                if (r.index, code) not in self._active_codes:
                    col.events.append(ev)
                    key = tuple(sorted({**r.labels(), "code": code}.items()))
                    self._appearances[key] = self._appearances.get(key, 0) + 1
        # A code that went away is not an event of its own: its gauge stops being reported.
        self._active_codes = active
        # Each event also counts in a series (DESIGN.md, Events), so history sees them as numbers.
        for key, count in self._appearances.items():
            col.add(ERROR_EVENTS, float(count), dict(key))
        return col

    def close(self) -> None:
        self._tool = None
