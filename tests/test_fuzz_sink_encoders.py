"""The sinks' C module against their pure-Python path, on arbitrary batches (see tests/fuzz.py).

``collector/storage/_native.c`` renders line protocol and assembles remote-write requests; the
pure-Python path (``tests/test_sink_encoders.py`` checks it against ``encode_line`` and the
generated protobuf) is what it must equal byte for byte: any names, tags, values (whole numbers
at the edges of the C fast path, fractions, -0.0, NaN, ±Inf, extremes), timestamps (negative,
duplicated, out of order) and request sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.storage import lines as lines_module
from collector.storage import remote_write as remote_write_module
from collector.storage.base import Point, SinkBatch
from collector.storage.lines import ColumnLineEncoder, encode_batch
from collector.storage.remote_write import RemoteWriteEncoder
from tests.fuzz import fuzz
from tests.test_sink_encoders import native_module

NAMES = st.sampled_from(["gpu", "power_watts", "sp ace", "com,ma", "eq=ual", 'quo"te', "back\\slash", "ünï", "x"])
TAGS = st.lists(st.tuples(NAMES, st.sampled_from(["0", "1", "", "a b", "r,1", "v=2"])), max_size=3).map(
    lambda pairs: tuple(sorted(dict(pairs).items())))
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**16), 10**16).map(float),  # whole numbers on both sides of the 1e15 fast-path edge
    st.sampled_from([0.0, -0.0, 1e15, -1e15, 1e15 - 1, 999_999_999_999_999.0, 2.0**53, 0.5, 1e-7, 5e-324]),
)
STAMPS = st.one_of(st.integers(-(10**12), 10**12), st.integers(1_600_000_000 * 10**9, 1_800_000_000 * 10**9),
                   st.sampled_from([0, -1, 2**62, -(2**62)]))
POINTS = st.lists(st.builds(Point, NAMES, NAMES, TAGS, VALUES, STAMPS), min_size=0, max_size=60)


def _with(native: Any, fn: Any) -> Any:
    saved = lines_module._native, remote_write_module._native
    lines_module._native = remote_write_module._native = native
    try:
        return fn()
    finally:
        lines_module._native, remote_write_module._native = saved


@pytest.fixture(scope="module")
def native() -> Any:
    return native_module()


@fuzz(150)
@given(points=POINTS, max_lines=st.integers(1, 25), dialect=st.sampled_from(["influxdb1", "influxdb2"]))
def test_line_protocol_native_equals_python(native: Any, points: list[Point], max_lines: int, dialect: Any) -> None:
    batch = SinkBatch(1, points)

    def chunks() -> list[bytes]:
        encoded = encode_batch(batch, ColumnLineEncoder(dialect), events=False, max_lines=max_lines)
        return [encoded.render(i) for i in range(encoded.n_chunks)]

    assert _with(native, chunks) == _with(None, chunks)


@fuzz(150)
@given(points=POINTS, max_samples=st.integers(1, 25))
def test_remote_write_native_equals_python(native: Any, points: list[Point], max_samples: int) -> None:
    batch = SinkBatch(1, points)

    def requests() -> list[bytes]:
        plan = RemoteWriteEncoder().plan(batch, max_samples)
        return [plan.request(first, end) for first, end in plan.chunks]

    assert _with(native, requests) == _with(None, requests)


def test_whole_number_edges_native_equals_python(native: Any) -> None:
    """Every whole number from -2**20 to 2**20 and around the 1e15 edge, one line each."""
    values = np.concatenate([np.arange(-(2**20), 2**20, 7, dtype=np.float64),
                             np.arange(1e15 - 300, 1e15 + 300, 1.0), -np.arange(1e15 - 300, 1e15 + 300, 1.0)])
    points = [Point("m", "f", (("i", str(i)),), float(v), 1) for i, v in enumerate(values.tolist())]

    def chunks() -> list[bytes]:
        encoded = encode_batch(SinkBatch(1, points), ColumnLineEncoder("influxdb2"), events=False)
        return [encoded.render(i) for i in range(encoded.n_chunks)]

    assert _with(native, chunks) == _with(None, chunks)
