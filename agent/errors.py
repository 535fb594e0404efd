"""The agent's exception family (STYLE 8): one base, translated at each boundary."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """A configuration value is wrong; the message names the file, the key and the fix."""


class PluginError(AgentError):
    """A plugin failed one collection; the agent records it and goes on."""


class PluginUnavailable(PluginError):
    """A plugin cannot run on this node (no hardware, no library, no permission).

    Raised from ``discover()``: the plugin is disabled with one log line.
    """


class NotSupported(PluginError):
    """The device does not report this value; it is omitted, never invented."""


class DeviceLost(PluginError):
    """A device stopped answering (fell off the bus, driver reports it lost)."""


class CollectTimeout(PluginError):
    """A collection ran past its deadline."""
