"""fleetmon node agent: plugins, scheduler, WAL and the gRPC client."""

__version__ = "0.1.0"
