"""Every registered plugin through the life cycle (STYLE 3): close before discover, discover,
collect, close twice, on its own captured data, and the values it reports checked against that
data: the fake NVML built from nvidia-smi recordings, a captured kernel log, captured tool outputs
served by programs at the configured tool paths, captured sysfs trees.

A new plugin gets a case in ``CASES`` (its fixture and a few values read from it): the test of
the registry fails until it has one. Without its hardware, every plugin says why
(PluginUnavailable with a reason) instead of crashing.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tests.fakenvml as fake
from agent import registry
from agent.config import build
from agent.errors import PluginError, PluginUnavailable
from agent.model import Collection, Event, MetricType, check_label_name
from agent.plugin import AnyPlugin, AsyncPlugin, PluginContext
from tests.test_ascend import HEALTH_WARNING, TRAIN_NEW


@dataclass
class Case:
    """How to run one plugin on its fixture, and what it must then report."""

    config: dict[str, Any]
    check: Callable[[Collection, list[Event]], None]
    sysfs: Path | None = None
    procfs: Path | None = None
    dev: Path | None = None


def values(col: Collection, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """{labels: value} of one metric; the 0 stamped before a new counter's first event left out."""
    return {frozenset(s.labels.items()): s.value for s in col.samples if s.name == name and s.ts is None}


def one(col: Collection, name: str, **labels: str) -> float:
    found = [v for lab, v in values(col, name).items() if set(labels.items()) <= lab]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def tool(tmp: Path, name: str, body: str) -> str:
    """A real program standing in for a vendor tool: answers from captured output."""
    path = tmp / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def host_case(fx: Path, tmp: Path) -> Case:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    mem_total = int(meminfo["MemTotal"].split()[0]) * 1024  # /proc/meminfo says kB

    def check(col: Collection, _events: list[Event]) -> None:
        assert one(col, "host_memory_total_bytes") == mem_total
        assert one(col, "host_cpus") == os.cpu_count()
        assert 0 <= one(col, "host_memory_available_bytes") <= mem_total

    return Case({}, check, procfs=Path("/proc"))


def simulated_case(fx: Path, tmp: Path) -> Case:
    fault = {"at": "0s", "for": "1h", "kind": "gpu_temperature", "gpu": 1, "value": 95}

    def check(col: Collection, _events: list[Event]) -> None:
        temps = {dict(lab)["gpu"]: v for lab, v in values(col, "gpu_temperature_celsius").items()}
        assert sorted(temps) == ["0", "1"] and temps["1"] == 95  # the scripted fault
        assert set(values(col, "gpu_memory_total_bytes").values()) == {85899345920}
        assert set(values(col, "gpu_power_limit_watts").values()) == {700}

    return Case({"gpus": 2, "ib_ports": 1, "lanes": 2, "seed": "contract", "faults": [fault]}, check)


def nvidia_case(fx: Path, tmp: Path) -> Case:
    fake.reset("a100")  # nvidia-smi/a100-sxm4-v12.xml

    def check(col: Collection, _events: list[Event]) -> None:
        gpu = {"gpu": "0", "uuid": "GPU-513536b6-7d19-9063-b049-1e69664bb298"}
        assert one(col, "gpu_up", **gpu) == 1
        assert one(col, "gpu_temperature_celsius", **gpu) == 27  # <gpu_temp>27 C</gpu_temp>
        assert one(col, "gpu_power_limit_watts", **gpu) == 500  # <current_power_limit>500.00 W
        assert one(col, "gpu_memory_total_bytes", **gpu) == 81920 * 2**20  # <total>81920 MiB</total>

    return Case({"library": "tests.fakenvml", "event_wait_ms": 20}, check)


def kmsg_case(fx: Path, tmp: Path) -> Case:
    log = fx / "kmsg" / "dmesg-with-xid-119.log"
    xids = sum("NVRM: Xid (PCI:0000:9b:00): 119," in line for line in log.read_text().splitlines())

    def check(col: Collection, events: list[Event]) -> None:
        assert xids == 5
        assert one(col, "gpu_xid_errors_total", pci="0000:9b:00", xid="119") == xids
        assert [e.labels["xid"] for e in events if e.kind == "gpu.xid"] == ["119"] * xids

    return Case({"path": str(log), "from_start": True}, check)


