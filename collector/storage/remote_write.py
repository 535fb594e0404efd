"""Prometheus remote write sink: snappy-compressed protobuf POSTed to a receiver.

The protocol (Remote-Write 1.0, schema in ``proto/remote.proto``) is what VictoriaMetrics (single
``/api/v1/write``, cluster ``/insert/<tenant>/prometheus/api/v1/write``), vmagent, Prometheus
(``/api/v1/write`` with ``--web.enable-remote-write-receiver``), Mimir, Cortex and Thanos Receive
accept. Each series is ``__name__`` = ``<measurement>_<field>`` plus its tags; events, being
strings, are not sent (their counter series, e.g. ``gpu_xid_errors_total``, are).

Encoding is vectorised like the line-protocol sinks' (:mod:`collector.storage.lines`): each
series' labels are encoded to protobuf bytes once per catalog and kept in one byte array; the
batch is sorted by series and time with numpy, and each request assembled by the C module
(``_native.c``: per TimeSeries its header, labels and samples, ~20 M samples per CPU-second with
snappy) or, where it was not built, by numpy (the samples as a byte matrix, each series' header
computed over the whole chunk, one ``bytes.join``: 9.8 M). ``tests/test_sink_encoders.py`` checks
the bytes parse, through the generated ``proto/remote_pb2.py``, to exactly the series and samples
given, both ways; ``tests/test_fuzz_sink_encoders.py`` that the two give the same bytes.

What the specification asks of a sender, and where it is done here:

* labels sorted by name, no duplicate names, no empty names or values; names match
  ``[a-zA-Z_][a-zA-Z0-9_]*`` (metric names may also hold ``:``). Tags with an empty value are
  left out; characters outside those sets become ``_`` (a leading digit gets a ``_`` in front),
  as Prometheus' own exporters do, because Mimir/Cortex/Prometheus refuse the whole request
  otherwise;
* samples of a series in timestamp order (the chunk is sorted by series, then time); two samples of
  one series and millisecond: the later one wins;
* ``Content-Encoding: snappy`` (block format, not framed), ``Content-Type:
  application/x-protobuf``, ``X-Prometheus-Remote-Write-Version: 0.1.0``;
* retry on 5xx and 429 (honouring Retry-After), never on other 4xx: :func:`classify`.

Retries and back-off are the spool's (:mod:`collector.storage.retry`); receivers de-duplicate
identical (series, timestamp) samples, so sending a batch again stores nothing twice.
"""

from __future__ import annotations

import re
import struct
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import cramjam
import numpy as np
import numpy.typing as npt

from collector.errors import SinkError
from collector.storage.base import Int64Array, SeriesCatalog, SeriesKey, SinkBatch, Tags
from collector.storage.columnar import TABLE_SLICE, ByteTable, Grow, last_of_runs, rank, stable_order
from collector.storage.http_sink import HttpEndpointConfig, NamedSink
from collector.storage.poster import ChunkPoster, basic_authorization
from collector.storage.retry import MAX_BYTES, cut_chunks, http_error
from fleetmon_common.secrets import Secret, redact_url, reveal

try:  # built from _native.c by `pip install` where a C compiler is present (pyproject.toml)
    from collector.storage import _native
except ImportError:  # the same bytes from numpy: ~4x slower to assemble
    _native = None  # type: ignore[assignment]

#: Samples in one request by default. Prometheus sends 2,000 (``max_samples_per_send``); a
#: collector drains a spool, so larger requests cost the receiver less per sample.
DEFAULT_SAMPLES = 10_000
MAX_SAMPLES = 100_000
#: Headers the sink sets itself; ``headers`` in the config may not replace them.
_OWN_HEADERS = frozenset({"content-encoding", "content-type", "x-prometheus-remote-write-version",
                          "content-length", "authorization"})
_HINTS = {
    400: "the receiver refused the data (label names, out-of-order or too old samples?)",
    401: "check the credentials (username/password or bearer token)",
    403: "check the credentials' write permission",
    404: "is the url the receiver's write endpoint (VictoriaMetrics: /api/v1/write)?",
    413: "the receiver's request size limit is below one request; lower batch_size",
}

