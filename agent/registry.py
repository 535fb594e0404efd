"""Plugin registry (STYLE 2): built-ins by name in one place, third parties by entry point.

Built-ins are listed as import paths so that importing the registry probes no hardware and
loads no vendor library; a plugin's module is imported only when it is used. Installed packages
are looked up (``importlib.metadata``, about 1 MiB of modules a node would keep for its life)
only when a name is not built-in; a built-in name always means the built-in.
"""

from __future__ import annotations

import importlib
import logging

from agent.errors import ConfigError
from agent.plugin import AsyncPlugin, Plugin

log = logging.getLogger("fleetmon.agent.registry")

ENTRY_POINT_GROUP = "fleetmon.plugins"

# name -> "module:Class". A duplicate name here is a programming error caught by the tests.
_BUILTINS: dict[str, str] = {
    "host": "agent.plugins.host:HostPlugin",
    "simulated": "agent.plugins.simulated:SimulatedPlugin",
    "nvidia": "agent.plugins.nvidia:NvidiaPlugin",
    "kmsg": "agent.plugins.kmsg:KmsgPlugin",
    "optics": "agent.plugins.optics:OpticsPlugin",
    "power": "agent.plugins.power:PowerPlugin",
    "amd": "agent.plugins.amd:AmdPlugin",
    "ascend": "agent.plugins.ascend:AscendPlugin",
    "hygon": "agent.plugins.hygon:HygonPlugin",
    "snmp": "agent.plugins.snmp:SnmpPlugin",
    "modbus": "agent.plugins.modbus:ModbusPlugin",
}


def builtin_names() -> list[str]:
    return list(_BUILTINS)


def _third_party() -> dict[str, str]:
    from importlib.metadata import entry_points  # noqa: PLC0415 - only when a name is not built-in (see above)

    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILTINS:
            raise ConfigError(
                f"plugin entry point {ep.name!r} from {ep.value!r} clashes with a built-in plugin; "
                "rename it in that package's entry points"
            )
        if ep.name in found:
            raise ConfigError(f"two installed packages register the plugin name {ep.name!r}")
        found[ep.name] = ep.value
    return found


def available() -> dict[str, str]:
    """Every plugin name this agent can load, built-in and installed."""
    return {**_BUILTINS, **_third_party()}


def load(name: str) -> type[Plugin] | type[AsyncPlugin]:
    """Import and return the plugin class registered under ``name``."""
    target = _BUILTINS.get(name)
    if target is None:
        table = available()
        target = table.get(name)
        if target is None:
            raise ConfigError(f"unknown plugin {name!r}; available: {', '.join(sorted(table))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"plugin {name!r} ({target}) cannot be loaded: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, (Plugin, AsyncPlugin))):
        raise ConfigError(f"plugin {name!r} ({target}) is not a fleetmon Plugin or AsyncPlugin subclass")
    if cls.name != name:
        raise ConfigError(f"plugin registered as {name!r} calls itself {cls.name!r}")
    return cls
