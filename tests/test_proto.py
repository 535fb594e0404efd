"""The generated modules match the schema, and the wire helpers agree with protobuf."""

from __future__ import annotations

import pytest

from agent.codec import SeriesTable, Stamped, build_batch, pack_values, unpack_values
from agent.model import Collection, gauge
from agent.transport import frame_batch, rendezvous_order
from proto import telemetry_pb2 as pb


def test_generated_code_matches_schema() -> None:
    pytest.importorskip("grpc_tools")
    from proto.generate import check  # noqa: PLC0415 - only this test needs grpc_tools (dev extra); the rest of the file runs without it

    assert check() == [], "proto/*_pb2*.py drifted from proto/telemetry.proto: run `make proto`"


def test_values_round_trip_bytes() -> None:
    vals = [0.0, -1.5, 1e300, float("-inf"), 3.141592653589793]
    assert unpack_values(pack_values(vals)) == vals


def test_framed_concatenation_equals_message() -> None:
    table = SeriesTable()
    m = gauge("gpu_temperature_celsius", "t", "celsius")
    col = Collection([m.sample(50, {"gpu": "0"}), m.sample(51, {"gpu": "1"})])
    batch, ids = build_batch(table, [Stamped(100.0, col)], [])
    batch.sequence = 7
    defs = pb.Batch(series=[table.definition(i) for i in ids], oldest_sequence=3)
    framed = frame_batch(batch.SerializeToString() + defs.SerializeToString())
    msg = pb.AgentMessage.FromString(framed)
    assert msg.batch.sequence == 7 and msg.batch.oldest_sequence == 3
    assert [d.labels["gpu"] for d in msg.batch.series] == ["0", "1"]
    assert list(msg.batch.blocks[0].series_ids) == ids
    assert unpack_values(msg.batch.blocks[0].values) == [50.0, 51.0]
    assert msg.batch.blocks[0].timestamp_ms == 100_000


def test_rendezvous_is_stable_and_spreads() -> None:
    cols = ["a:1", "b:1", "c:1"]
    assert rendezvous_order("n1", cols) == rendezvous_order("n1", list(reversed(cols)))
    firsts = {rendezvous_order(f"node-{i}", cols)[0] for i in range(50)}
    assert firsts == set(cols)
    # removing one collector only moves the nodes that had chosen it
    for i in range(50):
        order = rendezvous_order(f"node-{i}", cols)
        if order[0] != "c:1":
            assert rendezvous_order(f"node-{i}", ["a:1", "b:1"])[0] == order[0]
