"""The hostile battery (issue 12, "Done when"): a real collector process on mutual TLS, a healthy
agent process streaming beside it, and every hostile case of the issue thrown at the collector
from this process, with certificates made at test time (one of them a valid certificate of
another node). Afterwards:

- the healthy node lost and duplicated nothing (its audit log against the store);
- its stream never stalled long (the longest pause between two advances of what the collector
  holds for it is measured and printed; only a generous bound is asserted);
- the collector's RSS stayed within 50 MB of its start;
- the collector's log grew by a bounded amount.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from fleetmon.certs import issue, make_ca
from proto import telemetry_pb2 as pb
from tests.fleet import AgentProc, CollectorProc, Pki, assert_store_equals_audit, durable_seq
from tests.services import wait_until
from tests.test_collector_trust import Client, batch, hello, status, welcome

pytestmark = [pytest.mark.slow, pytest.mark.services]

LIMITS = {"max_series_per_node": 5000, "max_events_per_second": 20, "max_event_burst": 100,
          "max_streams_per_node": 4, "stream_idle_timeout": 3, "hello_timeout": 2}


class Watch(threading.Thread):
    """Samples the collector's RSS and what it holds for the healthy node, every 100 ms."""

    def __init__(self, col: CollectorProc, node: str) -> None:
        super().__init__(daemon=True)
        self.col, self.node = col, node
        assert col.proc is not None
        self.ps = psutil.Process(col.proc.pid)
        self.stop_at: float | None = None
        self.max_rss = 0
        self.longest_pause = 0.0
        self.running = True

    def run(self) -> None:
        last_seq, last_change = durable_seq(self.col.db(), self.node), time.monotonic()
        while self.running:
            self.max_rss = max(self.max_rss, self.ps.memory_info().rss)
            seq = durable_seq(self.col.db(), self.node)
            now = time.monotonic()
            if seq != last_seq:
                self.longest_pause = max(self.longest_pause, now - last_change)
                last_seq, last_change = seq, now
            time.sleep(0.1)
        self.longest_pause = max(self.longest_pause, time.monotonic() - last_change)


def _query_json(col: CollectorProc, selector: str) -> Any:
    url = f"{col.http}/api/v1/query?selector={urllib.parse.quote(selector)}&since=0"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = resp.read()

    def refuse(name: str) -> Any:
        raise AssertionError(f"the API served {name}, which is not JSON")

    return json.loads(body, parse_constant=refuse)


async def _expect_handshake_refused(port: int, creds: grpc.ChannelCredentials | None, node: str) -> None:
    client = Client(port, creds)
    try:
        call = client.open()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.write(hello(node))
            await call.read()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await client.close()


