"""fleetmon collector: gRPC ingest, spool, storage sinks, HTTP API and dashboard."""

__version__ = "0.1.0"
