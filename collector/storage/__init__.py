"""Storage sinks: the embedded SQLite store, InfluxDB v1 and the InfluxDB v2 API."""
