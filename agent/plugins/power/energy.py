"""Energy bookkeeping kept across collections: counter unwrapping and power integration.

Both are pure state machines fed with (value, monotonic time); they never read anything, so
tests drive them with exact numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass
class _Counter:
    last_raw: int
    offset: int  # raw units added by the wraps seen so far
    last_t: float


class CounterReading(NamedTuple):
    total: int  # raw units since the first reading, wraps unwrapped
    rate: float | None  # raw units per second since the last reading; None on the first


class WrappingCounter:
    """Unwraps a hardware energy counter that restarts at zero after ``max_range``.

    RAPL's ``energy_uj`` wraps at ``max_energy_range_uj`` (Documentation/power/powercap/
    powercap.rst); a smaller reading than the last one means one wrap. Two wraps between
    collections cannot be told from one, so collect more often than the wrap period (a
    262,143 J range at 400 W wraps every ~11 minutes; the default 10 s interval is safe).
    """

    def __init__(self) -> None:
        self._state: dict[str, _Counter] = {}

    def update(self, key: str, raw: int, max_range: int | None, t: float) -> CounterReading:
        """The unwrapped raw total, and raw units per second since the last update (None at first)."""
        st = self._state.get(key)
        if st is None:
            self._state[key] = _Counter(raw, 0, t)
            return CounterReading(raw, None)
        delta = raw - st.last_raw
        if delta < 0:
            if not max_range or max_range <= st.last_raw:
                # No usable range: treat as a reset (counter restarted), never as negative energy.
                st.offset += st.last_raw
                delta = raw
            else:
                st.offset += max_range
                delta = raw + max_range - st.last_raw
        dt = t - st.last_t
        st.last_raw, st.last_t = raw, t
        rate = delta / dt if dt > 0 else None
        return CounterReading(raw + st.offset, rate)


@dataclass
class _Integral:
    last_power: float
    last_t: float
    joules: float


class PowerIntegrator:
    """Integrates power readings into energy with the trapezoid rule between collections.

    The first reading starts the count at 0 J (energy since the agent started; Prometheus'
    ``increase()`` copes with the restart). A gap longer than ``max_gap_s`` (a source that was
    down) is not bridged: the count pauses instead of inventing energy for the hole.
    """

    def __init__(self, max_gap_s: float) -> None:
        self.max_gap_s = max_gap_s
        self._state: dict[str, _Integral] = {}

    def update(self, key: str, watts: float, t: float) -> float:
        st = self._state.get(key)
        if st is None:
            self._state[key] = _Integral(watts, t, 0.0)
            return 0.0
        dt = t - st.last_t
        if 0 < dt <= self.max_gap_s:
            st.joules += (st.last_power + watts) / 2.0 * dt
        st.last_power, st.last_t = watts, t
        return st.joules
