"""What the agent and the collector side both use: config validation and logging.

It is a library, apart from the ``fleetmon`` command-line dispatcher, so that ``agent/`` and
``collector/`` never import the entry point (which imports them).
"""

__version__ = "0.1.0"
