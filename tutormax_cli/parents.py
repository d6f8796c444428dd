"""What a child row needs of its parents (SPEC §4): that they exist, and a feedback's session
start (for `feedback_delay_hours`).

A batch asks the store once per parent column for the distinct ids it names (`missing_parents`)
and once for the session starts it cannot find among the sessions of this run
(`SessionStarts`, then `session_lookup`). A file run remembers its sessions, so feedback read
after them finds their starts before anything is committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from . import errors as E
from .duplicates import SEQ, best_of_each_key
from .schema import Kind
from .validate import FieldError, Rejected, positions

_UTC_US = pa.timestamp("us", tz="UTC")

Orphans = list[tuple[str, str, pa.Array]]  # (column, parent kind, rows naming an unknown parent)


class ParentStore(Protocol):
    """What parents need of the database (pipeline.BatchStore is one)."""

    def existing_keys(self, kind: str, keys: pa.Array) -> pa.Array: ...
    def session_starts(self, session_ids: pa.Array) -> pa.Array: ...


class SessionStarts:
    """The sessions of this run (session_id → scheduled_start), for the feedback join.

    Of several versions of one session, the one a database would store counts (newest
    `updated_at`, else the last)."""

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []
        self._seq = 0
        self._index: tuple[pa.Array, pa.Array] | None = None

    def remember(self, ids: pa.Array, starts: pa.Array, updated_at: pa.Array | None = None) -> None:
        n = len(ids)
        if updated_at is None:
            updated_at = pa.nulls(n, _UTC_US)
        seqs = pc.add(positions(n), self._seq)
        self._seq += n
        self._parts.append(pa.table({"k": ids, "s": starts, "updated_at": updated_at, SEQ: seqs}))
        self._index = None

    def lookup(self, ids: pa.Array) -> pa.Array:
        if not self._parts:
            return pa.nulls(len(ids), _UTC_US)
        if self._index is None:
            every = pa.concat_tables(self._parts)
            if pc.count_distinct(every["k"]).as_py() != every.num_rows:
                every = best_of_each_key(every, "k")[0]
            self._parts = [every]
            self._index = (every["k"].combine_chunks(), every["s"].combine_chunks())
        keys, starts = self._index
        # index_in hashes its value set on every call, and the run's sessions are many while a
        # batch names few: hash the batch's distinct ids and probe the run's sessions against
        # them, one pass over the sessions instead of one hash table of them per batch.
        distinct = pc.unique(ids)
        slot = pc.index_in(keys, value_set=distinct)
        found = pc.is_valid(slot)
        slots, values = pc.filter(slot, found), pc.filter(starts, found)
        by_slot = pc.take(values, pc.index_in(positions(len(distinct)), value_set=slots))
        return pc.take(by_slot, pc.index_in(ids, value_set=distinct))


def session_lookup(
    sessions: SessionStarts | None, store: ParentStore | None
) -> Callable[[pa.Array], pa.Array]:
    """session_id → scheduled_start: this run's sessions first, then the database."""

    def lookup(ids: pa.Array) -> pa.Array:
        starts = sessions.lookup(ids) if sessions is not None else None
        if store is None:
            assert starts is not None
            return starts
        if starts is None:
            return store.session_starts(ids)
        unknown = pc.is_null(starts)
        if not pc.any(unknown).as_py():
            return starts
        from_db = store.session_starts(pc.filter(ids, unknown))
        return pc.replace_with_mask(starts, unknown, from_db.cast(starts.type))

    return lookup


def missing_parents(store: ParentStore, kind: Kind, table: pa.Table) -> Orphans:
    """The rows naming a parent the store does not hold; one query a parent column a batch."""
    found: Orphans = []
    if not table.num_rows:
        return found
    for column, parent in kind.parents:
        ids = table.column(column).combine_chunks()
        distinct = pc.unique(ids)
        known = store.existing_keys(parent, distinct)
        missing = pc.filter(distinct, pc.invert(known))
        if len(missing):
            found.append((column, parent, pc.is_in(ids, value_set=missing)))
    return found


def any_of(orphans: Orphans) -> pa.Array:
    """The rows with at least one unknown parent."""
    bad = orphans[0][2]
    for _, _, mask in orphans[1:]:
        bad = pc.or_(bad, mask)
    return bad


def orphan_errors(orphans: Orphans, at: pa.Array, table: pa.Table) -> list[Rejected]:
    """One `missing_parent` error per unknown parent of each row; `at` maps row → position."""
    by_row: dict[int, list[FieldError]] = {}
    for column, parent, mask in orphans:
        for i in pc.indices_nonzero(mask).to_pylist():
            value = table.column(column)[i].as_py()
            message = f"{value!r} is not a known {parent[:-1]} (not in {parent})"
            by_row.setdefault(i, []).append(FieldError(column, E.MISSING_PARENT, message))
    return [Rejected(at[i].as_py(), errs) for i, errs in sorted(by_row.items())]
