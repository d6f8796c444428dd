"""The one batch function both doors share: validate → check parents → derive → persist.

`Pipeline.process(raw, ctx)` takes a raw Arrow batch (from a file or from stream messages)
and returns which rows were accepted and which were rejected, with every reason. Files and
the queue worker are adapters around it; neither has a per-record path of its own. The
rules are rules/, the parents parents.py, the fields fields/, the writes a `BatchStore`.

Duplicate keys (SPEC §4): a version is accepted or rejected on its own (rules, parents,
the database); of the accepted versions of a key, the newest by `updated_at`, else the
last, is stored, the others are `duplicates`. A key that occurs once goes straight to the
store. A duplicated key is *held* (`held.Held`) until its last version has been
seen — the end of the batch for the queue, the key's last occurrence in the run for files
(the run finds its duplicated keys with a pre-pass) — and then written once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from . import errors as E
from .duplicates import (
    GROUP,
    LAST,
    SEQ,
    DuplicateIndex,
    Settled,
    best_of_each_key,
    duplicated_in_batch,
    occurrence,
)
from .fields import FORMULA_VERSION, REGISTRY, Context, derive
from .held import Held
from .keyhash import key_hashes
from .parents import (
    ParentStore,
    SessionStarts,
    StartsLookup,
    any_of,
    missing_parents,
    orphan_errors,
    session_lookup,
)
from .schema import Kind
from .validate import FieldError, Rejected, positions, validate

DERIVED_NAMES = frozenset(f.name for f in REGISTRY)
ENRICHED_AT = "enriched_at"
PROVENANCE = (ENRICHED_AT, "reporting_timezone", "formula_version")  # store/tables.py
_UTC_US = pa.timestamp("us", tz="UTC")


@dataclass
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, other: WriteCounts | WriteResultLike) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged


class BatchStore(ParentStore, Protocol):
    """What the pipeline needs of a database (tutormax_cli.store.Store provides it): the
    parents' look-ups (parents.ParentStore), transactions and writes."""

    # Whether transactions on several threads at once are safe and useful (PostgreSQL:
    # each thread its own connection; SQLite: one writer at a time, so no).
    concurrent_writes: bool

    def transaction(self) -> AbstractContextManager[None]: ...
    def write(self, kind: str, table: pa.Table, *, trial: bool = False) -> WriteResultLike: ...
    def init_schema(self) -> None: ...


class WriteResultLike(Protocol):
    inserted: int
    updated: int
    unchanged: int
    refused: list[tuple[int, str]]


@dataclass
class Refusal:
    """A held version the database refused when it was finally written."""

    group: int
    seq: int
    message: str
    values: dict[str, object]


@dataclass
class BatchResult:
    accepted: pa.Array  # int64 positions in the raw batch of the rows that passed every check
    rejected: list[Rejected]  # positions in the raw batch, with every error
    output: pa.Table | None = None  # accepted rows: input columns (typed), then derived fields
    writes: WriteCounts = field(default_factory=WriteCounts)  # keys written directly
    held: int = 0  # accepted rows of this batch whose key is duplicated (decided when settled)
    settled: Settled = field(default_factory=Settled)  # held versions decided in this batch
    refusals: list[Refusal] = field(default_factory=list)  # held versions refused when written
    keys: pa.Array | None = None  # the keys of the accepted rows (aligned with `accepted`)
    key_hashes: pa.Array | None = None  # their keyhash.key_hashes, when already computed
    sessions: tuple[pa.Array, pa.Array] | None = None  # accepted sessions' starts, updated_at


@dataclass
class _Rows:
    """The rows still in play, as parallel columns: typed input, extra input columns,
    derived fields and their positions in the raw batch."""

    table: pa.Table
    others: dict[str, pa.Array]
    positions: pa.Array
    derived: pa.Table | None = None

    def filter(self, keep: pa.Array) -> _Rows:
        return _Rows(
            self.table.filter(keep),
            {k: v.filter(keep) for k, v in self.others.items()},
            self.positions.filter(keep),
            None if self.derived is None else self.derived.filter(keep),
        )


