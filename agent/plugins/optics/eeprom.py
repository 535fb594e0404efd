"""Module EEPROM images: which pages to read, and how to decode them (pure functions).

Reading is apart from decoding (STYLE 4): :mod:`agent.plugins.optics.kernel` fetches pages,
this module decides which pages a module has (:func:`plan_pages`), reshapes the legacy ioctl's
flat dump (:func:`split_legacy`) and dispatches on the SFF-8024 identifier (:func:`decode`).

Addressing follows the kernel's ``ETHTOOL_MSG_MODULE_EEPROM_GET``: I2C address 0x50 holds the
lower page (bytes 0-127) and the selectable upper pages (bytes 128-255); SFF-8472 modules add
the diagnostics at address 0x51 ("A2h").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.plugins.optics import cmis, sff8472, sff8636
from agent.plugins.optics.fields import PAGE, EepromError
from agent.plugins.optics.reading import CMIS_IDS, SFF8472_IDS, SFF8636_IDS, ModuleReading

__all__ = ["PAGE", "EepromError", "EepromImage", "PageRequest", "decode", "plan_pages", "split_legacy"]

ADDR_A0 = 0x50
ADDR_A2 = 0x51


@dataclass(frozen=True)
class PageRequest:
    """One half page to fetch: ``offset`` 0 is the lower half, 128 an upper page."""

    i2c: int
    page: int
    offset: int
    bank: int = 0
    length: int = PAGE


@dataclass
class EepromImage:
    """The pages of one module, as read. A page that could not be read is simply absent."""

    lower: bytes  # address 0x50, bytes 0-127
    upper: dict[int, bytes] = field(default_factory=dict)  # page -> bytes 128-255 (bank 0)
    a2: bytes | None = None  # SFF-8472 address 0x51, bytes 0-127


LOWER = PageRequest(ADDR_A0, 0, 0)


def plan_pages(lower: bytes) -> list[PageRequest]:
    """The pages worth reading after the lower page, by standard and memory model."""
    if not lower:
        return []
    ident = lower[0]
    if ident in SFF8472_IDS:
        # SFF-8472 byte 92 bit 6: digital diagnostics implemented (they live at A2h).
        return [PageRequest(ADDR_A2, 0, 0)] if len(lower) > 92 and lower[92] & 0x40 else []
    if ident in SFF8636_IDS:
        reqs = [PageRequest(ADDR_A0, 0, PAGE)]
        # SFF-8636 byte 2 bit 2 (Flat_mem): only page 00h exists; thresholds are on page 03h.
        if len(lower) > 2 and not lower[2] & 0x04:
            reqs.append(PageRequest(ADDR_A0, 3, PAGE))
        return reqs
    if ident in CMIS_IDS:
        reqs = [PageRequest(ADDR_A0, 0, PAGE)]
        # CMIS byte 2 bit 7 (MemoryModel): flat memory (passive copper) has no pages 01h-11h.
        if len(lower) > 2 and not lower[2] & 0x80:
            reqs += [PageRequest(ADDR_A0, p, PAGE) for p in (0x01, 0x02, 0x11)]
        return reqs
    return [PageRequest(ADDR_A0, 0, PAGE)]


# ethtool.h ETH_MODULE_* types returned by ETHTOOL_GMODULEINFO.
ETH_MODULE_SFF_8079 = 0x1
ETH_MODULE_SFF_8472 = 0x2
ETH_MODULE_SFF_8636 = 0x3
ETH_MODULE_SFF_8436 = 0x4


def split_legacy(kind: int, data: bytes) -> EepromImage:
    """Reshape an ``ETHTOOL_GMODULEEEPROM`` dump into pages.

    Layouts (include/uapi/linux/ethtool.h, ETH_MODULE_*_LEN): SFF-8079 is A0h only (256 bytes);
    SFF-8472 is A0h then A2h (512 bytes); SFF-8436/8636 is the lower page, upper page 00h and,
    in the 640-byte form, upper pages 01h-03h back to back.
    """
    if len(data) < PAGE:
        raise EepromError(f"legacy EEPROM dump is {len(data)} bytes, shorter than one page")
    img = EepromImage(lower=bytes(data[:PAGE]))
    if len(data) >= 2 * PAGE:
        img.upper[0] = bytes(data[PAGE : 2 * PAGE])
    if kind == ETH_MODULE_SFF_8472:
        if len(data) >= 3 * PAGE:
            img.a2 = bytes(data[2 * PAGE : 3 * PAGE])
    elif kind in (ETH_MODULE_SFF_8636, ETH_MODULE_SFF_8436):
        for page in (1, 2, 3):
            start = PAGE * (page + 1)
            if len(data) >= start + PAGE:
                img.upper[page] = bytes(data[start : start + PAGE])
    return img


def decode(img: EepromImage) -> ModuleReading:
    """Decode one module by its SFF-8024 identifier (lower page byte 0)."""
    if len(img.lower) < PAGE:
        raise EepromError(f"lower page is {len(img.lower)} bytes, expected {PAGE}")
    ident = img.lower[0]
    if ident in SFF8472_IDS:
        return sff8472.decode(img.lower, img.a2)
    if ident in SFF8636_IDS:
        return sff8636.decode(img.lower, img.upper)
    if ident in CMIS_IDS:
        return cmis.decode(img.lower, img.upper)
    raise EepromError(f"identifier 0x{ident:02x} is not SFP, QSFP or CMIS; not decoded")
