"""What a child row needs of its parents (SPEC §4): that they exist, and a feedback's session
start (for `feedback_delay_hours`).

A batch asks the store once per parent column for the distinct ids it names (`missing_parents`)
and once for the session starts it cannot find among the sessions of this run
(`SessionStarts`, then `session_lookup`). A file run remembers its sessions, so feedback read
after them finds their starts before anything is committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import errors as E
from .duplicates import SEQ, best_of_each_key
from .keyhash import key_hashes
from .schema import Kind
from .session_join import SessionJoin
from .validate import FieldError, Rejected

_UTC_US = pa.timestamp("us", tz="UTC")

Orphans = list[tuple[str, str, pa.Array]]  # (column, parent kind, rows naming an unknown parent)


# Sessions the feedback join keeps in memory (README, Memory); a run with more joins on
# disk (session_join), so its memory does not grow with its sessions.
MEMORY_SESSIONS = 1 << 20


class StartsLookup(Protocol):
    """session_id → scheduled_start (timestamp[us, UTC]), null when unknown."""

    def lookup(self, ids: pa.Array) -> pa.Array: ...


class _BatchStarts:
    """One batch's sessions, read from the join on disk: its ids and their starts."""

    def __init__(self, ids: pa.Array, starts: pa.Array) -> None:
        self._ids, self._starts = ids, starts

    def lookup(self, ids: pa.Array) -> pa.Array:
        # A session_id has one start, so any row carrying it tells it.
        return pc.take(self._starts, pc.index_in(ids, value_set=self._ids))


class ParentStore(Protocol):
    """What parents need of the database (pipeline.BatchStore is one)."""

    def existing_keys(self, kind: str, keys: pa.Array) -> pa.Array: ...
    def session_starts(self, session_ids: pa.Array) -> pa.Array: ...


