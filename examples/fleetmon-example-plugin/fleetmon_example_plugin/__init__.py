"""fleetmon plugin for the (made-up) Example accelerator: a template for vendor plugins.

The Example driver ships ``example-smi``, which prints its devices as JSON with ``--json``.
The plugin follows the fleetmon contract (docs/writing-a-plugin.md):

- ``discover`` finds the tool (``agent.toolrun.Tool``) and raises ``PluginUnavailable`` when the
  node has none, so the agent disables the plugin with one line;
- ``collect`` runs the tool with a fixed argument list and a deadline and hands its text to the
  pure function :func:`parse`, which tests feed captured output;
- samples use the shared accelerator vocabulary (``agent.plugins.accel``) so the GPU rule pack
  and dashboards cover this device too.
"""

from __future__ import annotations

from fleetmon_example_plugin.plugin import ExampleAccelConfig, ExampleAccelPlugin, parse

__all__ = ["ExampleAccelConfig", "ExampleAccelPlugin", "parse"]
