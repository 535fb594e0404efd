"""Fault scripts: YAML lists of timed hardware faults for the simulated node.

```yaml
- {at: 30s, for: 40s, kind: gpu_temperature, gpu: 3, value: 92}   # GPU 3 heats to 92 °C
- {at: 45s, kind: xid, gpu: 5, xid: 79, for: 30s}                 # XID 79; GPU 5 lost for 30 s
- {at: 60s, for: 30s, kind: rx_power, port: 1, lane: 2, value: -13.5}  # lane 2 of port 1 sags (dBm)
- {at: 90s, for: 30s, kind: psu_fail, psu: 1}                     # PSU 1 fails
- {at: 20s, for: 80s, kind: pdu_overload, phase: 2, value: 0.9}     # PDU phase 2 at 90 % of its rating
- {at: 15s, for: 85s, kind: bess_discharge, value: 1.5}             # the BESS discharges, SoC -1.5 %/s
```
Times are seconds from the agent's start (``10s``, ``2m`` or a number). Without ``for`` a
condition lasts until the agent stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.config import parse_duration
from agent.errors import ConfigError

KINDS = {
    "gpu_temperature": ("gpu", "value"),
    "xid": ("gpu", "xid"),
    "ecc_uncorrectable": ("gpu",),
    "rx_power": ("port", "lane", "value"),
    "link_down": ("port",),
    "psu_fail": ("psu",),
    "ups_on_battery": (),
    "pdu_overload": ("phase", "value"),
    "bess_discharge": ("value",),
}


@dataclass(frozen=True)
class Fault:
    at: float
    duration: float | None
    kind: str
    gpu: int = -1
    port: int = -1
    lane: int = -1
    psu: int = -1
    phase: int = -1
    xid: int = 0
    value: float = 0.0

    def active(self, t: float) -> bool:
        return t >= self.at and (self.duration is None or t < self.at + self.duration)


def _seconds(value: Any, where: str) -> float:
    try:
        return parse_duration(str(value))
    except ValueError as err:
        raise ConfigError(f"{where}: {value!r} is not a duration (e.g. 30s, 2m)") from err


def parse_faults(data: Any, where: str) -> list[Fault]:
    """Validate a fault list; errors name the entry and the key."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(f"{where}: a fault script is a list of faults")
    faults = []
    for i, raw in enumerate(data):
        at = f"{where}[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{at}: each fault is a mapping with at, kind and its target")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{at}.kind: {kind!r} is not one of {', '.join(KINDS)}")
        if "at" not in raw:
            raise ConfigError(f"{at}: missing 'at' (seconds from start, e.g. 30s)")
        known = {"at", "for", "kind", *KINDS[kind]}
        extra = set(raw) - known
        if extra:
            raise ConfigError(f"{at}: unknown key(s) {', '.join(sorted(extra))} for kind {kind}")
        args: dict[str, Any] = {}
        for key in KINDS[kind]:
            if key not in raw:
                raise ConfigError(f"{at}: kind {kind} needs {key!r}")
            try:
                args[key] = float(raw[key]) if key == "value" else int(raw[key])
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{at}.{key}: {raw[key]!r} is not a number") from err
        duration = _seconds(raw["for"], f"{at}.for") if "for" in raw else None
        faults.append(Fault(at=_seconds(raw["at"], f"{at}.at"), duration=duration, kind=kind, **args))
    return faults


def load_faults(path: Path) -> list[Fault]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read fault script: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if isinstance(data, dict):
        data = data.get("faults")
    return parse_faults(data, str(path))