class SessionStarts:
    """The sessions of this run (session_id → scheduled_start), for the feedback join.

    Of several versions of one session, the one a database would store counts (newest
    `updated_at`, else the last). Sessions are remembered batch by batch; the first look-up
    builds an index: the sessions' 64-bit key hashes sorted (numpy), with each one's key and
    start, about 40 bytes a session. A look-up is then a binary search per id, O(batch ×
    log sessions), and every hit is confirmed against the key itself, so a hash shared by
    two sessions cannot hand one's start to the other (those few go to an exact side table).

    Past `memory_sessions` sessions the run's sessions go to disk instead (session_join):
    the caller then `probe`s every feedback row's session_id and run position before the
    feedback is processed, `join`s once, and asks `for_rows` for each batch.
    """

    def __init__(
        self,
        hash_keys: Callable[[pa.Array], pa.Array] = key_hashes,
        memory_sessions: int | None = None,  # None: MEMORY_SESSIONS
    ) -> None:
        self._hash_keys = hash_keys
        self._memory_sessions = MEMORY_SESSIONS if memory_sessions is None else memory_sessions
        self._parts: list[_Part] = []
        self._kept = 0  # sessions in _parts
        self._index: _Part | None = None  # sorted by hash, one row a key
        self._side: _Part | None = None  # keys whose hash another key shares (exact look-up)
        self._building = threading.Lock()
        self._disk: SessionJoin | None = None  # past memory_sessions: the join on disk
        self._sealed = False  # no more sessions (seal)

    def seal(self) -> None:
        """No more sessions come: build the index now, before the feedback's batches are in
        flight (a build holds the sessions twice for a moment), and let go of `updated_at`,
        which only choosing among versions needs."""
        with self._building:
            if self._disk is None and self._parts:
                self._build()
            self._sealed = True
            if self._index is not None:
                self._index.updated_at = None

    @property
    def on_disk(self) -> bool:
        """Whether the feedback must be probed and joined before it is processed."""
        return self._disk is not None

    def remember(
        self,
        ids: pa.Array,
        starts: pa.Array,
        updated_at: pa.Array | None = None,
        *,
        hashes: pa.Array | None = None,  # the ids' hashes, if the caller has them already
    ) -> None:
        if self._sealed:
            raise RuntimeError("sessions remembered after seal()")
        if not len(ids):
            return
        if updated_at is None:
            updated_at = pa.nulls(len(ids), _UTC_US)
        if hashes is None or self._hash_keys is not key_hashes:  # (a test's own hash)
            hashes = self._hash_keys(ids)
        part = _Part(hashes.to_numpy(), ids, starts.cast(_UTC_US), updated_at.cast(_UTC_US))
        if self._disk is None:
            self._parts.append(part)
            self._kept += len(ids)
            if self._kept <= self._memory_sessions:
                return
            self._disk = SessionJoin(self._hash_keys)
            parts = [p for p in (self._index, self._side) if p is not None] + self._parts
            self._parts, self._index, self._side, self._kept = [], None, None, 0
        else:
            parts = [part]
        for p in parts:  # in run order: the index so far holds one version a key
            self._disk.remember(p.hashes, p.keys, p.starts, p.updated_at)

    def probe(self, ids: pa.Array, positions: pa.Array) -> None:
        """On disk: a feedback pre-pass's valid session_ids and their run positions."""
        assert self._disk is not None
        self._disk.probe(ids, positions)

    def join(self) -> None:
        assert self._disk is not None
        self._disk.join()

    def for_rows(self, ids: pa.Array, positions: pa.Array) -> StartsLookup:
        """On disk: the starts of one batch's rows (ids at run positions), as `join` laid
        them out."""
        assert self._disk is not None
        return _BatchStarts(ids, self._disk.starts_at(positions))

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()

    def lookup(self, ids: pa.Array) -> pa.Array:
        """Safe to call from several threads at once (not alongside `remember`)."""
        if self._disk is not None:
            raise RuntimeError("the sessions are on disk: look up by for_rows")
        with self._building:
            if self._parts:
                self._build()
        starts = pa.nulls(len(ids), _UTC_US)
        index = self._index
        if index is not None and len(index.hashes) and len(ids):
            wanted = self._hash_keys(ids).to_numpy()
            at = np.searchsorted(index.hashes, wanted).clip(0, len(index.hashes) - 1)
            taken = pa.array(at)
            same_key = pc.equal(pc.take(index.keys, taken), ids.cast(index.keys.type))
            found = pc.and_(pa.array(index.hashes[at] == wanted), pc.fill_null(same_key, False))
            starts = pc.if_else(found, pc.take(index.starts, taken), starts)
        if self._side is not None and len(ids):
            slot = pc.index_in(ids, value_set=self._side.keys)
            starts = pc.coalesce(starts, pc.take(self._side.starts, slot))
        return starts

    def _build(self) -> None:
        """Fold the remembered batches (and the index so far) into one sorted index.

        NOTE: built to hold few copies at once (a 5M-session build is hundreds of MiB): the
        hash order is found once and reused, and each column is gathered into its new order
        and its old chunks let go before the next."""
        parts = [p for p in (self._index, self._side) if p is not None] + self._parts
        self._parts, self._index, self._side = [], None, None
        hashes = np.concatenate([p.hashes for p in parts])
        # Chunked, not concatenated: `take` gathers from the chunks without a whole copy.
        columns = [
            pa.chunked_array([p.keys for p in parts]),
            pa.chunked_array([p.starts for p in parts]),
            pa.chunked_array([p.updated_at for p in parts]),
        ]
        del parts
        order = np.argsort(hashes, kind="stable")
        single = np.ones(len(order), bool)  # the only row of its hash
        same = hashes[order[1:]] == hashes[order[:-1]]
        single[1:] &= ~same
        single[:-1] &= ~same
        del same
        keep = order[single]  # in hash order
        side = None
        if not single.all():  # a hash held by several rows: duplicates (or a clash)
            runs = order[~single]
            at = pa.array(np.sort(runs))
            keys, starts, updated = (c.take(at) for c in columns)
            table = pa.table({"k": keys, "s": starts, "updated_at": updated, SEQ: at})
            best_at = best_of_each_key(table, "k")[0][SEQ].combine_chunks().to_numpy()
            best_hashes = hashes[best_at]
            shared = np.unique(best_hashes, return_counts=True)
            clash = np.isin(best_hashes, shared[0][shared[1] > 1])
            if clash.any():
                side = _gathered(hashes, list(columns), _by_hash(hashes, best_at[clash]))
            extra = _by_hash(hashes, best_at[~clash])
            keep = np.insert(keep, np.searchsorted(hashes[keep], hashes[extra]), extra)
        del order, single
        self._side = side
        self._index = _gathered(hashes, columns, keep)


def _by_hash(hashes: np.ndarray, at: np.ndarray) -> np.ndarray:
    return at[np.argsort(hashes[at], kind="stable")]


def _gathered(hashes: np.ndarray, columns: list[pa.ChunkedArray], at: np.ndarray) -> _Part:
    """The rows at `at` (in that order) as a part. Empties `columns` as it goes, so that
    each old column can go before the next is copied (when the caller keeps none)."""
    taken = pa.array(at)
    out = []
    while columns:
        out.append(columns.pop(0).take(taken).combine_chunks())
    return _Part(hashes[at], out[0], out[1], out[2])


@dataclass
class _Part:
    """Sessions as columns: key hashes (numpy int64), keys, starts, updated_at (None once
    sealed)."""

    hashes: np.ndarray
    keys: pa.Array
    starts: pa.Array
    updated_at: pa.Array | None


def session_lookup(
    sessions: StartsLookup | None, store: ParentStore | None
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
