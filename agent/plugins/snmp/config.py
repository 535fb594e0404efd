"""The ``plugins.snmp`` YAML section: devices to poll, SNMP credentials, vendor mapping profiles."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

_OID = re.compile(r"^\.?\d+(\.\d+)+$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
KINDS = ("pdu", "ups", "sensor")


def check_oid(oid: str, what: str) -> None:
    if not _OID.match(oid.strip()):
        raise ValueError(f"{what} {oid!r} is not a numeric OID (e.g. 1.3.6.1.4.1.534.1.2.1.0)")


@dataclass
class V3Config:
    """SNMPv3 USM user (authPriv when both keys are given, authNoPriv with only ``auth_key``)."""

    user: str = ""
    auth_protocol: Literal["SHA", "SHA224", "SHA256", "SHA384", "SHA512", "MD5"] = "SHA"
    #: Prefer ``auth_key_env``: the name of an environment variable holding the key.
    auth_key: str = ""
    auth_key_env: str = ""
    priv_protocol: Literal["AES", "AES192", "AES256", "DES"] = "AES"
    priv_key: str = ""
    priv_key_env: str = ""
    #: SNMPv3 context name (empty: the default context).
    context: str = ""


@dataclass
class DeviceConfig:
    #: The device's name: the value of its `pdu`, `ups` or `sensor` label.
    name: str = ""
    kind: Literal["pdu", "ups", "sensor"] = "pdu"
    host: str = ""
    port: int = 161
    version: Literal["2c", "3"] = "2c"
    #: SNMPv1/v2c community. Prefer ``community_env``.
    community: str = "public"
    community_env: str = ""
    v3: V3Config = field(default_factory=V3Config)
    #: The rack the device feeds or sits in (label `rack`).
    rack: str = ""
    #: More labels for every series of this device (e.g. {feed: A, row: "3"}).
    labels: dict[str, str] = field(default_factory=dict)
    #: MIB readers and mapping profiles, in order. Unset: by kind: pdu -> [apc], ups -> [ups-mib],
    #: sensor -> []; [] reads the identity (system group) alone. Built-in: apc (rPDU2, else rPDU),
    #: apc-rpdu2, apc-rpdu, ups-mib, and the profiles in agent/plugins/snmp/profiles/
    #: (eaton-xups, geist-v5, huawei-ups5000) or under `profiles`.
    mibs: list[str] | None = None

    def validate(self) -> None:
        if not self.name or not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must be set (letters, digits, _ . : -); it becomes the "
                             f"{self.kind} label")
        if not self.host:
            raise ValueError("host must be set (the device's address)")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a UDP port (1-65535)")
        if self.version == "3" and not self.v3.user:
            raise ValueError("version 3 needs v3.user (and v3.auth_key/priv_key or their _env names)")
        for key in self.labels:
            if key in ("node", self.kind, "rack"):
                raise ValueError(f"labels.{key}: set by the plugin; use `name`/`rack` instead")


@dataclass
class ProfileMetric:
    """One metric of a mapping profile: a scalar (`oid`) or a table column (`column`)."""

    name: str = ""
    oid: str = ""
    column: str = ""
    help: str = ""
    unit: str = ""
    type: Literal["gauge", "counter"] = "gauge"
    #: value = raw x scale (e.g. 0.1 for tenths of a volt).
    scale: float = 1.0
    #: Raw values that mean "not supported" (e.g. [-1, 999999]): the sample is omitted.
    sentinels: list[int] = field(default_factory=list)
    #: raw -> value for enumerations, e.g. {5: 1, default: 0} (unlisted without default: omitted).
    map: dict[str, float] = field(default_factory=dict)
    #: For a column: the label that carries the row index (default `index`).
    index_label: str = "index"
    #: For a column: more labels read from other columns of the same row, {label: column OID}.
    label_columns: dict[str, str] = field(default_factory=dict)
    #: Only when this scalar has one of these values (e.g. a temperature-units switch).
    only_if_oid: str = ""
    only_if_equals: list[int] = field(default_factory=list)

    def validate(self) -> None:
        if bool(self.oid) == bool(self.column):
            raise ValueError(f"metric {self.name!r}: give exactly one of oid (a scalar) or column (a table column)")
        for what, oid in (("oid", self.oid), ("column", self.column), ("only_if_oid", self.only_if_oid),
                          *((f"label_columns.{k}", v) for k, v in self.label_columns.items())):
            if oid:
                check_oid(oid, f"metric {self.name!r} {what}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"metric {self.name!r}: a counter's name ends in _total")
        for key in self.map:
            if key != "default" and not key.lstrip("-").isdigit():
                raise ValueError(f"metric {self.name!r}: map key {key!r} is not an integer or 'default'")


@dataclass
class ProfileConfig:
    description: str = ""
    metrics: list[ProfileMetric] = field(default_factory=list)


@dataclass
class SnmpConfig:
    devices: list[DeviceConfig] = field(default_factory=list)
    #: Vendor MIB mappings by name (devices name them in `mibs`); see the README.
    profiles: dict[str, ProfileConfig] = field(default_factory=dict)
    #: Per-request timeout and retries (each device's whole poll also has `device_timeout`).
    request_timeout: float = 1.0
    retries: int = 1
    #: Deadline of one device's whole poll; keep it below the plugin's `timeout`.
    device_timeout: float = 5.0
    #: Devices polled at once (each costs one UDP socket and its requests in flight).
    concurrency: int = 32
    #: GETBULK max-repetitions when walking a table column.
    max_repetitions: int = 25

    def validate(self) -> None:
        if self.request_timeout <= 0 or self.device_timeout <= 0:
            raise ValueError("request_timeout and device_timeout must be positive (seconds)")
        if not 0 <= self.retries <= 5:
            raise ValueError("retries must be between 0 and 5")
        if self.concurrency < 1 or not 1 <= self.max_repetitions <= 100:
            raise ValueError("concurrency must be >= 1 and max_repetitions 1-100")
        seen: set[tuple[str, str]] = set()
        for d in self.devices:
            key = (d.kind, d.name)
            if key in seen:
                raise ValueError(f"devices: two {d.kind}s named {d.name!r}; names label the series, make them unique")
            seen.add(key)