def optics_case(fx: Path, tmp: Path) -> Case:
    def check(col: Collection, _events: list[Event]) -> None:
        # class/infiniband/mlx4_0/ports/1/counters/port_rcv_data: 4631917 (4-byte words)
        assert one(col, "ib_port_receive_bytes_total", device="mlx4_0", port="1") == 4631917 * 4
        assert one(col, "ib_port_state", device="i40iw0", port="1") == 4  # "4: ACTIVE"

    return Case({"eeprom": "off"}, check, sysfs=fx / "sysfs" / "node-exporter" / "sys")


def power_case(fx: Path, tmp: Path) -> Case:
    def check(col: Collection, _events: list[Event]) -> None:
        # class/powercap/intel-rapl:0/energy_uj: 240422366267 µJ
        assert one(col, "rapl_energy_joules_total", zone="intel-rapl:0") == 240422.366267
        # class/power_supply/BAT0/power_now: 5002000 µW
        assert one(col, "power_supply_power_watts", supply="BAT0") == 5.002

    return Case({}, check, sysfs=fx / "sysfs" / "node-exporter" / "sys")


def amd_case(fx: Path, tmp: Path) -> Case:
    capture = fx / "amd" / "mi100_rocm602.json"

    def check(col: Collection, _events: list[Event]) -> None:
        temps = {dict(lab)["gpu"]: v for lab, v in values(col, "gpu_temperature_celsius").items()}
        assert temps == {"0": 53.0, "1": 55.0, "2": 54.0, "3": 51.0}  # "Temperature (Sensor edge) (C)"

    return Case({"source": "rocm-smi", "rocm_smi": tool(tmp, "rocm-smi", f'cat "{capture}"\n')}, check)


def ascend_case(fx: Path, tmp: Path) -> Case:
    (tmp / "health.txt").write_text(HEALTH_WARNING)
    npu_smi = tool(tmp, "npu-smi", (
        'case "$*" in\n'
        f'  "info") cat "{fx / "ascend" / (TRAIN_NEW + ".txt")}" ;;\n'
        f'  "info -m") cat "{fx / "ascend" / (TRAIN_NEW + "_mapping.txt")}" ;;\n'
        f'  "info -t health -i "*" -c 0") cat "{tmp / "health.txt"}" ;;\n'
        '  *) echo "unexpected: $*" >&2; exit 5 ;;\n'
        "esac\n"))

    def check(col: Collection, events: list[Event]) -> None:
        # NPU 0 row of the table: Power(W) 70.5, Temp(C) 42; NPU 3 is the one in Warning.
        assert one(col, "gpu_temperature_celsius", gpu="0") == 42
        assert one(col, "gpu_power_watts", gpu="0") == 70.5
        assert {(e.labels["gpu"], e.labels["code"]) for e in events if e.kind == "npu.error"} >= {
            ("3", "80E01801"), ("3", "80CB8009")}

    return Case({"npu_smi": npu_smi, "queries": []}, check)


def hygon_case(fx: Path, tmp: Path) -> Case:
    smi = tool(tmp, "hy-smi", f'cat "{fx / "hygon" / "hygon-gpu-24.04.3-rocm-smi.json"}"\n')
    info = tool(tmp, "rocminfo", f'cat "{fx / "hygon" / "hygon-gpu-24.04.3-rocminfo.txt"}"\n')

    def check(col: Collection, _events: list[Event]) -> None:
        assert one(col, "gpu_temperature_celsius", vendor="hygon") == 41.0
        assert one(col, "gpu_info", isa="gfx928") == 1

    return Case({"hy_smi": smi, "rocminfo": info}, check)


def _closed_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def snmp_case(fx: Path, tmp: Path) -> Case:
    # The recordings need a real snmpsim (a server: tests/test_snmp.py, marked services); here
    # the life cycle with a PDU that does not answer, which the plugin must report, not raise.
    port = _closed_port(socket.SOCK_DGRAM)

    def check(col: Collection, _events: list[Event]) -> None:
        assert one(col, "pdu_up", pdu="a1-l", rack="A1") == 0
        assert {s.name for s in col.samples} == {"pdu_up"}

    return Case({"devices": [{"name": "a1-l", "host": "127.0.0.1", "port": port, "rack": "A1"}],
                 "request_timeout": 0.2, "retries": 0}, check)


