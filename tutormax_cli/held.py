"""Held versions of duplicated keys (SPEC §4), until each key's last occurrence.

A duplicated key is written once, in the batch of its last occurrence (its `_last`), as
the best of its versions that the database takes; the others are superseded. Until then
its versions are held here. Memory stays bounded whatever the run holds (SPEC §4): past
HELD_BYTES the held versions go to a spill partitioned by `_last` range. Every version of
a key shares its `_last`, so all of them land in one partition, which is complete (and
read, settled and removed) once the run has read past the end of its range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import spill
from .duplicates import GROUP, LAST, SEQ, Settled, best_of_each_key
from .keyhash import key_hashes
from .spill import Spill, ranges

HELD_BYTES = 32 << 20  # held in memory before they go to the spill
DRAIN_BYTES = 8 << 20  # of a spilled partition read back before its versions are ranked
SPILL_BUFFER_ROWS = 1 << 14  # rows the spill buffers before it writes them


class Held:
    """The versions of each duplicated key until its last occurrence.

    Rows are full store rows (input columns, derived fields, enriched_at) plus `_seq` (the
    row's position in the run), `_group` (which input it came from) and `_last` (the
    position after which no other version of its key can come). In memory every version
    is kept, so the caller can write the next best when the database refuses the best;
    past HELD_BYTES (files only: `span`, one past the largest `_last` of the run, sizes
    the spill's ranges) only the best so far of each key, each beaten version superseded.

    NOTE: kept as the chunks they were offered in, each with its smallest `_last`, so that
    a batch copies only the chunks holding a key now due. One table, re-ranked and
    re-filtered whole in every batch, made a file holding each key twice, far apart, much
    slower than the same keys once (README, Duplicate keys)."""

    MAX_CHUNKS = 64  # then they are joined (without a copy) into one

    def __init__(self, key: str, *, span: int = 0) -> None:
        self.key = key
        self._chunks: list[tuple[int, pa.Table]] = []  # (its smallest `_last`, the chunk)
        # positions a partition, partitions (0: never spilled, the span unknown)
        self._width, self._parts_total = ranges(span)
        self._disk: Spill | None = None
        self._on_disk = np.zeros(0, bool)  # by partition: its versions are on disk
        self._disk_rows = 0

    def __len__(self) -> int:
        return int(sum(c.num_rows for _, c in self._chunks)) + self._disk_rows

    def offer(self, rows: pa.Table, settled: Settled) -> None:
        """Add versions. In memory every version is kept, so that the next best of a key
        can be written if the database refuses its best when it is settled (a constraint
        on other keys, such as a DBA's unique index, may refuse then what it took in the
        version's own batch). Past HELD_BYTES they go to the spill, where only the best of
        each key is kept (see _to_disk, _best), each beaten version superseded at once."""
        if not rows.num_rows:
            return
        if self._disk is not None:
            rows = self._to_disk(rows, settled)
            if not rows.num_rows:
                return
        self._chunks.append((pc.min(rows[LAST]).as_py(), rows))
        if self._parts_total and sum(c.nbytes for _, c in self._chunks) > HELD_BYTES:
            self._spill()
        elif len(self._chunks) > self.MAX_CHUNKS:
            first = min(f for f, _ in self._chunks)
            self._chunks = [(first, pa.concat_tables([c for _, c in self._chunks]))]

    def take_due(self, upto_seq: int | None, settled: Settled) -> Iterator[pa.Table]:
        """Remove and yield the versions whose key can have no version after `upto_seq`
        (None: every one, at the end of the input): those in memory (every version of each
        key: the caller writes the best, and the next best if that is refused), then each
        spilled partition whose whole range is due, one at a time, as the best version of
        each key (a key there may come out some batches after its last occurrence; never
        before)."""
        if upto_seq is None:
            due, self._chunks = [c for _, c in self._chunks], []
        else:
            due = self._take(
                lambda first, chunk: (
                    None if first > upto_seq else pc.less_equal(chunk[LAST], upto_seq)
                )
            )
        if due:
            yield pa.concat_tables(due)
        if self._disk is None:
            return
        ends = (np.arange(len(self._on_disk)) + 1) * self._width - 1
        ready = self._on_disk if upto_seq is None else self._on_disk & (ends <= upto_seq)
        for p in np.flatnonzero(ready).tolist():
            self._on_disk[p] = False
            yield from self._settle_partition(p, settled)
        if upto_seq is None:
            self.close()

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None
            self._on_disk = np.zeros(0, bool)
            self._disk_rows = 0

    # -- the spill --------------------------------------------------------------------------

    def _parts(self, rows: pa.Table) -> np.ndarray:
        parts: np.ndarray = rows[LAST].to_numpy() // self._width
        return parts

    def _spill(self) -> None:
        """Everything held goes to the spill; its partitions take every later version."""
        rows = pa.concat_tables([c for _, c in self._chunks])
        self._chunks = []
        parts = self._parts(rows)
        if self._disk is None:
            self._disk = Spill(rows.schema, self._parts_total, SPILL_BUFFER_ROWS)
            self._on_disk = np.zeros(self._parts_total, bool)
        self._on_disk[np.unique(parts)] = True
        self._disk.append(rows, parts)
        self._disk_rows += rows.num_rows

    def _to_disk(self, rows: pa.Table, settled: Settled) -> pa.Table:
        """Send the versions whose partition is on disk there (the best of each key in this
        batch only: the rest of the key's versions are there already); the others stay."""
        assert self._disk is not None
        there = self._on_disk[self._parts(rows)]
        if not there.any():
            return rows
        mask = pa.array(there)
        best, losers = best_of_each_key(rows.filter(mask), self.key)
        _supersede(settled, losers)
        self._disk.append(best, self._parts(best))
        self._disk_rows += best.num_rows
        return rows.filter(pc.invert(mask))

    def _settle_partition(self, p: int, settled: Settled) -> Iterator[pa.Table]:
        """A due partition's best version of each key, read a written batch at a time: no
        more than RANGE_ROWS keys and DRAIN_BYTES of versions in memory at once. A range
        wider than RANGE_ROWS positions (a run longer than MAX_RANGES of them) can hold more
        keys than that, so its versions are first split by key into pieces on disk, each
        settled on its own."""
        pieces = -(-self._width // spill.RANGE_ROWS)
        if pieces == 1:
            yield self._ranked(self._read(p), settled)
            return
        pieces = 1 << (pieces - 1).bit_length()  # hash_part takes a power of 2
        assert self._disk is not None
        split = Spill(self._disk.schema, pieces, SPILL_BUFFER_ROWS)
        try:
            for batch in self._read(p):
                hashes = key_hashes(batch.column(self.key)).to_numpy()
                split.append(pa.Table.from_batches([batch]), spill.hash_part(hashes, pieces))
            for q in range(pieces):
                yield self._ranked(split.drain(q), settled)
        finally:
            split.close()

    def _read(self, p: int) -> Iterator[pa.RecordBatch]:
        assert self._disk is not None
        for batch in self._disk.drain(p):
            self._disk_rows -= batch.num_rows
            yield batch

    def _ranked(self, batches: Iterator[pa.RecordBatch], settled: Settled) -> pa.Table:
        assert self._disk is not None
        best: pa.Table = self._disk.schema.empty_table()
        gathered: list[pa.RecordBatch] = []
        size = 0
        for batch in batches:
            gathered.append(batch)
            size += batch.nbytes
            if size >= DRAIN_BYTES:
                best = self._best(best, gathered, settled)
                gathered, size = [], 0
        return self._best(best, gathered, settled)

    def _best(self, best: pa.Table, batches: list[pa.RecordBatch], settled: Settled) -> pa.Table:
        """NOTE: ranked once per DRAIN_BYTES read, not once per written batch: a partition
        is written in many small batches, and re-ranking the best so far with each one made
        draining grow with the square of the run."""
        if not batches:
            return best
        both = pa.concat_tables([best, pa.Table.from_batches(batches, best.schema)])
        best, losers = best_of_each_key(both, self.key)
        _supersede(settled, losers)
        return best

    # -- in memory ----------------------------------------------------------------------------

    def _take(self, select: Callable[[int, pa.Table], pa.Array | None]) -> list[pa.Table]:
        """Remove and return the rows `select(first, chunk)` marks in each chunk (None: none
        of them); a chunk none of whose rows is marked stays as it is, not copied."""
        taken: list[pa.Table] = []
        kept: list[tuple[int, pa.Table]] = []
        for first, chunk in self._chunks:
            mask = select(first, chunk)
            if mask is None or not pc.any(mask).as_py():
                kept.append((first, chunk))
            elif pc.all(mask).as_py():
                taken.append(chunk)
            else:
                taken.append(chunk.filter(mask))
                rest = chunk.filter(pc.invert(mask))
                kept.append((pc.min(rest[LAST]).as_py(), rest))
        self._chunks = kept
        return taken


def _supersede(settled: Settled, losers: pa.Table) -> None:
    settled.superseded += list(zip(losers[GROUP].to_pylist(), losers[SEQ].to_pylist(), strict=True))
