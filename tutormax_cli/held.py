"""Held versions of duplicated keys (SPEC §4), until each key's last occurrence.

A duplicated key is written once, in the batch of its last occurrence (its `_last`), as
the best of its versions that the database takes; the others are superseded. Until then
its versions are held here. Memory stays bounded whatever the run holds (SPEC §4): past
HELD_BYTES the held versions go to a spill partitioned by `_last` range. Every version of
a key shares its `_last`, so all of them land in one partition, which is complete (and
read, settled and removed) once the run has read past the end of its range. Every version
is kept, in memory and on disk: the caller writes the best of each key, and the next best
when the database refuses the best (a constraint on other keys, such as a DBA's unique
index, may refuse at the key's last occurrence what it took in the version's own batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import spill
from .duplicates import LAST
from .keyhash import key_hashes
from .spill import Spill, ranges

HELD_BYTES = 32 << 20  # held in memory before they go to the spill
DRAIN_BYTES = 8 << 20  # of a spilled partition's versions given back at once (a piece)
SPILL_BUFFER_ROWS = 1 << 14  # rows the spill buffers before it writes them


class Held:
    """The versions of each duplicated key until its last occurrence.

    Rows are full store rows (input columns, derived fields, enriched_at) plus `_seq` (the
    row's position in the run), `_group` (which input it came from) and `_last` (the
    position after which no other version of its key can come). Every version is kept,
    so the caller can write the next best when the database refuses the best: in memory,
    and past HELD_BYTES (files only: `span`, one past the largest `_last` of the run, sizes
    the spill's ranges) on disk.

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
        self._disk_bytes = np.zeros(0, np.int64)  # by partition: about how many bytes
        self._disk_rows = 0

    def __len__(self) -> int:
        return int(sum(c.num_rows for _, c in self._chunks)) + self._disk_rows

    def offer(self, rows: pa.Table) -> None:
        """Add versions: in memory, or where their partition is on disk already, there."""
        if not rows.num_rows:
            return
        if self._disk is not None:
            rows = self._to_disk(rows)
            if not rows.num_rows:
                return
        self._chunks.append((pc.min(rows[LAST]).as_py(), rows))
        if self._parts_total and sum(c.nbytes for _, c in self._chunks) > HELD_BYTES:
            self._spill()
        elif len(self._chunks) > self.MAX_CHUNKS:
            first = min(f for f, _ in self._chunks)
            self._chunks = [(first, pa.concat_tables([c for _, c in self._chunks]))]

    def take_due(self, upto_seq: int | None) -> Iterator[pa.Table]:
        """Remove and yield the versions whose key can have no version after `upto_seq`
        (None: every one, at the end of the input), every version of each such key in one
        table: those in memory, then each spilled partition whose whole range is due, a
        piece at a time (a key there may come out some batches after its last occurrence;
        never before)."""
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
            yield from self._partition(p)
        if upto_seq is None:
            self.close()

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None
            self._on_disk = np.zeros(0, bool)
            self._disk_bytes = np.zeros(0, np.int64)
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
            self._disk_bytes = np.zeros(self._parts_total, np.int64)
        self._on_disk[np.unique(parts)] = True
        self._append(rows, parts)

    def _to_disk(self, rows: pa.Table) -> pa.Table:
        """Send the versions whose partition is on disk there; the others stay."""
        there = self._on_disk[self._parts(rows)]
        if not there.any():
            return rows
        mask = pa.array(there)
        gone = rows.filter(mask)
        self._append(gone, self._parts(gone))
        return rows.filter(pc.invert(mask))

    def _append(self, rows: pa.Table, parts: np.ndarray) -> None:
        assert self._disk is not None
        self._disk.append(rows, parts)
        self._disk_rows += rows.num_rows
        row_bytes = -(-rows.nbytes // rows.num_rows)
        self._disk_bytes += np.bincount(parts, minlength=len(self._disk_bytes)) * row_bytes

    def _partition(self, p: int) -> Iterator[pa.Table]:
        """A due partition's versions, in pieces of about DRAIN_BYTES at most, every version
        of a key in one piece: a partition over that, or of a range wider than RANGE_ROWS
        positions (a run longer than MAX_RANGES of them: it can hold more keys), is first
        split by key into pieces on disk. (One key's versions are never split: a key
        repeated over DRAIN_BYTES of versions comes back whole.)"""
        size, self._disk_bytes[p] = int(self._disk_bytes[p]), 0
        pieces = max(-(-self._width // spill.RANGE_ROWS), -(-size // DRAIN_BYTES))
        if pieces == 1:
            yield from self._whole(self._read(p))
            return
        pieces = 1 << (pieces - 1).bit_length()  # hash_part takes a power of 2
        assert self._disk is not None
        split = Spill(self._disk.schema, pieces, SPILL_BUFFER_ROWS)
        try:
            for batch in self._read(p):
                hashes = key_hashes(batch.column(self.key)).to_numpy()
                split.append(pa.Table.from_batches([batch]), spill.hash_part(hashes, pieces))
            for q in range(pieces):
                yield from self._whole(split.drain(q))
        finally:
            split.close()

    def _whole(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
        """The batches of one piece as one table of one chunk (none if the piece is empty).
        NOTE: joined once, not table by table: a partition is written in many small
        batches, and growing a table with each one made draining grow with the square of
        the run; and its many chunks made each compute call on it as many calls."""
        assert self._disk is not None
        table = pa.Table.from_batches(list(batches), self._disk.schema)
        if table.num_rows:
            yield table.combine_chunks()

    def _read(self, p: int) -> Iterator[pa.RecordBatch]:
        assert self._disk is not None
        for batch in self._disk.drain(p):
            self._disk_rows -= batch.num_rows
            yield batch

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
