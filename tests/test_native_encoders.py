"""The C module of the sinks (``collector/storage/_native.c``) refuses input that does not fit,
naming what; ``tests/test_sink_encoders.py`` checks its output against the pure-Python encoders."""

from __future__ import annotations

import numpy as np
import pytest

from collector.storage.lines import format_array
from proto import remote_pb2
from tests.test_sink_encoders import native_module


def test_native_splice_refuses_what_does_not_fit() -> None:
    native = native_module()
    tokens, offsets = b"m f=,g=", np.array([0, 4, 7], np.int64)
    ids, closes, stamps = np.array([0, 1], np.int64), np.array([0, 1], np.uint8), np.array([5], np.int64)
    numbers, whole, text = np.array([1.5, 2.0]), np.array([0, 1], np.uint8), format_array(np.array([1.5]))

    def splice(**change: object) -> bytes:
        args = {"tokens": tokens, "offsets": offsets, "ids": ids, "numbers": numbers, "whole": whole, "text": text,
                "closes": closes, "stamps": stamps, **change}
        return native.splice_lines(*args.values())

    assert splice() == b"m f=1.5,g=2.0 5\n"
    assert splice(whole=np.zeros(2, np.uint8), text=b"[1.5,2e-7]") == b"m f=1.5,g=2e-7 5\n"
    with pytest.raises(ValueError, match="sample 1 names token 7 of 2"):
        splice(ids=np.array([0, 7], np.int64))
    with pytest.raises(ValueError, match="text ends before sample 1 of 2"):
        splice(whole=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="text holds more values than the samples not whole"):
        splice(text=b"[1.5,2.0]")
    with pytest.raises(ValueError, match="sample 0 is marked whole but is not a whole number below 1e15"):
        splice(whole=np.ones(2, np.uint8))
    with pytest.raises(ValueError, match="sample 1 is marked whole"):
        splice(numbers=np.array([1.5, 1e15]))
    with pytest.raises(ValueError, match="1 lines end but 2 stamps"):
        splice(stamps=np.array([5, 6], np.int64))
    with pytest.raises(ValueError, match=r"token 1 spans 4\.\.70 of 7 bytes"):
        splice(offsets=np.array([0, 4, 70], np.int64))
    with pytest.raises(ValueError, match="offsets holds 3 bytes"):
        splice(offsets=b"abc")
    with pytest.raises(ValueError, match="3 numbers, 2 whole and 2 closes for 2 samples"):
        splice(numbers=np.array([1.5, 2.0, 3.0]))


def test_native_write_request_refuses_what_does_not_fit() -> None:
    native = native_module()
    labels, offsets = b"\x0a\x00", np.array([0, 2], np.int64)
    one = np.array([0], np.int64)
    got = remote_pb2.WriteRequest.FromString(
        native.write_request(labels, offsets, np.array([0], np.int64), one, np.array([2.5]), np.array([-1], np.int64)))
    assert [(s.value, s.timestamp) for s in got.timeseries[0].samples] == [(2.5, -1)]
    with pytest.raises(ValueError, match="TimeSeries 0 names series 3, not one of the 1 given"):
        native.write_request(labels, offsets, np.array([3], np.int64), one, np.array([2.5]), one)
    with pytest.raises(ValueError, match="the first TimeSeries must start at sample 0"):
        native.write_request(labels, offsets, one, np.array([1], np.int64), np.array([2.5]), one)
    with pytest.raises(ValueError, match="series/starts or values/stamps differ in length"):
        native.write_request(labels, offsets, one, one, np.array([2.5, 3.5]), one)
    with pytest.raises(ValueError, match=r"TimeSeries 0 spans samples 0\.\.3 of 2"):
        native.write_request(labels, offsets, np.array([0, 0], np.int64), np.array([0, 3], np.int64),
                             np.array([2.5, 3.5]), np.array([1, 2], np.int64))


def test_native_series_order_is_a_stable_grouping_and_checks_ids() -> None:
    native = native_module()
    ids = np.array([2, 0, 2, 1, 0, 2], np.int64)
    assert np.frombuffer(native.series_order(ids, 3), np.int64).tolist() == [1, 4, 3, 0, 2, 5]
    assert native.series_order(np.empty(0, np.int64), 0) == b""
    with pytest.raises(ValueError, match="sample 0 names series 2 of 2"):
        native.series_order(ids, 2)
    with pytest.raises(ValueError, match="n_series is negative"):
        native.series_order(ids, -1)
