"""Pre-passes: a kind's inputs read once for one column, before the run processes them.

* `duplicate_index` — with a database, which keys the inputs hold more than once
  (duplicates.DuplicateIndex), so that each key's stored version is decided across batches;
* `join_sessions` — without one, when the run's sessions went to disk (parents,
  session_join): every feedback row's session, found before the feedback is processed.

A pre-pass reads the inputs exactly as the run will (same batches, same run positions) and
types the column with the rule validation uses, so it sees the keys validation will accept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from ..duplicates import DuplicateIndex
from ..keyhash import key_hashes
from ..parents import SessionStarts
from ..schema import Kind
from ..validate import validate
from .read import Source

Stop = Callable[[], bool] | None  # asked after every batch: the CLI's Ctrl-C


def duplicate_index(sources: list[Source], batch_size: int, stop: Stop = None) -> DuplicateIndex:
    kind = sources[0].kind
    index = DuplicateIndex()
    try:
        for keys, at in _valid(sources, kind.key, batch_size, stop):
            index.add(key_hashes(keys), at)
        return index.finish()
    except BaseException:  # stopped, or a full disk: its temporary files go now
        index.close()
        raise


def join_sessions(
    sessions: SessionStarts, sources: list[Source], batch_size: int, stop: Stop = None
) -> None:
    for ids, at in _valid(sources, "session_id", batch_size, stop):
        sessions.probe(ids, at)
    sessions.join()


def _valid(
    sources: list[Source], column: str, batch_size: int, stop: Stop
) -> Iterator[tuple[pa.Array, pa.Array]]:
    """Each batch's valid values of `column` and their run positions (the kind's rows
    numbered from 0, over its inputs in order, as the run numbers them). When `stop` says
    so, KeyboardInterrupt: the run ends as a Ctrl-C between its batches ends it."""
    kind = sources[0].kind
    only = Kind(kind.name, (kind.column(column),), column)
    seq0 = 0
    for src in sources:
        for rb in src.batches(batch_size):
            if stop is not None and stop():
                raise KeyboardInterrupt
            n = rb.table.num_rows
            if not n:
                continue
            if column in rb.table.column_names:
                checked = validate(only, rb.table.select([column]))
                at = pc.add(checked.accepted, seq0) if seq0 else checked.accepted
                yield checked.table[column].combine_chunks(), at
            seq0 += n
