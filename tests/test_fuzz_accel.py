"""Fuzzing the vendor tool outputs of the accelerator plugins: Ascend ``npu-smi`` and
``hccn_tool``, AMD ``rocm-smi`` and ``amd-smi``, Hygon ``hy-smi`` and ``rocminfo``.

A tool's output carries what the driver and the device firmware report, in formats that change
between driver releases. Seeds are the captures in ``../shared/fixtures`` (ascend, amd, hygon)
and, for ``amd-smi`` (no capture exists), the documents ``tests/test_amd_smi.py`` builds in the
shape AMD documents. Each parser is followed by the plugin's own path to samples and events.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from agent.model import Collection, Event
from agent.plugins.accel import to_collection
from agent.plugins.amd.amd_smi import parse_amd_smi_list, parse_amd_smi_metric
from agent.plugins.amd.rocm_smi import parse_rocm_smi
from agent.plugins.ascend.hccn import parse_link_stat, parse_optical, parse_stat, parse_status_line
from agent.plugins.ascend.npu_smi import parse_health, parse_info_table, parse_kv_query, parse_mapping
from agent.plugins.ascend.readings import board_samples, build_readings, health_events
from agent.plugins.ascend.roce import LinkTracker, optical_samples, stat_samples
from agent.plugins.hygon.plugin import hsa_labels, parse_hy_smi
from agent.plugins.hygon.rocminfo import parse_rocminfo
from agent.toolrun import ToolOutputError
from tests.fuzz import assert_wire_ready, call, fuzz, mutated_json, read_texts, text_input
from tests.services import FIXTURES
from tests.test_amd_smi import LIST, mi300_metric
from tests.test_ascend_hccn import split_log

ASCEND = FIXTURES / "ascend"
TABLES = read_texts(p for p in ASCEND.glob("ai-server_*.txt") if "_mapping" not in p.name)
MAPPINGS = read_texts([*ASCEND.glob("*_mapping.txt"), *ASCEND.glob("gpustack-test-literals/*-info-m.txt")])
QUERIES = read_texts(ASCEND.glob("gpustack-test-literals/*-info-t-*.txt"))


def _outputs(needle: str) -> list[str]:
    found = [out for text in read_texts(ASCEND.glob("mind-cluster-faultdiag/*.txt"))
             for cmd, out in split_log(text) if needle in cmd]
    assert found, needle
    return found


HEALTH = _outputs("-t health")
OPTICAL, LINK_STAT, STAT = _outputs("-optical"), _outputs("-link_stat"), _outputs(" -stat")
STATUS = _outputs("-fec") + _outputs("-net_health")


# Found by fuzzing: float() reads "nan" and "inf", which became NaN gauges (the collector refuses
# the node's whole batch for one NaN).
NAN_TABLE = re.sub(r"(\| OK\s+\|\s+)\d+(?:\.\d+)?", r"\1nan", TABLES[0], count=1)
assert TABLES[0] != NAN_TABLE


@fuzz(60)
@given(text_input(TABLES), text_input(MAPPINGS), st.lists(text_input(QUERIES), max_size=2), text_input(HEALTH))
@example(NAN_TABLE, MAPPINGS[0], [QUERIES[0].replace(":", ": inf #", 3)], HEALTH[0])
# Found by the long run: a 4400-digit id in the mapping raised ValueError (int()'s digit limit).
@example(TABLES[0], "NPU ID  Chip ID  Chip Logic ID  Chip Name\n" + "1" * 4400 + " 0 0 Ascend 910\n", [], HEALTH[0])
def test_npu_smi(table_text: str, mapping_text: str, query_texts: list[str], health_text: str) -> None:
    """A collection as the plugin makes it: table, mapping, ``-t`` queries, health, events."""
    table = call(parse_info_table, table_text, errors=(ToolOutputError,))
    mapping = call(parse_mapping, mapping_text, errors=(ToolOutputError,))
    queries = [q for q in (call(parse_kv_query, t, source="q", errors=(ToolOutputError,)) for t in query_texts)
               if q is not None]
    health = call(parse_health, health_text, source="h", errors=(ToolOutputError,))
    if table is None:
        return
    by_npu = {c.npu_id: queries for c in table.chips}
    readings = call(build_readings, table, mapping, by_npu, errors=(ToolOutputError,))
    if readings is None:
        return
    col = to_collection(readings)
    events: list[Event] = []
    for chip in table.chips:
        for metric, value, labels in call(board_samples, chip.npu_id, chip.name, queries,
                                          errors=(ToolOutputError,)) or []:
            col.add(metric, value, labels)
    if health is not None:
        for r in readings:
            events += health_events(r, health)
    assert_wire_ready(col, events)


@fuzz(80)
@given(text_input(OPTICAL), text_input(LINK_STAT), text_input(LINK_STAT), text_input(STAT), text_input(STATUS))
# Found by fuzzing: a counter reading -1 became a negative _total (refused by the collector), and
# 400 digits overflowed the float conversion of a sample (OverflowError).
@example(OPTICAL[0], "link up count : -1\n", LINK_STAT[0], "roce_tx_err_pkt_num:-1\n", STATUS[0])
@example(re.sub(r"\d+\.\d+", "9" * 400, OPTICAL[0], count=1), LINK_STAT[0], LINK_STAT[0],
         "roce_rx_all_pkt_num:" + "9" * 400 + "\n", STATUS[0])
def test_hccn_tool(optical: str, link1: str, link2: str, stat: str, status: str) -> None:
    """The RoCE port queries, and the link history read twice (flap events in between)."""
    col = Collection()
    reading = call(parse_optical, optical, source="optical", errors=(ToolOutputError,))
    if reading is not None:
        optical_samples(col, "0", reading)
    tracker = LinkTracker()
    for text in (link1, link2):
        links = call(parse_link_stat, text, source="link_stat", errors=(ToolOutputError,))
        if links is not None:
            tracker.update(col, "0", links)
    stats = call(parse_stat, stat, source="stat", errors=(ToolOutputError,))
    if stats is not None:
        stat_samples(col, "0", stats)
    for key in ("fec mode", "net health status"):
        line = call(parse_status_line, status, key, source="status", errors=(ToolOutputError,))
        assert line is None or isinstance(line, str)
    assert_wire_ready(col, col.events)


ROCM_SMI = read_texts([*(FIXTURES / "amd").glob("*.json"), *(FIXTURES / "hygon").glob("*.json")])
ROCM_DOCS = [json.loads(t) for t in ROCM_SMI]
ROCM_KEYS = sorted({k for doc in ROCM_DOCS for card in doc.values() if isinstance(card, dict) for k in card})


def rocm_smi_inputs() -> st.SearchStrategy[str]:
    return text_input(ROCM_SMI) | mutated_json(ROCM_DOCS, ROCM_KEYS).map(json.dumps)


@fuzz(80)
@given(rocm_smi_inputs())
# Found by fuzzing: an object where text was expected became a 1 KB gpu model label (str() of it;
# the collector refuses label values past 1024 bytes), "nan" a NaN gauge.
@example(json.dumps({"card0": {"Device Name": {"(Topology)": 10**400}, "Unique ID": "0x1"}}))
@example(json.dumps({"card0": {"Temperature (Sensor edge) (C)": "nan", "GPU use (%)": "1" + "0" * 400}}))
# Found by the long run: json.loads raises ValueError (not JSONDecodeError) for a 4400-digit
# number and RecursionError for deep nesting; a 4400-digit card index broke the sort.
@example('{"card0": {"GPU ID": ' + "1" * 4400 + "}}")
@example("[" * 100_000)
@example('{"card' + "1" * 4400 + '": {}}')
def test_rocm_smi(text: str) -> None:
    readings = call(parse_rocm_smi, text, errors=(ToolOutputError,))
    if readings is not None:
        assert_wire_ready(to_collection(readings))


AMD_SMI_DOCS: list[Any] = [{"gpu_data": [mi300_metric()]}, [mi300_metric()], LIST]
AMD_SMI_KEYS = sorted({k for k in mi300_metric()} | {"value", "unit", "gpu"})


@fuzz(80)
@given(mutated_json(AMD_SMI_DOCS, AMD_SMI_KEYS).map(json.dumps) | text_input([json.dumps(d) for d in AMD_SMI_DOCS]),
       mutated_json([LIST], AMD_SMI_KEYS).map(json.dumps))
# Found by fuzzing: an integer past a float's range raised OverflowError, NaN passed through, and
# an object where the market name was expected became the model label.
@example(json.dumps([{**mi300_metric(), "power": {"socket_power": {"value": 10**400, "unit": "W"}},
                      "temperature": {"edge": {"value": float("nan"), "unit": "C"}}}]),
         json.dumps([{**LIST[0], "market_name": {"x": "y" * 2000}}]))
@example('[{"gpu": ' + "1" * 4400 + "}]", "[" * 100_000)
def test_amd_smi(metric: str, listing: str) -> None:
    identity = call(parse_amd_smi_list, listing, errors=(ToolOutputError,))
    readings = call(parse_amd_smi_metric, metric, identity, errors=(ToolOutputError,))
    if readings is not None:
        assert_wire_ready(to_collection(readings))


ROCMINFO = read_texts((FIXTURES / "hygon").glob("*rocminfo*.txt"))


@fuzz(60)
@given(text_input(ROCMINFO), rocm_smi_inputs())
def test_hygon(rocminfo: str, hy_smi: str) -> None:
    agents = call(parse_rocminfo, rocminfo, errors=(ToolOutputError,))
    readings = call(parse_hy_smi, hy_smi, hsa_labels(agents or []), errors=(ToolOutputError,))
    if readings is not None:
        assert_wire_ready(to_collection(readings))
