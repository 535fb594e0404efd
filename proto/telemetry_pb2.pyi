# Generated from proto/telemetry.proto by `make proto` (python -m proto.generate). DO NOT EDIT.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetricType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GAUGE: _ClassVar[MetricType]
    COUNTER: _ClassVar[MetricType]
    INFO: _ClassVar[MetricType]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]
GAUGE: MetricType
COUNTER: MetricType
INFO: MetricType
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_CRITICAL: Severity

class AgentMessage(_message.Message):
    __slots__ = ("hello", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: Batch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ...) -> None: ...

class CollectorMessage(_message.Message):
    __slots__ = ("welcome", "ack")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: Ack
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class PluginStatus(_message.Message):
    __slots__ = ("name", "enabled", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    enabled: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., enabled: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node", "labels", "agent_version", "plugins", "instance_id", "sent_at_ms", "wal_id", "oldest_sequence")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    WAL_ID_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    node: str
    labels: _containers.ScalarMap[str, str]
    agent_version: str
    plugins: _containers.RepeatedCompositeFieldContainer[PluginStatus]
    instance_id: str
    sent_at_ms: int
    wal_id: str
    oldest_sequence: int
    def __init__(self, node: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., agent_version: _Optional[str] = ..., plugins: _Optional[_Iterable[_Union[PluginStatus, _Mapping]]] = ..., instance_id: _Optional[str] = ..., sent_at_ms: _Optional[int] = ..., wal_id: _Optional[str] = ..., oldest_sequence: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("last_durable_sequence", "collector_version", "max_batch_bytes")
    LAST_DURABLE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    last_durable_sequence: int
    collector_version: str
    max_batch_bytes: int
    def __init__(self, last_durable_sequence: _Optional[int] = ..., collector_version: _Optional[str] = ..., max_batch_bytes: _Optional[int] = ...) -> None: ...

class SeriesDef(_message.Message):
    __slots__ = ("id", "measurement", "field", "labels", "type", "help", "unit")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    id: int
    measurement: str
    field: str
    labels: _containers.ScalarMap[str, str]
    type: MetricType
    help: str
    unit: str
    def __init__(self, id: _Optional[int] = ..., measurement: _Optional[str] = ..., field: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., type: _Optional[_Union[MetricType, str]] = ..., help: _Optional[str] = ..., unit: _Optional[str] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("timestamp_ms", "series_ids", "values")
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    SERIES_IDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    series_ids: _containers.RepeatedScalarFieldContainer[int]
    values: bytes
    def __init__(self, timestamp_ms: _Optional[int] = ..., series_ids: _Optional[_Iterable[int]] = ..., values: _Optional[bytes] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("timestamp_ms", "kind", "labels", "severity", "message", "action")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    kind: str
    labels: _containers.ScalarMap[str, str]
    severity: Severity
    message: str
    action: str
    def __init__(self, timestamp_ms: _Optional[int] = ..., kind: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., severity: _Optional[_Union[Severity, str]] = ..., message: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("sequence", "series", "blocks", "events", "oldest_sequence")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    series: _containers.RepeatedCompositeFieldContainer[SeriesDef]
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    oldest_sequence: int
    def __init__(self, sequence: _Optional[int] = ..., series: _Optional[_Iterable[_Union[SeriesDef, _Mapping]]] = ..., blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., oldest_sequence: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("sequence", "contiguous", "refused")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CONTIGUOUS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    contiguous: int
    refused: str
    def __init__(self, sequence: _Optional[int] = ..., contiguous: _Optional[int] = ..., refused: _Optional[str] = ...) -> None: ...
