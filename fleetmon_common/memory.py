"""glibc malloc settings for fleetmon's long-lived processes (the collector's, and the agent).

Measured at 2,500 nodes (README, "Capacity of one collector"): what the Python heap frees
after the ramp (decoded definitions, a backlog of batches) stays in the process' RSS unless
malloc is told to give it back, and every thread that allocates (gRPC's, the store's) gets an
arena of its own that keeps its high-water mark. So the collector's processes cap the arenas
(``M_ARENA_MAX``, as ``MALLOC_ARENA_MAX`` would) and return free heap pages now and then
(``malloc_trim``). Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Any

#: mallopt's parameter number for the arena cap (glibc malloc.h: M_ARENA_MAX = -8).
_M_ARENA_MAX = -8

_libc: Any = None


def _glibc() -> Any:
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else False
        except OSError:
            _libc = False
    return _libc


def limit_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas; call before the process starts threads. False: not glibc."""
    lib = _glibc()
    return bool(lib) and bool(lib.mallopt(_M_ARENA_MAX, arenas))


def trim() -> bool:
    """``malloc_trim(0)`` now: the heap's free pages back to the system. False: not glibc."""
    lib = _glibc()
    if not lib:
        return False
    lib.malloc_trim(0)
    return True


class Trimmer:
    """``malloc_trim(0)`` at most every ``every_s`` seconds: free heap pages back to the system."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._next = time.monotonic() + every_s
        self.trims = 0

    def maybe(self, now: float | None = None) -> bool:
        """Trim if it is time; True when it did."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return False
        self._next = now + self.every_s
        if not trim():  # not glibc
            return False
        self.trims += 1
        return True
