"""What one poll of one device read: OID -> value, with the lookups the MIB readers need (pure).

The client fills it (``client.py``); readers turn it into samples and never talk to the network,
so tests feed them a snapshot loaded from a ``.snmprec`` recording as well as one read from a
real agent. Values are plain Python: ``int`` for every numeric SNMP type (INTEGER, Gauge32,
Counter32/64, TimeTicks), ``str`` for OCTET STRING (UTF-8, NULs and padding stripped) and
OBJECT IDENTIFIER (dotted). An OID the agent does not have is simply absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Value = int | str


def norm_oid(oid: str) -> str:
    return oid.strip().lstrip(".")


@dataclass
class Snapshot:
    values: dict[str, Value] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def get(self, oid: str) -> Value | None:
        return self.values.get(oid)

    def put(self, oid: str, value: Value) -> None:
        self.values[norm_oid(oid)] = value

    def number(self, oid: str) -> int | None:
        v = self.values.get(oid)
        return v if isinstance(v, int) else None

    def text(self, oid: str) -> str | None:
        v = self.values.get(oid)
        return v if isinstance(v, str) else None

    def column(self, column: str) -> dict[str, Value]:
        """Every row of a table column: row index (the OID suffix) -> value.

        Some agents (the EAST iStars UPS card) append a stray ``.0`` to table cells
        (``upsInputVoltage.1.0``); a row index ending in ``.0`` is read without it.
        """
        prefix = column + "."
        out: dict[str, Value] = {}
        for oid, value in self.values.items():
            if oid.startswith(prefix):
                index = oid[len(prefix):]
                if index.endswith(".0") and index.count(".") >= 1:
                    index = index[:-2]
                out[index] = value
        return out

    def int_column(self, column: str) -> dict[str, int]:
        return {k: v for k, v in self.column(column).items() if isinstance(v, int)}

    def str_column(self, column: str) -> dict[str, str]:
        return {k: v for k, v in self.column(column).items() if isinstance(v, str)}

    def has_prefix(self, prefix: str) -> bool:
        p = prefix + "."
        return any(oid.startswith(p) or oid == prefix for oid in self.values)


def merge(snaps: Iterable[Snapshot]) -> Snapshot:
    out = Snapshot()
    for s in snaps:
        out.values.update(s.values)
    return out
