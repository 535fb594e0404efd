"""AMD GPUs through amdsmi / amd-smi / rocm-smi, in the shared ``gpu_*`` vocabulary."""

from agent.plugins.amd.plugin import AmdPlugin

__all__ = ["AmdPlugin"]
