"""Kernel log follower: NVIDIA XID, NVSwitch SXID, PCIe AER and mlx5 port-module events."""

from agent.plugins.kmsg.plugin import KmsgPlugin

__all__ = ["KmsgPlugin"]
