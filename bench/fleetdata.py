"""Realistic series for the collector benches: what the simulated plugin produces, pre-encoded.

A *profile* is one simulated node (``agent/plugins/simulated``, seeded by a name) reduced or
grown to a given series count: all its GPU and power series first (8 GPUs, 2 PSUs, a UPS), then
IB ports and optical lanes until the count is reached. Values are the plugin's own: slowly
varying gauges (temperatures, power, utilisation, optical power), monotonic counters (energy,
IB bytes), and many constants (limits, thresholds, link states) — the shape of real hardware
telemetry. Frames advance in simulated time, one per interval, so counters keep counting.

Batches are built as wire bytes by hand (field numbers from ``proto/telemetry.proto``), so a
load generator spends microseconds, not a protobuf serialisation, per batch.
"""

from __future__ import annotations

import array
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.codec import pack_values
from agent.plugin import PluginContext
from agent.plugins.simulated.plugin import SimulatedConfig, SimulatedPlugin
from agent.transport import _varint as varint  # the wire's varint, as the agent writes it
from proto import telemetry_pb2 as pb


def field_bytes(num: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


class Profile:
    """One simulated node's series and its value frames (one per ``interval`` of simulated time)."""

    def __init__(self, seed: str, series: int, interval: float) -> None:
        self.interval = interval
        # 8 GPUs and 2 PSUs as a DGX-class node has; IB ports/lanes are the filler up to `series`.
        ports = max(1, series // 72 + 1)
        cfg = SimulatedConfig(gpus=8, ib_ports=ports, lanes=8, psus=2, seed=seed)
        self._plugin = SimulatedPlugin(PluginContext(node=seed), cfg)
        self._plugin.discover()
        self._t = 0.0
        first = self._collect()
        keys = [self._key(s) for s in first.samples]
        front = [k for k in keys if k[0] not in ("ib_port", "optical")]
        back = [k for k in keys if k[0] in ("ib_port", "optical")]
        chosen = (front + back)[:series]
        if len(chosen) < series:
            raise ValueError(f"profile {seed}: the simulated node has only {len(chosen)} series")
        self.keys = chosen
        self._index = {k: i for i, k in enumerate(chosen)}
        defs = []
        by_key = {self._key(s): s for s in first.samples}
        for i, k in enumerate(chosen):
            s = by_key[k]
            d = pb.SeriesDef(id=i + 1, measurement=s.metric.measurement, field=s.metric.field,
                             labels=s.labels, type=int(s.metric.type), help=s.metric.help)
            defs.append(d)
        self.defs = defs
        #: Batch field 2 (series), pre-encoded: sent once per stream.
        self.defs_bytes = b"".join(field_bytes(2, d.SerializeToString()) for d in defs)
        packed_ids = b"".join(varint(i + 1) for i in range(series))
        self.ids_field = field_bytes(2, packed_ids)  # Block.series_ids, packed
        self.frames: dict[int, bytes] = {0: self._pack(first)}
        self._k = 0

    @staticmethod
    def _key(s: object) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        m = s.metric  # type: ignore[attr-defined]
        return m.measurement, m.field, tuple(sorted(s.labels.items()))  # type: ignore[attr-defined]

    def _collect(self) -> object:
        # The plugin reads the wall clock; moving its start back by the simulated time makes
        # `collect` see exactly `self._t` seconds since start (and dt = one interval).
        self._plugin._start = time.time() - self._t
        return self._plugin.collect()

    def _pack(self, col: object) -> bytes:
        vals = [0.0] * len(self.keys)
        for s in col.samples:  # type: ignore[attr-defined]
            i = self._index.get(self._key(s))
            if i is not None:
                vals[i] = float(s.value)
        return pack_values(vals)

    def values(self, k: int) -> bytes:
        """Packed float64 values of frame ``k`` (frames are computed in order, kept for a while)."""
        while self._k < k:
            self._k += 1
            self._t += self.interval
            self.frames[self._k] = self._pack(self._collect())
            self.frames.pop(self._k - 64, None)
        return self.frames[k]

    def value_array(self, k: int) -> array.array[float]:
        a = array.array("d")
        a.frombytes(self.values(k))
        return a

    def block(self, ts_ms: int, k: int) -> bytes:
        vals = self.values(k)
        return field_bytes(3, varint(1 << 3) + varint(ts_ms) + self.ids_field + field_bytes(3, vals))

    def batch(self, seq: int, ts_ms: int, k: int, with_defs: bool) -> bytes:
        """AgentMessage{batch: Batch{sequence, [series], blocks: [Block]}} as wire bytes."""
        body = varint(1 << 3) + varint(seq) + (self.defs_bytes if with_defs else b"") + self.block(ts_ms, k)
        return field_bytes(2, body)
