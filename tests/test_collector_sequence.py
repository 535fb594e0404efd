"""The collector's sequence rules (collector/sequence.py) and their persistence in the store."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codec import pack_values
from agent.transport import METHOD
from collector.app import Collector
from collector.config import CollectorConfig
from collector.errors import IngestError, StoreError
from collector.sequence import MAX_SEQUENCE, NodeState, SeqRange, SequenceLimits
from collector.storage.embedded import SampleColumns, WriteItem
from collector.storage.logreader import LogStoreReader
from collector.storage.sqlite import SqliteStore
from proto import telemetry_pb2 as pb

LIMITS = SequenceLimits()


def store(state: NodeState, seq: int, oldest: int = 0, limits: SequenceLimits = LIMITS) -> None:
    state.check(seq, limits)
    state.apply(state.plan(seq, oldest, limits))


def test_in_order_and_live_before_backfill() -> None:
    s = NodeState.new_wal("n1", "w1")
    for seq in (1, 2, 3):
        store(s, seq)
    assert (s.contiguous, s.ranges) == (3, (SeqRange(1, 3),))
    store(s, 8)  # live data after an outage runs ahead of the backfill
    assert (s.contiguous, s.high) == (3, 8)
    assert s.ranges == (SeqRange(1, 3), SeqRange(8, 8))
    assert s.has(2) and s.has(8) and not s.has(5)
    store(s, 5)
    store(s, 4)
    assert s.contiguous == 5
    store(s, 7)
    store(s, 6)
    assert (s.contiguous, s.ranges) == (8, (SeqRange(1, 8),))


def test_contiguous_never_passes_a_sequence_not_received() -> None:
    s = NodeState.new_wal("n1", "w1")
    store(s, 1)
    store(s, 2)
    # The agent's WAL dropped 3..9 while it was offline; it says so, and sends 10 onwards.
    for seq in (12, 10, 11):
        store(s, seq, oldest=10)
    assert s.contiguous == 2, "a claim is not data: 3..9 were never received"
    assert (s.floor, s.high) == (9, 12)
    assert s.ranges == (SeqRange(1, 2), SeqRange(10, 12))
    # a claim beyond what was received is believed only up to the highest sequence settled
    store(s, 13, oldest=1000)
    assert s.floor == 13


def test_bogus_claims_never_swallow_future_data() -> None:
    """Issue 12, case 1: Hello/Batch with sequence and oldest_sequence = 10^12."""
    s = NodeState.new_wal("victim", "w1")
    for seq in range(1, 6):
        store(s, seq)
    with pytest.raises(IngestError, match=r"sequence 1000000000000 is 999999999995 past the highest .*\(5\)"):
        s.check(10**12, LIMITS)
    # Within the jump bound, a buggy agent's sequence and claim change nothing below them:
    store(s, 5 + LIMITS.max_jump, oldest=10**12)
    assert s.contiguous == 5
    # every later real batch is new, so it is stored, never taken for a duplicate.
    for seq in range(6, 10):
        assert not s.has(seq)
        store(s, seq)
        assert s.has(seq)
    assert s.contiguous == 9


def test_out_of_range_sequences_are_refused_alone() -> None:
    s = NodeState.new_wal("n1", "w1")
    with pytest.raises(IngestError, match="no sequence number"):
        s.check(0, LIMITS)
    with pytest.raises(IngestError, match="out of range"):
        s.check(MAX_SEQUENCE + 1, SequenceLimits(max_jump=1 << 64))
    with pytest.raises(IngestError, match=r"limits\.max_sequence_jump"):
        s.check(2**63 - 1, LIMITS)
    s.check(LIMITS.max_jump, LIMITS)  # the first sequence of a WAL may be anything up to the jump bound


def test_too_many_gaps() -> None:
    limits = SequenceLimits(max_ranges=3)
    s = NodeState.new_wal("n1", "w1")
    for seq in (1, 3, 5):
        store(s, seq, limits=limits)
    # a fourth range, and no gap the agent gave up: refused
    with pytest.raises(IngestError, match=r"limits\.max_sequence_ranges = 3"):
        s.plan(7, 0, limits)
    # the agent gave up everything below 6: the lowest gap it gave up is forgotten, but never
    # the one after the range from 1 (contiguous must not pass 2)
    store(s, 7, oldest=6, limits=limits)
    assert s.ranges == (SeqRange(1, 1), SeqRange(3, 5), SeqRange(7, 7))
    assert s.contiguous == 1


def test_a_plan_applies_only_to_the_state_it_was_made_from() -> None:
    s = NodeState.new_wal("n1", "w1")
    first, second = s.plan(1), s.plan(2)
    s.apply(first)
    with pytest.raises(RuntimeError, match="stale"):
        s.apply(second)


def _model_contiguous(stored: set[int]) -> int:
    c = 0
    while c + 1 in stored:
        c += 1
    return c


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 45)), max_size=60))
def test_rules_match_a_set_model(ops: list[tuple[int, int]]) -> None:
    """Against a plain set: duplicates are exactly the settled sequences; contiguous is the
    run from 1; the floor never passes the highest sequence settled."""
    s = NodeState.new_wal("n1", "w1")
    stored: set[int] = set()
    floor = 0
    for seq, oldest in ops:
        assert s.has(seq) == (seq in stored)
        if seq in stored:
            continue
        store(s, seq, oldest)
        stored.add(seq)
        if oldest > 1:
            floor = max(floor, min(oldest - 1, max(stored)))
        assert s.contiguous == _model_contiguous(stored)
        assert (s.floor, s.high) == (floor, max(stored))
        assert NodeState("n1", "w1", s.ranges, s.floor).contiguous == s.contiguous  # reload gives the same


def _item(state: NodeState, seq: int, oldest: int = 0) -> WriteItem:
    return WriteItem(state.plan(seq, oldest), json.dumps({"cluster": "c"}), SampleColumns(), [])


def test_store_persists_sequence_state(tmp_path: Path) -> None:
    db = SqliteStore(tmp_path / "s.sqlite")
    s = db.load_node("n1")
    assert (s.wal_id, s.contiguous) == ("", 0)
    s = NodeState.new_wal("n1", "w1")
    for seq, oldest in ((1, 0), (2, 0), (9, 5), (5, 5)):
        item = _item(s, seq, oldest)
        db.commit([item])
        s.apply(item.update)
    again = db.load_node("n1")
    assert (again.wal_id, again.ranges, again.floor, again.contiguous) == ("w1", s.ranges, 4, 2)
    # a new WAL: its first commit replaces what the node had
    fresh = NodeState.new_wal("n1", "w2")
    item = _item(fresh, 1)
    db.commit([item])
    again = db.load_node("n1")
    assert (again.wal_id, again.ranges, again.contiguous) == ("w2", (SeqRange(1, 1),), 1)
    db.close()
    con = sqlite3.connect(tmp_path / "s.sqlite")
    assert con.execute("SELECT contiguous FROM nodes WHERE node = 'n1'").fetchone() == (1,)
    con.close()


def test_store_migrates_held_sequences(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE nodes (node TEXT PRIMARY KEY, wal_id TEXT NOT NULL, contiguous INTEGER NOT NULL,
                            labels TEXT NOT NULL DEFAULT '{}', last_seen INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE held (node TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (node, seq)) WITHOUT ROWID;
        INSERT INTO nodes VALUES ('n1', 'w1', 7, '{}', 0);
        INSERT INTO held VALUES ('n1', 9), ('n1', 10), ('n1', 12);
    """)
    con.close()
    db = SqliteStore(path)
    s = db.load_node("n1")
    assert s.ranges == (SeqRange(1, 7), SeqRange(9, 10), SeqRange(12, 12))
    assert s.contiguous == 7
    db.close()


