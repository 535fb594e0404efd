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
from agent.plugin import FailureEpisodes, GpuRef, Plugin, PluginContext
from agent.plugins.accel import to_collection
from agent.plugins.ascend.hccn import parse_link_stat, parse_optical, parse_stat, parse_status_line
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
from agent.plugins.ascend.roce import (
    FEC_MODE,
    NET_HEALTH,
    NET_HEALTH_INFO,
    LinkTracker,
    optical_samples,
    port_labels,
    stat_samples,
)
from agent.toolrun import Tool

_QUERIES = ("common", "usages", "ecc")
_HCCN_QUERIES = ("optical", "link_stat", "stat", "fec", "net_health")


@dataclass
class AscendConfig:
    #: Path of npu-smi; empty: look it up on PATH (usually /usr/local/bin/npu-smi).
    npu_smi: str = ""
    #: Per-card `npu-smi info -t QUERY -i N` queries each cycle: common, usages, ecc.
    queries: list[str] = field(default_factory=lambda: ["common", "usages"])
    #: Deadline for one npu-smi or hccn_tool run, seconds.
    tool_timeout: float = 5.0
    #: Path of hccn_tool (the NPUs' RoCE port tool, usually /usr/local/Ascend/driver/tools/hccn_tool);
    #: empty: look it up on PATH. Absent: the RoCE port metrics are skipped (one info line).
    hccn_tool: str = ""
    #: `hccn_tool -i N -<query> -g` per NPU each cycle: optical, link_stat, stat, fec, net_health.
    hccn_queries: list[str] = field(default_factory=lambda: ["optical", "link_stat", "stat", "fec", "net_health"])

    def validate(self) -> None:
        for q in self.queries:
            if q not in _QUERIES:
                raise ValueError(f"queries: {q!r} is not one of {', '.join(_QUERIES)}")
        for q in self.hccn_queries:
            if q not in _HCCN_QUERIES:
                raise ValueError(f"hccn_queries: {q!r} is not one of {', '.join(_HCCN_QUERIES)}")
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
        self._hccn: Tool | None = None
        self._links = LinkTracker()
        self._hccn_episodes = FailureEpisodes()
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
        self._hccn = None
        if self.config.hccn_queries:
            hccn = Tool("hccn_tool", self.config.hccn_tool, timeout=self.config.tool_timeout,
                        config_key="plugins.ascend.hccn_tool")
            try:
                hccn.resolve()
                self._hccn = hccn
            except PluginUnavailable as err:
                self.log.info("ascend: no RoCE port metrics: %s", err)
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
        if self._hccn is not None:
            for r in readings:
                if r.index.isdigit():  # hccn_tool -i takes the logic id (the gpu label)
                    self._roce(col, self._hccn, r.index)
        return col

    def _roce(self, col: Collection, tool: Tool, index: str) -> None:
        """The NPU's RoCE port; a query that fails costs its own samples and the cycle goes on."""
        for q in self.config.hccn_queries:
            argv = ("-i", index, f"-{q}", "-g")
            source = "hccn_tool " + " ".join(argv)
            try:
                text = tool.run(*argv).stdout
                if q == "optical":
                    optical_samples(col, index, parse_optical(text, source=source))
                elif q == "link_stat":
                    self._links.update(col, index, parse_link_stat(text, source=source))
                elif q == "stat":
                    stat_samples(col, index, parse_stat(text, source=source))
                elif q == "fec":
                    col.add(FEC_MODE, 1, {**port_labels(index), "mode": parse_status_line(text, "fec mode",
                                                                                          source=source)})
                else:
                    status = parse_status_line(text, "net health status", source=source)
                    col.add(NET_HEALTH, float(status.lower() == "success"), port_labels(index))
                    col.add(NET_HEALTH_INFO, 1, {**port_labels(index), "status": status})
            except PluginError as err:
                # Once per query and reason: a port tool that keeps failing must not flood the log.
                if self._hccn_episodes.failed(source, str(err)):
                    self.log.warning("ascend: %s", err)
                continue
            self._hccn_episodes.recovered(source)

    def close(self) -> None:
        self._tool = None
