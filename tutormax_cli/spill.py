"""Tables kept on disk in partitions, for what a run must not hold in memory: the joins of
session_join.py, the key pairs of duplicates.py and the held versions of held.py.

Rows are appended with the partition each belongs to (a hash's top bits, a position's
range), buffered up to `buffer_rows` in all, then written to one Arrow IPC stream file a
partition in a temporary directory. Reading a partition back reads only its own file, so
a join over P partitions holds about 1/P of each side at a time. `drain` reads (and
removes) one partition while the others still grow, a written batch at a time.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from . import errors as E
from .interrupts import held, uninterrupted

PARTS = 64  # partitions of a spill (hash_part's top 6 bits)
BUFFER_ROWS = 1 << 17  # rows buffered, over all partitions, before they are written


RANGE_ROWS = 1 << 16  # the narrowest range of positions of a partition by position
MAX_RANGES = 128  # at most this many partitions by position (open files: macOS allows 256)


def ranges(span: int) -> tuple[int, int]:
    """(positions a partition, partitions) to spill positions 0..span-1 by range."""
    width = max(RANGE_ROWS, -(-span // MAX_RANGES))
    return width, -(-span // width)


def hash_part(hashes: np.ndarray, parts: int = PARTS) -> np.ndarray:
    """The partition of each 64-bit hash (int64): its top bits. `parts` is a power of 2."""
    bits = parts.bit_length() - 1
    if bits == 0:
        return np.zeros(len(hashes), np.int64)
    return (hashes.view(np.uint64) >> np.uint64(64 - bits)).astype(np.int64)


class Spill:
    """An append-only table on disk, in `parts` partitions."""

    def __init__(self, schema: pa.Schema, parts: int = PARTS, buffer_rows: int | None = None):
        self.schema, self.parts, self.rows = schema, parts, 0
        self._buffer_rows = BUFFER_ROWS if buffer_rows is None else buffer_rows
        self._buffers: list[list[pa.Table]] = [[] for _ in range(parts)]
        self._buffered = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._writers: dict[int, tuple[pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}
        self._sealed = False
        self._drained: set[int] = set()

    def append(self, table: pa.Table, part: np.ndarray) -> None:
        """Add `table`'s rows, row i to partition part[i] (each partition keeps append order)."""
        if self._sealed:
            raise RuntimeError("a spill is read only once every row was appended")
        if not table.num_rows:
            return
        if self._drained and self._drained.intersection(np.unique(part).tolist()):
            raise RuntimeError("rows appended to a drained partition")
        # NOTE: numpy's stable sort of 16-bit integers is a radix sort, 8× faster here than
        # its merge sort of int64 (a partition number is at most MAX_RANGES or PARTS).
        narrow = part.astype(np.uint16) if self.parts <= 1 << 16 else part
        order = np.argsort(narrow, kind="stable")
        counts = np.bincount(part, minlength=self.parts)
        grouped = table.take(pa.array(order))
        at = 0
        for p in np.flatnonzero(counts).tolist():
            n = int(counts[p])
            self._buffers[p].append(grouped.slice(at, n))
            at += n
        self.rows += table.num_rows
        self._buffered += table.num_rows
        if self._buffered >= self._buffer_rows:
            self._flush()

    def read(self, p: int) -> pa.Table:
        """Partition p's rows, in append order (the first read ends appending)."""
        if not self._sealed:
            self._flush()
            for sink, writer in self._writers.values():
                writer.close()
                sink.close()
            self._sealed = True
        if p not in self._writers:
            return self.schema.empty_table()
        try:
            # NOTE: a file Arrow opens itself (not a Python file object): what it reads
            # lands in Arrow's memory pool, not in Python bytes objects, whose big reads
            # left the C heap fragmented (README, Performance).
            with pa.OSFile(self._path(p)) as source:
                return pa.ipc.open_stream(source).read_all()
        except OSError as exc:
            raise temp_error(exc) from None

    def drain(self, p: int) -> Iterator[pa.RecordBatch]:
        """Partition p's rows, in append order, a written batch at a time, and p's file
        removed: for partitions done with one by one while the others still grow. Rows
        appended to p afterwards are an error."""
        chunks = self._buffers[p]
        self._buffers[p] = []
        self._buffered -= sum(c.num_rows for c in chunks)
        self._drained.add(p)
        if p not in self._writers:
            for chunk in chunks:
                yield from chunk.to_batches()
            return
        try:
            sink, writer = self._writers.pop(p)
            if chunks:
                writer.write_table(pa.concat_tables(chunks))
            writer.close()
            sink.close()
            with pa.OSFile(self._path(p)) as source:
                yield from pa.ipc.open_stream(source)
            os.remove(self._path(p))
        except OSError as exc:
            raise temp_error(exc) from None

    def close(self) -> None:
        uninterrupted(self._close)

    def _close(self) -> None:
        for sink, _ in self._writers.values():
            sink.close()
        self._writers.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _flush(self) -> None:
        try:
            for p, chunks in enumerate(self._buffers):
                if chunks:
                    self._writer(p).write_table(pa.concat_tables(chunks))
        except OSError as exc:  # a full disk
            raise temp_error(exc) from None
        self._buffers = [[] for _ in range(self.parts)]
        self._buffered = 0

    def _writer(self, p: int) -> pa.ipc.RecordBatchStreamWriter:
        if p not in self._writers:
            with held():  # made and recorded for the way out's cleanup, never only made
                if self._dir is None:
                    self._dir = tempfile.TemporaryDirectory(prefix="tutormax-spill-")
                sink = pa.OSFile(self._path(p), "wb")
                self._writers[p] = (sink, pa.ipc.new_stream(sink, self.schema))
        return self._writers[p][1]

    def _path(self, p: int) -> str:
        assert self._dir is not None
        return os.path.join(self._dir.name, f"{p}.arrows")


def temp_error(exc: OSError) -> E.OutputError:
    """The error of a temporary file that could not be written or read, with the fix for
    its cause (a full disk is the usual one, not the only one)."""
    where = tempfile.gettempdir()
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        hint = "raise the limit of open files (ulimit -n)"
    elif exc.errno == errno.ENOENT:
        hint = f"something removed tutormax's temporary files from {where} during the run"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "set TMPDIR to a directory tutormax may write to"
    else:
        hint = "set TMPDIR to a directory with more free space"
    return E.OutputError(f"temporary files in {where}: {E.first_line(exc)}", hint=hint)
