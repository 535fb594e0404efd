"""CPU per series of the snmp and modbus plugins, beside a bare client reading the same data.

    .venv/bin/python bench/bench_facility.py [-n 20]

* snmp: a real ``snmpsim`` (separate process) serves the APC AP8641 recording (rPDU2, 24 metered
  outlets) and the Eaton 93E UPS recording; the plugin polls both each collection. Baseline: a
  bare pysnmp GETBULK walk of the same OIDs the plugin reads (no parsing, no samples).
* modbus: a pymodbus TCP server (separate process) holds the test BESS image (models 1,
  802-805) and an inverter (701); the plugin polls both. Baseline: bare pymodbus reads of the
  same register blocks.

Only this process's CPU is counted (``time.process_time``; the servers run elsewhere). Prints CPU
microseconds per collected series for the plugin and the baseline, and their ratio. Figures
taken on a shared machine are noisy: read the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymodbus.client import AsyncModbusTcpClient
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    bulk_walk_cmd,
    get_cmd,
)

from agent.config import build
from agent.plugin import PluginContext
from agent.plugins.modbus import ModbusPlugin
from agent.plugins.modbus.config import ModbusConfig
from agent.plugins.snmp import SnmpPlugin
from agent.plugins.snmp.config import SnmpConfig
from agent.plugins.snmp.plugin import SYSTEM, resolve_devices
from tests.services import FIXTURES

DATA = FIXTURES / "snmp" / "snmpsim-data"
MODELS = FIXTURES / "sunspec" / "models"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_tcp(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def report(name: str, plugin_cpu: float, base_cpu: float, series: int, n: int) -> None:
    p = plugin_cpu / n / series * 1e6
    b = base_cpu / n / series * 1e6
    print(f"{name:7s} {series:5d} series/collection | plugin {p:8.1f} µs CPU/series | "
          f"bare client {b:8.1f} µs CPU/series | ratio {p / b:5.2f}x")


async def snmp_bench(port: int, n: int) -> tuple[float, float, int]:

    devices = [{"name": "pdu", "kind": "pdu", "host": "127.0.0.1", "port": port, "community": "pdu/apc-8641"},
               {"name": "ups", "kind": "ups", "host": "127.0.0.1", "port": port, "community": "ups/eaton-93e-80"}]
    cfg = build(SnmpConfig, {"devices": devices, "request_timeout": 3, "device_timeout": 60}, "bench")
    plugin = SnmpPlugin(PluginContext(node="bench"), cfg)
    plugin.discover()
    await plugin.collect()  # warm: snmpsim indexes the recordings on first access
    start = time.process_time()
    for _ in range(n):
        col = await plugin.collect()
    plugin_cpu = time.process_time() - start
    plugin.close()

    engine = SnmpEngine()
    target = await UdpTransportTarget.create(("127.0.0.1", port), timeout=3, retries=0)
    work = []
    for dev in resolve_devices(cfg):
        first = [chain[0] for chain in dev.chains]
        work.append((dev.cfg.community, [*SYSTEM.gets, *(g for r in first for g in r.gets)],
                     [w for r in first for w in r.walks]))
    start = time.process_time()
    for _ in range(n):
        for community, gets, walks in work:
            auth = CommunityData(community, mpModel=1)
            for i in range(0, len(gets), 16):
                await get_cmd(engine, auth, target, ContextData(),
                              *(ObjectType(ObjectIdentity(o)) for o in gets[i:i + 16]), lookupMib=False)
            for column in walks:
                async for _row in bulk_walk_cmd(engine, auth, target, ContextData(), 0, 25,
                                                ObjectType(ObjectIdentity(column)), lexicographicMode=False,
                                                lookupMib=False):
                    pass
    base_cpu = time.process_time() - start
    engine.close_dispatcher()
    return plugin_cpu, base_cpu, len(col.samples)


_SERVER = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from tests.test_modbus import bess_image, inverter_image
async def main():
    devices = [SimDevice(id=1, simdata=[SimData(40000, values=bess_image(), datatype=DataType.UINT16)]),
               SimDevice(id=2, simdata=[SimData(40000, values=inverter_image(), datatype=DataType.UINT16)])]
    await ModbusTcpServer(devices, address=("127.0.0.1", {port})).serve_forever()
asyncio.run(main())
"""


async def modbus_bench(port: int, n: int) -> tuple[float, float, int]:
    devices = [{"name": "bess", "kind": "bess", "host": "127.0.0.1", "port": port, "unit_id": 1},
               {"name": "pcs", "kind": "inverter", "host": "127.0.0.1", "port": port, "unit_id": 2}]
    plugin = ModbusPlugin(PluginContext(node="bench"),
                          build(ModbusConfig, {"devices": devices, "models_dir": str(MODELS)}, "bench"))
    plugin.discover()
    await plugin.collect()  # discovery of the model chains happens once
    blocks = {c.dev.unit_id: [(h.address, h.length + 2) for h in c.chain] for c in plugin._clients}
    start = time.process_time()
    for _ in range(n):
        col = await plugin.collect()
    plugin_cpu = time.process_time() - start
    plugin.close()

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3)
    await client.connect()
    start = time.process_time()
    for _ in range(n):
        for unit, regs in blocks.items():
            for first, length in regs:
                for offset in range(0, length, 125):
                    await client.read_holding_registers(first + offset, count=min(125, length - offset),
                                                        device_id=unit)
    base_cpu = time.process_time() - start
    client.close()
    return plugin_cpu, base_cpu, len(col.samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="collections per measurement")
    args = ap.parse_args()
    repo = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as tmp:
        udp = free_port(socket.SOCK_DGRAM)
        env = dict(os.environ)
        if os.geteuid() == 0:
            env["SNMPSIM_ALLOW_ROOT"] = "true"  # see tests/test_snmp.py
        exe = Path(sys.executable).parent / "snmpsim-command-responder"
        sim = subprocess.Popen([str(exe), f"--data-dir={DATA}", f"--agent-udpv4-endpoint=127.0.0.1:{udp}",
                                f"--cache-dir={tmp}/cache", "--log-level=error"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tcp = free_port(socket.SOCK_STREAM)
        mb = subprocess.Popen([sys.executable, "-c", _SERVER.format(repo=repo, port=tcp)], cwd=repo,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_tcp(tcp, time.monotonic() + 30)
            print(f"bench_facility: {args.n} collections each; CPU of this process only (servers elsewhere)")
            report("snmp", *asyncio.run(snmp_bench(udp, args.n)), args.n)
            report("modbus", *asyncio.run(modbus_bench(tcp, args.n)), args.n)
        finally:
            for p in (sim, mb):
                p.terminate()
                p.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