_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")
_METRIC_BAD = re.compile(r"[^a-zA-Z0-9_:]")


@dataclass
class RemoteWriteConfig(HttpEndpointConfig):
    """``url`` is the receiver's write endpoint itself (``http://vm:8428/api/v1/write``)."""

    batch_size: int = DEFAULT_SAMPLES  # samples per request
    # Extra request headers, e.g. the tenant: X-Scope-OrgID (Mimir, Cortex), THANOS-TENANT.
    headers: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    # Never logged, never in repr; prefer the *_env keys so the YAML file holds no secret.
    password: str | Secret | None = field(default=None, repr=False)  # or {env: NAME} / {file: PATH}
    password_env: str | None = None
    bearer_token: str | Secret | None = field(default=None, repr=False)  # or {env: NAME} / {file: PATH}
    bearer_token_env: str | None = None
    name: str = "remote_write"

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.batch_size <= MAX_SAMPLES:
            raise ValueError(f"batch_size must be 1..{MAX_SAMPLES} samples, got {self.batch_size}")
        if self.password and self.password_env:
            raise ValueError("give password or password_env, not both")
        if self.bearer_token and self.bearer_token_env:
            raise ValueError("give bearer_token or bearer_token_env, not both")
        if self.username is not None and (self.bearer_token or self.bearer_token_env):
            raise ValueError("give username/password or a bearer token, not both")
        for key in self.headers:
            if key.lower() in _OWN_HEADERS:
                raise ValueError(f"headers: {key!r} is set by the sink itself")

    def auth_header(self) -> str | None:
        """The Authorization header: a bearer token, or Basic for username/password, or none."""
        if self.username is not None:
            password = reveal(self.password)
            if self.password_env:
                password = self.secret_from_env(self.password_env, "password_env")
            return basic_authorization(self.username, password or "")
        token = reveal(self.bearer_token)
        if self.bearer_token_env:
            token = self.secret_from_env(self.bearer_token_env, "bearer_token_env")
        return f"Bearer {token}" if token else None


# --- protobuf by hand (proto/remote.proto) ---------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: the tag byte (field number << 3 | 2), the length, the bytes."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def label_name(name: str) -> str:
    name = _LABEL_BAD.sub("_", name)
    return "_" + name if name[:1].isdigit() else name


def metric_name(key: SeriesKey) -> str:
    name = _METRIC_BAD.sub("_", key.name)
    return "_" + name if name[:1].isdigit() else name


def series_labels(key: SeriesKey, groups: dict[Tags, tuple[bytes, bytes]] | None = None,
                  names: dict[str, bytes] | None = None) -> bytes:
    """The ``labels`` fields (1) of a TimeSeries: ``__name__`` and the tags, sorted by name.

    ``groups`` remembers, per tag set, the encoded labels that sort before ``__name__`` and those
    after it, and ``names`` each encoded ``__name__``: a device's tags recur in each of its
    series and a name in every device, so a catalog's labels cost two lookups and two
    concatenations per series.
    """
    groups = {} if groups is None else groups
    names = {} if names is None else names
    metric = names.get(key.name)
    if metric is None:
        metric = names[key.name] = _label("__name__", metric_name(key))
    around = groups.get(key.tags)
    if around is None:
        labels: dict[str, str] = {}
        for tag, value in key.tags:
            name = label_name(tag)
            if name and value and name != "__name__":
                labels.setdefault(name, value)  # two tags that clean up to one name: the first stays
        ordered = sorted(labels)  # code point order: the byte order of their UTF-8 the spec asks for
        before = b"".join(_label(n, labels[n]) for n in ordered if n < "__name__")
        after = b"".join(_label(n, labels[n]) for n in ordered if n > "__name__")
        around = groups[key.tags] = (before, after)
    return around[0] + metric + around[1]


def _label(name: str, value: str) -> bytes:
    return _field(0x0A, _field(0x0A, name.encode()) + _field(0x12, value.encode()))


