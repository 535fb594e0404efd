"""The sinks' column encoders, without servers: line protocol byte-identical to
``proto.lineprotocol.encode_line``, remote write parsing (through the generated
``proto/remote_pb2``) to exactly the samples given, and the column model they read.

Every encoder test runs twice: with the C module (``collector/storage/_native.c``, built by
``pip install``) and with the pure-Python path used where it could not be built. The C module's
absence fails the run when ``FLEETMON_REQUIRE_SERVICES`` is set (CI), else skips its half.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable
from typing import Any

import cramjam
import numpy as np
import pytest

from collector.spool import decode_spool, decode_spool_columns, encode_spool
from collector.storage import lines as lines_module
from collector.storage import remote_write as remote_write_module
from collector.storage.base import Point, Samples, SeriesCatalog, SeriesKey, SinkBatch
from collector.storage.columnar import ByteTable, stable_order
from collector.storage.embedded import EventRow, SampleColumns
from collector.storage.lines import ColumnLineEncoder, batch_lines, encode_batch, format_values
from collector.storage.remote_write import RemoteWriteEncoder, series_labels
from proto import remote_pb2
from proto.lineprotocol import Dialect, encode_line, format_float

# Names that need escaping in one dialect or the other (see tests/test_lineprotocol.py).
TRICKY = ["plain", "sp ace", "com,ma", "eq=ual", 'quo"te', "back\\slash", "trail\\", "new\nline", "ünï"]


def native_module() -> Any:
    """collector.storage._native, or a skip (a failure under FLEETMON_REQUIRE_SERVICES)."""
    try:
        from collector.storage import _native  # noqa: PLC0415 - whether it was built is the question
    except ImportError:
        if os.environ.get("FLEETMON_REQUIRE_SERVICES"):
            raise AssertionError("collector/storage/_native.c was not built (pip install needs gcc and "
                                 "python3-dev; .ci/setup installs them)") from None
        pytest.skip("collector.storage._native is not built (no C compiler at install)")
    return _native


@pytest.fixture(autouse=True, params=["native", "python"])
def encoder_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the C encoders, then with the pure-Python ones."""
    native = native_module() if request.param == "native" else None
    monkeypatch.setattr(lines_module, "_native", native)
    monkeypatch.setattr(remote_write_module, "_native", native)
    return str(request.param)


def _points(catalog_order: Iterable[tuple[str, str, tuple[tuple[str, str], ...]]], instants: Iterable[int],
            value: Any = None) -> list[Point]:
    out = []
    for t in instants:
        for i, (meas, field, tags) in enumerate(catalog_order):
            v = float(value(i, t)) if value else i * 1.5 + t / 7
            out.append(Point(meas, field, tags, v, t))
    return out


def _expected_lines(points: list[Point], dialect: Dialect, catalog: SeriesCatalog | None = None) -> list[str]:
    """What grouping per (measurement, tags, instant) and encode_line give, the last value winning,
    fields in series order (the catalog's, or first appearance)."""
    catalog = catalog if catalog is not None else Samples.from_points(points).catalog
    grouped: dict[tuple[Any, ...], dict[SeriesKey, float]] = {}
    for p in points:
        grouped.setdefault((p.measurement, p.tags, p.ts_ns), {})[SeriesKey(p.measurement, p.field, p.tags)] = p.value
    lines = [encode_line(m, dict(tags), {k.field: fields[k] for k in sorted(fields, key=catalog.intern)}, ts,
                         dialect=dialect) for (m, tags, ts), fields in grouped.items()]
    return sorted(line for line in lines if line is not None)


def _rendered(batch: SinkBatch, encoder: ColumnLineEncoder, **kw: Any) -> list[str]:
    encoded = encode_batch(batch, encoder, **kw)
    return [encoded.render(i).decode() for i in range(encoded.n_chunks)]


@pytest.mark.parametrize("dialect", ["influxdb1", "influxdb2"])
def test_lines_equal_encode_line_with_tricky_names(dialect: Dialect) -> None:
    series = []
    for i, s in enumerate(TRICKY):
        tags = tuple(sorted({f"k {s}": f"v {s}", "gpu": str(i % 3), "empty": ""}.items()))
        series += [(f"m {s}", f"f {s}", tags), (f"m {s}", "n", tags), ("gpu", s, (("gpu", str(i)),))]
    series.append(("\\", "f", ()))  # influxdb1: nothing left of the measurement, never written
    points = _points(series, [10, 20, 30])
    lines = batch_lines(SinkBatch(1, points), dialect)
    assert sorted(lines) == _expected_lines(points, dialect)
    assert len(lines) == 3 * (2 * len(TRICKY) + (dialect == "influxdb2"))


