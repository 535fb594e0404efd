"""Property-based fuzzing of the parsers a remote party or a device controls (``tests/test_fuzz_*.py``).

The contract every fuzz test checks: arbitrary input gives either a result of the right type with
sane values, or the module's own documented error with a message. Anything else (another
exception, a hang, memory without bound) is a crash; each one found stays as an explicit
regression test next to the property that found it.

Two profiles, chosen by ``FLEETMON_FUZZ``:

- unset / ``fast`` (``make test``): derandomized (the same examples every run), a modest number
  of examples per property, no deadline and no example database, so the suite stays
  deterministic and all fuzz tests together take seconds;
- ``long``: random examples, ``FLEETMON_FUZZ_SCALE`` (default 100) times as many, a per-example
  deadline of ``FLEETMON_FUZZ_DEADLINE`` seconds (default 2: a parser that slows down without
  bound on one input is a hang waiting for a longer input) and a memory bound per call
  (:func:`call`); failures are kept in ``.hypothesis/`` and replayed first on the next long run.
  ``FLEETMON_FUZZ=long pytest tests/test_fuzz_*.py -q -p no:randomly --hypothesis-show-statistics``

Byte and text inputs mostly start from the real captures in ``../shared/fixtures`` and mutate
them (:func:`mutated_text`, :func:`mutated_bytes`): seeded from real data the fuzzer reaches the
deep branches of a decoder that random bytes never pass the first check of.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from agent.codec import SeriesTable, build_batch
from agent.model import Collection, Event, MetricType, Stamped, check_label_name
from collector.config import Limits
from tests.services import REPO

T = TypeVar("T")

PROFILE = os.environ.get("FLEETMON_FUZZ", "fast")
if PROFILE not in ("fast", "long"):
    raise RuntimeError(f"FLEETMON_FUZZ={PROFILE!r}: use 'fast' (the default) or 'long'")
LONG = PROFILE == "long"
SCALE = int(os.environ.get("FLEETMON_FUZZ_SCALE", "100")) if LONG else 1
DEADLINE_S = float(os.environ.get("FLEETMON_FUZZ_DEADLINE", "2"))
#: What one parser call may allocate beyond what it returns (long profile only: tracemalloc
#: slows every call down several times).
MEMORY_BOUND = 64 << 20

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.large_base_example, HealthCheck.function_scoped_fixture]


def fuzz(examples: int = 40) -> settings:
    """The settings of one property: ``examples`` in the fast profile, SCALE times more when long."""
    if LONG:
        return settings(max_examples=examples * SCALE, deadline=timedelta(seconds=DEADLINE_S),
                        database=DirectoryBasedExampleDatabase(str(REPO / ".hypothesis" / "examples")),
                        suppress_health_check=_HEALTH, print_blob=True)
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=_HEALTH, print_blob=True)


# --- the contract ---------------------------------------------------------------------------------


def call(fn: Callable[..., T], *args: Any, errors: tuple[type[BaseException], ...] = (), **kw: Any) -> T | None:
    """``fn(*args)``: its result, or None when it raised one of ``errors`` (with a message).

    Any other exception propagates and fails the property. In the long profile the call must
    also stay within :data:`MEMORY_BOUND` of allocations.
    """
    if not LONG:
        return _call(fn, args, kw, errors)
    if not tracemalloc.is_tracing():
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = _call(fn, args, kw, errors)
    peak = tracemalloc.get_traced_memory()[1] - before
    assert peak <= MEMORY_BOUND, f"{getattr(fn, '__qualname__', fn)} allocated {peak >> 20} MiB on one input"
    return result


def _call(fn: Callable[..., T], args: tuple[Any, ...], kw: dict[str, Any],
          errors: tuple[type[BaseException], ...]) -> T | None:
    try:
        return fn(*args, **kw)
    except errors as err:
        assert str(err).strip(), f"{type(err).__name__} raised without a message"
        return None


def numbers(obj: Any, path: str = "") -> Iterable[tuple[str, float]]:
    """Every float inside ``obj`` (dataclasses, mappings, sequences), with where it is."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, bytes)):
        return
    if isinstance(obj, float):
        yield path, obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from numbers(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{path}[{i}]")


def assert_finite(obj: Any, what: str = "result") -> None:
    """No NaN or infinity anywhere in a parser's result: a value a device cannot have is omitted."""
    for path, value in numbers(obj):
        assert math.isfinite(value), f"{what}{path} = {value}"


_LIMITS = Limits()


def assert_wire_ready(col: Collection, events: Sequence[Event] = (), now: float | None = None) -> None:
    """What a plugin produced is what the collector accepts, and it encodes into a batch.

    The collector refuses a whole batch (every plugin's samples in it) for one NaN, one
    non-finite or negative counter, a label value past ``limits.max_label_value_bytes`` or a
    sample stamped outside its time window (collector/ingest.py); the agent drops a refused
    batch from its WAL, so one bad device value would cost the node's data.
    """
    now = time.time() if now is None else now
    for s in col.samples:
        where = f"{s.name}{s.labels}"
        assert isinstance(s.value, float), f"{where}: value {s.value!r} is not a float"
        assert not math.isnan(s.value), f"{where}: NaN"
        if s.metric.type is MetricType.COUNTER:
            assert math.isfinite(s.value) and s.value >= 0, f"{where}: counter value {s.value}"
        for k, v in s.labels.items():
            assert check_label_name(k), f"{where}: label name {k!r}"
            assert isinstance(v, str), f"{where}: label {k} = {v!r} is not a string"
            assert len(v.encode()) <= _LIMITS.max_label_value_bytes, f"{where}: label {k} is {len(v.encode())} bytes"
        if s.ts is not None:
            assert now - _LIMITS.max_past_seconds <= s.ts <= now + _LIMITS.max_future_seconds, f"{where}: ts {s.ts}"
    for e in events:
        assert 0 < len(e.kind) <= 128, f"event kind {e.kind!r}"
        assert math.isfinite(e.ts), f"event {e.kind} at {e.ts}"
        for k, v in e.labels.items():
            assert check_label_name(k) and isinstance(v, str), f"event {e.kind} label {k!r}={v!r}"
    batch, _ = build_batch(SeriesTable(), [Stamped(now, col)], list(events))
    assert batch.ByteSize() >= 0  # it serialises (strings are UTF-8, timestamps fit int64)


# --- inputs ---------------------------------------------------------------------------------------

#: Tokens that break parsers: numbers at and past type limits, float specials, digits that are
#: not ASCII (``str.isdigit`` says yes, ``int`` says no), separators and quotes.
INTERESTING = (
    "", "0", "-0", "1", "-1", "255", "256", "65535", "65536", "2147483647", "2147483648", "-2147483649",
    "4294967296", "18446744073709551615", "18446744073709551616", "9" * 400, "1" * 4400, "1e308", "1e309",
    "-1e309", "1e-400", "0.0000001", "nan", "NaN", "-nan", "inf", "-inf", "Inf", "Infinity", "0x", "0x0",
    "0xZZ", "0x" + "f" * 40, "²", "١٢٣", "½", "Ⅻ", "𝟗", "1_000", "+1", "--1", "1.2.3", ".5", "5.", "1e", "e5",
    "N/A", "None", "null", "true", "Yes", "On", "Off", "\x00", "\t", " ", " " * 300, ":", "::", ",", ";", "|", "=",
    '"', "'", "\\", "\\\\", "[", "]", "{", "}", "(", ")", "%", "%s", "{{", "}}", "\ufffd", "\u2028", "\r", "\n",
)

_TOKEN = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|0x[0-9a-fA-F]+|\w+|[^\w\s]")

small_text = st.text(max_size=12)


@st.composite
def mutated_text(draw: st.DrawFn, corpus: Sequence[str], ops: int = 4) -> str:
    """A document of ``corpus`` with 1..``ops`` mutations: a token replaced by an interesting or
    random one, text inserted or deleted, lines duplicated, dropped, swapped or spliced in from
    another document, or the whole cut short."""
    text = draw(st.sampled_from(corpus))
    for _ in range(draw(st.integers(1, ops))):
        kind = draw(st.sampled_from(("token", "token", "token", "insert", "delete", "line", "splice", "cut")))
        if kind == "token":
            spans = [m.span() for m in _TOKEN.finditer(text)]
            if spans:
                a, b = spans[draw(st.integers(0, len(spans) - 1))]
                text = text[:a] + draw(st.sampled_from(INTERESTING) | small_text) + text[b:]
        elif kind == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(INTERESTING) | small_text) + text[at:]
        elif kind == "delete" and text:
            a = draw(st.integers(0, len(text) - 1))
            text = text[:a] + text[a + draw(st.integers(1, 64)):]
        elif kind == "line":
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            how = draw(st.sampled_from(("dup", "drop", "swap")))
            if how == "dup":
                lines.insert(j, lines[i])
            elif how == "drop" and len(lines) > 1:
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == "splice":
            other = draw(st.sampled_from(corpus)).split("\n")
            lines = text.split("\n")
            lines.insert(draw(st.integers(0, len(lines))), other[draw(st.integers(0, len(other) - 1))])
            text = "\n".join(lines)
        elif kind == "cut":
            text = text[: draw(st.integers(0, len(text)))]
    return text


