"""Series definitions as columns: what a stream (and a node) defined, resolved in bulk.

A stream's first batch defines ~1,000 series; after a collector restart or a network blip
every node sends its definitions again, at once (a reconnect storm: 2,500 nodes, 2.5 M
definitions). So:

- a node keeps what its streams defined as sorted numpy columns (agent id, a hash of the
  definition's bytes, store id, rule ref, counter flag); a definition whose bytes hash equal
  to the node's previous one for that id is taken as it is, without validating or looking it
  up again (the common case on reconnect: ~2 µs a series);
- new definitions are validated with cached label-name checks and keyed by a canonical label
  string built without ``json.dumps`` per series.

The hash is Python's (SipHash with a per-process key): an agent cannot aim a collision, and
an accidental one would need the same agent id to change its definition with a colliding hash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

_LABEL_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_names_ok: dict[str, bool] = {}


def label_name_ok(name: str) -> bool:
    ok = _names_ok.get(name)
    if ok is None:
        ok = bool(name) and not name[0].isdigit() and set(name) <= _LABEL_OK and not name.startswith("__")
        if len(_names_ok) < 100_000:
            _names_ok[name] = ok
    return ok


def _json_str(v: str) -> str:
    if v.isascii() and v.isprintable() and '"' not in v and "\\" not in v:
        return f'"{v}"'
    return json.dumps(v)


_fragments: dict[tuple[str, str], str] = {}


def _fragment(k: str, v: str) -> str:
    f = _fragments.get((k, v))
    if f is None:
        f = f'"{k}":{_json_str(v)}'
        if len(_fragments) < 200_000:  # label pairs repeat across series (model, uuid, rack...)
            _fragments[(k, v)] = f
    return f


def canonical_labels(labels: Mapping[str, str]) -> str:
    """``json.dumps(labels, sort_keys=True, separators=(",", ":"))``, faster: label names are
    validated identifiers (no escaping), and a pair's JSON is built once."""
    return "{" + ",".join([_fragment(k, labels[k]) for k in sorted(labels)]) + "}"


class SeriesColumns:
    """Agent id → (definition hash, store id, rule ref, counter), as sorted columns."""

    __slots__ = ("counters", "hashes", "ids", "refs", "sids")

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.hashes = np.zeros(0, np.int64)
        self.sids = np.zeros(0, np.int64)
        self.refs = np.zeros(0, np.int64)
        self.counters = np.zeros(0, bool)

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Positions of ``ids`` in the columns, and which are there at all."""
        pos = np.searchsorted(self.ids, ids)
        known = pos < len(self.ids)
        known[known] = self.ids[pos[known]] == ids[known]
        return pos, known

    def same(self, ids: npt.NDArray[np.int64], hashes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Which definitions are already here, byte for byte (by hash)."""
        pos, known = self.find(ids)
        known[known] = self.hashes[pos[known]] == hashes[known]
        return known

    def rows(self, ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                                                         npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        pos, _known = self.find(ids)
        return self.hashes[pos], self.sids[pos], self.refs[pos], self.counters[pos]

    def merge(self, ids: npt.NDArray[np.int64], hashes: npt.NDArray[np.int64], sids: npt.NDArray[np.int64],
              refs: npt.NDArray[np.int64], counters: npt.NDArray[np.bool_]) -> None:
        """Add or replace these ids (a later definition of an id wins)."""
        if not len(ids):
            return
        # The last definition of an id within this call wins too.
        _u, last = np.unique(ids[::-1], return_index=True)
        keep = len(ids) - 1 - last
        ids, hashes, sids, refs, counters = ids[keep], hashes[keep], sids[keep], refs[keep], counters[keep]
        _pos, known = self.find(ids)
        old = ~np.isin(self.ids, ids[known]) if known.any() else np.ones(len(self.ids), bool)
        all_ids = np.concatenate([self.ids[old], ids])
        order = np.argsort(all_ids, kind="stable")
        self.ids = all_ids[order]
        self.hashes = np.concatenate([self.hashes[old], hashes])[order]
        self.sids = np.concatenate([self.sids[old], sids])[order]
        self.refs = np.concatenate([self.refs[old], refs])[order]
        self.counters = np.concatenate([self.counters[old], counters])[order]


def definition_hashes(defs: Sequence[object]) -> npt.NDArray[np.int64]:
    return np.fromiter((hash(d.SerializeToString(deterministic=True)) for d in defs),  # type: ignore[attr-defined]
                       np.int64, len(defs))