def test_line_order_fields_in_series_order_and_later_duplicate_wins() -> None:
    tags = (("gpu", "0"),)
    points = [Point("gpu", "power_watts", tags, 300.5, 20), Point("gpu", "temperature_celsius", tags, 60.0, 10),
              Point("gpu", "power_watts", tags, 301.0, 10), Point("gpu", "power_watts", (("gpu", "1"),), 250.0, 10),
              Point("gpu", "power_watts", tags, 299.0, 10),  # same series and instant: wins over 301.0
              Point("gpu", "util_ratio", tags, float("nan"), 10), Point("gpu", "x", tags, float("-inf"), 20)]
    assert batch_lines(SinkBatch(1, points)) == [
        "gpu,gpu=0 power_watts=299.0,temperature_celsius=60.0 10",
        "gpu,gpu=1 power_watts=250.0 10",
        "gpu,gpu=0 power_watts=300.5 20",
    ]


def test_unsorted_times_and_the_lexsort_path_agree() -> None:
    rng = np.random.default_rng(7)
    catalog = SeriesCatalog()
    for g in range(50):
        for f in ("a", "b", "c"):
            catalog.intern(SeriesKey("gpu", f, (("gpu", str(g)),)))
    n = 2000
    samples = Samples(catalog, rng.integers(0, len(catalog), n), rng.integers(0, 40, n) * 1000,
                      rng.integers(-5, 5, n) / 4)
    lines = batch_lines(SinkBatch(1, samples=samples))
    assert sorted(lines) == _expected_lines(samples.points(), "influxdb1", catalog)
    # Times first: lines come in time order.
    times = [int(line.rsplit(" ", 1)[1]) for line in lines]
    assert times == sorted(times)
    cols = [samples.ts_ns, samples.series]
    packed, _ = stable_order(cols, [40_000, len(catalog)])
    wide, _ = stable_order(cols, [1 << 62, len(catalog)])  # does not fit 63 bits: lexsort
    assert packed.tolist() == wide.tolist() == np.lexsort([samples.series, samples.ts_ns]).tolist()


def test_chunks_respect_lines_and_bytes_and_start_small() -> None:
    series = [("gpu", f"field_{f}", (("gpu", str(g)), ("node", "n" * 50))) for g in range(300) for f in range(4)]
    points = _points(series, range(1, 11))
    batch = SinkBatch(1, points)
    chunks = _rendered(batch, ColumnLineEncoder(), max_lines=1000)
    assert [c.count("\n") for c in chunks] == [250, 1000, 1000, 750]
    by_bytes = _rendered(batch, ColumnLineEncoder(), max_bytes=40_000)
    assert all(len(c.encode()) <= 40_000 for c in by_bytes) and len(by_bytes[0]) <= 10_000
    assert "".join(chunks) == "".join(by_bytes) == "\n".join(batch_lines(batch)) + "\n"
    assert [c.count("\n") for c in _rendered(SinkBatch(1, points[:1000]), ColumnLineEncoder(), max_lines=1000)] == [250]


def test_encoder_follows_a_growing_catalog() -> None:
    catalog = SeriesCatalog()
    encoder = ColumnLineEncoder()
    for round_no in range(3):
        points = _points([("gpu", f"f{i}", (("gpu", str(i % 4)),)) for i in range(4 + 3 * round_no)],
                         [round_no * 100])
        samples = Samples.from_points(points, catalog)
        assert sorted(batch_lines(SinkBatch(round_no, samples=samples), encoder=encoder)) == \
            _expected_lines(points, "influxdb1")
    assert len(catalog) == 10


def test_values_are_written_as_format_float_writes_them() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, 20_000) * 10.0 ** rng.integers(-320, 308, 20_000)
    values = np.concatenate([values[np.isfinite(values)], [0.0, -0.0, 1e16, 1e-5, 1.5e-5, 1e-4, 2.5e-7, 123.0,
                                                           5e-324, -2.2250738585072014e-308, 0.1 + 0.2]])
    written = [v.decode() for v in format_values(values)]
    assert written == [format_float(v) for v in values.tolist()]
    assert all(float(w) == v for w, v in zip(written, values.tolist(), strict=True))  # read back exactly
    assert written[-11:] == ["0.0", "-0.0", "1e+16", "0.00001", "0.000015", "0.0001", "2.5e-7", "123.0",
                             "5e-324", "-2.2250738585072014e-308", "0.30000000000000004"]



