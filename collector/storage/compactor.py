"""The compactor: tails the append log into the block store, on a core of its own.

It runs as a child process of the collector (``python -m collector.storage.compactor``), so
encoding, merging and retention never take the ingest process's GIL; it exits when its parent
does. :class:`Compactor` is also usable in a thread (tests, small installs).

Its restart point is ``compactor_low`` in the store's meta table: the oldest log position any
head still held at the last flush. Records a node already flushed (position ≤ ``flushed``)
are skipped on replay, so a crash between two steps costs re-reading, never a duplicate.
Log files are deleted once they are below every reader's position: the compactor's, the
ingest side's node checkpoint (``nodes_pos``), and each configured sink's cursor.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from collector.storage import applog
from collector.storage.blocks import BlockStore
from collector.storage.logstore import LOG_DIR, STORE_FILE
from fleetmon_common.memory import Trimmer, limit_arenas

log = logging.getLogger("fleetmon.collector.compactor")


class Compactor:
    # Heads are flushed after 30 s: a minute of them held ~0.2 GB at 2,500 nodes (README,
    # "Capacity of one collector"); level-1 segments, made once the hour closed, are the same.
    def __init__(self, data_dir: Path, retention_s: float = 30 * 86400, *, flush_s: float = 30.0,
                 window_s: float = 3600.0) -> None:
        self.data_dir = data_dir
        self.folder = data_dir / LOG_DIR
        self.store = BlockStore(data_dir / STORE_FILE, retention_s=retention_s, flush_s=flush_s, window_s=window_s)
        self.flushed = self.store.flushed_positions()
        low = self.store.get_meta("compactor_low")
        self.next = int(low) if low else 0
        self.records = 0
        self._next_compact = 0.0
        self._next_retention = 0.0

    def poll(self, max_records: int = 2000) -> int:
        """Read up to ``max_records`` new log records into the heads."""
        n = 0
        series: list[tuple[int, str, str, str, str, str, int, str]] = []
        for pos, payload in applog.read(self.folder, self.next):
            self.next = pos + applog.FRAME_BYTES + len(payload)
            n += 1
            if applog.kind(payload) == applog.SERIES:
                series.extend(tuple(r) for r in applog.decode_json(payload)["series"])
            elif applog.kind(payload) == applog.BATCH:
                node, _seq, _c = applog.batch_header(payload)
                if node and pos > self.flushed.get(node, -1):  # node "": a migrated spool batch
                    rec = applog.decode_batch(payload)
                    self.store.append(node, rec.blocks, pos)
            if n >= max_records:
                break
        if series:  # before compactor_low moves past their records
            self.store.insert_series(series)
        self.records += n
        return n

    def maintain(self, now: float | None = None, force_flush: bool = False) -> None:
        now = time.time() if now is None else now
        if self.store.flush(now, force=force_flush):
            self.flushed = self.store.flushed_positions()
        low = self.store.oldest_head_position()
        self.store.set_meta("compactor_low", str(self.next if low is None else low))
        if now >= self._next_compact:
            before = self.store.stats.duplicates
            self.store.compact(now)
            self._next_compact = now + 60
            if self.store.stats.duplicates != before:
                # Same (series, ts) in segments stored apart (the later dropped at the merge):
                # the ingest side adds these to the duplicates it caught itself.
                total = int(self.store.get_meta("duplicates") or 0) + self.store.stats.duplicates - before
                self.store.set_meta("duplicates", str(total))
        if now >= self._next_retention:
            self.store.apply_retention(now)
            self._delete_log_files()
            self._next_retention = now + 60

    def _delete_log_files(self) -> None:
        marks = [self.store.get_meta("compactor_low"), self.store.get_meta("nodes_pos")]
        sinks = json.loads(self.store.get_meta("sinks") or "[]")
        with self.store.lock:
            cursors = dict(self.store._db.execute("SELECT sink, spool_id FROM sink_cursor").fetchall()) \
                if self.store._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sink_cursor'").fetchone() else {}
        marks += [cursors.get(s, 0) for s in sinks]
        if any(m is None for m in marks):
            return  # the ingest side has not checkpointed yet: keep everything
        low_file, _ = applog.split_position(min(int(m) for m in marks if m is not None))
        files = applog.log_files(self.folder)
        for no, path in files[:-1]:  # never the newest: it may be the one being written
            if no >= low_file:
                break
            path.unlink(missing_ok=True)

    def run(self, stop: threading.Event, parent: int | None = None) -> None:
        trimmer = Trimmer(every_s=10.0)  # heads come and go all the time: give their pages back soon
        while not stop.is_set():
            if parent is not None and os.getppid() != parent:
                log.warning("compactor: the collector (pid %d) is gone; stopping", parent)
                break
            got = self.poll()
            self.maintain()
            trimmer.maybe()  # flushed heads leave free heap pages behind (350 -> 140 MB at 2,500 nodes)
            if not got:
                stop.wait(0.2)
        # What was read is flushed; the rest of the log waits for the next start (it is durable).
        self.maintain(force_flush=True)
        self.store.close()


class CompactorThread:
    """The compactor in a thread of the calling process."""

    def __init__(self, data_dir: Path, retention_s: float) -> None:
        self._stop = threading.Event()
        self.compactor = Compactor(data_dir, retention_s)
        self._thread = threading.Thread(target=self.compactor.run, args=(self._stop,), name="fleetmon-compactor",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m collector.storage.compactor")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--retention", type=float, default=30 * 86400)
    ap.add_argument("--parent", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_arenas()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        Compactor(args.data_dir, args.retention).run(stop, args.parent)
    except Exception as err:  # supervision boundary: say why (logged with the traceback), then exit 1
        log.exception("compactor for %s failed: %s", args.data_dir, err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
