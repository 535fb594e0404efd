"""fleetmon alerting: Prometheus-format rules over the collector's live windows, and notifiers."""
