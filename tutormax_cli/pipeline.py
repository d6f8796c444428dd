"""The one batch function both doors share: validate → check parents → derive → persist.

`Pipeline.process(raw, ctx)` takes a raw Arrow batch (from a file or from stream messages)
and returns which rows were accepted and which were rejected, with every reason. Files and
the queue worker are adapters around it; neither has a per-record path of its own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from . import errors as E
from .fields import REGISTRY, Context, derive
from .schema import Kind
from .validate import FieldError, Rejected, positions, validate

DERIVED_NAMES = frozenset(f.name for f in REGISTRY)


@dataclass
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


class Store(Protocol):
    """What the pipeline needs of a database (tutormax_cli.store.Store provides it)."""

    def transaction(self) -> AbstractContextManager[None]: ...
    def existing_keys(self, kind: str, keys: pa.Array) -> pa.Array: ...
    def session_starts(self, session_ids: pa.Array) -> pa.Array: ...
    def write(self, kind: str, table: pa.Table) -> WriteResultLike: ...
    def init_schema(self) -> None: ...


class WriteResultLike(Protocol):
    inserted: int
    updated: int
    unchanged: int
    refused: list[tuple[int, str]]


@dataclass
class BatchResult:
    accepted: pa.Array  # int64 positions in the raw batch of the rows accepted
    rejected: list[Rejected]  # positions in the raw batch, with every error
    output: pa.Table | None = None  # accepted rows: input columns (typed), then derived fields
    duplicates: int = 0  # rows superseded by a later row with the same key in this batch
    writes: WriteCounts = field(default_factory=WriteCounts)


class SessionStarts:
    """The sessions of this run (session_id → scheduled_start), for the feedback join."""

    def __init__(self) -> None:
        self._ids: list[pa.Array] = []
        self._starts: list[pa.Array] = []
        self._index: tuple[pa.Array, pa.Array] | None = None

    def remember(self, ids: pa.Array, starts: pa.Array) -> None:
        self._ids.append(ids)
        self._starts.append(starts)
        self._index = None

    def lookup(self, ids: pa.Array) -> pa.Array:
        if not self._ids:
            return pa.nulls(len(ids), pa.timestamp("us", tz="UTC"))
        if self._index is None:
            self._index = (pa.concat_arrays(self._ids), pa.concat_arrays(self._starts))
        keys, starts = self._index
        # NOTE: index_in hashes its value set on every call, and the run's sessions are many
        # (0.6 s a batch at 1M). So hash the batch's few distinct ids and probe the run's
        # sessions against them instead: one pass over them, ~50 ms at 1M.
        distinct = pc.unique(ids)
        slot = pc.index_in(keys, value_set=distinct)
        found = pc.is_valid(slot)
        slots, values = pc.filter(slot, found), pc.filter(starts, found)
        every_slot = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int32()),
                                                             len(distinct))), 1)  # fmt: skip
        by_slot = pc.take(values, pc.index_in(every_slot, value_set=slots))
        return pc.take(by_slot, pc.index_in(ids, value_set=distinct))


class Pipeline:
    """Processes the batches of one kind; holds what a run must remember across batches."""

    def __init__(
        self,
        kind: Kind,
        *,
        store: Store | None = None,
        sessions: SessionStarts | None = None,
        input_columns: list[str] | None = None,
    ) -> None:
        self.kind = kind
        self.store = store
        self.sessions = sessions
        self.input_columns = input_columns  # None: no output table wanted

    def process(self, raw: pa.Table, ctx: Context) -> BatchResult:
        checked = validate(self.kind, raw)
        table, accepted, rejected = checked.table, checked.accepted, checked.rejected
        others = checked.others
        # Upserts keep the last row of a key (files without a database keep every row).
        keep, duplicates = (
            _last_of_each_key(table.column(self.kind.key)) if self.store else (None, 0)
        )
        if keep is not None and duplicates:
            table, accepted = table.take(keep), accepted.take(keep)
            others = {k: v.take(keep) for k, v in others.items()}
        with self._transaction():
            orphans = self._missing_parents(table)
            if orphans:
                rejected += _orphan_errors(orphans, accepted, table)
                good = pc.invert(_any(orphans))
                table, accepted = table.filter(good), accepted.filter(good)
                others = {k: v.filter(good) for k, v in others.items()}
            derived = derive(self.kind.name, table, self._with_sessions(ctx))
            writes = WriteCounts(updated=duplicates)
            if self.store is not None and table.num_rows:
                refused = self._persist(table, derived, ctx, writes)
                if refused is not None:
                    rejected += _refusals(refused, accepted)
                    good = _without(refused, table.num_rows)
                    table, derived, accepted = (
                        table.filter(good),
                        derived.filter(good),
                        accepted.filter(good),
                    )
                    others = {k: v.filter(good) for k, v in others.items()}
        if self.sessions is not None and self.kind.name == "sessions":
            self.sessions.remember(
                table.column("session_id").combine_chunks(),
                table.column("scheduled_start").combine_chunks(),
            )
        output = self._output(table, others, derived) if self.input_columns is not None else None
        rejected.sort(key=lambda r: r.index)
        return BatchResult(accepted, rejected, output, duplicates, writes)

    def _transaction(self) -> AbstractContextManager[None]:
        return self.store.transaction() if self.store is not None else nullcontext()

    def _missing_parents(self, table: pa.Table) -> list[tuple[str, str, pa.Array]]:
        """(column, parent kind, rows naming an unknown parent); one query a parent a batch."""
        found: list[tuple[str, str, pa.Array]] = []
        if self.store is None or not table.num_rows:
            return found
        for column, parent in self.kind.parents:
            ids = table.column(column).combine_chunks()
            distinct = pc.unique(ids)
            known = self.store.existing_keys(parent, distinct)
            missing = pc.filter(distinct, pc.invert(known))
            if len(missing):
                found.append((column, parent, pc.is_in(ids, value_set=missing)))
        return found

    def _with_sessions(self, ctx: Context) -> Context:
        if self.kind.name != "feedback" or (self.sessions is None and self.store is None):
            return ctx
        return Context(ctx.as_of, ctx.timezone, self._session_start)

    def _session_start(self, ids: pa.Array) -> pa.Array:
        starts = self.sessions.lookup(ids) if self.sessions is not None else None
        if self.store is None:
            assert starts is not None
            return starts
        if starts is None:
            return self.store.session_starts(ids)
        unknown = pc.is_null(starts)
        if not pc.any(unknown).as_py():
            return starts
        from_db = self.store.session_starts(pc.filter(ids, unknown))
        return pc.replace_with_mask(starts, unknown, from_db.cast(starts.type))

    def _persist(
        self, table: pa.Table, derived: pa.Table, ctx: Context, counts: WriteCounts
    ) -> list[tuple[int, str]] | None:
        assert self.store is not None
        enriched_at = pa.repeat(pa.scalar(ctx.as_of, pa.timestamp("us", tz="UTC")), table.num_rows)
        full = pa.table(
            [*table.columns, *derived.columns, enriched_at],
            names=[*table.column_names, *derived.column_names, "enriched_at"],
        )
        result = self.store.write(self.kind.name, full)
        counts.inserted += result.inserted
        counts.updated += result.updated
        counts.unchanged += result.unchanged
        return result.refused or None

    def _output(self, table: pa.Table, others: dict[str, pa.Array], derived: pa.Table) -> pa.Table:
        names = [c for c in self.input_columns or () if c not in DERIVED_NAMES]
        cols = [table.column(c) if c in table.column_names else others[c] for c in names]
        return pa.table([*cols, *derived.columns], names=[*names, *derived.column_names])


def _last_of_each_key(keys: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, int]:
    """Positions that keep the last row of each key, in input order, and how many were dropped."""
    n = len(keys)
    if n == 0:
        return pa.array([], pa.int64()), 0
    distinct = pc.count_distinct(keys).as_py()
    if distinct == n:
        return pa.array([], pa.int64()), 0
    idx = pa.table({"k": keys, "i": positions(n)})
    last = idx.group_by("k").aggregate([("i", "max")]).column("i_max")
    return pc.take(last, pc.sort_indices(last)), n - distinct


def _any(orphans: list[tuple[str, str, pa.Array]]) -> pa.Array:
    bad = orphans[0][2]
    for _, _, mask in orphans[1:]:
        bad = pc.or_(bad, mask)
    return bad


def _orphan_errors(
    orphans: list[tuple[str, str, pa.Array]], accepted: pa.Array, table: pa.Table
) -> list[Rejected]:
    by_row: dict[int, list[FieldError]] = {}
    for column, parent, mask in orphans:
        for i in pc.indices_nonzero(mask).to_pylist():
            value = table.column(column)[i].as_py()
            message = f"{value!r} is not a known {parent[:-1]} (not in {parent})"
            by_row.setdefault(i, []).append(FieldError(column, E.MISSING_PARENT, message))
    return [Rejected(accepted[i].as_py(), errs) for i, errs in sorted(by_row.items())]


def _refusals(refused: list[tuple[int, str]], accepted: pa.Array) -> list[Rejected]:
    return [
        Rejected(accepted[i].as_py(), [FieldError("_row", E.DATABASE_REFUSED, msg)])
        for i, msg in refused
    ]


def _without(refused: list[tuple[int, str]], n: int) -> pa.Array:
    drop = {i for i, _ in refused}
    return pa.array([i not in drop for i in range(n)], pa.bool_())
