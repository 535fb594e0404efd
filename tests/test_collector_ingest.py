"""Collector ingest over real gRPC: bad input gets a clear status, others keep streaming."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.codec import pack_values
from agent.transport import METHOD
from collector.api import summary
from collector.app import Collector
from collector.config import CollectorConfig, Limits, load_config
from collector.errors import ConfigError
from collector.storage.logreader import LogStoreReader as StoreReader
from proto import telemetry_pb2 as pb


def _cfg(tmp: Path, **limits: Any) -> CollectorConfig:
    cfg = CollectorConfig(listen="127.0.0.1:0", http="", data_dir=tmp)
    cfg.alerting.notifiers = {}
    cfg.limits = Limits(**limits)
    return cfg


def _hello(node: str, wal: str = "w1") -> bytes:
    return pb.AgentMessage(hello=pb.Hello(node=node, labels={"cluster": "c"}, wal_id=wal)).SerializeToString()


def _batch(seq: int, defs: list[tuple[int, str]], ids: list[int], values: list[float],
           ts_ms: int | None = None) -> bytes:
    b = pb.Batch(sequence=seq)
    for sid, gpu in defs:
        b.series.add(id=sid, measurement="gpu", field="temperature_celsius", labels={"gpu": gpu})
    b.blocks.add(timestamp_ms=ts_ms or int(time.time() * 1000), series_ids=ids, values=pack_values(values))
    return pb.AgentMessage(batch=b).SerializeToString()


def run(tmp: Path, body: Callable[[Collector, Callable[[], Any]], Awaitable[None]], **limits: Any) -> None:
    async def main() -> None:
        c = Collector(_cfg(tmp, **limits))
        await c.start()
        channels = []

        def open_stream() -> Any:
            ch = grpc.aio.insecure_channel(f"127.0.0.1:{c.grpc_port}")
            channels.append(ch)
            return ch.stream_stream(METHOD, request_serializer=lambda b: b,
                                    response_deserializer=pb.CollectorMessage.FromString)()

        try:
            await body(c, open_stream)
        finally:
            for ch in channels:
                await ch.close()
            await c.stop(grace=1)

    asyncio.run(main())


async def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                break
    if err.value is None:  # pragma: no cover
        return await call.code(), await call.details()
    return err.value.code(), err.value.details() or ""


def _seq_ts(seq: int) -> int:
    """A distinct timestamp per sequence (a second apart): batches built within one millisecond
    would share (series, timestamp), and the store keeps only the first of those."""
    return _T0_MS + seq * 1000


_T0_MS = int(time.time() * 1000) - 600_000


async def _good_agent(open_stream: Callable[[], Any], node: str, seqs: range) -> list[pb.Ack]:
    call = open_stream()
    await call.write(_hello(node))
    welcome = await call.read()
    assert welcome.HasField("welcome")
    acks = []
    for seq in seqs:
        defs = [(1, "0")] if seq == seqs[0] else []
        await call.write(_batch(seq, defs, [1], [40.0 + seq], ts_ms=_seq_ts(seq)))
        acks.append((await call.read()).ack)
    await call.done_writing()
    return acks


def test_garbage_bytes_get_invalid_argument_and_others_go_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fleetmon")

    async def body(c: Collector, open_stream: Callable[[], Any]) -> None:
        bad = open_stream()
        await bad.write(b"\xff\xfe garbage \x00\x01")
        code, details = await _status(bad)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "undecodable first message" in details
        acks = await _good_agent(open_stream, "good", range(1, 4))
        assert [(a.sequence, a.contiguous, a.refused) for a in acks] == [(1, 1, ""), (2, 2, ""), (3, 3, "")]

    run(tmp_path, body)
    assert any("refused stream from ipv4:127.0.0.1" in r.getMessage() for r in caplog.records)


def test_empty_stream_and_batch_before_hello(tmp_path: Path) -> None:
    async def body(c: Collector, open_stream: Callable[[], Any]) -> None:
        empty = open_stream()
        await empty.done_writing()
        code, details = await _status(empty)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "empty stream" in details
        early = open_stream()
        await early.write(_batch(1, [(1, "0")], [1], [1.0]))
        code, details = await _status(early)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "first message must be a Hello, got batch" in details
        nameless = open_stream()
        await nameless.write(pb.AgentMessage(hello=pb.Hello()).SerializeToString())
        code, details = await _status(nameless)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "has no node name" in details

    run(tmp_path, body)


def test_refused_batches_name_the_problem_and_stream_goes_on(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fleetmon")
    now_ms = int(time.time() * 1000)

    async def body(c: Collector, open_stream: Callable[[], Any]) -> None:
        call = open_stream()
        await call.write(_hello("n1"))
        assert (await call.read()).HasField("welcome")
        cases = [
            (_batch(1, [], [9], [1.0]), "series id 9, never defined on this stream"),
            (_batch(2, [(1, "0")], [1], [float("nan")]), "value nan is not allowed"),
            # the collector's clock has moved on since now_ms: "3599s" on a slow start
            (_batch(3, [(2, "1")], [2], [1.0], ts_ms=now_ms + 3600_000), "s in the future, outside"),
            (_batch(4, [(3, "2")], [3, 3], [1.0]), "2 series ids but 8 value bytes"),
        ]
        bomb = pb.Batch(sequence=5)
        bomb.series.add(id=4, measurement="gpu", field="x", labels={f"l{i}": "v" for i in range(40)})
        cases.append((pb.AgentMessage(batch=bomb).SerializeToString(), "40 labels, more than 32 (label bomb?)"))
        for raw, why in cases:
            await call.write(raw)
            ack = (await call.read()).ack
            assert why in ack.refused
            if "future" in why:
                assert 3500 < int(re.search(r"is (\d+)s in the future", ack.refused)[1]) <= 3600  # type: ignore[index]
        # the stream is still good: a valid batch (with an event) is stored and acked
        good = pb.AgentMessage.FromString(_batch(6, [(5, "5")], [5], [55.0]))
        good.batch.events.add(timestamp_ms=now_ms, kind="gpu.xid", labels={"gpu": "5", "xid": "79"},
                              severity=pb.SEVERITY_CRITICAL, message="XID 79", action="reset")
        await call.write(good.SerializeToString())
        ack = (await call.read()).ack
        assert (ack.sequence, ack.refused, ack.contiguous) == (6, "", 6)
        await call.done_writing()

    run(tmp_path, body)
    assert sum("node n1" in r.getMessage() and "refused batch" in r.getMessage() for r in caplog.records) == 5
    reader = StoreReader(tmp_path / "fleetmon.sqlite")
    assert reader.count_samples("n1") == 1
    (event,) = reader.events(0)
    assert event["kind"] == "gpu.xid" and event["severity"] == "critical" and event["node"] == "n1"
    assert event["labels"] == {"cluster": "c", "gpu": "5", "node": "n1", "xid": "79"}


def test_replay_is_idempotent_and_welcome_reports_durable(tmp_path: Path) -> None:
    async def body(c: Collector, open_stream: Callable[[], Any]) -> None:
        await _good_agent(open_stream, "n1", range(1, 6))
        # reconnect: welcome says 5; replaying 4 and 5 stores nothing twice
        call = open_stream()
        await call.write(_hello("n1"))
        assert (await call.read()).welcome.last_durable_sequence == 5
        for seq in (4, 5):
            await call.write(_batch(seq, [(1, "0")], [1], [40.0 + seq], ts_ms=_seq_ts(seq)))
            assert (await call.read()).ack.sequence == seq
        # live before backfill: 8 arrives before 6 and 7; contiguous advances only when the gap fills
        acks = []
        for seq in (8, 6, 7):
            await call.write(_batch(seq, [], [1], [40.0 + seq], ts_ms=_seq_ts(seq)))
            acks.append((await call.read()).ack)
        assert [(a.sequence, a.contiguous) for a in acks] == [(8, 5), (6, 6), (7, 8)]
        await call.done_writing()
        # a new WAL (disk wiped) restarts the sequence
        call = open_stream()
        await call.write(_hello("n1", wal="w2"))
        assert (await call.read()).welcome.last_durable_sequence == 0
        await call.done_writing()
        assert c.ingestor.counters.duplicates == 2
        # replays were dropped by sequence: none reached the store as a (series, timestamp) duplicate
        assert summary(c)["duplicate_samples"] == 0

    run(tmp_path, body)
    reader = StoreReader(tmp_path / "fleetmon.sqlite")
    (series,) = reader.find_series("gpu_temperature_celsius", [])
    assert reader.samples(series.id, 0, 2**62) == [(_seq_ts(seq), 40.0 + seq) for seq in range(1, 9)]


def test_two_batches_with_the_same_series_and_timestamp_keep_the_first(tmp_path: Path) -> None:
    """Distinct sequences, same (series, timestamp): both acked, the first value kept, the
    second counted in the collector's stats (the store's rule, tests/test_store_contract.py)."""
    ts = _seq_ts(1)

    async def body(c: Collector, open_stream: Callable[[], Any]) -> None:
        call = open_stream()
        await call.write(_hello("n1"))
        assert (await call.read()).HasField("welcome")
        await call.write(_batch(1, [(1, "0")], [1], [41.0], ts_ms=ts))
        await call.write(_batch(2, [], [1], [42.0], ts_ms=ts))
        acks = [(await call.read()).ack for _ in range(2)]
        assert [(a.sequence, a.contiguous, a.refused) for a in acks] == [(1, 1, ""), (2, 2, "")]
        await call.done_writing()
        stats = summary(c)
        assert (stats["duplicate_samples"], stats["duplicates_total"], stats["samples_total"]) == (1, 0, 2)

    run(tmp_path, body)
    reader = StoreReader(tmp_path / "fleetmon.sqlite")
    (series,) = reader.find_series("gpu_temperature_celsius", [])
    assert reader.samples(series.id, 0, 2**62) == [(ts, 41.0)]


def test_a_series_own_labels_win_over_identity_labels_except_node(tmp_path: Path) -> None:
    """A node that polls the PDUs of other racks labels each PDU's series with that PDU's rack: the
    series' own label wins over the node's identity label of the same name. ``node`` is the
    stream's identity (what mTLS authenticates) and is never taken from a series."""

    async def body(c: Collector, open_stream: Callable[[], Any]) -> None:
        call = open_stream()
        hello = pb.Hello(node="mgmt1", labels={"cluster": "c", "rack": "r1"}, wal_id="w1")
        await call.write(pb.AgentMessage(hello=hello).SerializeToString())
        assert (await call.read()).HasField("welcome")
        b = pb.Batch(sequence=1)
        b.series.add(id=1, measurement="pdu", field="power_watts", labels={"pdu": "p7", "rack": "r7", "node": "n9"})
        b.series.add(id=2, measurement="gpu", field="temperature_celsius", labels={"gpu": "0"})
        b.blocks.add(timestamp_ms=_seq_ts(1), series_ids=[1, 2], values=pack_values([900.0, 41.0]))
        await call.write(pb.AgentMessage(batch=b).SerializeToString())
        assert (await call.read()).ack.refused == ""
        await call.done_writing()

    run(tmp_path, body)
    reader = StoreReader(tmp_path / "fleetmon.sqlite")
    (pdu,) = reader.find_series("pdu_power_watts", [])
    (gpu,) = reader.find_series("gpu_temperature_celsius", [])
    assert dict(pdu.labels) == {"pdu": "p7", "rack": "r7", "node": "mgmt1", "cluster": "c"}
    assert dict(gpu.labels) == {"gpu": "0", "rack": "r1", "node": "mgmt1", "cluster": "c"}


def test_collector_config_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.yml"
    p.write_text("listen: 7700\n")
    with pytest.raises(ConfigError, match="listen: '7700' must be host:port"):
        load_config(p)
    p.write_text("limits: {max_labelz: 3}\n")
    with pytest.raises(ConfigError, match="limits: unknown key 'max_labelz'; did you mean 'max_labels'"):
        load_config(p)
