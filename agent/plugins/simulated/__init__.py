"""A simulated GPU node: GPUs, IB ports with optical lanes, PSUs and a UPS, plus scripted faults."""

from agent.plugins.simulated.plugin import SimulatedPlugin

__all__ = ["SimulatedPlugin"]