class Pipeline:
    """Processes the batches of one kind; holds what a run must remember across batches.

    `duplicates` (files): the run's duplicated keys, found by a pre-pass; their versions
    are checked against the database by a trial write in their own batch (so each gets its
    own verdict there) and the best is written at the key's last occurrence. Without it
    (the queue), duplicates are looked for within each batch and settled in it: the best
    version is written, and if the database refuses it, the next best."""

    def __init__(
        self,
        kind: Kind,
        *,
        store: BatchStore | None = None,
        sessions: SessionStarts | None = None,
        input_columns: list[str] | None = None,
        duplicates: DuplicateIndex | None = None,
    ) -> None:
        self.kind = kind
        self.store = store
        self.sessions = sessions
        self.input_columns = input_columns  # None: no output table wanted
        self.duplicates = duplicates
        span = duplicates.span if duplicates is not None else 0
        self.held = Held(kind.key, span=span)

    def process(self, raw: pa.Table, ctx: Context, *, seq0: int = 0, group: int = 0) -> BatchResult:
        """One batch. `seq0` is the run position of its first row and `group` the input it
        comes from: held versions are reported back by (group, position).

        With `sessions`, the caller passes each result to `remember`, in batch order (a run
        may process batches side by side; the run's sessions are remembered in order)."""
        checked = validate(self.kind, raw)
        rows = _Rows(checked.table, checked.others, checked.accepted)
        rejected = checked.rejected
        result = BatchResult(rows.positions, rejected)
        # A key held since an earlier batch is due once its last occurrence has been read.
        upto = seq0 + raw.num_rows - 1 if self.duplicates is not None else None
        with self._transaction():
            rows = self._drop_orphans(rows, rejected)
            rows.derived = derive(self.kind.name, rows.table, self._with_sessions(ctx, rows, seq0))
            if self.store is not None:
                rows = self._persist(rows, ctx, seq0, group, result)
                for due in self.held.take_due(upto):
                    self._settle(due, result)
                if self.duplicates is None:  # the queue: everything is settled in its batch
                    rows = self._reject_refused_held(rows, seq0, result)
        result.accepted = rows.positions
        result.keys = rows.table[self.kind.key].combine_chunks()
        joined = self.sessions is not None and self.kind.name == "sessions"
        if joined or self.store is None:  # the feedback join and the duplicate count need
            result.key_hashes = key_hashes(result.keys)  # them: hashed once, here, in parallel
        if joined:
            t = rows.table
            result.sessions = (
                t["scheduled_start"].combine_chunks(),
                t["updated_at"].combine_chunks(),
            )
        if self.input_columns is not None:
            result.output = self._output(rows)
        rejected.sort(key=lambda r: r.index)
        return result

    def remember(self, result: BatchResult) -> None:
        """Remember a sessions batch's accepted sessions for the feedback join."""
        if self.sessions is None or result.sessions is None or result.keys is None:
            return
        starts, updated_at = result.sessions
        self.sessions.remember(result.keys, starts, updated_at, hashes=result.key_hashes)

    def finish(self, ctx: Context) -> BatchResult:
        """Write what is still held (the end of the input, or a run stopped early)."""
        result = BatchResult(pa.array([], pa.int64()), [])
        if self.store is not None and len(self.held):
            with self._transaction():
                for due in self.held.take_due(None):
                    self._settle(due, result)
        return result

    def close(self) -> None:
        """Remove what the run held on disk (after `finish`, or when it stops)."""
        self.held.close()

    def _transaction(self) -> AbstractContextManager[None]:
        return self.store.transaction() if self.store is not None else nullcontext()

    # -- parents -------------------------------------------------------------------------------

    def _drop_orphans(self, rows: _Rows, rejected: list[Rejected]) -> _Rows:
        if self.store is None:
            return rows
        orphans = missing_parents(self.store, self.kind, rows.table)
        if not orphans:
            return rows
        rejected += orphan_errors(orphans, rows.positions, rows.table)
        return rows.filter(pc.invert(any_of(orphans)))

    # -- feedback's session --------------------------------------------------------------------

    def _with_sessions(self, ctx: Context, rows: _Rows, seq0: int) -> Context:
        if self.kind.name != "feedback" or (self.sessions is None and self.store is None):
            return ctx
        sessions: StartsLookup | None = self.sessions
        if self.sessions is not None and self.sessions.on_disk:
            ids = rows.table["session_id"].combine_chunks()
            sessions = self.sessions.for_rows(ids, pc.add(rows.positions, seq0))
        return Context(ctx.as_of, ctx.timezone, session_lookup(sessions, self.store))

    # -- persisting ----------------------------------------------------------------------------

    def _persist(
        self, rows: _Rows, ctx: Context, seq0: int, group: int, result: BatchResult
    ) -> _Rows:
        """Write the rows of keys that occur once, hold the others; the rows accepted."""
        if not rows.table.num_rows:
            return rows
        full = _store_rows(rows, ctx)
        seqs = pc.add(rows.positions, seq0)
        last = self._last_occurrence(full, seqs)
        held = pc.is_valid(last)
        refused: dict[int, str] = {}  # row index → the database's message
        direct_at = pc.indices_nonzero(pc.invert(held))
        if len(direct_at):
            res = self.store_write(full.take(direct_at))
            result.writes.add(res)
            refused.update((direct_at[i].as_py(), msg) for i, msg in res.refused)
        if pc.any(held).as_py():
            held_at = pc.indices_nonzero(held)
            candidates = _tagged(full.take(held_at), seqs.take(held_at), group, last.take(held_at))
            if self.duplicates is not None:  # files: each version gets its own verdict now
                trial = self._trial(candidates)
                refused.update((held_at[i].as_py(), msg) for i, msg in trial)
                candidates = candidates.filter(_keep(candidates.num_rows, {i for i, _ in trial}))
            result.held = candidates.num_rows
            self.held.offer(candidates)
        return _reject(rows, refused, result.rejected)

    def store_write(self, table: pa.Table, *, trial: bool = False) -> WriteResultLike:
        assert self.store is not None
        return self.store.write(self.kind.name, table, trial=trial)

    def _last_occurrence(self, full: pa.Table, seqs: pa.Array) -> pa.Array:
        """Per row: the run position of its key's last version if the key is duplicated
        (the row is held until then), else null (written now)."""
        keys = full[self.kind.key].combine_chunks()
        if self.duplicates is None:  # the queue: duplicates within this batch
            dup = duplicated_in_batch(keys)
            if not pc.any(dup).as_py():
                return pa.nulls(len(keys), pa.int64())
            return pc.if_else(dup, pc.max(seqs), pa.scalar(None, pa.int64()))
        if not self.duplicates:
            return pa.nulls(len(keys), pa.int64())
        return self.duplicates.lookup(seqs)

    def _trial(self, candidates: pa.Table) -> list[tuple[int, str]]:
        """Offer each version to the database and roll it back, so each gets its own
        verdict in its own batch. Versions of one key go in separate rounds (one statement
        cannot write a key twice)."""
        rounds = occurrence(candidates[self.kind.key].combine_chunks())
        refused: list[tuple[int, str]] = []
        for r in range(pc.max(rounds).as_py() + 1):
            at = pc.indices_nonzero(pc.equal(rounds, r))
            res = self.store_write(_plain(candidates.take(at)), trial=True)
            refused += [(at[i].as_py(), msg) for i, msg in res.refused]
        return refused

    def _settle(self, due: pa.Table, result: BatchResult) -> None:
        """Write the best version of each due key; if the database refuses it, the next
        best of that key (when held) is tried; the versions beaten are superseded."""
        key = self.kind.key
        while due.num_rows:
            best, rest = best_of_each_key(due, key)
            refused_keys: list[object] = []
            for g in pc.unique(best[GROUP]).to_pylist():
                part = best.filter(pc.equal(best[GROUP], g))
                res = self.store_write(_plain(part))
                counts = WriteCounts()
                counts.add(res)
                result.settled.stored.append((g, counts))
                for i, message in res.refused:
                    row = part.slice(i, 1)
                    refused_keys.append(row[key][0].as_py())
                    values = _input_values(row)
                    result.refusals.append(Refusal(g, row[SEQ][0].as_py(), message, values))
            retry = pc.is_in(
                rest[key], value_set=pa.array(refused_keys, rest.schema.field(key).type)
            )
            beaten = rest.filter(pc.invert(retry))
            result.settled.superseded += list(
                zip(beaten[GROUP].to_pylist(), beaten[SEQ].to_pylist(), strict=True)
            )
            due = rest.filter(retry)

    def _reject_refused_held(self, rows: _Rows, seq0: int, result: BatchResult) -> _Rows:
        """The queue: a held version the database refused is rejected in its own batch."""
        if not result.refusals:
            return rows
        by_seq = {r.seq - seq0: r.message for r in result.refusals}
        result.refusals = []
        index = {p: i for i, p in enumerate(rows.positions.to_pylist()) if p in by_seq}
        return _reject(rows, {index[p]: m for p, m in by_seq.items()}, result.rejected)

    def _output(self, rows: _Rows) -> pa.Table:
        assert rows.derived is not None
        names = [c for c in self.input_columns or () if c not in DERIVED_NAMES]
        table = rows.table
        cols = [table.column(c) if c in table.column_names else rows.others[c] for c in names]
        return pa.table([*cols, *rows.derived.columns], names=[*names, *rows.derived.column_names])


