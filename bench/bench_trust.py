"""What trust costs at the collector: ingest over mutual TLS vs plaintext, same pre-built batches,
same run (the ratio is the figure; absolute numbers move with the machine's load).

Also the cost of a stream's first connection (TLS handshake + Hello + Welcome), both ways.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from agent.transport import METHOD
from bench.bench_ingest import make_batches
from proto import telemetry_pb2 as pb
from tests.fleet import CollectorProc, Pki, lab_pki

AGENTS = 4
ROUNDS = 3


def channel(addr: str, pki: Pki | None, node: str) -> grpc.aio.Channel:
    if pki is None:
        return grpc.aio.insecure_channel(addr)
    own = pki.node(node)
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes(), own.key.read_bytes(), own.cert.read_bytes())
    return grpc.aio.secure_channel(addr, creds)


async def stream(addr: str, pki: Pki | None, node: str, batches: list[bytes], wal: str) -> float:
    """Seconds from opening the channel to the Welcome (handshake included); sends all batches."""
    t0 = time.perf_counter()
    async with channel(addr, pki, node) as ch:
        call = ch.stream_stream(METHOD, request_serializer=lambda b: b,
                                response_deserializer=pb.CollectorMessage.FromString)()
        await call.write(pb.AgentMessage(hello=pb.Hello(node=node, wal_id=wal)).SerializeToString())
        await call.read()
        connect = time.perf_counter() - t0

        async def reader() -> None:
            for _ in batches:
                msg = await call.read()
                assert msg.ack.refused == "", msg.ack.refused

        r = asyncio.create_task(reader())
        for b in batches:
            await call.write(b)
        await r
        await call.done_writing()
    return connect


def run(tmp: Path, tls: bool, batches: dict[int, list[bytes]], round_: int) -> tuple[float, float]:
    col = CollectorProc(tmp, tls=tls, name=f"col-{'tls' if tls else 'plain'}-{round_}").start()
    pki = lab_pki(tmp) if tls else None
    try:
        async def all_agents() -> tuple[float, float]:
            t0 = time.perf_counter()
            connects = await asyncio.gather(*(stream(col.addr, pki, f"bench-{n}", b, f"w{round_}")
                                              for n, b in batches.items()))
            return time.perf_counter() - t0, statistics.median(connects)

        return asyncio.run(all_agents())
    finally:
        col.stop()


def main() -> None:
    batches = {n: make_batches(n) for n in range(AGENTS)}
    samples = sum(len(b) for b in batches.values()) * 2000
    figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        lab_pki(Path(tmp))
        for r in range(ROUNDS):  # alternate, so load drifts hit both alike
            for tls in (False, True):
                figures[tls].append(run(Path(tmp), tls, batches, r))
    plain = statistics.median(s for s, _ in figures[False])
    mtls = statistics.median(s for s, _ in figures[True])
    print(f"{AGENTS} agents, {samples:,} samples, median of {ROUNDS} rounds each")
    print(f"plaintext: {samples / plain:,.0f} samples/s; connect+Hello+Welcome "
          f"{statistics.median(c for _, c in figures[False]) * 1e3:.1f} ms")
    print(f"mutual TLS: {samples / mtls:,.0f} samples/s; connect+Hello+Welcome "
          f"{statistics.median(c for _, c in figures[True]) * 1e3:.1f} ms")
    print(f"ratio mTLS/plaintext throughput: {plain / mtls:.2f}")


if __name__ == "__main__":
    main()
