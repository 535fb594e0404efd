"""glibc malloc settings of the collector's processes (fleetmon_common/memory.py)."""

from __future__ import annotations

import ctypes.util
import time

import pytest

from fleetmon_common import memory


def test_trimmer_trims_once_per_period() -> None:
    t = memory.Trimmer(every_s=60.0)
    now = time.monotonic()
    if not memory._glibc():
        assert not t.maybe(now + 61) and t.trims == 0  # elsewhere than glibc: nothing to do
        return
    assert not t.maybe(now)
    assert t.maybe(now + 61) and t.trims == 1
    assert not t.maybe(now + 62)  # the next one is a period later
    assert t.maybe(now + 122) and t.trims == 2


@pytest.mark.skipif(not (ctypes.util.find_library("c") or "").startswith("libc.so"), reason="not glibc")
def test_arena_cap_is_accepted_by_glibc() -> None:
    assert memory.limit_arenas(2)