def modbus_case(fx: Path, tmp: Path) -> Case:
    # As for snmp: the SunSpec images are served by a real pymodbus server in tests/test_modbus.py.
    port = _closed_port(socket.SOCK_STREAM)

    def check(col: Collection, _events: list[Event]) -> None:
        assert one(col, "modbus_device_up", bess="bess-1") == 0

    return Case({"devices": [{"name": "bess-1", "host": "127.0.0.1", "port": port}],
                 "models_dir": str(fx / "sunspec" / "models"), "request_timeout": 0.5}, check)


CASES: dict[str, Callable[[Path, Path], Case]] = {
    "host": host_case, "simulated": simulated_case, "nvidia": nvidia_case, "kmsg": kmsg_case,
    "optics": optics_case, "power": power_case, "amd": amd_case, "ascend": ascend_case, "hygon": hygon_case,
    "snmp": snmp_case, "modbus": modbus_case,
}


def test_every_registered_plugin_has_a_case() -> None:
    missing = sorted(set(registry.builtin_names()) - set(CASES))
    assert not missing, f"plugins without a contract case (add one to CASES in {__file__}): {missing}"


def _collect(plugin: AnyPlugin) -> Collection:
    if isinstance(plugin, AsyncPlugin):
        return asyncio.run(asyncio.wait_for(plugin.collect(), 60))
    return plugin.collect()


def _check_shape(name: str, result: Collection) -> None:
    assert isinstance(result, Collection)
    for s in result.samples:
        assert s.metric.name == f"{s.metric.measurement}_{s.metric.field}"
        assert s.metric.help, f"{s.name} has no help text"
        assert all(check_label_name(k) for k in s.labels), f"{s.name} {s.labels}"
        assert not math.isnan(s.value), f"{s.name} {s.labels} is NaN"
        if s.metric.type is MetricType.COUNTER:
            assert s.name.endswith("_total") and math.isfinite(s.value) and s.value >= 0, s
    for e in result.events:
        assert e.kind and "." in e.kind and e.message, (name, e)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plugin_life_cycle_on_its_fixture(name: str, fixtures_dir: Path, tmp_path: Path) -> None:
    case = CASES[name](fixtures_dir, tmp_path)
    cls = registry.load(name)
    events: list[Event] = []
    empty = tmp_path / "empty"
    empty.mkdir()
    ctx = PluginContext(node="contract", sysfs_root=case.sysfs or empty, procfs_root=case.procfs or empty,
                        dev_root=case.dev or empty, emit=events.append)
    plugin = cls(ctx, build(cls.Config, case.config, f"plugins.{name}"))
    plugin.close()  # safe without discover
    try:
        plugin.discover()
        result = _collect(plugin)
    finally:
        plugin.close()
        plugin.close()
    _check_shape(name, result)
    case.check(result, [*result.events, *events])


@pytest.mark.parametrize("name", registry.builtin_names())
def test_plugin_without_its_hardware_says_why(name: str, tmp_path: Path) -> None:
    """Empty roots, default settings: either it works from what every Linux has (host, simulated)
    or it refuses with a reason, never a crash."""
    cls = registry.load(name)
    for d in ("sys", "proc", "dev"):
        (tmp_path / d).mkdir()
    ctx = PluginContext(node="contract", sysfs_root=tmp_path / "sys", procfs_root=Path("/proc"),
                        dev_root=tmp_path / "dev")
    plugin = cls(ctx, build(cls.Config, {}, f"plugins.{name}"))
    try:
        plugin.discover()
    except PluginUnavailable as err:
        assert str(err), f"{name}: PluginUnavailable needs a reason"
        plugin.close()
        plugin.close()
        return
    try:
        result = _collect(plugin)
    except PluginError:
        result = Collection()  # a failed cycle is allowed; a crash (any other exception) is not
    finally:
        plugin.close()
        plugin.close()
    _check_shape(name, result)
