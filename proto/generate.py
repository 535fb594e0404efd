"""Regenerate the Python modules from the schemas in ``proto/`` (``make proto``).

``telemetry.proto`` is fleetmon's own wire protocol; ``remote.proto`` is Prometheus remote write.

``check()`` is used by the drift test: it generates into a temp dir and compares.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# No ``*_pb2_grpc.py``: neither side uses generated stubs. The collector registers a generic
# handler that takes raw bytes (so garbage gets a clear status) and the agent calls the method
# by its path, sending WAL bytes as they are.
SCHEMAS = ("telemetry.proto", "remote.proto")
OUTPUTS = tuple(f"{Path(schema).stem}_pb2{ext}" for schema in SCHEMAS for ext in (".py", ".pyi"))
HEADER = "# Generated from proto/{schema} by `make proto` (python -m proto.generate). DO NOT EDIT.\n"


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # noqa: PLC0415 - dev dependency (grpcio-tools), only for `make proto`

    for schema in SCHEMAS:
        rc = protoc.main([
            "grpc_tools.protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            str(HERE / schema),
        ])
        if rc != 0:
            raise SystemExit(f"protoc failed on {schema} with exit status {rc}")
        for ext in (".py", ".pyi"):
            path = out_dir / f"{Path(schema).stem}_pb2{ext}"
            path.write_text(HEADER.format(schema=schema) + path.read_text())


def check() -> list[str]:
    """Names of generated files that differ from what the schema produces now."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return [n for n in OUTPUTS if (Path(tmp) / n).read_text() != (HERE / n).read_text()]


if __name__ == "__main__":
    generate(HERE)
    print("regenerated " + ", ".join(OUTPUTS), file=sys.stderr)  # noqa: T201