def test_whole_numbers_and_the_rest_are_written_alike_through_the_encoder() -> None:
    """Whole numbers below 1e15 are written by the native splice itself, the rest by orjson:
    every line still equals encode_line's, at the edges of that split too."""
    rng = np.random.default_rng(11)
    edges = [0.0, -0.0, 47.0, -3.0, 999_999_999_999_999.0, -999_999_999_999_999.0, 1e15, -1e15, 1e15 + 2,
             2.0**53, 1e16, 0.5, -0.5, 1e-7, 4219469824.0, 1_700_000_000_000.0, 5e-324]
    mixed = np.concatenate([rng.integers(-10**14, 10**14, 300).astype(np.float64), rng.normal(0, 1e6, 300),
                            np.round(rng.normal(0, 100, 300), 2), edges])
    series = [("gpu", f"f{i % 7}", (("gpu", str(i // 7)),)) for i in range(len(mixed))]
    points = [Point(m, f, tags, float(v), 1_700_000_000_000_000_000) for (m, f, tags), v in
              zip(series, mixed.tolist(), strict=True)]
    assert sorted(batch_lines(SinkBatch(1, points), "influxdb2")) == _expected_lines(points, "influxdb2")

# --- remote write ---------------------------------------------------------------------------

def _decode(bodies: Iterable[bytes]) -> list[remote_pb2.TimeSeries]:
    out = []
    for body in bodies:
        out.extend(remote_pb2.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body))).timeseries)
    return out


def _remote(batch: SinkBatch, max_samples: int = 10_000, encoder: RemoteWriteEncoder | None = None,
            **kw: Any) -> list[remote_pb2.TimeSeries]:
    plan = (encoder or RemoteWriteEncoder()).plan(batch, max_samples, **kw)
    return _decode(plan.render(i)[1] for i in range(len(plan.chunks)))


def _bits(v: float) -> int:
    return int.from_bytes(struct.pack("<d", v), "little")


def _as_samples(series: list[remote_pb2.TimeSeries]) -> dict[tuple[Any, ...], int]:
    """(labels, ms) → value bits (so NaN and -0.0 compare exactly); fails on a repeated sample."""
    out: dict[tuple[Any, ...], int] = {}
    for ts in series:
        names = [label.name for label in ts.labels]
        assert names == sorted(names) and len(set(names)) == len(names)
        assert [s.timestamp for s in ts.samples] == sorted(s.timestamp for s in ts.samples)
        labels = tuple((label.name, label.value) for label in ts.labels)
        for s in ts.samples:
            assert (labels, s.timestamp) not in out
            out[labels, s.timestamp] = _bits(s.value)
    return out


def _expected_remote(points: list[Point]) -> dict[tuple[Any, ...], int]:
    out = {}
    for p in points:
        labels = tuple(sorted({**{k: v for k, v in p.tags if v}, "__name__": p.name}.items()))
        out[labels, p.ts_ns // 1_000_000] = _bits(p.value)
    return out


@pytest.mark.parametrize("instants", [1, 3])
def test_remote_write_parses_to_the_samples_given(instants: int) -> None:
    series = [("gpu", f, (("gpu", str(g)), ("model", "H100 80GB"), ("node", "ñode-1"), ("empty", "")))
              for g in range(40) for f in ("temperature_celsius", "power_watts")]
    points = _points(series, [1_700_000_000_000_000_000 + t * 1_000_000_000 for t in range(instants)])
    points += [Point("gpu", "odd", (("gpu", "0"),), v, 1_700_000_000_000_000_000) for v in (math.nan,)]
    points += [Point("gpu", "zero", (("gpu", "0"),), -0.0, 1_700_000_000_000_000_000),
               Point("gpu", "inf", (("gpu", "0"),), math.inf, 1_700_000_000_000_000_000)]
    got = _remote(SinkBatch(1, points), max_samples=37)
    assert _as_samples(got) == _expected_remote(points)


def test_remote_write_uneven_series_split_series_and_duplicates() -> None:
    t0 = 1_700_000_000_000_000_000
    points = [Point("gpu", "power_watts", (("gpu", "0"),), float(i), t0 + i * 1_000_000_000) for i in range(25)]
    points += [Point("gpu", "power_watts", (("gpu", "1"),), 7.0, t0)]
    # Same series and millisecond twice (ns apart): the later one wins.
    points += [Point("gpu", "power_watts", (("gpu", "1"),), 8.0, t0 + 5), Point("gpu", "up", (("gpu", "1"),), 1.0, t0)]
    plan = RemoteWriteEncoder().plan(SinkBatch(1, points), 10)
    assert [end - first for first, end in plan.chunks] == [1, 1, 3]
    got = _decode(plan.render(i)[1] for i in range(len(plan.chunks)))
    assert [len(ts.samples) for ts in got] == [10, 10, 5, 1, 1]  # the 25-sample series split
    expected = _expected_remote(points[:25])
    expected.update(_expected_remote([points[-2], points[-1]]))
    assert _as_samples(got) == expected


def test_remote_write_samples_in_time_order_whatever_the_batch_order() -> None:
    """A series' samples out of order in the batch (a backfill merged in) go out in time order."""
    t0 = 1_700_000_000_000_000_000
    points = [Point("gpu", "power_watts", (("gpu", str(g)),), float(t), t0 + t * 1_000_000_000)
              for t in (5, 1, 4, 2, 3) for g in range(3)]
    got = _remote(SinkBatch(1, points))
    assert [[s.timestamp for s in ts.samples] for ts in got] == [[t0 // 1_000_000 + t * 1000 for t in range(1, 6)]] * 3
    assert _as_samples(got) == _expected_remote(points)


def test_remote_write_timestamps_of_any_varint_length() -> None:
    stamps = [-5_000_000, 0, 1_000_000, 200_000_000_000, 1_700_000_000_000_000_000, 9_000_000_000_000_000_000]
    points = [Point("m", "f", (("s", str(i % 2)),), float(i), ts) for i, ts in enumerate(stamps)]
    assert _as_samples(_remote(SinkBatch(1, points))) == _expected_remote(points)


def test_remote_write_labels_are_cleaned_sorted_and_named() -> None:
    key = SeriesKey("gpu", "power-watts", (("Zone", "a"), ("__name__", "bogus"), ("a.b", "1"), ("a_b", "2"),
                                          ("9lives", "x"), ("empty", ""), ("éte", "ü")))
    ts = remote_pb2.TimeSeries.FromString(series_labels(key))
    assert [(label.name, label.value) for label in ts.labels] == [
        ("Zone", "a"), ("_9lives", "x"), ("__name__", "gpu_power_watts"), ("_te", "ü"), ("a_b", "1")]


def test_remote_write_request_bytes_stay_under_the_byte_limit() -> None:
    long_tags = tuple((f"label_{i}", "v" * 40) for i in range(10))
    points = _points([("gpu", f"f{i}", long_tags) for i in range(200)], [1_700_000_000_000_000_000])
    plan = RemoteWriteEncoder().plan(SinkBatch(1, points), 10_000, max_bytes=20_000)
    sizes = [len(plan.request(first, end)) for first, end in plan.chunks]
    assert len(sizes) > 4 and max(sizes) <= 20_000
    assert _as_samples(_decode(plan.render(i)[1] for i in range(len(plan.chunks)))) == _expected_remote(points)


# --- the column model -----------------------------------------------------------------------

def test_samples_and_batches_check_their_shape() -> None:
    catalog = SeriesCatalog()
    assert catalog.intern(SeriesKey("m", "f", ())) == catalog.intern(SeriesKey("m", "f", ())) == 0
    with pytest.raises(ValueError, match="differ in length"):
        Samples(catalog, np.zeros(2, np.int64), np.zeros(1, np.int64), np.zeros(2))
    with pytest.raises(ValueError, match="outside their catalog of 1"):
        Samples(catalog, np.array([1]), np.zeros(1, np.int64), np.zeros(1))
    points = [Point("m", "f", (), 1.0, 5)]
    with pytest.raises(ValueError, match="points or samples"):
        SinkBatch(1, points, samples=Samples.from_points(points))
    batch = SinkBatch(1, points)
    assert batch.n_points == 1 and batch.columns() is batch.columns() and batch.columns().points() == points
    other = Samples.from_points(points)
    with pytest.raises(ValueError, match="different catalogs"):
        Samples.concat([batch.columns(), other])


def test_spool_columns_decode_like_the_lists() -> None:
    cols = SampleColumns([3, 9, 3], [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002], [1.5, -0.0, 1e300])
    events = [EventRow(1, "gpu.xid", "critical", "m", "a", '{"node": "n"}')]
    body = encode_spool(cols, events)
    sids, ts, vals, evs = decode_spool_columns(body)
    decoded = decode_spool(body)
    assert (sids.tolist(), ts.tolist(), vals.tolist()) == (cols.series_ids, cols.ts_ms, cols.values)
    assert decoded.samples == cols and evs == decoded.events == events



def test_byte_table_holds_items_back_to_back_and_as_objects() -> None:
    table = ByteTable()
    table.extend([b"ab", b"", b"cde"])
    table.extend([])
    assert (bytes(table.blob), table.offsets.view.tolist(), len(table)) == (b"abcde", [0, 2, 2, 5], 3)
    assert table.objects().tolist() == [b"ab", b"", b"cde"]
    table.extend([b"f"])  # the object array grows by the new items only
    assert table.objects().tolist() == [b"ab", b"", b"cde", b"f"]