async def battery(col: CollectorProc, pki: Pki, tmp: Path) -> dict[str, str]:
    """Every hostile case; returns what each one got back (for the report)."""
    got: dict[str, str] = {}
    port = col.port

    def creds(node: str) -> grpc.ChannelCredentials:
        own = pki.node(node)
        return grpc.ssl_channel_credentials(pki.ca.read_bytes(), own.key.read_bytes(), own.cert.read_bytes())

    # -- who may connect ---------------------------------------------------------------------------
    intruder = Client(port, creds("intruder"))
    call = intruder.open()
    await call.write(hello("healthy", wal="stolen"))  # a valid certificate, of another node
    code, details = await status(call)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "names intruder" in details
    got["impersonation with another node's certificate"] = f"{code.name}: {details}"
    await _expect_handshake_refused(port, grpc.ssl_channel_credentials(pki.ca.read_bytes()), "healthy")
    got["no client certificate"] = "refused in the TLS handshake"
    rogue = issue(tmp / "rogue", tmp / "rogue", "healthy", server=False)
    await _expect_handshake_refused(port, grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), rogue.key.read_bytes(), rogue.cert.read_bytes()), "healthy")
    got["certificate from another CA naming the victim"] = "refused in the TLS handshake"
    await _expect_handshake_refused(port, None, "healthy")
    got["plaintext"] = "refused"

    # -- framing ---------------------------------------------------------------------------------------
    call = intruder.open()
    await call.write(b"\xff\xfe garbage \x00")
    code, details = await status(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    got["garbage bytes"] = f"{code.name}: {details}"
    call = intruder.open()  # says nothing
    code, details = await status(call)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    got["no Hello"] = f"{code.name}: {details}"

    # -- sequences (the intruder's own node: an authenticated but buggy or hostile agent) ---------
    call = intruder.open()
    await welcome(call, hello("intruder", wal="w"))
    acks = {}
    for name, msg in (("sequence 10^12 with oldest 10^12", batch(10**12, [1.0], define=1, oldest=10**12)),
                      ("sequence 2^63", batch(2**63, [1.0], define=1)),
                      ("sequence 2^64-1", batch(2**64 - 1, [1.0], define=1)),
                      ("undefined series id", batch(5, [1.0])),
                      ("NaN", batch(6, [float("nan")], define=1)),
                      ("year-3000 samples", batch(7, [1.0], define=1, ts_ms=32503680000000)),
                      ("year-3000 events", batch(8, [], events=1, event_ts_ms=32503680000000))):
        await call.write(msg)
        ack = (await call.read()).ack
        assert ack.refused, name
        acks[name] = f"refused: {ack.refused}"
    got.update(acks)
    bomb = pb.Batch(sequence=9)
    bomb.series.add(id=1, measurement="gpu", field="x", labels={f"l{i}": "v" for i in range(40)})
    await call.write(pb.AgentMessage(batch=bomb).SerializeToString())
    got["label bomb"] = "refused: " + (await call.read()).ack.refused
    big = pb.Batch(sequence=10)
    for i in range(100_000):
        big.series.add(id=i + 1, measurement="gpu", field="t", labels={"i": str(i)})
    with contextlib.suppress(grpc.aio.AioRpcError):  # refused while it is still being written
        await call.write(pb.AgentMessage(batch=big).SerializeToString())
    code, details = await status(call)  # refused before parsing: parsing alone costs ~14x its size
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_series_per_node" in details
    got["100K series in one batch"] = f"{code.name}: {details}"
    call = intruder.open()
    await welcome(call, hello("intruder", wal="w"))
    # +-Inf gauges are legal: stored, and served as JSON strings
    await call.write(batch(11, [float("inf"), float("-inf")], define=2, first_gpu=50))
    assert (await call.read()).ack.refused == ""
    # an event flood: the stream ends RESOURCE_EXHAUSTED, nothing acked
    code, details = grpc.StatusCode.OK, ""
    for seq in range(12, 40):
        try:
            await call.write(batch(seq, [], events=50))
            if await call.read() is grpc.aio.EOF:
                break
        except grpc.aio.AioRpcError as err:
            code, details = err.code(), err.details() or ""
            break
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_events_per_second" in details
    got["event flood"] = f"{code.name}: {details}"

    # -- streams: 500 at once from one identity, idle after Hello ---------------------------------
    phantom = Client(port, creds("phantom"))
    calls = [phantom.open() for _ in range(500)]
    await asyncio.gather(*(c.write(hello("phantom")) for c in calls))
    codes = await asyncio.gather(*(status(c) for c in calls))
    summary: dict[str, int] = {}
    for code, _ in codes:
        summary[code.name] = summary.get(code.name, 0) + 1
    assert set(summary) <= {"RESOURCE_EXHAUSTED", "ABORTED", "DEADLINE_EXCEEDED"}, summary
    got["500 idle streams of one node"] = ", ".join(f"{k} x{v}" for k, v in sorted(summary.items()))
    for c in (intruder, phantom):
        await c.close()
    return got


def test_hostile_battery_beside_a_healthy_agent(tmp_path: Path) -> None:
    col = CollectorProc(tmp_path, extra={"limits": LIMITS}).start()
    assert col.pki is not None
    healthy = AgentProc(tmp_path, "healthy", [col.addr]).start()
    # a real agent whose certificate comes from another CA: refused, and told why it may be
    make_ca(tmp_path / "rogue")
    own = issue(tmp_path / "rogue", tmp_path / "rogue", "stray", server=False)
    stray = AgentProc(tmp_path, "stray", [col.addr], extra={"tls": {
        "ca": str(col.pki.ca), "cert": str(own.cert), "key": str(own.key)}}).start()
    try:
        wait_until(lambda: durable_seq(col.db(), "healthy") >= 4, 30, "the healthy agent streaming")
        log_mark = col.log.stat().st_size
        watch = Watch(col, "healthy")
        rss0 = watch.ps.memory_info().rss
        watch.start()
        t0 = time.monotonic()
        got = asyncio.run(battery(col, col.pki, tmp_path))
        took = time.monotonic() - t0
        # the intruder's infinities came back as JSON strings
        values = {str(v) for s in _query_json(col, 'gpu_temperature_celsius{node="intruder"}') for _t, v in s["values"]}
        assert values == {"+Inf", "-Inf"}
        nodes = {n["node"] for n in col.get("/api/v1/nodes")}
        assert "phantom" not in nodes and "healthy" in nodes
        metrics = urllib.request.urlopen(col.http + "/metrics", timeout=5).read().decode()
        for reason in ("identity", "max_series_per_node", "max_events_per_second", "timestamp", "sequence"):
            assert f'reason="{reason}"' in metrics, reason
        before = max(r["seq"] for r in healthy.audit_rows())
        wait_until(lambda: durable_seq(col.db(), "healthy") >= before + 2, 30, "the healthy agent after the battery")
        watch.running = False
        watch.join()
        log_growth = col.log.stat().st_size - log_mark
        hint = wait_until(lambda: stray.log_lines("the collector refused .*stray.crt"), 10, "the stray agent's hint")
        handshake = [ln for ln in col.log.read_text(errors="replace").splitlines() if "Handshake failed" in ln]
        assert handshake, "the collector's log names why a handshake failed"
        assert "stray" not in {n["node"] for n in col.get("/api/v1/nodes")}
    finally:
        stray.stop()
        healthy.stop()
        col.stop()
    n = assert_store_equals_audit(col.db(), healthy)
    rss_growth = (watch.max_rss - rss0) / 2**20
    report = "\n".join(f"  {k}: {v[:160]}" for k, v in got.items())
    print(f"\nhostile battery: {len(got)} cases in {took:.1f} s; healthy node: {n} samples, none lost or doubled; "
          f"longest pause between its durable advances {watch.longest_pause:.2f} s (batch interval 0.5 s); "
          f"collector RSS +{rss_growth:.1f} MB (max {watch.max_rss / 2**20:.0f} MB); log +{log_growth / 1024:.0f} KiB"
          f"\n{report}\n  a stray agent (certificate from another CA) logs: {hint[0][-200:]}"
          f"\n  the collector logs: {handshake[0][-160:]}")
    assert rss_growth < 50, f"collector RSS grew {rss_growth:.1f} MB"
    assert watch.longest_pause < 10, f"the healthy node stalled {watch.longest_pause:.1f} s"
    assert log_growth < 256 * 1024, f"the collector logged {log_growth} bytes during the battery"
