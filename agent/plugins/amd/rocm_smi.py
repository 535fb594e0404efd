"""Parse ``rocm-smi --json`` (AMD) and ``hy-smi --json`` (Hygon DCU) into accelerator readings.

Pure functions: text in, :class:`~agent.plugins.accel.AccelReading` out. Tests feed them the
captures in ``shared/fixtures/amd`` (rocm-smi 4.3 to 6.2.4) and ``shared/fixtures/hygon``.

The JSON is one object per device (``card0``, ``card1``, ...) mapping rocm-smi's *display labels*
to strings, plus an optional ``system`` object. The labels changed across versions; where two
spellings mean the same value both are listed below, oldest first. Hygon's ``hy-smi`` is a
rocm-smi fork and prints the same shape; its differences, all handled here:

- ``DCU use (%)`` for ``GPU use (%)``;
- ``vram Total Memory (MiB)`` / ``vram Total Used Memory (MiB)`` (MiB, lower-case ``vram``) for
  ``VRAM Total Memory (B)`` / ``VRAM Total Used Memory (B)`` (bytes);
- ``Temperature (Sensor mem) (C)`` for ``Temperature (Sensor memory) (C)``;
- an empty ``"": ""`` entry (a blank separator row rendered into JSON), ignored;
- ``Unique ID`` without the ``0x`` prefix, and no ``system`` object.

Values rocm-smi could not read are ``"N/A"`` or ``"N/A (...)"`` (e.g. ``"N/A (Secondary die)"``
on the second die of an MI250): those are omitted. Anything else that is not a number where a
number is due is a :class:`~agent.toolrun.ToolOutputError` naming the card and the label.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from agent.model import gauge
from agent.plugins.accel import AccelReading, Extra, pcie_generation
from agent.toolrun import ToolOutputError

AMD_CLOCK = gauge("amd_clock_hertz", "Other AMD clock domains (fclk, socclk, dcefclk)", "hertz")
AMD_VOLTAGE = gauge("amd_voltage_volts", "GPU core voltage", "volts")
AMD_HBM_TEMPERATURE = gauge("amd_hbm_temperature_celsius", "Temperature of one HBM stack", "celsius")

_CARD_RE = re.compile(r"^card([0-9]{1,9})$")  # a bounded ASCII index: int() of 4300 digits raises
_MHZ_RE = re.compile(r"^\(?\s*(\d+(?:\.\d+)?)\s*Mhz\s*\)?$", re.IGNORECASE)
# "pcie clock level": "1 (16.0GT/s x16)" -- current DPM level, then rate and width.
_PCIE_RE = re.compile(r"\(\s*(\d+(?:\.\d+)?)\s*GT/s\s+x(\d+)\s*\)")
_HEX_ID_RE = re.compile(r"^0x[0-9a-fA-F]+$")
_HBM_RE = re.compile(r"^Temperature \(Sensor HBM (\d+)\) \(C\)$")
_MIB = 1 << 20


def _na(value: str) -> bool:
    v = value.strip()
    return not v or v.upper().startswith("N/A")


class _Card:
    """One ``cardN`` object, with typed getters that name the card in their errors."""

    def __init__(self, name: str, data: dict[str, Any], source: str) -> None:
        self.name = name
        self.data = data
        self.source = source

    def _raw(self, *labels: str) -> tuple[str, str] | None:
        for label in labels:
            value = self.data.get(label)
            if value is None:
                continue
            if isinstance(value, (dict, list)):  # str() of it would become a label or a "number"
                raise ToolOutputError(f"{self.source}: {self.name} {label!r} is a JSON "
                                      f"{'object' if isinstance(value, dict) else 'array'}, expected a value")
            if not isinstance(value, str):
                value = str(value)
            if _na(value):
                continue
            return label, value.strip()
        return None

    def text(self, *labels: str) -> str:
        got = self._raw(*labels)
        return got[1] if got else ""

    def number(self, *labels: str) -> float | None:
        got = self._raw(*labels)
        if got is None:
            return None
        label, value = got
        try:
            number = float(value)
        except ValueError:
            raise ToolOutputError(
                f"{self.source}: {self.name} {label!r} is {value!r}, expected a number"
            ) from None
        return number if math.isfinite(number) else None  # "nan", or digits past a float: not reported

    def mhz(self, label: str) -> float | None:
        got = self._raw(label)
        if got is None:
            return None
        m = _MHZ_RE.match(got[1])
        if not m:
            raise ToolOutputError(f"{self.source}: {self.name} {label!r} is {got[1]!r}, expected '(NNNMhz)'")
        return float(m.group(1)) * 1e6  # rocm-smi prints MHz


def _model(card: _Card) -> str:
    # "Card series" (<= 6.0) / "Card Series" (>= 6.1) / "Device Name" (>= 6.1) hold the marketing
    # name. rocm-smi 4.3 printed the PCI vendor id ("0x1002") there when its pci.ids lookup failed
    # (fixture rx6700xt_rocm430); a bare hex id is not a name, so fall back to the device id,
    # which is what the tool did report.
    for label in ("Device Name", "Card Series", "Card series"):
        name = card.text(label)
        if name and not _HEX_ID_RE.match(name):
            return name
    return card.text("Device ID", "GPU ID")


def parse_rocm_smi(text: str, *, source: str = "rocm-smi", vendor: str = "amd", kind: str = "GPU"
                   ) -> list[AccelReading]:
    """Parse rocm-smi/hy-smi JSON; ``source`` names the command in errors."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:  # also a 4300-digit number, or nesting past the stack
        snippet = text.strip()[:40]
        why = f"{err.msg} at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else err
        raise ToolOutputError(f"{source}: output is not JSON ({why}); it starts {snippet!r}") from err
    if not isinstance(doc, dict):
        raise ToolOutputError(f"{source}: expected a JSON object of cards, got {type(doc).__name__}")
    system = doc.get("system")
    driver = system.get("Driver version", "") if isinstance(system, dict) else ""
    readings = []
    for key, data in doc.items():
        m = _CARD_RE.match(key)
        if m is None:
            continue  # "system" and anything newer we do not know
        if not isinstance(data, dict):
            raise ToolOutputError(f"{source}: {key} is {type(data).__name__}, expected an object")
        readings.append(_reading(m.group(1), _Card(key, data, source), vendor, kind, str(driver)))
    readings.sort(key=lambda r: int(r.index))
    return readings