def _store_rows(rows: _Rows, ctx: Context) -> pa.Table:
    """Input columns, derived fields and their provenance (as-of, timezone, formula
    version): a row as the store writes it."""
    assert rows.derived is not None
    n = rows.table.num_rows
    provenance = [
        pa.repeat(pa.scalar(ctx.as_of, _UTC_US), n),
        pa.repeat(pa.scalar(ctx.timezone, pa.string()), n),
        pa.repeat(pa.scalar(FORMULA_VERSION, pa.int64()), n),
    ]
    return pa.table(
        [*rows.table.columns, *rows.derived.columns, *provenance],
        names=[*rows.table.column_names, *rows.derived.column_names, *PROVENANCE],
    )


def _tagged(table: pa.Table, seqs: pa.Array, group: int, last: pa.Array) -> pa.Table:
    n = table.num_rows
    return (
        table.append_column(SEQ, seqs)
        .append_column(GROUP, pa.repeat(pa.scalar(group, pa.int64()), n))
        .append_column(LAST, last)
    )


def _plain(table: pa.Table) -> pa.Table:
    """A held table without its bookkeeping columns."""
    return table.drop_columns([c for c in table.column_names if c.startswith("_")])


def _input_values(row: pa.Table) -> dict[str, object]:
    """A held row's input values (no derived field or provenance), for the rejects file."""
    values: dict[str, object] = _plain(row).to_pylist()[0]
    return {k: v for k, v in values.items() if k not in DERIVED_NAMES and k not in PROVENANCE}


def _keep(n: int, drop: set[int]) -> pa.Array:
    """Mask of n rows without the row indices in `drop`."""
    if not drop:
        return pa.repeat(pa.scalar(True), n)
    return pc.invert(pc.is_in(positions(n), value_set=pa.array(sorted(drop), pa.int64())))


def _reject(rows: _Rows, refused: dict[int, str], rejected: list[Rejected]) -> _Rows:
    """Rows the database refused (row index → its message) leave `rows` for `rejected`."""
    if not refused:
        return rows
    for i, message in sorted(refused.items()):
        error = FieldError("_row", E.DATABASE_REFUSED, message)
        rejected.append(Rejected(rows.positions[i].as_py(), [error]))
    return rows.filter(_keep(rows.table.num_rows, set(refused)))
