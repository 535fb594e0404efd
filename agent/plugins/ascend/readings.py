"""Turn parsed npu-smi output into shared readings, NPU-level samples and error events (pure).

Vocabulary choices for Ascend, documented in the README:

- ``gpu`` label: the chip's *logic id* from ``npu-smi info -m`` (what CANN and
  ``ASCEND_RT_VISIBLE_DEVICES`` call the device); without the map, the table's ``Device`` column
  (310), else the NPU id when its card has one chip (910), else ``<npu>-<chip>``. No UUID: npu-smi's
  table and ``-t`` queries used here print none, so the ``uuid`` label is omitted;
- ``gpu_utilization_ratio`` is the AI-core usage; ``gpu_sm_clock_hertz`` the AI-core current clock;
- ``gpu_memory_*_bytes`` is the HBM where the chip has HBM (910), else its DDR (310); both are
  also reported as ``ascend_hbm_*`` / ``ascend_ddr_*``;
- ``gpu_temperature_celsius`` is the chip temperature (table ``Temp(C)``).
"""

from __future__ import annotations

import math

from agent.model import Event, Metric, Severity, counter, gauge
from agent.plugins.accel import AccelReading, EccCount, Extra
from agent.plugins.ascend.npu_smi import ChipMapping, Health, InfoTable, KvQuery, TableChip
from agent.toolrun import ToolOutputError

HEALTH_CODE = gauge(
    "ascend_health_code", "npu-smi chip health: 0 OK, 1 Warning (minor alarm), 2 Alarm (major), 3 Critical"
)
HBM_USED = gauge("ascend_hbm_used_bytes", "HBM in use", "bytes")
HBM_TOTAL = gauge("ascend_hbm_total_bytes", "HBM installed", "bytes")
DDR_USED = gauge("ascend_ddr_used_bytes", "On-chip DDR in use (the chip's control-CPU memory on 910)", "bytes")
DDR_TOTAL = gauge("ascend_ddr_total_bytes", "On-chip DDR installed", "bytes")
AICORE_RATED_CLOCK = gauge("ascend_aicore_rated_clock_hertz", "AI-core rated clock (npu-smi 'Aicore Freq')", "hertz")
AICORE_COUNT = gauge("ascend_aicore_count", "AI cores on the chip")
ENGINE_UTIL = gauge(
    "ascend_engine_utilization_ratio", "Usage of one engine (aicpu, ctrlcpu, vectorcore, dvpp_*) (0-1)", "ratio"
)
BANDWIDTH_UTIL = gauge(
    "ascend_memory_bandwidth_utilization_ratio", "Memory bandwidth usage (memory: ddr, hbm)", "ratio"
)
HUGEPAGES_USED = gauge("ascend_hugepages_used_pages", "Huge pages in use", "pages")
HUGEPAGES_TOTAL = gauge("ascend_hugepages_reserved_pages", "Huge pages reserved", "pages")
ERROR_CODE_ACTIVE = gauge("ascend_error_code_active", "1 while npu-smi reports this error code on the chip")
ERROR_EVENTS = counter(
    "ascend_error_events_total", "npu.error events: times this error code appeared on the chip since the agent started"
)
ISOLATED_PAGES = counter(
    "gpu_retired_pages_total", "Memory pages isolated (retired), by cause (single_bit, double_bit) and memory"
)
MCU_TEMPERATURE = gauge(
    "ascend_mcu_temperature_celsius", "Temperature of the NPU card's management controller", "celsius"
)
BOARD_POWER = gauge("ascend_board_power_watts", "NPU card power as its MCU reports it (multi-chip 310P cards)", "watts")

_HEALTH = {"ok": 0, "warning": 1, "alarm": 2, "critical": 3}
_MIB = 1 << 20  # npu-smi's "MB" is MiB (32768 MB of HBM = 32 GiB)

#: `-t usages` engine fields -> engine label.
_ENGINES = {
    "Aicpu Usage Rate(%)": "aicpu",
    "Ctrlcpu Usage Rate(%)": "ctrlcpu",
    "Vectorcore Usage Rate(%)": "vectorcore",
    "DVPP VDEC Usage Rate(%)": "dvpp_vdec",
    "DVPP VPC Usage Rate(%)": "dvpp_vpc",
    "DVPP VENC Usage Rate(%)": "dvpp_venc",
    "DVPP JPEGE Usage Rate(%)": "dvpp_jpege",
    "DVPP JPEGD Usage Rate(%)": "dvpp_jpegd",
}