def _reading(index: str, card: _Card, vendor: str, kind: str, driver: str) -> AccelReading:
    r = AccelReading(index=index, vendor=vendor, kind=kind, model=_model(card), uuid=card.text("Unique ID"))
    r.info = {
        "pci_bus": card.text("PCI Bus"),
        "serial": card.text("Serial Number"),
        "vbios_version": card.text("VBIOS version"),
        "device_id": card.text("Device ID", "GPU ID"),
        "driver_version": driver,
    }
    # --- utilisation (percent) ------------------------------------------------------------
    use = card.number("GPU use (%)", "DCU use (%)")  # DCU use: hy-smi's label
    r.utilization = None if use is None else use / 100.0
    # "GPU memory use (%)" (<= 6.0) became "GPU Memory Read/Write Activity (%)" in 6.1; both are
    # the memory controller's busy share, as NVML's memory utilisation. "GPU Memory Allocated
    # (VRAM%)" (6.1+) is used/total, already covered by the byte gauges.
    mem_use = card.number("GPU memory use (%)", "GPU Memory Read/Write Activity (%)")
    r.memory_utilization = None if mem_use is None else mem_use / 100.0
    # --- memory ---------------------------------------------------------------------------
    r.memory_total_bytes = card.number("VRAM Total Memory (B)")
    r.memory_used_bytes = card.number("VRAM Total Used Memory (B)")
    if r.memory_total_bytes is None:
        mib = card.number("vram Total Memory (MiB)")  # hy-smi reports MiB
        r.memory_total_bytes = None if mib is None else mib * _MIB
    if r.memory_used_bytes is None:
        mib = card.number("vram Total Used Memory (MiB)")
        r.memory_used_bytes = None if mib is None else mib * _MIB
    # --- temperatures (°C) ----------------------------------------------------------------
    edge = card.number("Temperature (Sensor edge) (C)")
    junction = card.number("Temperature (Sensor junction) (C)")
    # MI300-class parts have no edge sensor (rocm-smi prints N/A); the junction sensor is then
    # the die temperature, so GPU temperature rules still see these devices.
    r.temperature = edge if edge is not None else junction
    r.junction_temperature = junction
    r.memory_temperature = card.number("Temperature (Sensor memory) (C)", "Temperature (Sensor mem) (C)")
    for label in card.data:
        hbm = _HBM_RE.match(label)
        if hbm:
            value = card.number(label)
            if value is not None:
                r.extra.append(Extra(AMD_HBM_TEMPERATURE, value, (("hbm", hbm.group(1)),)))
    # --- power (W) ------------------------------------------------------------------------
    # "Current Socket Graphics Package Power (W)" is what rocm-smi 6.1+ prints on MI300 instead
    # of the average.
    r.power_watts = card.number(
        "Average Graphics Package Power (W)", "Current Socket Graphics Package Power (W)"
    )
    r.power_limit_watts = card.number("Max Graphics Package Power (W)")
    # --- clocks ---------------------------------------------------------------------------
    r.sm_clock_hz = card.mhz("sclk clock speed:")
    r.memory_clock_hz = card.mhz("mclk clock speed:")
    for domain in ("fclk", "socclk", "dcefclk"):
        hz = card.mhz(f"{domain} clock speed:")
        if hz is not None:
            r.extra.append(Extra(AMD_CLOCK, hz, (("clock", domain),)))
    volts = card.number("Voltage (mV)")
    if volts is not None:
        r.extra.append(Extra(AMD_VOLTAGE, volts / 1000.0))  # rocm-smi prints millivolts
    fan = card.number("Fan speed (%)")
    r.fan_ratio = None if fan is None else fan / 100.0
    # --- PCIe -----------------------------------------------------------------------------
    level = card.text("pcie clock level")
    if level:
        m = _PCIE_RE.search(level)
        if m is None:
            raise ToolOutputError(
                f"{card.source}: {card.name} 'pcie clock level' is {level!r}, expected 'N (RATEGT/s xWIDTH)'"
            )
        gen = pcie_generation(float(m.group(1)))
        r.pcie_generation = None if gen is None else float(gen)
        r.pcie_width = float(m.group(2))
    # No maximum link: rocm-smi lists the PCIe DPM levels under bare keys "0", "1", ... and the
    # sclk/mclk levels under the same keys, so in the JSON later lists overwrite earlier ones
    # (fixture mi100_rocm571: "0" is a PCIe level, "1".."15" are sclk levels). The highest
    # surviving PCIe level is not reliably the device's maximum, so it is not reported.
    r.pcie_replays = card.number("PCIe Replay Count")
    return r
