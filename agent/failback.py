"""Back to the preferred collector once it is healthy again (DESIGN.md, Scale: "return to their
preferred collector when it is healthy again (staggered)").

An agent streams to the first collector of its rendezvous order that answers. While it streams
to a collector lower in that order, :func:`watch` probes the ones above it every
``check_interval`` (± 20 %) with gRPC's standard health check (``grpc.health.v1.Health/Check``,
which the collector answers SERVING while it takes streams). Once one has answered SERVING
``healthy_checks`` times in a row, the agent waits a random delay, uniform over ``spread``
seconds, probes again, and only then moves: the agents that failed over when a collector died
return over ``spread`` seconds instead of all at once (no thundering herd on a collector that
just restarted and is replaying its log).

Moving loses nothing: the transport stops sending, waits for the acks of what is in flight
(bounded by ``drain_timeout``), and ends the stream; whatever is still unacked stays in the WAL
and is sent to the preferred collector, which de-duplicates by sequence.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from agent.rpc import RpcError
from agent.tls import ChannelSecurity, TlsFilesError

HEALTH_METHOD = "/grpc.health.v1.Health/Check"
#: ``HealthCheckResponse{status: SERVING}`` as protobuf bytes (grpc/health/v1/health.proto:
#: field 1, varint, SERVING = 1). Encoded by hand: a two-byte message needs no generated module.
SERVING = b"\x08\x01"


@dataclass
class FailbackConfig:
    """``failback:`` in the agent config."""

    #: How often the collectors ranked above the one in use are probed (seconds, ± 20 % jitter).
    check_interval: float = 10.0
    #: Consecutive SERVING answers before the agent starts its move.
    healthy_checks: int = 2
    #: The move waits a random delay, uniform over this many seconds (the herd spreads over it).
    spread: float = 30.0
    #: How long one probe may take (a host that is down or paused answers nothing).
    probe_timeout: float = 3.0
    #: How long a move waits for the acks of the batches in flight before it ends the stream
    #: (what is not acked by then is sent again to the next collector, nothing is lost).
    drain_timeout: float = 5.0

    def validate(self) -> None:
        if self.check_interval <= 0 or self.probe_timeout <= 0 or self.drain_timeout < 0 or self.spread < 0:
            raise ValueError("check_interval and probe_timeout must be positive, spread and drain_timeout "
                             "not negative (seconds)")
        if self.healthy_checks < 1:
            raise ValueError("healthy_checks must be at least 1")


class MovingBack(Exception):
    """End the current stream: the collector at ``index`` of the order is healthy again."""

    def __init__(self, index: int, addr: str) -> None:
        super().__init__(f"moving back to preferred collector {addr}")
        self.index = index
        self.addr = addr


async def probe(security: ChannelSecurity, addr: str, timeout: float) -> bool:
    """Whether the collector at ``addr`` says it serves (TLS, client certificate and token as
    the stream uses them). A collector too old for the health service answers UNIMPLEMENTED:
    it is up, and counts as serving."""
    try:
        async with asyncio.timeout(timeout):
            conn = await security.connect(addr, timeout)
            try:
                answer = await conn.unary(HEALTH_METHOD, b"", security.metadata() or ())
            finally:
                await conn.aclose()
    except RpcError as err:
        return err.code == "UNIMPLEMENTED"
    except (OSError, TimeoutError, TlsFilesError):
        return False
    return answer == SERVING


async def watch(order: list[str], current: int, security: ChannelSecurity, cfg: FailbackConfig) -> int:
    """Runs while the agent streams to ``order[current]``; returns the index of a collector
    ranked above it once that one has been healthy ``healthy_checks`` probes in a row and again
    after the random stagger. Never returns while ``current`` is 0."""
    streak = 0
    best = -1
    while True:
        await asyncio.sleep(cfg.check_interval * random.uniform(0.8, 1.2))
        found = -1
        for i in range(current):
            if await probe(security, order[i], cfg.probe_timeout):
                found = i
                break
        streak = streak + 1 if found == best and found >= 0 else (1 if found >= 0 else 0)
        best = found
        if best < 0 or streak < cfg.healthy_checks:
            continue
        await asyncio.sleep(random.uniform(0, cfg.spread))
        if await probe(security, order[best], cfg.probe_timeout):
            return best
        streak = 0
