"""Fuzzing the wire: ``fleetmon.v1`` messages into a running collector, the agent's batch codec,
and InfluxDB line protocol (the sinks' output) decoded back by each server dialect's rules.

Any client that reaches the gRPC port is a remote party. The collector must answer every stream
with a documented status (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, PERMISSION_DENIED, ABORTED,
UNAVAILABLE, DEADLINE_EXCEEDED), never UNKNOWN (an exception its handler did not expect), and a
healthy agent streaming beside the hostile one must keep having every batch stored.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import assume, example, given
from hypothesis import strategies as st

from agent.codec import SeriesTable, build_batch, pack_values, series_from_json, series_to_json, unpack_values
from agent.model import Collection, Event, Metric, MetricType, Sample, Severity, Stamped
from agent.transport import METHOD
from collector.app import Collector
from collector.config import CollectorConfig
from collector.storage.retry import error_text
from proto import telemetry_pb2 as pb
from proto.lineprotocol import DIALECTS, Dialect, encode_line
from tests.fuzz import fuzz, mutated_bytes
from tests.test_lineprotocol import CASES, _expected_v1

# --- the agent's batches ---------------------------------------------------------------------------

names = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True)
label_names = names.filter(lambda n: not n.startswith("__"))
label_values = st.text(max_size=24)
metrics = (st.builds(Metric, names, names.map(lambda f: f + "_total"), st.just(MetricType.COUNTER), st.text(max_size=8))
           | st.builds(Metric, names, names, st.sampled_from([MetricType.GAUGE, MetricType.INFO]), st.text(max_size=8)))
samples = st.builds(Sample, metrics, st.floats(allow_nan=False),
                    st.dictionaries(label_names, label_values, max_size=4),
                    st.none() | st.floats(1.6e9, 2.0e9))
events = st.builds(Event, st.from_regex(r"[a-z]{1,8}\.[a-z_]{1,12}", fullmatch=True),
                   st.sampled_from(list(Severity)), st.text(max_size=40),
                   st.dictionaries(label_names, label_values, max_size=3), st.text(max_size=20),
                   st.floats(1.6e9, 2.0e9))


@fuzz(30)
@given(st.lists(st.tuples(st.floats(1.6e9, 2.0e9), st.lists(samples, max_size=6)), max_size=4),
       st.lists(events, max_size=3))
def test_batches_round_trip(items: list[tuple[float, list[Sample]]], evs: list[Event]) -> None:
    """Samples → batch → bytes → batch: every series, value (bit for bit) and event comes back."""
    table = SeriesTable()
    batch, used = build_batch(table, [Stamped(ts, Collection(smps)) for ts, smps in items], evs)
    wire = pb.AgentMessage(batch=batch).SerializeToString()
    back = pb.AgentMessage.FromString(wire).batch
    got: dict[tuple[int, int], float] = {}
    for block in back.blocks:
        values = unpack_values(block.values)
        assert len(values) == len(block.series_ids)
        got.update(zip(((block.timestamp_ms, sid) for sid in block.series_ids), values, strict=True))
    want: dict[tuple[int, int], float] = {}
    for ts, batch_samples in items:
        for s in batch_samples:
            want[(int((s.ts if s.ts is not None else ts) * 1000), table.id_for(s))] = s.value  # later wins
    assert got.keys() == want.keys()
    assert all(got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])) for k in want)
    assert sorted(used) == sorted({sid for _, sid in want})
    for sid in used:
        series = table.series(sid)
        assert series_from_json(series_to_json(series)).key == series.key  # as the WAL keeps them
    assert [(e.kind, e.message, dict(e.labels)) for e in back.events] == [(e.kind, e.message, e.labels) for e in evs]


# --- a hostile client against a running collector -------------------------------------------------

#: What a stream may end with; UNKNOWN (or INTERNAL) means the handler raised something unexpected.
DOCUMENTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED,
              grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

NOW_MS = int(time.time() * 1000)


def hello(node: str, wal: str = "w1", **kw: Any) -> pb.AgentMessage:
    return pb.AgentMessage(hello=pb.Hello(node=node, wal_id=wal, agent_version="0.1.0", **kw))


def real_batch(seq: int) -> pb.AgentMessage:
    """A batch as the agent builds one: definitions, blocks at two instants, an event."""
    gpu = Metric("gpu", "temperature_celsius", MetricType.GAUGE, "GPU temperature", "celsius")
    xid = Metric("gpu", "xid_errors_total", MetricType.COUNTER, "XIDs")
    now = NOW_MS / 1000
    items = [(now - 10, [gpu.sample(41.0, {"gpu": "0"}), xid.sample(0.0, {"gpu": "0", "xid": "79"})]),
             (now, [gpu.sample(42.5, {"gpu": "0"}), xid.sample(1.0, {"gpu": "0", "xid": "79"})])]
    ev = Event("gpu.xid", Severity.CRITICAL, "XID 79 on GPU 0", {"gpu": "0", "xid": "79"}, "reset", now)
    table = SeriesTable()
    batch, used = build_batch(table, [Stamped(ts, Collection(smps)) for ts, smps in items], [ev])
    batch.series.extend(table.definition(sid) for sid in used)  # sent with their first use
    batch.sequence = seq
    return pb.AgentMessage(batch=batch)


SEEDS = [hello("n1", labels={"rack": "r1"}).SerializeToString(), real_batch(1).SerializeToString()]

timestamps = st.sampled_from([NOW_MS, NOW_MS - 5_000, 0, -1, 2**63 - 1, -(2**63), NOW_MS + 10**9,
                              32503680000000]) | st.integers(-(2**63), 2**63 - 1)
sequences = st.sampled_from([0, 1, 2, 3, 2**32, 2**63 - 1, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
ids = st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 2, 3])
wire_labels = st.dictionaries(st.text(max_size=10) | label_names, st.text(max_size=40), max_size=5)
series_defs = st.builds(pb.SeriesDef, id=ids, measurement=st.text(max_size=10) | names,
                        field=st.text(max_size=10) | names, labels=wire_labels, type=st.integers(0, 5),
                        help=st.text(max_size=10))
blocks = st.builds(pb.Block, timestamp_ms=timestamps, series_ids=st.lists(ids, max_size=6),
                   values=st.binary(max_size=56) | st.lists(st.floats(), max_size=6).map(pack_values))
wire_events = st.builds(pb.Event, timestamp_ms=timestamps, kind=st.text(max_size=140), labels=wire_labels,
                        severity=st.integers(0, 7), message=st.text(max_size=60), action=st.text(max_size=20))
batches = st.builds(pb.Batch, sequence=sequences, series=st.lists(series_defs, max_size=4),
                    blocks=st.lists(blocks, max_size=3), events=st.lists(wire_events, max_size=3),
                    oldest_sequence=sequences)
hellos = st.builds(pb.Hello, node=st.text(max_size=20) | st.just("n1"), labels=wire_labels,
                   agent_version=st.text(max_size=10), wal_id=st.text(max_size=10) | st.just("w1"),
                   oldest_sequence=sequences, sent_at_ms=timestamps)


@st.composite
def hostile_streams(draw: st.DrawFn) -> list[bytes]:
    """A Hello (well-formed or not), then messages: structured batches with any field at any
    value, mutated bytes of real messages, or other message kinds."""
    node = f"h{next(_NODES)}"
    first = draw(st.sampled_from(["hello", "hello", "fuzzed", "bytes"]))
    if first == "hello":
        msgs = [hello(node).SerializeToString()]
    elif first == "fuzzed":
        msgs = [pb.AgentMessage(hello=draw(hellos)).SerializeToString()]
    else:
        msgs = [draw(mutated_bytes(SEEDS))]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["real", "batch", "batch", "bytes", "hello"]))
        if kind == "real":
            msgs.append(real_batch(draw(sequences)).SerializeToString())
        elif kind == "batch":
            msgs.append(pb.AgentMessage(batch=draw(batches)).SerializeToString())
        elif kind == "bytes":
            msgs.append(draw(mutated_bytes(SEEDS)))
        else:
            msgs.append(hello(node).SerializeToString())
    return msgs


_NODES = itertools.count()


class Running:
    """A collector on its own event loop thread, and a channel to it."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-collector", daemon=True)
        self.thread.start()
        cfg = CollectorConfig(listen="127.0.0.1:0", http="", data_dir=data_dir)
        cfg.alerting.notifiers = {}
        self.collector = Collector(cfg)
        asyncio.run_coroutine_threadsafe(self.collector.start(), self.loop).result(60)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.collector.grpc_port}")
        self.stream = self.channel.stream_stream(METHOD, request_serializer=lambda b: b,
                                                 response_deserializer=pb.CollectorMessage.FromString)
        self.healthy_seq = 0

    def exchange(self, messages: list[bytes]) -> tuple[list[pb.CollectorMessage], grpc.StatusCode | None]:
        got: list[pb.CollectorMessage] = []
        try:
            for answer in self.stream(iter(messages), timeout=30):
                got.append(answer)
        except grpc.RpcError as err:
            return got, err.code()
        return got, None

    def close(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.collector.stop(grace=1), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def collector() -> Iterator[Running]:
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        running = Running(Path(tmp))
        try:
            yield running
        finally:
            running.close()


@fuzz(40)
@given(hostile_streams())
def test_hostile_streams(collector: Running, messages: list[bytes]) -> None:
    answers, status = collector.exchange(messages)
    assert status is None or status in DOCUMENTED, f"stream ended {status}"
    if answers:
        assert answers[0].HasField("welcome")
        for a in answers[1:]:
            assert a.HasField("ack") and a.ack.contiguous <= max(a.ack.sequence, a.ack.contiguous)
    # The healthy agent beside it: its next batch is stored and acknowledged as contiguous.
    collector.healthy_seq += 1
    seq = collector.healthy_seq
    answers, status = collector.exchange([hello("healthy").SerializeToString(), real_batch(seq).SerializeToString()])
    assert status is None, status
    assert [a.WhichOneof("msg") for a in answers] == ["welcome", "ack"]
    assert answers[0].welcome.last_durable_sequence == seq - 1
    assert (answers[1].ack.refused, answers[1].ack.contiguous) == ("", seq)


@fuzz(150)
@given(mutated_bytes(SEEDS) | st.binary(max_size=200))
def test_messages_decode_or_say_why(data: bytes) -> None:
    """The collector parses raw bytes itself (collector/server.py): only DecodeError may escape."""
    try:
        msg = pb.AgentMessage.FromString(data)
    except DecodeError as err:
        assert str(err)
        return
    assert msg.WhichOneof("msg") in (None, "hello", "batch")


@fuzz(60)
@given(st.binary(max_size=300) | st.text(max_size=300) | st.none()
       | st.sampled_from(['{"error": "partial write: field type conflict"}', '{"message": "unauthorized"}']))
@example("[" * 100_000)  # found by fuzzing: json.loads raises RecursionError on deep nesting
def test_sink_error_bodies(body: bytes | str | None) -> None:
    """What a TSDB answers with a failed write (its message goes into the sink's log line)."""
    text = error_text(body)
    assert isinstance(text, str) and len(text) <= 500


# --- line protocol, decoded back by each dialect's rules ------------------------------------------


class Unparsable(ValueError):
    pass


def _unescape(text: str, chars: str, dialect: Dialect) -> str:
    if dialect == "influxdb1":
        # models/points.go: bytes.Replace of each escape code; every other backslash is literal.
        for c in chars:
            text = text.replace("\\" + c, c)
        return text
    # 2.x and VictoriaMetrics: "\\" is one backslash, "\," "\=" "\ " the character.
    return re.sub(r"\\([\\" + re.escape(chars) + "])", r"\1", text)


def _scan(line: str, i: int, stops: str, dialect: Dialect) -> int:
    """Index of the first unescaped character of ``stops`` from ``i`` (len(line) if none).
    1.x (scanMeasurement, scanTagsKey/Value): a character right after a backslash is escaped,
    even when that backslash is itself escaped; 2.x: a backslash escapes the next character."""
    while i < len(line):
        c = line[i]
        if c == "\\" and dialect == "influxdb2":
            i += 2
            continue
        if c in stops and not (dialect == "influxdb1" and i > 0 and line[i - 1] == "\\"):
            return i
        i += 1
    return i


def decode_line(line: str, dialect: Dialect) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """(measurement, tags, fields, timestamp) as the server reads one line; Unparsable if it would
    refuse it (or drop it: a comment)."""
    if not line or line[0] in "# \t\0" or line[0] == ",":
        raise Unparsable("comment, leading blank or missing measurement")
    end = _scan(line, 0, ", ", dialect)
    if end >= len(line):
        raise Unparsable("missing fields")
    measurement = _unescape(line[:end], ", ", dialect)
    tags: dict[str, str] = {}
    pos = end
    while line[pos] == ",":
        eq = _scan(line, pos + 1, "=, ", dialect)
        if eq >= len(line) or line[eq] != "=" or eq == pos + 1:
            raise Unparsable("missing tag key or value")
        stop = _scan(line, eq + 1, "=, ", dialect)
        if stop >= len(line) or line[stop] == "=" or stop == eq + 1:
            raise Unparsable("invalid tag")
        key = _unescape(line[pos + 1 : eq], ",= ", dialect)
        if key in tags:
            raise Unparsable("duplicate tags")
        tags[key] = _unescape(line[eq + 1 : stop], ",= ", dialect)
        pos = stop
    fields: dict[str, Any] = {}
    pos += 1
    while True:  # field keys: a backslash escapes the next character in both (scanFields)
        i = pos
        while i < len(line) and line[i] not in "=, ":
            i += 2 if line[i] == "\\" else 1
        if i >= len(line) or line[i] != "=" or i == pos:
            raise Unparsable("invalid field key")
        key = _unescape(line[pos:i], ",= ", "influxdb1" if dialect == "influxdb1" else dialect)
        i += 1
        if i < len(line) and line[i] == '"':
            j, buf = i + 1, []
            while j < len(line) and line[j] != '"':
                if line[j] == "\\" and j + 1 < len(line) and line[j + 1] in '"\\':
                    j += 1
                buf.append(line[j])
                j += 1
            if j >= len(line):
                raise Unparsable("unbalanced quotes")
            value: Any = "".join(buf)
            i = j + 1
        else:
            j = i
            while j < len(line) and line[j] not in ", ":
                j += 1
            raw = line[i:j]
            if raw in ("true", "false"):
                value = raw == "true"
            elif raw.endswith("i"):
                value = int(raw[:-1])
                if not -(2**63) <= value < 2**63:
                    raise Unparsable("integer out of range")
            else:
                value = float(raw)
                if not math.isfinite(value):
                    raise Unparsable("float out of range")
            i = j
        fields[key] = value
        if i >= len(line) or line[i] == " ":
            break
        pos = i + 1
    ts = line[i + 1 :] if i < len(line) else ""
    if not re.fullmatch(r"-?\d+", ts):
        raise Unparsable("bad timestamp")
    return measurement, tags, fields, int(ts)


def test_the_decoder_reads_what_influxd_stored() -> None:
    """The reference decoder agrees with what influxd 1.6 stored for every escaping case
    (``tests/test_lineprotocol.py`` checks those against the real server)."""
    for i, s in enumerate(CASES):
        line = encode_line(f"m{i} {s}", {f"k {s}": f"v {s}", "case": str(i)}, {f"f {s}": float(i), "s": f"str {s}"},
                           5, dialect="influxdb1")
        assert line is not None
        assert decode_line(line, "influxdb1") == (
            _expected_v1(f"m{i} {s}", tag=False),
            {"case": str(i), _expected_v1(f"k {s}", tag=True): _expected_v1(f"v {s}", tag=True)},
            {_expected_v1(f"f {s}", tag=False): float(i), "s": f"str {s}".replace("\n", " ").replace("\r", " ")},
            5,
        ), s


def _expected(text: str, dialect: Dialect, *, tag: bool) -> str:
    if dialect == "influxdb1":
        return _expected_v1(text, tag=tag)
    return text.replace("\n", " ").replace("\r", " ")


def _expected_measurement(text: str, dialect: Dialect) -> str:
    # What cannot start a line is left out: '#' (a comment), a tab or NUL (skipped as blank).
    return _expected(text, dialect, tag=False).lstrip("#\t\0")


lp_text = st.text(st.characters(codec="utf-8") | st.sampled_from(list("\\ ,=\"\n\r#\t")), max_size=12)
field_values = (st.floats(allow_nan=True) | st.integers(-(2**63), 2**63 - 1) | st.booleans()
                | st.text(st.characters(codec="utf-8") | st.sampled_from(list('\\"\n')), max_size=12))


@fuzz(200)
@given(st.sampled_from(DIALECTS), lp_text, st.dictionaries(lp_text, lp_text, max_size=4),
       st.dictionaries(lp_text, field_values, max_size=4), st.integers(-(2**63), 2**63 - 1))
def test_line_protocol_round_trip(dialect: Dialect, measurement: str, tags: dict[str, str], fields: dict[str, Any],
                                  ts: int) -> None:
    """encode_line's output reads back, by the dialect's rules, as exactly what the module doc
    says it keeps: names whole in 2.x, the documented backslashes dropped in 1.x, CR/LF as
    spaces, empty tags and non-finite or unrepresentable fields left out."""
    line = encode_line(measurement, tags, fields, ts, dialect=dialect)
    want_meas = _expected_measurement(measurement, dialect)
    want_tags = {_expected(k, dialect, tag=True): _expected(v, dialect, tag=True) for k, v in tags.items()}
    want_tags = {k: v for k, v in want_tags.items() if k and v}
    want_fields: dict[str, Any] = {}
    for k, v in fields.items():
        key = _expected(k, dialect, tag=False)
        if key and not (isinstance(v, float) and not math.isfinite(v)):
            want_fields[key] = v.replace("\n", " ").replace("\r", " ") if isinstance(v, str) else v
    # Two keys that read the same once escaped ("a\n" and "a ") would be duplicate tags, which a
    # server refuses; label names are checked at ingest ([a-zA-Z_][a-zA-Z0-9_]*), so no series has them.
    kept = [k for k, v in tags.items() if _expected(k, dialect, tag=True) and _expected(v, dialect, tag=True)]
    assume(len(want_tags) == len(kept))
    if line is None:
        assert not want_meas or not want_fields
        return
    assert "\n" not in line and "\r" not in line
    assert decode_line(line, dialect) == (want_meas, want_tags, want_fields, ts)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_measurements_that_cannot_start_a_line(dialect: Dialect) -> None:
    """Found by fuzzing: a measurement starting with '#' made the line a comment (InfluxDB drops the
    point silently), one starting with a tab or NUL lost it to the parser's blank skipping."""
    for name in ("#gpu", "\tgpu", "\0gpu", "#\t#gpu"):
        line = encode_line(name, {"node": "n1"}, {"temperature_celsius": 40.0}, 7, dialect=dialect)
        assert line is not None and line.startswith("gpu,")
        assert decode_line(line, dialect) == ("gpu", {"node": "n1"}, {"temperature_celsius": 40.0}, 7)
    assert encode_line("#", {}, {"f": 1.0}, 7, dialect=dialect) is None