def health_code(status: str) -> int | None:
    return _HEALTH.get(status.strip().lower())


def _num(fields: dict[str, str], key: str, where: str) -> float | None:
    text = fields.get(key)
    if text is None or text.strip().upper() in ("NA", "N/A", "-", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ToolOutputError(f"npu-smi: {where} {key!r} is {text!r}, expected a number") from None
    return value if math.isfinite(value) else None  # float() reads "nan"/"inf": not a reading


def _mib(v: float | None) -> float | None:
    return None if v is None else v * _MIB


def chip_index(chip: TableChip, logic: dict[tuple[int, int], int], chips_per_npu: dict[int, int]) -> str:
    if (chip.npu_id, chip.chip_id) in logic:
        return str(logic[chip.npu_id, chip.chip_id])
    if chip.device_id is not None:
        return str(chip.device_id)
    if chips_per_npu.get(chip.npu_id) == 1:
        return str(chip.npu_id)
    return f"{chip.npu_id}-{chip.chip_id}"


def build_readings(
    table: InfoTable,
    mapping: list[ChipMapping] | None = None,
    queries: dict[int, list[KvQuery]] | None = None,
) -> list[AccelReading]:
    """One reading per chip from the table, completed by the ``-t`` queries of its NPU."""
    logic = {(m.npu_id, m.chip_id): m.logic_id for m in mapping or [] if m.logic_id is not None}
    names = {(m.npu_id, m.chip_id): m.name for m in mapping or []}
    per_npu: dict[int, int] = {}
    for c in table.chips:
        per_npu[c.npu_id] = per_npu.get(c.npu_id, 0) + 1
    out = []
    for c in table.chips:
        code = health_code(c.health)
        r = AccelReading(
            index=chip_index(c, logic, per_npu), vendor="huawei", kind="NPU", model=c.name,
            up=code is not None and code <= 1,  # OK or a minor (Warning) alarm: still serving
        )
        r.info = {
            "npu_id": str(c.npu_id), "chip_id": str(c.chip_id), "pci_bus": c.bus_id,
            "chip_name": names.get((c.npu_id, c.chip_id), ""), "tool_version": table.tool_version,
            # Not the health word: a label that changes with state would start a new info series
            # each time; ascend_health_code carries it.
        }
        if code is not None:
            r.extra.append(Extra(HEALTH_CODE, float(code)))
        r.power_watts = c.power_watts
        r.temperature = c.temperature
        r.utilization = None if c.aicore_percent is None else c.aicore_percent / 100.0
        hbm_total = _mib(c.hbm_total_mb)
        if hbm_total:  # 910: HBM is the device memory; 310 has none (column absent or 0)
            r.memory_total_bytes, r.memory_used_bytes = hbm_total, _mib(c.hbm_used_mb)
        else:
            r.memory_total_bytes, r.memory_used_bytes = _mib(c.memory_total_mb), _mib(c.memory_used_mb)
        for metric, value in ((HBM_USED, _mib(c.hbm_used_mb)), (HBM_TOTAL, hbm_total),
                              (DDR_USED, _mib(c.memory_used_mb)), (DDR_TOTAL, _mib(c.memory_total_mb)),
                              (HUGEPAGES_USED, c.hugepages_used), (HUGEPAGES_TOTAL, c.hugepages_total)):
            if value is not None:
                r.extra.append(Extra(metric, value))
        for q in (queries or {}).get(c.npu_id, []):
            fields = q.chips.get(c.chip_id)
            if fields is not None:
                _apply_fields(r, fields, f"NPU {c.npu_id} chip {c.chip_id}")
        out.append(r)
    return out


def _apply_fields(r: AccelReading, f: dict[str, str], where: str) -> None:
    """Fields of ``-t common`` / ``-t usages`` / ``-t ecc`` for one chip."""
    cur = _num(f, "Aicore curFreq(MHZ)", where)
    if cur is not None:
        r.sm_clock_hz = cur * 1e6  # npu-smi prints MHz
    rated = _num(f, "Aicore Freq(MHZ)", where)
    if rated is not None:
        r.extra.append(Extra(AICORE_RATED_CLOCK, rated * 1e6))
    count = _num(f, "Aicore Count", where)
    if count is not None:
        r.extra.append(Extra(AICORE_COUNT, count))
    if r.utilization is None:
        aicore = _num(f, "Aicore Usage Rate(%)", where)
        r.utilization = None if aicore is None else aicore / 100.0
    if r.temperature is None:
        r.temperature = _num(f, "Temperature(C)", where)
    if r.power_watts is None:
        r.power_watts = _num(f, "NPU Real-time Power(W)", where)
    for key, engine in _ENGINES.items():
        pct = _num(f, key, where)
        if pct is not None:
            r.extra.append(Extra(ENGINE_UTIL, pct / 100.0, (("engine", engine),)))
    for mem in ("DDR", "HBM"):
        bw = _num(f, f"{mem} Bandwidth Usage Rate(%)", where)
        if bw is not None:
            r.extra.append(Extra(BANDWIDTH_UTIL, bw / 100.0, (("memory", mem.lower()),)))
        # `-t ecc` (layout as in Huawei's npu-smi reference): per-memory single/double-bit counts
        # since the driver loaded (volatile), over the device's life (aggregate), isolated pages.
        for bits, kind, cause in (("Single", "correctable", "single_bit"), ("Double", "uncorrectable", "double_bit")):
            volatile = _num(f, f"{mem} {bits} Bit Error Count", where)
            if volatile is not None:
                r.ecc.append(EccCount(kind, volatile, scope="volatile", block=mem.lower()))
            aggregate = _num(f, f"{mem} {bits} Bit Aggregate Total Err Cnt", where)
            if aggregate is not None:
                r.ecc.append(EccCount(kind, aggregate, scope="aggregate", block=mem.lower()))
            pages = _num(f, f"{mem} {bits} Bit Isolated Pages Count", where)
            if pages is not None:
                r.extra.append(Extra(ISOLATED_PAGES, pages, (("cause", cause), ("memory", mem.lower()))))


def board_samples(npu_id: int, model: str, queries: list[KvQuery]) -> list[tuple[Metric, float, dict[str, str]]]:
    """The MCU paragraph of ``-t common``: card-level temperature and power."""
    out: list[tuple[Metric, float, dict[str, str]]] = []
    labels = {"npu": str(npu_id), "vendor": "huawei", "model": model}
    for q in queries:
        if not q.mcu:
            continue
        where = f"NPU {npu_id} mcu"
        temp = _num(q.mcu, "Temperature(C)", where)
        if temp is not None:
            out.append((MCU_TEMPERATURE, temp, labels))
        power = _num(q.mcu, "NPU Real-time Power(W)", where)
        if power is not None:
            out.append((BOARD_POWER, power, labels))
    return out


_SEVERITY = {"warning": Severity.WARNING, "alarm": Severity.CRITICAL, "critical": Severity.CRITICAL}


def health_events(reading: AccelReading, health: Health, ts: float | None = None) -> list[Event]:
    """One ``npu.error`` event per error code npu-smi reports for the chip."""
    severity = _SEVERITY.get(health.status.lower(), Severity.CRITICAL)
    npu, chip = reading.info.get("npu_id", ""), reading.info.get("chip_id", "")
    events = []
    for code in health.error_codes:
        detail = f": {health.information}" if health.information else ""
        ev = Event(
            kind="npu.error",
            severity=severity,
            message=f"Ascend NPU {npu} chip {chip} (gpu {reading.index}): health {health.status}, "
                    f"error code {code}{detail}",
            labels={**reading.labels(), "npu": npu, "chip": chip, "code": code},
            action=f"Look the code up in the Ascend health-code reference; run 'npu-smi info -t health -i {npu} "
                   f"-c {chip}' and collect the device log (msnpureport) before resetting the chip",
        )
        if ts is not None:
            ev.ts = ts
        events.append(ev)
    return events