def _varint_columns(x: npt.NDArray[np.uint64], width: int) -> npt.NDArray[np.uint8]:
    """Values whose varints are all ``width`` bytes long, as an (n, width) byte matrix."""
    groups = (x[:, None] >> (np.arange(width, dtype=np.uint64) * np.uint64(7))) & np.uint64(0x7F)
    out = groups.astype(np.uint8)
    out[:, :-1] |= 0x80  # every byte but the last has the top bit set
    return out


def _varint_len(x: int) -> int:
    return max(1, (x.bit_length() + 6) // 7) if x >= 0 else 10


class _Labels:
    """For one catalog, by series id: the encoded labels (``table``, one buffer) and their length,
    and, for the numpy path, the series' last TimeSeries prefix (``0a <len>`` + labels) with the
    body length it was made for: a series usually brings as many samples every time, so its
    prefix is made once, not per request."""

    def __init__(self) -> None:
        self.table = ByteTable()
        self.length = Grow(np.int64)
        self.prefix = Grow(object)
        self.prefix_body = Grow(np.int64)
        self._groups: dict[Tags, tuple[bytes, bytes]] = {}
        self._names: dict[str, bytes] = {}

    def update(self, catalog: SeriesCatalog) -> None:
        for start in range(len(self.table), len(catalog), TABLE_SLICE):
            encoded = [series_labels(key, self._groups, self._names)
                       for key in catalog.keys[start:start + TABLE_SLICE]]
            if len(self._groups) + len(self._names) > 1_000_000:
                self._groups.clear()
                self._names.clear()
            self.table.extend(encoded)
            self.length.extend([len(e) for e in encoded])
            self.prefix.extend([b""] * len(encoded))
            self.prefix_body.extend([-1] * len(encoded))


_HEADS: dict[int, bytes] = {}


def _heads(body_len: Int64Array) -> np.ndarray:
    """``0a <varint len>`` for each body length, as an object array (few distinct lengths)."""
    lens, which = np.unique(body_len, return_inverse=True)
    table = np.empty(len(lens), object)
    for i, length in enumerate(lens.tolist()):
        head = _HEADS.get(length)
        if head is None:
            if len(_HEADS) > 100_000:
                _HEADS.clear()
            head = _HEADS[length] = b"\x0a" + _varint(length)
        table[i] = head
    return table[which.reshape(-1)]


@dataclass
class WritePlan:
    """A batch sorted by series and time and cut into requests; :meth:`render` makes one."""

    labels: _Labels
    ts_ms: Int64Array
    values: npt.NDArray[np.float64]
    instant: Int64Array  # each sample's index into stamps
    stamps: npt.NDArray[np.uint8] | None  # each distinct timestamp's varint, when all are as long
    seg_starts: Int64Array  # sample positions where a TimeSeries opens
    seg_series: Int64Array  # its catalog id
    chunks: list[tuple[int, int]]  # (first, end) TimeSeries

    @property
    def n_series(self) -> int:
        return len(self.seg_starts)

    def render(self, chunk: int) -> tuple[int, bytes]:
        """(TimeSeries in it, snappy-compressed WriteRequest) of one request."""
        first, end = self.chunks[chunk]
        return end - first, cramjam.snappy.compress_raw(self.request(first, end)).read()

    def request(self, first: int, end: int) -> bytes:
        """The uncompressed WriteRequest of TimeSeries ``first``..``end - 1``."""
        a = int(self.seg_starts[first])
        b = int(self.seg_starts[end]) if end < self.n_series else len(self.values)
        if _native is not None:
            table = self.labels.table
            return _native.write_request(table.blob, table.offsets.view, self.seg_series[first:end],
                                         self.seg_starts[first:end] - a, self.values[a:b], self.ts_ms[a:b])
        if self.stamps is None:
            return self._request_slow(first, end, b)
        n, width = b - a, self.stamps.shape[1]
        # A sample: TimeSeries.samples (field 2) holding Sample{value (1, double), timestamp (2,
        # varint)}, i.e. 12 <len> 09 <8 bytes little-endian> 10 <varint>: fixed width here.
        rec = np.empty((n, 12 + width), np.uint8)
        rec[:, 0] = 0x12
        rec[:, 1] = 10 + width
        rec[:, 2] = 0x09
        rec[:, 3:11] = np.ascontiguousarray(self.values[a:b], "<f8").view(np.uint8).reshape(n, 8)
        rec[:, 11] = 0x10
        rec[:, 12:] = self.stamps[self.instant[a:b]]
        # A series: WriteRequest.timeseries (field 1) = 0a <len> <labels> <samples>; the prefix
        # (0a <len> <labels>) is remembered per series, and one bytes.join makes the request.
        starts = self.seg_starts[first:end] - a
        counts = np.diff(np.append(starts, n))
        series = self.seg_series[first:end]
        labels = self.labels
        body_len = labels.length.view[series] + counts * (12 + width)
        prefixes = labels.prefix.view[series]
        stale = labels.prefix_body.view[series] != body_len
        if stale.any():
            fresh = _heads(body_len[stale]) + labels.table.objects()[series[stale]]
            prefixes[stale] = fresh
            labels.prefix.data[series[stale]] = fresh
            labels.prefix_body.data[series[stale]] = body_len[stale]
        k = len(series)
        parts: list[bytes | memoryview] = [b""] * (2 * k)
        parts[0::2] = prefixes.tolist()
        if bool(np.all(counts == counts[0])):  # every series with as many samples: one view
            row = int(counts[0]) * (12 + width)
            parts[1::2] = rec.reshape(k, row).view(f"V{row}").ravel().tolist()
        else:
            blob = memoryview(rec.tobytes())
            offsets = (np.append(starts, n) * (12 + width)).tolist()
            parts[1::2] = [blob[offsets[i]:offsets[i + 1]] for i in range(k)]
        return b"".join(parts)

    def _request_slow(self, first: int, end: int, stop: int) -> bytes:
        """Timestamps of different varint lengths (before 1971, after 2109, or negative): one
        sample at a time."""
        out = bytearray()
        bounds = [*self.seg_starts[first:end].tolist(), stop]
        series = self.seg_series[first:end].tolist()
        for i, sid in enumerate(series):
            body = bytearray(self.labels.table.objects()[sid])
            for j in range(bounds[i], bounds[i + 1]):
                stamp = int(self.ts_ms[j]) & 0xFFFF_FFFF_FFFF_FFFF  # int64 as protobuf's varint
                sample = b"\x09" + struct.pack("<d", float(self.values[j])) + b"\x10" + _varint(stamp)
                body += _field(0x12, sample)
            out += _field(0x0A, bytes(body))
        return bytes(out)


def _by_series(sid: Int64Array, ts: Int64Array, values: npt.NDArray[np.float64],
               n_series: int) -> tuple[Int64Array, Int64Array, npt.NDArray[np.float64]]:
    """The samples sorted by series, then time: a counting sort by series (C, O(n)), which keeps
    each series' samples in batch order; that is time order unless a series' samples came out of
    order (a backfill), and then a full sort by series and time."""
    order = np.frombuffer(_native.series_order(sid, n_series), np.int64)
    sid, ts = sid[order], ts[order]
    if len(ts) > 1 and not bool(np.all((ts[1:] >= ts[:-1]) | (sid[1:] != sid[:-1]))):
        again, _ = stable_order([sid, rank(ts)[0]], [n_series, len(ts)])
        order, sid, ts = order[again], sid[again], ts[again]
    return sid, ts, values[order]


class RemoteWriteEncoder:
    """Plans and renders WriteRequests for :class:`Samples`; one per sink (it caches per catalog)."""

    def __init__(self) -> None:
        self._labels: weakref.WeakKeyDictionary[SeriesCatalog, _Labels] = weakref.WeakKeyDictionary()

    def labels_for(self, catalog: SeriesCatalog) -> _Labels:
        labels = self._labels.get(catalog)
        if labels is None:
            labels = self._labels[catalog] = _Labels()
        labels.update(catalog)
        return labels

    def plan(self, batch: SinkBatch, max_samples: int, max_bytes: int = MAX_BYTES) -> WritePlan:
        samples = batch.columns()
        labels = self.labels_for(samples.catalog)
        sid = samples.series
        ts = samples.ts_ns // 1_000_000  # the protocol's timestamps are milliseconds
        if _native is not None:
            sid, ts, vals = _by_series(sid, ts, samples.values, len(samples.catalog))
            instant = distinct = np.empty(0, np.int64)  # (the native encoder writes timestamps itself)
        else:
            instant, n_instants = rank(ts)
            distinct = np.empty(n_instants, np.int64)
            distinct[instant] = ts
            order, _ = stable_order([sid, instant], [len(samples.catalog), n_instants])
            sid, ts, vals, instant = sid[order], ts[order], samples.values[order], instant[order]
        last = last_of_runs(sid, ts)  # two samples of one series and millisecond: the later wins
        if not last.all():
            sid, ts, vals = sid[last], ts[last], vals[last]
            if len(instant):
                instant = instant[last]
        n = len(sid)
        opens = np.ones(n, bool)
        if n > 1:
            opens[1:] = sid[1:] != sid[:-1]
        seg_starts = np.flatnonzero(opens)
        counts = np.diff(np.append(seg_starts, n))
        if n and int(counts.max()) > max_samples:
            # A series with more samples than a request holds is split into several TimeSeries.
            pos = np.arange(n)
            run_start = np.maximum.accumulate(np.where(opens, pos, 0))
            opens |= (pos - run_start) % max_samples == 0
            seg_starts = np.flatnonzero(opens)
            counts = np.diff(np.append(seg_starts, n))
        seg_series = sid[seg_starts]
        # An upper bound of each TimeSeries' bytes: header, labels, 22 bytes per sample.
        seg_bytes = 11 + labels.length.view[seg_series] + 22 * counts
        chunks = cut_chunks(np.cumsum(counts), np.cumsum(seg_bytes), max_samples, max_bytes)
        # The distinct timestamps (a batch holds few instants) as varints, once per batch.
        stamps = None
        if _native is None and n and int(distinct.min()) >= 0:  # the native encoder writes varints itself
            width = _varint_len(int(distinct.min()))
            if _varint_len(int(distinct.max())) == width:
                stamps = _varint_columns(distinct.astype(np.uint64), width)
        return WritePlan(labels, ts, vals, instant, stamps, seg_starts, seg_series, chunks)


def classify(sink: str, status: int, headers: Mapping[str, str], body: bytes, url: str) -> SinkError:
    """The SinkError for a non-2xx answer: 5xx and 429 are retried (the spec's MUST and MAY),
    other 4xx are not."""
    err = http_error(sink, status, headers=headers, body=body, chunk="", url=url, hints=_HINTS)
    if status >= 500 and not err.retryable:
        return SinkError(str(err), retryable=True)
    return err


class RemoteWriteSink(NamedSink):
    Config = RemoteWriteConfig

    def __init__(self, config: RemoteWriteConfig) -> None:
        super().__init__(config)
        self.config = config
        self._encoder = RemoteWriteEncoder()

    async def start(self) -> None:
        if self._poster is not None:
            return
        # No network I/O here: a collector starts (and spools) while the receiver is away.
        headers = {"User-Agent": "fleetmon-collector", **self.config.headers,
                   "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                   "X-Prometheus-Remote-Write-Version": "0.1.0"}
        if (auth := self.config.auth_header()) is not None:
            headers["Authorization"] = auth
        self._poster = ChunkPoster(self._health, self.config.url, headers=headers, timeout=self.config.timeout,
                                   verify=self.config.ssl_verify(), refusal=self._refused)

    async def aclose(self) -> None:
        self._close_poster()

    def _refused(self, status: int, headers: Mapping[str, str], body: bytes, _chunk: bytes) -> SinkError:
        return classify(self.name, status, headers, body, redact_url(self.config.url))

    def _post_batch(self, poster: ChunkPoster, batch: SinkBatch) -> tuple[int, int]:
        plan = self._encoder.plan(batch, self.config.batch_size)
        poster.post_all(len(plan.chunks), lambda i: (b"", plan.render(i)[1]))
        return plan.n_series, 0  # events carry strings, which the protocol cannot: none are written
