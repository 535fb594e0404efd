"""Reading the collector's store while it runs: segments, plus the append log's unflushed tail.

Its own read-only SQLite connection; the log files are read directly (records are framed and
CRC-checked, so a record being written is simply not seen yet). Queries go node by node, so
memory holds one node's answer at a time (``fleetmon query``, ``/api/v1/query``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from collector.storage import applog
from collector.storage.blocks import BlockReader, blocks_samples, first_wins, segment_samples
from collector.storage.codec import F64, I64, Block
from collector.storage.logstore import LOG_DIR, STORE_FILE, Nodes, across_compaction
from collector.storage.sqlite import Matcher, SeriesRow


class LogStoreReader:
    """Queries over segments + the log's unflushed tail; a connection of its own, read-only."""

    def __init__(self, data_dir: Path) -> None:
        if data_dir.name == STORE_FILE:  # given the store file itself
            data_dir = data_dir.parent
        self.data_dir = data_dir
        self.path = data_dir / STORE_FILE
        self.blocks = BlockReader(self.path)
        self._db = self.blocks._db

    def _low(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'compactor_low'").fetchone()
        return int(row[0]) if row else 0

    def _tail_series(self, low: int, name: str | None = None, node: str | None = None,
                     ids: set[int] | None = None) -> dict[int, tuple[str, str, str]]:
        """Series defined in the log's tail from ``low`` (not copied into SQLite yet), of this
        name, node or ids where given: id → (name, labels JSON, node). Callers read SQLite and
        this inside ``across_compaction``. After a ramp the tail defines millions of series:
        labels are parsed only for those a caller matches (parsing them all held ~1 GB for a
        moment, on every adopted node's history read)."""
        out: dict[int, tuple[str, str, str]] = {}
        for _pos, payload in applog.read(self.data_dir / LOG_DIR, low, frozenset({applog.SERIES})):
            for r in applog.decode_json(payload)["series"]:
                if (name is None or r[1] == name) and (node is None or r[5] == node) and \
                        (ids is None or int(r[0]) in ids):
                    out[int(r[0])] = (r[1], r[4], r[5])
        return out

    def find_series(self, name: str | None, matchers: Sequence[Matcher]) -> list[SeriesRow]:
        def read(low: int) -> list[SeriesRow]:
            rows = self.blocks.find_series(name, matchers)
            have = {r.id for r in rows}
            for sid, (n, labels_json, _node) in self._tail_series(low, name or None).items():
                if sid in have:
                    continue
                labels = json.loads(labels_json)
                if all(m.matches(labels) for m in matchers):
                    rows.append(SeriesRow(sid, n, labels))
            return rows

        return across_compaction(self._low, read)

    def _tail(self, nodes: set[str]) -> dict[str, list[Block]]:
        """Blocks of these nodes in the log that no segment holds yet."""
        flushed = {n: int(p) for n, p in self._db.execute("SELECT node, pos FROM flushed")}
        out: dict[str, list[Block]] = {n: [] for n in nodes}
        for pos, payload in applog.read(self.data_dir / LOG_DIR, self._low(), frozenset({applog.BATCH})):
            node, _seq, _c = applog.batch_header(payload)
            if node in nodes and pos > flushed.get(node, -1):
                out[node].extend(applog.decode_batch(payload).blocks)
        return out

    def query(self, series: Sequence[SeriesRow], since_ms: int, until_ms: int) -> Iterator[tuple[SeriesRow, I64, F64]]:
        def read(low: int) -> dict[int, str]:
            node_of = self.blocks.node_of(series)
            if len(node_of) < len(series):
                missing = {s.id for s in series} - set(node_of)
                node_of.update({sid: v[2] for sid, v in self._tail_series(low, ids=missing).items()})
            return node_of

        node_of = across_compaction(self._low, read)
        tail = self._tail(set(node_of.values()))
        return self.blocks.query(series, since_ms, until_ms, head=lambda n: tail.get(n, []), node_of=node_of)

    def samples(self, series_id: int, since_ms: int, until_ms: int, limit: int = 0) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        for _row, ts, vals in self.query([SeriesRow(series_id, "", {})], since_ms, until_ms):
            out = list(zip(ts.tolist(), vals.tolist(), strict=True))
        return out[:limit] if limit else out

    def count_samples(self, node: str | None = None) -> int:
        """Distinct (series, ts) stored for a node (or all): exact, decodes what it counts."""
        if node is None:
            names = [n for (n,) in self._db.execute("SELECT DISTINCT node FROM series")]
            return sum(self.count_samples(n) for n in names)
        return sum(len(ts) for _n, _l, ts, _v in self.stored(node))

    def count_by_node(self) -> dict[str, int]:
        """Distinct (series, ts) stored per node, every node, in one pass over the log's tail."""
        def read(low: int) -> list[str]:
            nodes = [n for (n,) in self._db.execute("SELECT DISTINCT node FROM series")]
            return nodes + sorted({v[2] for v in self._tail_series(low).values()} - set(nodes))

        nodes = across_compaction(self._low, read)
        tail = self._tail(set(nodes))
        out = {}
        for node in nodes:
            parts = [segment_samples(int(lv), bytes(body), None) for lv, body in self._db.execute(
                "SELECT level, body FROM segments WHERE node = ? ORDER BY key, id", (node,))]
            if tail.get(node):
                parts.append(blocks_samples(tail[node], None))
            out[node] = len(first_wins(parts)[0]) if parts else 0
        return out

    def stored(self, node: str) -> Iterator[tuple[str, dict[str, str], I64, F64]]:
        """Every sample of a node: (name, labels, ts, values) per series."""
        def read(low: int) -> list[SeriesRow]:
            rows = [SeriesRow(int(i), n, json.loads(lab)) for i, n, lab in self._db.execute(
                "SELECT id, name, labels FROM series WHERE node = ?", (node,))]
            have = {r.id for r in rows}
            return rows + [SeriesRow(sid, n, json.loads(lab))
                           for sid, (n, lab, _nd) in self._tail_series(low, node=node).items() if sid not in have]

        rows = across_compaction(self._low, read)
        for row, ts, vals in self.query(rows, -(2**62), 2**62):
            yield row.name, row.labels, ts, vals

    def node_states(self) -> Nodes:
        nodes = Nodes()
        start = nodes.load(self._db)
        for _pos, payload in applog.read(self.data_dir / LOG_DIR, start):
            nodes.apply(payload)
        return nodes

    def events(self, since_ms: int, limit: int = 200) -> list[dict[str, object]]:
        rows = self._db.execute(
            "SELECT ts, node, kind, severity, message, action, labels FROM events WHERE ts >= ? "
            "ORDER BY ts DESC LIMIT ?", (since_ms, limit))
        return [{"time": t / 1000, "node": n, "kind": k, "severity": s, "message": m, "action": a,
                 "labels": json.loads(lab)} for t, n, k, s, m, a, lab in rows]

    def contiguous(self, node: str) -> int:
        """The node's durable sequence (what its next Welcome says)."""
        rec = self.node_states().recs.get(node)
        return rec.contiguous if rec is not None else 0

    def nodes(self) -> list[dict[str, object]]:
        st = self.node_states()
        return [{"node": n, "sequence": r.contiguous, "labels": json.loads(r.labels_json),
                 "last_seen": r.last_seen / 1000}
                for n, r in sorted(st.recs.items())]

    def close(self) -> None:
        self.blocks.close()
