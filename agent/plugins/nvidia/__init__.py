"""NVIDIA GPUs through NVML (nvidia-ml-py): health telemetry, XID events. pynvml is imported in discover()."""

from agent.plugins.nvidia.plugin import NvidiaPlugin

__all__ = ["NvidiaPlugin"]
