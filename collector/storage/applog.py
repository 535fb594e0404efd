"""The collector's append log: received batches, durable before they are acked.

Files ``NNNNNNNN.log`` in one folder, written front to back and never rewritten. A record is
``u32 length, u32 crc32, payload``; a position is ``file number << 40 | offset``. A process that
opens the log for writing starts a new file, so a torn record (power loss mid-write) can only
end a file: readers stop a file at the first record whose length or CRC does not check out
and go on with the next file.

Group commit: :class:`GroupCommit` writes whatever records are waiting with one ``write`` and
makes them durable with one ``fdatasync``, from its own thread; while it syncs, the next group
gathers. An agent's batch is acked when its record's future resolves — acked means durable.

Payloads (first byte is the kind) carry what the collector must remember: BATCH (node,
sequence, blocks of series ids and values, events), SERIES (definitions), NODE (a new agent
WAL, or sequences the agent gave up). ``collector/storage/blocks.py`` keeps the samples.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collector.errors import StoreError
from collector.storage.codec import Block

_FRAME = struct.Struct("<II")
FRAME_BYTES = _FRAME.size  # length and CRC before each payload
_FILE_SHIFT = 40
BATCH, SERIES, NODE = 1, 2, 3


class LogError(StoreError):
    """The append log cannot be written (disk full, I/O error) or a record cannot be decoded."""


def position(file_no: int, offset: int) -> int:
    return file_no << _FILE_SHIFT | offset


def split_position(pos: int) -> tuple[int, int]:
    return pos >> _FILE_SHIFT, pos & ((1 << _FILE_SHIFT) - 1)


def log_files(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.glob("*.log"):
        if p.stem.isdigit():
            out.append((int(p.stem), p))
    return sorted(out)


class AppendLog:
    """The writing end: one open file, rotated past ``file_bytes``."""

    def __init__(self, folder: Path, file_bytes: int = 64 << 20) -> None:
        self.folder = folder
        self.file_bytes = file_bytes
        folder.mkdir(parents=True, exist_ok=True)
        existing = log_files(folder)
        self._no = existing[-1][0] + 1 if existing else 1
        self._fd = -1
        self._offset = 0
        self._open()

    def _open(self) -> None:
        path = self.folder / f"{self._no:08d}.log"
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
            dfd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dfd)  # the new file's name must survive a crash too
            finally:
                os.close(dfd)
        except OSError as err:
            raise LogError(f"append log {path}: cannot create: {err.strerror}") from err
        self._offset = 0

    @property
    def file_no(self) -> int:
        return self._no

    def write(self, payloads: Sequence[bytes]) -> list[int]:
        """Append records (not yet durable: see ``sync``); returns their positions."""
        if self._offset >= self.file_bytes:
            self.sync()
            os.close(self._fd)
            self._no += 1
            self._open()
        positions = []
        chunks = []
        off = self._offset
        for p in payloads:
            positions.append(position(self._no, off))
            chunks.append(_FRAME.pack(len(p), zlib.crc32(p)))
            chunks.append(p)
            off += _FRAME.size + len(p)
        data = b"".join(chunks)
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as err:
            raise LogError(f"append log {self.folder}: write failed: {err.strerror}") from err
        self._offset = off
        return positions

    def sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as err:
            raise LogError(f"append log {self.folder}: fdatasync failed: {err.strerror}") from err

    def end(self) -> int:
        return position(self._no, self._offset)

    def delete_before(self, pos: int) -> int:
        """Remove whole files that end before ``pos`` (never the open one). Returns bytes freed."""
        file_no, _ = split_position(pos)
        freed = 0
        for no, p in log_files(self.folder):
            if no >= min(file_no, self._no):
                break
            freed += p.stat().st_size
            p.unlink()
        return freed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class GroupCommit:
    """Durable appends from many coroutines, one ``fdatasync`` per group, on its own thread."""

    def __init__(self, log: AppendLog, max_group_bytes: int = 32 << 20) -> None:
        self.log = log
        self.max_group_bytes = max_group_bytes
        self._cv = threading.Condition()
        self._queue: list[tuple[bytes, concurrent.futures.Future[int]]] = []
        self._closed = False
        self.groups = 0
        self.records = 0
        self._thread = threading.Thread(target=self._run, name="fleetmon-applog", daemon=True)
        self._thread.start()

    def submit(self, payload: bytes) -> concurrent.futures.Future[int]:
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        with self._cv:
            if self._closed:
                raise LogError("append log closed")
            self._queue.append((payload, fut))
            self._cv.notify()
        return fut

    async def append(self, payload: bytes) -> int:
        """Append and wait until durable; the record's position."""
        return await asyncio.wrap_future(self.submit(payload))

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue and self._closed:
                    return
                group: list[tuple[bytes, concurrent.futures.Future[int]]] = []
                size = 0
                while self._queue and (not group or size + len(self._queue[0][0]) <= self.max_group_bytes):
                    item = self._queue.pop(0)
                    group.append(item)
                    size += len(item[0])
            try:
                positions = self.log.write([p for p, _ in group])
                self.log.sync()
            except LogError as err:
                for _, fut in group:
                    fut.set_exception(err)
                continue
            self.groups += 1
            self.records += len(group)
            for (_, fut), pos in zip(group, positions, strict=True):
                fut.set_result(pos)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        self.log.close()


