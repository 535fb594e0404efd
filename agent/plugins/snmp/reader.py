"""The interface every MIB reader shares: what to read from the device, and a pure parse."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.model import Collection, Labels
from agent.plugins.snmp.snapshot import Snapshot


@dataclass(frozen=True)
class Reader:
    """One MIB (or vendor mapping): the subtrees/columns to walk, the scalars to get, a parser.

    ``present`` tells whether the device implements it at all (for fallbacks: an APC PDU
    without the rPDU2 tree is read through the older rPDU tree).
    """

    name: str
    walks: tuple[str, ...]
    gets: tuple[str, ...]
    parse: Callable[[Snapshot, Labels], Collection]
    present: Callable[[Snapshot], bool] = lambda _s: True


def scaled(value: int | None, factor: float) -> float | None:
    """``value x factor``; a decimal factor (0.1, 0.01) divides by its inverse instead, so tenths
    of an ampere read 0.9, not 0.9000000000000001."""
    if value is None:
        return None
    if 0 < factor < 1:
        return value / round(1 / factor)
    return value * factor


def non_negative(value: int | None) -> int | None:
    """Vendor MIBs (APC, UPS-MIB agents) answer -1 for "not supported": omitted, never reported."""
    return None if value is None or value < 0 else value


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return num / den
