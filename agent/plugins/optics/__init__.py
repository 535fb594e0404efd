"""Optical links: transceiver diagnostics per lane, InfiniBand/RoCE ports, link flaps."""

from agent.plugins.optics.plugin import OpticsPlugin

__all__ = ["OpticsPlugin"]
