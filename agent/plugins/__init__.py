"""Built-in plugins, one folder each; registered by name in agent/registry.py."""
