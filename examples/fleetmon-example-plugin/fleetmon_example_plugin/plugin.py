"""The Example accelerator plugin: read (run example-smi) apart from parse (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.errors import PluginUnavailable
from agent.model import Collection, gauge
from agent.plugin import Plugin
from agent.plugins.accel import AccelReading, Extra, to_collection
from agent.toolrun import Tool, ToolOutputError

# A vendor extra: prefixed with the vendor's name, documented in the README.
EXAMPLE_TENSOR_UTIL = gauge("example_tensor_utilization_ratio", "Example tensor-engine usage (0-1)", "ratio")

ARGS = ("--json",)  # fixed argument list: never built from strings, never through a shell
_MIB = 1 << 20


@dataclass
class ExampleAccelConfig:
    #: Path of example-smi; empty: look it up on PATH.
    tool: str = ""
    #: Deadline for one run of the tool, seconds.
    tool_timeout: float = 5.0

    def validate(self) -> None:
        if self.tool_timeout <= 0:
            raise ValueError("tool_timeout must be positive (seconds)")


def _number(dev: dict[str, Any], key: str, where: str) -> float | None:
    value = dev.get(key)
    if value is None or value == "N/A":
        return None  # unsupported: omitted, never reported as 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolOutputError(f"example-smi --json: {where} {key!r} is {value!r}, expected a number")
    return float(value)


def parse(text: str) -> list[AccelReading]:
    """Pure: example-smi's JSON -> one reading per device."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ToolOutputError(f"example-smi --json: output is not JSON ({err.msg}, line {err.lineno})") from err
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, list):
        raise ToolOutputError("example-smi --json: expected an object with a 'devices' list")
    out = []
    for i, dev in enumerate(devices):
        where = f"device {i}"
        if not isinstance(dev, dict) or "index" not in dev:
            raise ToolOutputError(f"example-smi --json: {where} has no 'index'")
        r = AccelReading(index=str(dev["index"]), vendor="example", kind="GPU",
                         model=str(dev.get("name", "")), uuid=str(dev.get("uuid", "")))
        r.temperature = _number(dev, "temperature_c", where)
        power_mw = _number(dev, "power_mw", where)
        r.power_watts = None if power_mw is None else power_mw / 1000.0  # example-smi reports milliwatts
        util = _number(dev, "util_percent", where)
        r.utilization = None if util is None else util / 100.0  # percent
        used, total = _number(dev, "mem_used_mib", where), _number(dev, "mem_total_mib", where)
        r.memory_used_bytes = None if used is None else used * _MIB  # MiB
        r.memory_total_bytes = None if total is None else total * _MIB
        tensor = _number(dev, "tensor_util_percent", where)
        if tensor is not None:
            r.extra.append(Extra(EXAMPLE_TENSOR_UTIL, tensor / 100.0))
        out.append(r)
    return out


class ExampleAccelPlugin(Plugin):
    name = "example_accel"  # must equal the entry-point name
    Config = ExampleAccelConfig
    default_interval = 10.0
    config: ExampleAccelConfig

    _tool: Tool | None = None

    def discover(self) -> None:
        tool = Tool("example-smi", self.config.tool, timeout=self.config.tool_timeout,
                    config_key="plugins.example_accel.tool")
        tool.resolve()  # PluginUnavailable with one line when it is missing
        if not parse(tool.run(*ARGS).stdout):
            raise PluginUnavailable("example-smi lists no devices")
        self._tool = tool

    def collect(self) -> Collection:
        if self._tool is None:
            raise PluginUnavailable("example_accel: collect() before a successful discover()")
        return to_collection(parse(self._tool.run(*ARGS).stdout))

    def close(self) -> None:  # safe twice and without discover
        self._tool = None
