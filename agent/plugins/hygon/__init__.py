"""Hygon DCUs through hy-smi (rocm-smi-compatible JSON), in the shared ``gpu_*`` vocabulary."""

from agent.plugins.hygon.plugin import HygonPlugin

__all__ = ["HygonPlugin"]
