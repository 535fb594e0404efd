"""Byte fields of module EEPROMs, shared by the SFF-8472, SFF-8636 and CMIS decoders.

All multi-byte fields are big-endian in every one of those standards.
"""

from __future__ import annotations

import struct

from agent.errors import PluginError

PAGE = 128


class EepromError(PluginError):
    """An EEPROM image is malformed (short page, unknown layout); the message names the module."""


def u16(buf: bytes, off: int) -> int:
    return int((buf[off] << 8) | buf[off + 1])


def s16(buf: bytes, off: int) -> int:
    v = u16(buf, off)
    return v - 0x10000 if v & 0x8000 else v


def f32(buf: bytes, off: int) -> float:
    return float(struct.unpack_from(">f", buf, off)[0])


def text(buf: bytes, off: int, n: int) -> str:
    """An ASCII field, space (or NUL) padded."""
    raw = bytes(buf[off : off + n])
    return raw.decode("ascii", "replace").replace("\x00", " ").strip()


def upper_at(page: bytes | None, off: int) -> int | None:
    """Byte ``off`` (128-255, as the specifications number it) of an upper page."""
    if page is None or len(page) < PAGE:
        return None
    return page[off - PAGE]
