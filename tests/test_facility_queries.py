"""The capacity queries in the snmp plugin's README give the right answers on a real influxd."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.influx_servers import Server, influx_create_database, influx_query, influx_write, influxd

pytestmark = pytest.mark.services
_ = influxd  # the module fixture, used by name below
DOC = Path(__file__).resolve().parents[1] / "agent" / "plugins" / "snmp" / "README.md"
DB = "facility"


def queries() -> list[str]:
    return re.findall(r"```influxql\n(.*?)\n```", DOC.read_text(), re.S)


def _lines(now_ns: int) -> str:
    """Points as the snmp plugin writes them (measurement pdu, the poller's identity tags)."""
    minute = 60 * 10**9
    out = []
    for k in range(0, 121):  # the last 2 h, every minute
        t = now_ns - (120 - k) * minute
        for rack, pdu in (("r1", "r1-l"), ("r1", "r1-r"), ("r2", "r2-l")):
            joules = 60000.0 * k  # 60 kJ a minute = 1 kWh an hour
            if pdu == "r2-l" and k >= 60:
                joules = 60000.0 * (k - 60)  # someone reset the PDU's energy meter at 60 min
            out.append(f"pdu,node=poller,pdu={pdu},rack={rack} energy_joules_total={joules} {t}")
        for outlet in ("1", "2"):
            out.append(f"pdu,node=poller,outlet={outlet},pdu=r1-l,rack=r1 outlet_energy_joules_total={30000.0 * k} {t}")
        load = 0.9 if k == 100 else 0.4  # one minute near the breaker's limit
        out.append(f"pdu,node=poller,pdu=r1-l,phase=2,rack=r1 phase_load_ratio={load} {t}")
        out.append(f"pdu,node=poller,pdu=r2-l,phase=1,rack=r2 phase_load_ratio=0.3 {t}")
    return "\n".join(out)


def _sum_by(series: list[dict], tags: tuple[str, ...], column: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for s in series:
        idx = s["columns"].index(column)
        key = tuple(s["tags"][t] for t in tags)
        out[key] = out.get(key, 0.0) + sum(row[idx] for row in s["values"] if row[idx] is not None)
    return out


def test_pdu_capacity_queries(influxd: Server) -> None:
    influx_create_database(influxd.url, DB)
    influx_write(influxd.url, DB, _lines(time.time_ns() // 10**9 * 10**9))
    q = queries()
    assert len(q) == 3
    per_rack = _sum_by(influx_query(influxd.url, q[0], DB), ("rack",), "kwh")  # over the (one or two) days
    # Two PDUs in r1 at 1 kWh/h for 2 h; r2's meter reset costs the one minute across the reset.
    assert per_rack == pytest.approx({("r1",): 4.0, ("r2",): 2.0 - 1 / 60})
    per_outlet = _sum_by(influx_query(influxd.url, q[1], DB), ("rack", "pdu", "outlet"), "kwh")
    assert per_outlet == pytest.approx({("r1", "r1-l", "1"): 1.0, ("r1", "r1-l", "2"): 1.0})
    peaks = _sum_by(influx_query(influxd.url, q[2], DB), ("rack", "pdu", "phase"), "peak_load")
    assert peaks == pytest.approx({("r1", "r1-l", "2"): 0.9, ("r2", "r2-l", "1"): 0.3})
