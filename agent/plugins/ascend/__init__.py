"""Huawei Ascend NPUs through npu-smi, in the shared ``gpu_*`` vocabulary."""

from agent.plugins.ascend.plugin import AscendPlugin

__all__ = ["AscendPlugin"]
