"""Build a storage sink from its YAML section, with errors that name where and what.

Kinds:

``influxdb`` (alias ``influxdb_v1``)
    :class:`~collector.storage.influx_v1.InfluxV1Sink`: ``/write?db=&rp=`` + InfluxQL. Keys:
    url, database, retention_policy, username, password | password_env, timeout, gzip,
    batch_size, create_database, dialect, name.
``influxdb2`` (alias ``influxdb_v2``)
    :class:`~collector.storage.influx_v2.InfluxV2Sink`: ``/api/v2/write`` with
    ``Authorization: Token``. Keys: url, org, bucket, token | token_env, timeout, gzip, batch_size,
    dialect, name.
``victoriametrics``
    The v2 sink with VictoriaMetrics' defaults: bucket/org/token are ignored by it; the
    ``influxdb2`` dialect, which is how VictoriaMetrics reads backslashes; ``events: false``,
    since it keeps string fields only as 0-valued series. Keys as ``influxdb2``.

``remote_write``
    :class:`~collector.storage.remote_write.RemoteWriteSink`: Prometheus remote write (snappy
    protobuf) to VictoriaMetrics, vmagent, Prometheus, Mimir, Cortex or Thanos Receive; ``url``
    is the write endpoint itself (``http://vm:8428/api/v1/write``). Keys: url, timeout,
    batch_size (samples per request), headers (e.g. ``X-Scope-OrgID``), username, password |
    password_env, bearer_token | bearer_token_env, tls_ca, tls_verify, name.

Every kind also takes ``flush_interval`` (seconds the spool may gather rows before a write, so a
series brings several samples per request; default 0) and ``write_samples`` (most samples per
write; default 100,000), ``tls_ca`` (PEM bundle of a private CA) and ``tls_verify``. The
InfluxDB kinds also take ``events`` (write events to measurement ``event``, default true).

``name`` (the ``sink`` label of the health metrics and the prefix of every error) defaults to
the kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector.errors import ConfigError
from collector.storage.base import Sink
from collector.storage.influx_v1 import InfluxV1Config, InfluxV1Sink
from collector.storage.influx_v2 import InfluxV2Config, InfluxV2Sink
from collector.storage.remote_write import RemoteWriteConfig, RemoteWriteSink
from fleetmon_common import settings

KINDS = ("influxdb", "influxdb_v1", "influxdb2", "influxdb_v2", "victoriametrics", "remote_write")
SINK_TYPES = KINDS


def build_sink(kind: str, section: Mapping[str, Any], where: str) -> Sink:
    """A started-nothing sink; the caller awaits ``start()``. Raises ConfigError naming ``where``."""
    if kind in ("influxdb", "influxdb_v1"):
        v1 = _build(InfluxV1Config, {"name": kind, **section}, where)
        return _construct(InfluxV1Sink, v1, where)
    if kind in ("influxdb2", "influxdb_v2"):
        v2 = _build(InfluxV2Config, {"name": kind, **section}, where)
        return _construct(InfluxV2Sink, v2, where)
    if kind == "victoriametrics":
        preset = {"name": kind, "bucket": "fleetmon", "dialect": "influxdb2", "events": False}
        vm = _build(InfluxV2Config, {**preset, **section}, where)
        return _construct(InfluxV2Sink, vm, where)
    if kind == "remote_write":
        rw = _build(RemoteWriteConfig, {"name": kind, **section}, where)
        return _construct(RemoteWriteSink, rw, where)
    raise ConfigError(f"{where}: unknown sink kind {kind!r}; kinds are {', '.join(KINDS)}")


def _construct(cls: Any, config: Any, where: str) -> Sink:
    try:
        sink: Sink = cls(config)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from err
    return sink


def _build(cls: type[Any], section: Mapping[str, Any], where: str) -> Any:
    """The settings' common builder: every key's problem at once, durations and sizes as in
    every other section, secrets from files or the environment."""
    return settings.build(cls, section, where, error=ConfigError)