def test_store_errors_are_store_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    db = SqliteStore(path)
    s = NodeState.new_wal("n1", "w1")
    db.close()
    with pytest.raises(StoreError, match=r"s\.sqlite: commit of 1 batches failed: .*closed"):
        db.commit([_item(s, 1)])


def _msg_hello(node: str, wal: str = "w1") -> bytes:
    return pb.AgentMessage(hello=pb.Hello(node=node, wal_id=wal)).SerializeToString()


def _msg_batch(seq: int, value: float, define: bool) -> bytes:
    b = pb.Batch(sequence=seq)
    if define:
        b.series.add(id=1, measurement="gpu", field="temperature_celsius", labels={"gpu": "0"})
    b.blocks.add(timestamp_ms=int(time.time() * 1000) + seq, series_ids=[1], values=pack_values([value]))
    return pb.AgentMessage(batch=b).SerializeToString()


def test_failed_commit_acks_nothing_and_moves_nothing(tmp_path: Path) -> None:
    """The node's state moves only after its batch committed: a store failure ends the stream
    UNAVAILABLE, the Welcome of the next stream says what is really durable."""

    async def main() -> None:
        cfg = CollectorConfig(listen="127.0.0.1:0", http="", data_dir=tmp_path)
        cfg.alerting.notifiers = {}
        c = Collector(cfg)
        await c.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{c.grpc_port}") as ch:
                def open_stream() -> Any:
                    return ch.stream_stream(METHOD, request_serializer=lambda b: b,
                                            response_deserializer=pb.CollectorMessage.FromString)()

                call = open_stream()
                await call.write(_msg_hello("n1"))
                assert (await call.read()).welcome.last_durable_sequence == 0
                for seq in (1, 2):
                    await call.write(_msg_batch(seq, 40.0 + seq, define=seq == 1))
                    assert (await call.read()).ack.contiguous == seq
                # The disk refuses writes from now on: the append log's file (the durable copy).
                saved, c.store.log._fd = c.store.log._fd, os.open(os.devnull, os.O_RDONLY)
                await call.write(_msg_batch(3, 43.0, define=False))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call.read()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "store unavailable" in (err.value.details() or "")
                state = c.ingestor.nodes["n1"].state
                assert state is not None and state.contiguous == 2 and not state.has(3)
                os.close(c.store.log._fd)
                c.store.log._fd = saved
                call = open_stream()
                await call.write(_msg_hello("n1"))
                assert (await call.read()).welcome.last_durable_sequence == 2
                await call.write(_msg_batch(3, 43.0, define=True))
                ack = (await call.read()).ack
                assert (ack.sequence, ack.contiguous, ack.refused) == (3, 3, "")
                await call.done_writing()
        finally:
            await c.stop(grace=1)

    asyncio.run(main())
    reader = LogStoreReader(tmp_path)
    assert reader.count_samples("n1") == 3
    reader.close()
