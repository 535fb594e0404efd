"""The capacity queries in the README give the right answers on a real influxd."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.influx_servers import Server, influx_create_database, influx_query, influx_write, influxd

pytestmark = pytest.mark.services
_ = influxd  # the module fixture, used by name below
DOC = Path(__file__).resolve().parents[1] / "README.md"
DB = "fleet"


def queries() -> list[str]:
    return re.findall(r"```influxql\n(.*?)\n```", DOC.read_text(), re.S)


def _lines(now_ns: int) -> str:
    minute = 60 * 10**9
    out = []
    gpus = [("c1", "r1", "n1", "0", "H100"), ("c1", "r1", "n1", "1", "H100"), ("c1", "r1", "n2", "0", "H100"),
            ("c1", "r1", "n2", "1", "H100"), ("c2", "r2", "n3", "0", "A100")]
    for k in range(0, 121, 10):  # the last 2 h, every 10 min: 2.0 GPU-hours per GPU
        t = now_ns - (120 - k) * minute
        for cluster, rack, node, gpu, model in gpus:
            out.append(f"gpu,cluster={cluster},gpu={gpu},model={model},node={node},rack={rack},"
                       f"uuid=GPU-{node}-{gpu} up=1,utilization_ratio=0.5 {t}")
    for k in range(0, 121):  # node energy: 60 kJ a minute = 1 kWh an hour
        t = now_ns - (120 - k) * minute
        for _cluster, rack, node in (("c1", "r1", "n1"), ("c1", "r1", "n2"), ("c2", "r2", "n3")):
            out.append(f"node,node={node},rack={rack},source=psu energy_joules_total={60000.0 * k} {t}")
    for k in range(0, 181, 10):  # XIDs: 0 for the first hour, then 1, then 2
        t = now_ns - (180 - k) * minute
        n = 0 if k < 60 else (1 if k < 120 else 2)
        out.append(f"gpu,gpu=0,model=H100,node=n1,xid=79 xid_errors_total={float(n)} {t}")
        out.append(f"gpu,gpu=0,model=A100,node=n3,xid=48 xid_errors_total={float(min(n, 1))} {t}")
        e = 0 if k < 60 else 3
        out.append(f"gpu,gpu=1,model=H100,node=n2,scope=volatile,type=uncorrectable ecc_errors_total={float(e)} {t}")
    return "\n".join(out)


def _by(series: list[dict], tag: str, column: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in series:
        idx = s["columns"].index(column)
        total = sum(row[idx] for row in s["values"] if row[idx] is not None)
        out[s["tags"][tag]] = out.get(s["tags"][tag], 0.0) + total
    return out


def test_capacity_queries(influxd: Server) -> None:
    influx_create_database(influxd.url, DB)
    influx_write(influxd.url, DB, _lines(time.time_ns() // 10**9 * 10**9))
    q = queries()
    assert len(q) == 6
    gpu_hours = _by(influx_query(influxd.url, q[0], DB), "cluster", "gpu_hours")
    assert gpu_hours == pytest.approx({"c1": 8.0, "c2": 2.0})
    busy = _by(influx_query(influxd.url, q[1], DB), "cluster", "busy_gpu_hours")
    assert busy == pytest.approx({"c1": 4.0, "c2": 1.0})
    kwh = _by(influx_query(influxd.url, q[2], DB), "rack", "kwh")  # summed over the (one or two) days
    assert kwh == pytest.approx({"r1": 4.0, "r2": 2.0})
    xids = {(s["tags"]["model"], s["tags"]["xid"]): s["values"][0][1] for s in influx_query(influxd.url, q[3], DB)}
    assert xids == {("H100", "79"): 2.0, ("A100", "48"): 1.0}
    ecc = _by(influx_query(influxd.url, q[4], DB), "model", "uncorrectable")
    assert ecc == {"H100": 3.0}
    gpus = _by(influx_query(influxd.url, q[5], DB), "model", "gpus")
    assert gpus == {"H100": 4.0, "A100": 1.0}
