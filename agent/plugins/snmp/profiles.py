"""Vendor MIB mappings written as data: a profile names OIDs, scales and labels; no code.

A profile is the documented way to teach the plugin a MIB it does not read natively (README,
"Adding a vendor MIB"). Built-in profiles live in ``profiles/*.yml`` next to this file and use
the same schema as the ``profiles:`` section of the agent config. A metric whose name is one of
the plugin's built-in families (``ups_on_battery``) reuses that family, so rules and dashboards
see one series name whichever MIB filled it.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from agent.config import build
from agent.errors import ConfigError
from agent.model import Collection, Labels, Metric, MetricType, counter, gauge
from agent.plugins.snmp import metrics as builtin_metrics
from agent.plugins.snmp.config import ProfileConfig, ProfileMetric
from agent.plugins.snmp.reader import Reader, scaled
from agent.plugins.snmp.snapshot import Snapshot, Value, norm_oid

_BUILTIN = {m.name: m for m in vars(builtin_metrics).values() if isinstance(m, Metric)}
_lock = threading.Lock()
_declared: dict[str, Metric] = {}


def metric_for(spec: ProfileMetric, where: str) -> Metric:
    """The family a profile metric feeds: a built-in one by name, else declared once here."""
    known = _BUILTIN.get(spec.name)
    want = MetricType.COUNTER if spec.type == "counter" else MetricType.GAUGE
    if known is not None:
        if known.type is not want:
            raise ConfigError(f"{where}: {spec.name} is a built-in {known.type.name.lower()}, not a {spec.type}")
        return known
    with _lock:
        found = _declared.get(spec.name)
        if found is None:
            make = counter if want is MetricType.COUNTER else gauge
            try:
                found = make(spec.name, spec.help or f"SNMP {spec.oid or spec.column}", spec.unit)
            except ValueError as err:
                raise ConfigError(f"{where}: {err}") from err
            _declared[spec.name] = found
        elif found.type is not want:
            raise ConfigError(f"{where}: {spec.name} is declared as a {found.type.name.lower()} by another profile")
        return found


def _value(spec: ProfileMetric, raw: Value) -> float | None:
    if not isinstance(raw, int) or raw in spec.sentinels:
        return None
    if spec.map:
        mapped = spec.map.get(str(raw), spec.map.get("default"))
        return None if mapped is None else float(mapped)
    return scaled(raw, spec.scale)


def compile_profile(name: str, profile: ProfileConfig, where: str) -> Reader:
    specs = [(spec, metric_for(spec, f"{where}.metrics[{i}]")) for i, spec in enumerate(profile.metrics)]

    def parse(snap: Snapshot, labels: Labels) -> Collection:
        col = Collection()
        for spec, metric in specs:
            if spec.only_if_oid and snap.number(norm_oid(spec.only_if_oid)) not in spec.only_if_equals:
                continue
            if spec.oid:
                raw = snap.get(norm_oid(spec.oid))
                if raw is not None:
                    col.add(metric, _value(spec, raw), labels)
                continue
            extra = {label: snap.str_column(norm_oid(c)) for label, c in spec.label_columns.items()}
            for index, raw in snap.column(norm_oid(spec.column)).items():
                row = {**labels, spec.index_label: index}
                row.update({label: values[index] for label, values in extra.items() if values.get(index)})
                col.add(metric, _value(spec, raw), row)
        return col

    walks = {norm_oid(s.column) for s in profile.metrics if s.column}
    walks |= {norm_oid(c) for s in profile.metrics for c in s.label_columns.values()}
    gets = {norm_oid(s.oid) for s in profile.metrics if s.oid}
    gets |= {norm_oid(s.only_if_oid) for s in profile.metrics if s.only_if_oid}
    return Reader(name, walks=tuple(sorted(walks)), gets=tuple(sorted(gets)), parse=parse)


def load_profile_file(path: Path) -> dict[str, ProfileConfig]:
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the SNMP profile: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ConfigError(f"{path}: an SNMP profile file is a mapping with a 'profiles' mapping")
    return {str(k): build(ProfileConfig, v, f"{path.name}: profiles.{k}") for k, v in data["profiles"].items()}


def builtin_profiles() -> dict[str, ProfileConfig]:
    out: dict[str, ProfileConfig] = {}
    folder = resources.files("agent.plugins.snmp").joinpath("profiles")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yml"):
            out.update(load_profile_file(Path(str(entry))))
    return out
