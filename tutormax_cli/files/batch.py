"""What every reader yields: `RawBatch`es of typed-later raw columns, with row numbers and
the rows that could not be split into fields (`Malformed`); read-ahead on a thread."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

DONE_BEFORE_END = 0.999  # the most a batch that is not the last may report


MALFORMED_ECHO_BYTES = 200  # how much of an oversized line its reject shows

# A batch ends at --batch-size rows or at about this many bytes of raw input, whichever comes
# first: memory follows the bytes in hand, so a file of 1 MiB rows is read a few rows at a
# time (SPEC §4: memory stays bounded on any file). Usual rows never reach it.
BATCH_MAX_BYTES = 16 << 20


@dataclass
class Malformed:
    """A row that could not be split into fields: it is rejected with this reason."""

    row: int
    text: str
    message: str
    size: int | None = None  # the record's bytes in the file, when `text` is less of it


def _value(column: pa.ChunkedArray) -> Any:
    """One value as Python, or as Arrow's text for it when Python cannot hold it (a
    timestamp past year 9999, a date before year 1)."""
    try:
        return column[0].as_py()
    except (OverflowError, ValueError, pa.ArrowException):
        try:
            return column.cast(pa.string())[0].as_py()
        except (OverflowError, ValueError, pa.ArrowException):
            return f"<a {column.type} value Python cannot show>"


@dataclass
class RawBatch:
    table: pa.Table
    base: int  # record number of table row 0, were there no gaps
    gaps: tuple[int, ...] = ()  # ascending record numbers that are not in any table (malformed)
    malformed: list[Malformed] = field(default_factory=list)
    done: float = 0.0  # fraction of the input parsed so far (never read-ahead), for progress
    records: list[dict[str, Any]] | None = None  # JSON sources: the records exactly as read
    # JSON sources: record i read again with its numbers as written (loads_number_texts)
    number_texts: Callable[[int], Any] | None = None
    # CSV read through csv_bounds.BoundedCsv: the fields it cut, by record number, each
    # {the field's place in the header: its value bytes in the file}
    cut: dict[int, dict[int, int]] | None = None

    def values(self, i: int) -> dict[str, Any]:
        """Row i's original values, as read (for the rejects file)."""
        if self.records is not None:
            return self.records[i]
        row = self.table.slice(i, 1)
        try:
            return row.to_pylist()[0]
        except (OverflowError, ValueError, pa.ArrowException):
            return {name: _value(row.column(name)) for name in row.column_names}

    def row_number(self, i: int) -> int:
        """Data record number (from 1) of table row i; computed only for rows that need it."""
        return record_number(self.base, self.gaps, i)


def record_number(base: int, gaps: tuple[int, ...], i: int) -> int:
    """Data record number of row i of a batch whose row 0 would be record `base` were there
    no gaps; `gaps`: ascending record numbers of malformed rows (in no table)."""
    r = base + i
    for g in gaps:
        if g > r:
            break
        r += 1
    return r


class Places:
    """Where each batch of a run began, by run position, so that a row known only by its
    run position (a held version refused when its key is settled, batches later) is told
    by its record number in its file. Keeps no rows: a batch's base and gaps."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._batches: list[tuple[int, tuple[int, ...]]] = []

    def add(self, seq0: int, rb: RawBatch) -> None:
        self._starts.append(seq0)
        self._batches.append((rb.base, rb.gaps))

    def row_of(self, seq: int) -> int | None:
        at = bisect_right(self._starts, seq) - 1
        if at < 0:
            return None
        base, gaps = self._batches[at]
        return record_number(base, gaps, seq - self._starts[at])


def _finishing(batches: Iterator[RawBatch]) -> Iterator[RawBatch]:
    """Progress that never goes back and says 1.0 once, on the last batch: each batch is
    held until the next one is read, so the last is known to be the last."""
    held: RawBatch | None = None
    best = 0.0
    for rb in batches:
        if held is not None:
            yield held
        best = max(best, min(rb.done, DONE_BEFORE_END))
        held = replace(rb, done=best) if rb.done != best else rb
    if held is not None:
        yield replace(held, done=1.0) if held.done != 1.0 else held


def _rebatch(
    tables: Iterator[pa.Table], size: int, max_bytes: int = BATCH_MAX_BYTES, *, cut: bool = True
) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into tables of `size` rows (the last may be short), or fewer
    where one more input table would take a batch past `max_bytes` (a table over it is a
    batch of its own). With `cut=False` an input table is cut only when it alone holds more
    than `size` rows: whole tables are joined while the next one fits.

    NOTE: Parquet is read with cut=False. A row group comes as even pieces of at most `size`
    rows (parquet_plan); cutting them to exactly `size` made most batches of two pieces,
    joined by copies (README, Performance)."""
    pending: list[pa.Table] = []
    count = held = 0
    for t in tables:
        full = not cut and count + t.num_rows > size
        if count and (full or held + t.nbytes > max_bytes):
            yield pa.concat_tables(pending)
            pending, count, held = [], 0, 0
        pending.append(t)
        count += t.num_rows
        held += t.nbytes
        while count >= size:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, size)
            rest = whole.slice(size)
            pending, count, held = [rest], rest.num_rows, rest.nbytes
    if count:
        yield pa.concat_tables(pending)


def prefetch(batches: Iterator[RawBatch], depth: int = 1) -> Iterator[RawBatch]:
    """Read ahead on a background thread (Arrow parses without the GIL) while the caller
    works on the current batch; at most `depth` batches wait in memory."""
    import queue
    import threading

    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    thread = threading.Thread(target=produce, name="tutormax-reader", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with suppress(queue.Empty):
                slots.get_nowait()
            thread.join(timeout=0.05)


class Peekable(Iterator[RawBatch]):
    """An iterator that can say whether it has more, reading the next item ahead to know
    (in the caller's thread, between two of its own pulls: never while one is running)."""

    def __init__(self, items: Iterator[RawBatch]) -> None:
        self._items = items
        self._ahead: list[RawBatch] = []

    def __next__(self) -> RawBatch:
        return self._ahead.pop() if self._ahead else next(self._items)

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()

    def more(self) -> bool:
        if not self._ahead:
            try:
                self._ahead.append(next(self._items))
            except StopIteration:
                return False
        return True