def read(folder: Path, start: int = 0, kinds: frozenset[int] | None = None) -> Iterator[tuple[int, bytes]]:
    """(position, payload) of every intact record at or after ``start``, in log order. A record
    that does not check out ends its file (a torn write); the next file goes on. With ``kinds``,
    other records are skipped unread (their CRC unchecked: a torn one still ends the file)."""
    s_file, s_off = split_position(start)
    for no, path in log_files(folder):
        if no < s_file:
            continue
        try:
            f = path.open("rb")
        except FileNotFoundError:
            continue  # removed by retention meanwhile
        with f:
            size = os.fstat(f.fileno()).st_size
            off = s_off if no == s_file else 0
            f.seek(off)
            while True:
                head = f.read(_FRAME.size + 1)
                if len(head) < _FRAME.size + 1:
                    break
                length, crc = _FRAME.unpack_from(head)
                if off + _FRAME.size + length > size or length == 0:
                    break
                if kinds is not None and head[_FRAME.size] not in kinds:
                    f.seek(length - 1, os.SEEK_CUR)
                    off += _FRAME.size + length
                    continue
                payload = head[_FRAME.size:] + f.read(length - 1)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break
                yield position(no, off), payload
                off += _FRAME.size + length


# --- payloads ------------------------------------------------------------------------------------
# BATCH: kind, node length, sequence, the node's contiguous sequence after it, blocks, events
# length, meta length; then the node name, the events (JSON), meta (JSON: the node's sequence
# update), and per block: ts, count, u32 ids, f64 values.
_BATCH = struct.Struct("<BHQQIII")
_BLOCK = struct.Struct("<qI")


@dataclass
class BatchRecord:
    node: str
    seq: int
    contiguous: int
    blocks: list[Block]
    events: list[list[Any]]
    meta: dict[str, Any]


def encode_batch(node: str, seq: int, blocks: Sequence[Block], events: Sequence[Sequence[Any]] = (), *,
                 contiguous: int = 0, meta: dict[str, Any] | None = None) -> bytes:
    name = node.encode()
    ev = json.dumps([list(e) for e in events]).encode() if events else b""
    mj = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
    parts = [_BATCH.pack(BATCH, len(name), seq, contiguous, len(blocks), len(ev), len(mj)), name, ev, mj]
    for b in blocks:
        parts.append(_BLOCK.pack(b.ts_ms, len(b.sids)))
        parts.append(b.sids.astype("<u4").tobytes())
        parts.append(b.values.astype("<f8").tobytes())
    return b"".join(parts)


def batch_header(payload: bytes) -> tuple[str, int, int]:
    """(node, sequence, contiguous) of a batch record, without decoding its blocks."""
    try:
        _k, nlen, seq, contiguous, _n, _e, _m = _BATCH.unpack_from(payload)
        return payload[_BATCH.size:_BATCH.size + nlen].decode(), seq, contiguous
    except (struct.error, UnicodeDecodeError) as err:
        raise LogError(f"corrupt batch record: {err}") from err


def decode_batch(payload: bytes, blocks: bool = True) -> BatchRecord:
    """The record; without its blocks (``blocks=False``) when only the rest is wanted."""
    try:
        kind, nlen, seq, contiguous, nblocks, evlen, mlen = _BATCH.unpack_from(payload)
        if kind != BATCH:
            raise LogError(f"record kind {kind} is not a batch")
        pos = _BATCH.size
        node = payload[pos:pos + nlen].decode()
        pos += nlen
        events = json.loads(payload[pos:pos + evlen]) if evlen else []
        pos += evlen
        meta = json.loads(payload[pos:pos + mlen]) if mlen else {}
        pos += mlen
        out: list[Block] = []
        for _ in range(nblocks if blocks else 0):
            ts, n = _BLOCK.unpack_from(payload, pos)
            pos += _BLOCK.size
            sids = np.frombuffer(payload, "<u4", n, pos).astype(np.int64)
            pos += 4 * n
            vals = np.frombuffer(payload, "<f8", n, pos).astype(np.float64)
            pos += 8 * n
            out.append(Block(ts, sids, vals))
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise LogError(f"corrupt batch record: {err}") from err
    return BatchRecord(node, seq, contiguous, out, events, meta)


def encode_json(kind: int, body: Any) -> bytes:
    """SERIES and NODE records: small and rare, JSON is enough."""
    return bytes([kind]) + json.dumps(body, separators=(",", ":")).encode()


def decode_json(payload: bytes) -> Any:
    try:
        return json.loads(payload[1:])
    except ValueError as err:
        raise LogError(f"corrupt record of kind {payload[:1]!r}: {err}") from err


def kind(payload: bytes) -> int:
    return payload[0] if payload else 0
