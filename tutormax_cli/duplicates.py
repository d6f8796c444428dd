"""Duplicate keys (SPEC §4): which version of a key is stored, whatever the batches.

Of the versions of one key that pass every check (rules, parents, the database), the one
stored is the newest by `updated_at` when they carry it, else the last. This module holds
the pieces that make that choice hold across the batches of a run:

* `key_hashes` — one 64-bit hash per key, so a run remembers its keys compactly;
* `DuplicateIndex` — the keys that occur more than once in a run's input, found by a
  pre-pass over the key column, with the position of each one's last occurrence;
* `Settled` and `best_of_each_key`, for held.py's `Held`: the best version so far of each
  duplicated key. A duplicated key is written once, at its last occurrence, when every
  version of it has been seen; the versions it beat are counted as duplicates. So
  re-running the same input writes every key once with the same version, at any batch
  size;
* `DuplicateCounter` — without a database (`--no-db`) nothing is stored, and duplicates
  are only counted: a row whose key an earlier valid row of the run had.

A hash collision (two keys, one hash: 2^-64 a pair, keyhash.py; about 1 in 4·10^7 for a
million keys) only makes a key look duplicated when it is not: it is then held and written
at its last occurrence, which is correct, just later. The versions of one key are always
grouped by the key itself, never by its hash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .keyhash import key_hashes
from .spill import PARTS, Spill, hash_part, ranges

# Order of versions: those carrying updated_at beat those that do not; then the newest
# updated_at; then the later position in the run ("the last").
RANK_COLUMNS = ("_has_updated_at", "updated_at", "_seq")
SEQ, GROUP, LAST = "_seq", "_group", "_last"
# Pairs of (hash, tag) kept in memory before they go to temporary files: 4 MiB. Past that a
# run's pairs are on disk whatever its size, so its memory does not grow with its input.
SPILL_ROWS = 1 << 18

_INT64 = pa.int64()


class _Pairs:
    """An append-only list of int64 pairs (`h`, `t`: a hash and its tag, or a position and
    its key's last position), in memory up to SPILL_ROWS, then in a spill.Spill partitioned
    by `part_of(h)` (by default a hash's top bits): a run's pairs cost 16 bytes each on
    disk, not in memory, and each partition is read once, whatever the run's size."""

    def __init__(
        self, parts: int = PARTS, part_of: Callable[[np.ndarray], np.ndarray] = hash_part
    ) -> None:
        self._hashes: list[pa.Array] = []
        self._tags: list[pa.Array] = []
        self._buffered = 0
        self.parts, self._part_of = parts, part_of
        self._spill: Spill | None = None

    def append(self, hashes: pa.Array, tags: pa.Array) -> None:
        self._hashes.append(hashes)
        self._tags.append(tags)
        self._buffered += len(hashes)
        if self._buffered >= SPILL_ROWS:
            self._flush()

    @property
    def on_disk(self) -> bool:
        return self._spill is not None

    def _flush(self) -> None:
        table = self.buffer()
        self._hashes, self._tags, self._buffered = [], [], 0
        if self._spill is None:  # ours is the only buffer
            self._spill = Spill(_PAIRS, self.parts, buffer_rows=0)
        self._spill.append(table, self._part_of(table["h"].to_numpy()))

    def buffer(self) -> pa.Table:
        """The pairs held in memory (all of them until they first spill)."""
        return pa.table(
            {
                "h": pa.concat_arrays(self._hashes) if self._hashes else pa.array([], _INT64),
                "t": pa.concat_arrays(self._tags) if self._tags else pa.array([], _INT64),
            },
            schema=_PAIRS,
        )

    def partition(self, p: int) -> pa.Table:
        """Partition p of the spilled pairs, in append order (the first read ends appending)."""
        assert self._spill is not None
        if self._buffered:
            self._flush()
        return self._spill.read(p)

    def partitions(self) -> Iterator[pa.Table]:
        """Every pair, in partitions (all pairs of one hash in one partition), each in
        append order: one table while they fit in memory, else the spill's partitions,
        one at a time."""
        if self._spill is None:
            yield self.buffer()
            return
        for p in range(self._spill.parts):
            yield self.partition(p)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()


_PAIRS = pa.schema([("h", _INT64), ("t", _INT64)])


def repeats(part: pa.Table) -> bool:
    """Whether any hash (column `h`) of a partition occurs twice. NOTE: a plain sort of them is
    much cheaper than the stable argsort _runs needs, and the usual input repeats nothing
    (README, Performance: measured behind the code)."""
    if part.num_rows < 2:
        return False
    h = np.sort(part["h"].to_numpy())
    return bool((h[1:] == h[:-1]).any())


def _runs(part: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A partition's pairs sorted by hash, ties in append order: (the hashes and the tags in
    that order, whether each is a later occurrence of its hash). numpy, not Arrow's
    group_by, whose hash table grows outside Arrow's memory pool (README, Performance)."""
    h = part["h"].to_numpy()
    order = np.argsort(h, kind="stable")
    sorted_h = h[order]
    later = np.zeros(len(h), bool)
    later[1:] = sorted_h[1:] == sorted_h[:-1]
    return sorted_h, part["t"].to_numpy()[order], later


class DuplicateIndex:
    """Which rows of a run's input carry a key it holds more than once (by hash), and the
    position of that key's last occurrence.

    Built by `add` over every row of the kind with a valid key, in run order (tag = the
    row's position in the run), then `finish`. Kept by row position, not by key, so that
    the run reads it in step with its batches: (position, last) pairs in memory up to
    SPILL_ROWS, else in a spill partitioned by position range, each partition read when
    the run reaches it and dropped once it is past. A run holding millions of repeated
    keys holds none of them here. An empty index (the usual case) costs nothing."""

    def __init__(self) -> None:
        self._pairs = _Pairs()
        self._end = 0  # one past the largest position added
        self.rows = 0  # rows whose key recurs
        self.span = 0  # one past the largest last occurrence (0: none)
        self._found = _Pairs()  # (position, last) of each of those rows, from `finish`
        self._width = 1
        self._window: dict[int, pa.Table] = {}  # spilled partitions read, by number
        self._joined: tuple[np.ndarray, np.ndarray] | None = None  # the window, as one

    def add(self, hashes: pa.Array, seqs: pa.Array) -> None:
        self._pairs.append(hashes, seqs)
        if len(seqs):
            self._end = max(self._end, seqs[len(seqs) - 1].as_py() + 1)

    def finish(self) -> DuplicateIndex:
        width, parts = ranges(self._end)
        self._width = width
        self._found = _Pairs(max(parts, 1), lambda positions: positions // width)
        for part in self._pairs.partitions():
            if not repeats(part):
                continue
            _, tags, later = _runs(part)
            # A run of one hash, in append order: its tags are positions, its last the max.
            starts = np.flatnonzero(~later)
            ends = np.append(starts[1:], len(later)) - 1
            run = np.cumsum(~later) - 1
            repeated = (ends > starts)[run]
            positions, lasts = tags[repeated], tags[ends[run[repeated]]]
            if not len(positions):
                continue
            self.rows += len(positions)
            self.span = max(self.span, int(lasts.max()) + 1)
            self._found.append(pa.array(positions), pa.array(lasts))
        self._pairs.close()
        if not self._found.on_disk:
            self._joined = _by_position([self._found.buffer()])
        return self

    def __bool__(self) -> bool:
        return self.rows > 0

    def lookup(self, seqs: pa.Array) -> pa.Array:
        """For each position (ascending over the run's batches), the position of the last
        occurrence of its row's key; null if that key does not recur."""
        s = seqs.to_numpy(zero_copy_only=False)
        positions, lasts = self._around(s) if self._found.on_disk else self._joined or _EMPTY
        at = np.searchsorted(positions, s)
        found = np.zeros(len(s), bool)
        inside = at < len(positions)
        found[inside] = positions[at[inside]] == s[inside]
        out = lasts[np.where(found, at, 0)] if len(positions) else at
        return pa.array(out, _INT64, mask=~found)

    def close(self) -> None:
        self._pairs.close()
        self._found.close()

    def _around(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The partitions holding positions `s`, read once each: those before them dropped."""
        if not len(s):
            return _EMPTY
        first, final = int(s.min()) // self._width, int(s.max()) // self._width
        for p in [p for p in self._window if p < first]:
            del self._window[p]
            self._joined = None
        for p in range(first, min(final, self._found.parts - 1) + 1):
            if p not in self._window:
                self._window[p] = self._found.partition(p)
                self._joined = None
        if self._joined is None:
            self._joined = _by_position([self._window[p] for p in sorted(self._window)])
        return self._joined


_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def _by_position(pairs: list[pa.Table]) -> tuple[np.ndarray, np.ndarray]:
    """(positions, lasts) of tables of (position, last) pairs, sorted by position."""
    if not pairs:
        return _EMPTY
    positions = np.concatenate([t["h"].to_numpy() for t in pairs])
    lasts = np.concatenate([t["t"].to_numpy() for t in pairs])
    order = np.argsort(positions, kind="stable")
    return positions[order], lasts[order]


@dataclass
class Settled:
    """What became of held versions in one batch (they may have been read earlier)."""

    stored: list[tuple[int, pa.Table]] = field(default_factory=list)  # (group, winner rows)
    superseded: list[tuple[int, int]] = field(default_factory=list)  # (group, seq)

    def __bool__(self) -> bool:
        return bool(self.stored or self.superseded)


def rank_columns(table: pa.Table) -> pa.Table:
    """Add `_has_updated_at` (and a null `updated_at` for kinds without one) for sorting."""
    if "updated_at" not in table.column_names:
        table = table.append_column(
            "updated_at", pa.nulls(table.num_rows, pa.timestamp("us", tz="UTC"))
        )
    return table.append_column("_has_updated_at", pc.is_valid(table["updated_at"]))


def best_of_each_key(table: pa.Table, key: str) -> tuple[pa.Table, pa.Table]:
    """(the best version of each key, every other version), by RANK_COLUMNS."""
    ranked = rank_columns(table) if "_has_updated_at" not in table.column_names else table
    order = pc.sort_indices(
        ranked, sort_keys=[(key, "ascending"), *((c, "ascending") for c in RANK_COLUMNS)]
    )
    keys = pc.take(ranked[key], order).combine_chunks()
    n = len(keys)
    if n == 0:
        return table, table
    # The last row of each run of equal keys (in sorted order) is that key's best version.
    last = pc.not_equal(keys.slice(0, n - 1), keys.slice(1)) if n > 1 else pa.array([], pa.bool_())
    is_best = pa.concat_arrays([last.fill_null(True), pa.array([True])])
    best = pc.filter(order, is_best)
    rest = pc.filter(order, pc.invert(is_best))
    return table.take(pc.take(best, pc.sort_indices(best))), table.take(rest)


def duplicated_in_batch(keys: pa.Array) -> pa.Array:
    """Mask: the key occurs more than once in this array."""
    counts = pc.value_counts(keys)
    dup = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    return pc.is_in(keys, value_set=dup)


def occurrence(keys: pa.Array) -> pa.Array:
    """For each row, how many earlier rows carry the same key (0 for the first)."""
    n = len(keys)
    if n == 0:
        return pa.array([], _INT64)
    positions = row_positions(n)
    by_key = pa.table({"k": keys, "i": positions})
    order = pc.sort_indices(by_key, sort_keys=[("k", "ascending"), ("i", "ascending")])
    sorted_keys = pc.take(keys, order)
    starts = pa.concat_arrays(
        [pa.array([True]), pc.not_equal(sorted_keys.slice(0, n - 1), sorted_keys.slice(1))]
    )
    # In sorted order: position minus the position where its key's run began.
    first = pc.cumulative_max(pc.if_else(starts, positions, pa.scalar(0, _INT64)))
    occ_sorted = pc.subtract(positions, first)
    return pc.take(occ_sorted, pc.sort_indices(order))  # back to input order


def row_positions(n: int) -> pa.Array:
    """0..n-1 as int64."""
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, _INT64), n)), 1)


class DuplicateCounter:
    """Without a database: for each group (input file), how many valid rows carry a key
    that an earlier valid row of the run (any group) carried."""

    def __init__(self) -> None:
        self._pairs = _Pairs()

    def add(self, keys: pa.Array, group: int, hashes: pa.Array | None = None) -> None:
        """`hashes`: the keys' key_hashes, when the caller has them already."""
        if len(keys):
            hashes = key_hashes(keys) if hashes is None else hashes
            self._pairs.append(hashes, pa.repeat(pa.scalar(group, _INT64), len(keys)))

    def finish(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for part in self._pairs.partitions():
            if not repeats(part):
                continue
            _, tags, later = _runs(part)
            groups, counts = np.unique(tags[later], return_counts=True)
            for g, n in zip(groups.tolist(), counts.tolist(), strict=True):
                out[g] = out.get(g, 0) + n
        self._pairs.close()
        return out
