"""fleetmon: the command-line dispatcher. It imports only the side it runs."""

__version__ = "0.1.0"
