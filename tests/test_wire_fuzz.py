"""Property tests of what a remote party controls at the collector: the wire messages.

Whatever bytes or Batch/Hello fields arrive, the server and the ingestor answer with an Ack or
one of the collector's own refusals (IngestError and its family), never another exception; what
the collector holds for a node stays consistent; nothing stored is lost. Real store, real
ingestor, no gRPC (so hypothesis can run hundreds of cases in seconds).
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.config import Limits
from collector.errors import IngestError
from collector.ingest import GroupWriter, Ingestor, StreamSession, check_hello
from collector.security import PeerIdentity
from collector.server import _Refused, parse_message
from collector.storage.sqlite import SqliteStore
from proto import telemetry_pb2 as pb

NOW_MS = int(time.time() * 1000)

text = st.text(max_size=40)
labels = st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=5)
sequences = st.one_of(st.integers(0, 50), st.integers(0, 2**64 - 1))
stamps = st.one_of(st.integers(NOW_MS - 10_000, NOW_MS + 1000), st.integers(-(2**63), 2**63 - 1))
doubles = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def batches(draw: st.DrawFn) -> pb.Batch:
    b = pb.Batch(sequence=draw(sequences), oldest_sequence=draw(sequences))
    for _ in range(draw(st.integers(0, 4))):
        b.series.add(id=draw(st.integers(0, 8)), measurement=draw(st.sampled_from(["gpu", "", "x" * 300, "ib"])),
                     field=draw(st.sampled_from(["t", "", "power_watts"])), labels=draw(labels),
                     type=draw(st.sampled_from([0, 1, 2, 7])), help=draw(text))
    for _ in range(draw(st.integers(0, 3))):
        ids = draw(st.lists(st.integers(0, 8), max_size=6))
        values = draw(st.lists(doubles, min_size=len(ids), max_size=len(ids)))
        raw = struct.pack(f"<{len(values)}d", *values)
        if draw(st.booleans()):
            raw = raw[: draw(st.integers(0, len(raw)))]  # values that do not match the ids
        b.blocks.add(timestamp_ms=draw(stamps), series_ids=ids, values=raw)
    for _ in range(draw(st.integers(0, 3))):
        b.events.add(timestamp_ms=draw(stamps), kind=draw(st.sampled_from(["gpu.xid", "", "k" * 200])),
                     labels=draw(labels), severity=draw(st.sampled_from([0, 1, 2, 9])), message=draw(text),
                     action=draw(text))
    return b


class Harness:
    """One ingestor on a real store, driven from a private event loop."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = SqliteStore(tmp / "fuzz.sqlite")
        limits = Limits(max_series_per_node=64, max_event_burst=1000, max_events_per_second=1e9)
        self.writer = GroupWriter(self.store)
        self.ingestor = Ingestor(self.store, self.writer, limits)
        self.loop.run_until_complete(self._start())
        self.session = self.open("fuzzed")

    async def _start(self) -> None:
        self.writer.start()

    def open(self, node: str) -> StreamSession:
        hello = pb.Hello(node=node, wal_id="w")
        return self.loop.run_until_complete(self.ingestor.open_stream(hello, "fuzz", PeerIdentity(None, "none")))

    def receive(self, b: pb.Batch) -> pb.Ack:
        return self.loop.run_until_complete(self.ingestor.receive(self.session, b))

    def close(self) -> None:
        self.loop.run_until_complete(self.writer.stop())
        self.store.close()
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("fuzz"))
    yield h
    h.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(batches())
def test_any_batch_is_acked_or_refused(harness: Harness, b: pb.Batch) -> None:
    state = harness.session.node.state
    assert state is not None
    before = state.contiguous
    replay = b.sequence > 0 and state.has(b.sequence)
    try:
        ack = harness.receive(b)
    except IngestError:
        return  # a refusal of the stream (a limit): the collector's own, with a reason
    assert ack.sequence == b.sequence
    assert ack.contiguous >= before  # never moves back
    assert ack.contiguous <= max(state.high, before)  # never past what was settled
    if not ack.refused and not replay:
        assert state.has(b.sequence)
        for block in b.blocks:  # what was stored had no NaN, and was stamped near now
            assert not any(math.isnan(v) for v in struct.unpack(f"<{len(block.values) // 8}d", block.values))
            assert abs(block.timestamp_ms - time.time() * 1000) < 15 * 86400 * 1000


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_refuse(raw: bytes) -> None:
    try:
        msg = parse_message(raw, "message")
    except _Refused as err:
        assert err.reason == "undecodable" and "undecodable message" in err.details
        return
    assert isinstance(msg, pb.AgentMessage)


@settings(max_examples=200, deadline=None)
@given(node=st.text(max_size=300), wal=st.text(max_size=200), lab=labels)
def test_any_hello_is_checked_or_refused(node: str, wal: str, lab: dict[str, str]) -> None:
    hello = pb.Hello(node=node, wal_id=wal, labels=lab)
    try:
        check_hello(hello, "peer", Limits())
    except IngestError as err:
        assert err.reason in ("hello", "max_labels", "max_label_value_bytes")
        return
    assert node and len(node) <= 253 and node.isprintable() and len(wal) <= 128