def text_input(corpus: Sequence[str], max_size: int = 400) -> st.SearchStrategy[str]:
    """Mostly mutated real captures, sometimes arbitrary text."""
    return st.one_of(mutated_text(corpus), mutated_text(corpus), mutated_text(corpus), st.text(max_size=max_size))


_BYTE_VALUES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
_WORDS = (b"\x7f\xff", b"\x80\x00", b"\xff\xff", b"\x00\x00", b"\x7f\xc0\x00\x00", b"\x7f\x80\x00\x00",
          b"\xff\x80\x00\x00", b"\x7f\x7f\xff\xff", b"\x00\x00\x00\x01")


@st.composite
def mutated_bytes(draw: st.DrawFn, corpus: Sequence[bytes], ops: int = 8) -> bytes:
    """A capture of ``corpus`` with 1..``ops`` mutations: bytes set to edge values or random,
    bits flipped, 16/32-bit fields overwritten with limits and IEEE-754 NaN/infinity patterns,
    bytes inserted or deleted, or the whole cut short (rarely: decoders check lengths first)."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, ops))):
        kind = draw(st.sampled_from(("byte", "byte", "bit", "word", "word", "insert", "delete", "cut")))
        if kind in ("byte", "bit", "word") and not data:
            continue
        if kind == "byte":
            data[draw(st.integers(0, len(data) - 1))] = draw(st.sampled_from(_BYTE_VALUES) | st.integers(0, 255))
        elif kind == "bit":
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word":
            word = draw(st.sampled_from(_WORDS))
            at = draw(st.integers(0, max(0, len(data) - len(word))))
            data[at : at + len(word)] = word
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            a = draw(st.integers(0, len(data) - 1))
            del data[a : a + draw(st.integers(1, 16))]
        elif kind == "cut" and draw(st.integers(0, 3)) == 0:
            data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


#: JSON a device may send: every type, integers past a float's range, NaN and infinities
#: (Python's json reads ``NaN``/``Infinity`` tokens).
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([10**400, -(10**400)])
                | st.floats() | st.text(max_size=12) | st.sampled_from(INTERESTING))


def json_values(keys: Sequence[str] = ()) -> st.SearchStrategy[Any]:
    """Random JSON, its objects keyed by ``keys`` (the names a parser looks up) or random text."""
    names = st.sampled_from(keys) | st.text(max_size=6) if keys else st.text(max_size=6)
    return st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(names, inner, max_size=3), max_leaves=8)


def _slots(doc: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) of a JSON document, depth first."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield doc, k
            yield from _slots(v)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield doc, i
            yield from _slots(v)


@st.composite
def mutated_json(draw: st.DrawFn, docs: Sequence[Any], keys: Sequence[str] = ()) -> Any:
    """A document of ``docs`` with 1..4 of its values replaced (by random JSON, or by another
    value of the same document: type confusion) or removed."""
    doc = copy.deepcopy(draw(st.sampled_from(docs)))
    for _ in range(draw(st.integers(1, 4))):
        slots = list(_slots(doc))
        if not slots:
            break
        box, key = slots[draw(st.integers(0, len(slots) - 1))]
        how = draw(st.sampled_from(("replace", "replace", "swap", "drop")))
        if how == "drop":
            del box[key]
        elif how == "swap":
            other, okey = slots[draw(st.integers(0, len(slots) - 1))]
            box[key] = copy.deepcopy(other[okey])
        else:
            box[key] = draw(json_values(keys))
    return doc


def read_texts(paths: Iterable[Path]) -> list[str]:
    """Captured tool outputs as text (as the agent decodes them: invalid UTF-8 replaced)."""
    out = [p.read_bytes().decode("utf-8", "replace") for p in sorted(paths) if p.is_file()]
    assert out, "no captures found under ../shared/fixtures"
    return out


_HEX_ROW = re.compile(r"^[0-9A-Fa-f]{4}:\s*((?:[0-9A-Fa-f]{2}\s*)+)$")
_TABLE = re.compile(r"^(?:!Index: Table|;Table:)")


def hex_tables(text: str) -> list[bytes]:
    """The tables of an oom hex capture (``!Index: Table …`` / ``;Table: N`` sections of
    ``0000: 11 07 02 FF …`` or ``0000: 4E00F300 …`` rows), each as bytes, in file order."""
    tables: list[bytearray] = []
    for line in text.splitlines():
        if _TABLE.match(line):
            tables.append(bytearray())
            continue
        m = _HEX_ROW.match(line.strip())
        if m and tables:
            tables[-1] += bytes.fromhex(re.sub(r"\s+", "", m.group(1)))
    out = [bytes(t) for t in tables if t]
    assert out, "no hex tables"
    return out
