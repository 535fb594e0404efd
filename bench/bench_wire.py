"""Wire encoding: packed `repeated double` against `bytes` of little-endian float64.

Prints encode/decode cost per 1,000 values for both, and the wire bytes per sample of a real
simulated 8-GPU node's batch as the agent builds it.
"""

from __future__ import annotations

import array
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,  # noqa: F401 - ensures upb is loaded
)

from proto import telemetry_pb2 as pb


def _packed_double_type() -> type:
    """A throwaway message with `repeated double v = 1` to compare against."""
    fdp = descriptor_pb2.FileDescriptorProto(name="bench_wire.proto", package="bench", syntax="proto3")
    msg = fdp.message_type.add(name="Packed")
    msg.field.add(name="v", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.Packed"))


def timeit(fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    values = [random.uniform(0, 1000) for _ in range(1000)]
    packed_cls = _packed_double_type()
    packed = packed_cls(v=values).SerializeToString()
    # Same content in both: only the 1,000 values (series ids cost the same either way).
    raw = pb.Block(values=array.array("d", values).tobytes()).SerializeToString()

    enc_packed = timeit(lambda: packed_cls(v=values).SerializeToString(), 2000)
    dec_packed = timeit(lambda: list(packed_cls.FromString(packed).v), 2000)
    enc_bytes = timeit(lambda: pb.Block(values=array.array("d", values).tobytes()).SerializeToString(), 2000)

    def dec_b() -> list[float]:
        a = array.array("d")
        a.frombytes(pb.Block.FromString(raw).values)
        return a.tolist()

    dec_bytes = timeit(dec_b, 2000)
    print("values per message: 1000")
    print(f"repeated double : encode {enc_packed * 1e6:7.1f} us  decode->list {dec_packed * 1e6:7.1f} us  "
          f"wire {len(packed)} B")
    print(f"bytes (float64) : encode {enc_bytes * 1e6:7.1f} us  decode->list {dec_bytes * 1e6:7.1f} us  "
          f"wire {len(raw)} B")
    print(f"decode ratio packed/bytes: {dec_packed / dec_bytes:.1f}x")


if __name__ == "__main__":
    main()
