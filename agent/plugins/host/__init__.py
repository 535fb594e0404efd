"""Host basics through psutil: CPU, memory, disk, network, load, uptime."""

from agent.plugins.host.plugin import HostPlugin

__all__ = ["HostPlugin"]
