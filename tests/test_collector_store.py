"""The collector's store and scale behaviour: default rules, bulk series definitions."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from agent.codec import pack_values
from agent.transport import METHOD
from alerts.engine import AlertEngine
from alerts.rules import default_rule_files
from collector.app import Collector
from collector.config import CollectorConfig, load_config
from collector.rulefeed import NO_REF, RuleFeed
from collector.storage.logreader import LogStoreReader
from proto import telemetry_pb2 as pb


def test_collector_loads_the_default_rule_pack_unless_told_otherwise(tmp_path: Path) -> None:
    cfg = CollectorConfig(listen="127.0.0.1:0", http="", data_dir=tmp_path / "a")
    cfg.alerting.notifiers = {}
    c = Collector(cfg)
    assert c.engine is not None and not c.rules_process
    assert "GPUXidWarning" in {r.name for r in c.engine.rules()}
    assert {g.file for g in c.engine.groups} == {str(p) for p in default_rule_files()}
    c.store.close()
    cfg.alerting.process = True
    c = Collector(cfg)
    assert c.rules_process and c.engine is None, "alerting.process: rules in a process of their own"
    c.store.close()
    conf = tmp_path / "collector.yml"
    conf.write_text(f"data_dir: {tmp_path / 'b'}\nalerting:\n  rules: []\n  notifiers: {{}}\n")
    c = Collector(load_config(conf))
    assert c.engine is None and not c.rules_process
    c.store.close()


def test_rule_feed_passes_only_what_rules_read_and_clamps_future_stamps(tmp_path: Path) -> None:
    rules = tmp_path / "r.yml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - alert: Hot\n    expr: gpu_temperature_celsius > 90\n")
    engine = AlertEngine.from_files([rules])
    feed = RuleFeed(engine)
    hot = feed.ref("gpu_temperature_celsius", {"node": "n1", "gpu": "0"})
    cool = feed.ref("gpu_temperature_celsius", {"node": "n1", "gpu": "1"})
    unread = feed.ref("gpu_power_watts", {"node": "n1", "gpu": "0"})
    assert unread == NO_REF and hot != NO_REF and cool != NO_REF
    now = 1_800_000_000.0
    refs = np.array([hot, unread, cool], np.int64)
    # Stamped a minute ahead of the collector's clock: the rules see it now, not in a minute.
    feed.block(refs, int((now + 60) * 1000), np.array([95.0, 300.0, 40.0]), now=now)
    assert feed.samples == 2
    changed = engine.evaluate(now)
    assert [(a.labels["alertname"], a.labels["gpu"]) for a in changed] == [("Hot", "0")]


# --- reconnect storm ---------------------------------------------------------------------------------
NODES, SERIES = 30, 200


def _batch(seq: int, ts_ms: int, with_defs: bool) -> bytes:
    b = pb.Batch(sequence=seq)
    if with_defs:
        for i in range(SERIES):
            b.series.add(id=i + 1, measurement="gpu", field="temperature_celsius", labels={"gpu": str(i)})
    b.blocks.add(timestamp_ms=ts_ms, series_ids=range(1, SERIES + 1),
                 values=pack_values([40.0 + seq + i / 10 for i in range(SERIES)]))
    return pb.AgentMessage(batch=b).SerializeToString()


class _Agent:
    """A virtual agent: keeps every unacked batch and replays it on the next stream (its WAL)."""

    def __init__(self, node: str, t0: int) -> None:
        self.node = node
        self.t0 = t0
        self.seq = 0
        self.unacked: set[int] = set()
        self.call: Any = None
        self.reader: asyncio.Task[None] | None = None

    async def connect(self, channel: grpc.aio.Channel, replay: tuple[int, ...] = ()) -> None:
        """A new stream; sends what the collector does not hold, and ``replay`` regardless (acks
        lost in flight: the agent cannot know they were stored)."""
        self.call = channel.stream_stream(METHOD, request_serializer=lambda b: b,
                                          response_deserializer=pb.CollectorMessage.FromString)()
        await self.call.write(pb.AgentMessage(hello=pb.Hello(node=self.node, wal_id="w",
                                                             labels={"rack": "r1"})).SerializeToString())
        welcome = (await self.call.read()).welcome
        self.unacked = {s for s in self.unacked if s > welcome.last_durable_sequence} | set(replay)
        self.reader = asyncio.create_task(self._acks())
        for i, s in enumerate(sorted(self.unacked)):
            await self.call.write(_batch(s, self.t0 + s * 1000, i == 0))

    async def _acks(self) -> None:
        while True:
            msg = await self.call.read()
            if msg is grpc.aio.EOF:
                return
            assert msg.ack.refused == "", msg.ack.refused
            self.unacked.discard(msg.ack.sequence)

    async def send(self, first_on_stream: bool) -> None:
        self.seq += 1
        self.unacked.add(self.seq)
        await self.call.write(_batch(self.seq, self.t0 + self.seq * 1000, first_on_stream))

    def drop(self) -> None:
        assert self.reader is not None
        self.reader.cancel()
        self.call.cancel()


def test_reconnect_storm_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    t0 = int(time.time() * 1000) - 60_000

    async def main() -> None:
        cfg = CollectorConfig(listen="127.0.0.1:0", http="", data_dir=tmp_path, compactor="thread")
        cfg.alerting.notifiers = {}
        cfg.alerting.rules = []
        c = Collector(cfg)
        await c.start()
        opts = [("grpc.use_local_subchannel_pool", 1)]  # one connection per node, as real agents
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{c.grpc_port}", options=opts) for _ in range(NODES)]
        agents = [_Agent(f"n{i:02d}", t0) for i in range(NODES)]
        try:
            async def drained() -> None:
                while any(a.unacked for a in agents):
                    await asyncio.sleep(0.05)

            await asyncio.gather(*(a.connect(ch) for a, ch in zip(agents, channels, strict=True)))
            for k in range(2):
                await asyncio.gather(*(a.send(k == 0) for a in agents))
            await asyncio.wait_for(drained(), 60)
            for _ in range(2):  # in flight when every stream drops at once
                await asyncio.gather(*(a.send(False) for a in agents))
            for a in agents:
                a.drop()
            channels2 = [grpc.aio.insecure_channel(f"127.0.0.1:{c.grpc_port}", options=opts) for _ in range(NODES)]
            channels += channels2
            # Every node reconnects at once, replaying what is unacked, and 1-2 whose acks it "lost".
            await asyncio.gather(*(a.connect(ch, replay=(1, 2)) for a, ch in zip(agents, channels2, strict=True)))
            for _ in range(2):
                await asyncio.gather(*(a.send(False) for a in agents))
            await asyncio.wait_for(drained(), 60)
            for a in agents:
                a.drop()
            assert c.ingestor.counters.duplicates >= 2 * NODES, "the replayed batches are recognised as held"
        finally:
            for ch in channels:
                await ch.close()
            await c.stop(grace=1)

    asyncio.run(main())
    reader = LogStoreReader(tmp_path)
    for i in range(NODES):
        node = f"n{i:02d}"
        got = {(name, labels["gpu"], int(t)): v for name, labels, ts, vals in reader.stored(node)
               for t, v in zip(ts.tolist(), vals.tolist(), strict=True)}
        want = {("gpu_temperature_celsius", str(s), t0 + q * 1000): 40.0 + q + s / 10
                for q in range(1, 7) for s in range(SERIES)}
        assert got == want, node
        assert reader.contiguous(node) == 6


def test_http_query_streams_blocks_and_the_unflushed_tail(tmp_path: Path) -> None:
    t0 = int(time.time() * 1000) - 30_000

    async def main() -> list[dict[str, Any]]:
        cfg = CollectorConfig(listen="127.0.0.1:0", http="127.0.0.1:0", data_dir=tmp_path, compactor="thread")
        cfg.alerting.notifiers = {}
        cfg.alerting.rules = []
        c = Collector(cfg)
        await c.start()
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{c.grpc_port}")
        try:
            a = _Agent("n1", t0)
            await a.connect(ch)
            for k in range(3):
                await a.send(k == 0)
            while a.unacked:
                await asyncio.sleep(0.05)
            a.drop()
            url = (f"http://127.0.0.1:{c.http_port}/api/v1/query?selector=gpu_temperature_celsius"
                   f"%7Bgpu%3D~%221%7C2%22%7D&since={t0 / 1000 - 1}&until={t0 / 1000 + 10}")
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
            return list(json.loads(body))
        finally:
            await ch.close()
            await c.stop(grace=1)

    rows = asyncio.run(main())
    assert sorted((r["labels"]["gpu"], [v for _t, v in r["values"]]) for r in rows) == [
        ("1", [41.1, 42.1, 43.1]), ("2", [41.2, 42.2, 43.2])]
