"""`tutormax refresh`: re-derive stored rows in place (SPEC §5, "Stored values stay true").

For each kind, the stored rows are read in key order, a batch at a time (keyset pages, so a
run can stop anywhere and a crash loses only the pages in flight); their stored input columns go
through the same field functions as a fresh load (`fields.derive`: no second definition in
SQL), at the refresh's as-of and timezone; only the rows whose derived values or
provenance change are written back, in one transaction a batch:

* tutors: the as-of fields at `--as-of`; every tutor row's `enriched_at` becomes that as-of,
  changed or not, so `enriched_at` always says when its tenure was true;
* a row written in another timezone, or by another formula version (0.1.0 rows have
  neither recorded): re-derived in full;
* feedback whose session's `scheduled_start` changed after the feedback was enriched: its
  `feedback_delay_hours` comes out different from the stored one, so it is written.

A row written by someone else between the read and the write (a worker or `enrich`) is not
overwritten: the write compares what was read (PostgreSQL: the row version, `xmin`, which
every UPDATE changes; SQLite: the input values themselves) and such rows are counted as
`skipped`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ..config import DEFAULT_BATCH_ROWS, DEFAULT_TIMEZONE
from ..errors import REQUIRED, DatabaseConflict, Interrupted, TutormaxError, UsageError
from ..fields import FORMULA_VERSION, Context, derive, fields_for
from ..ordered import in_order
from ..rules import PARSE_CODES, check_column
from ..rules.arrow import cast_each, is_text
from ..schema import KIND_ORDER, KINDS, Column, Type
from .pgtext import arrays_as_json
from .tables import ENRICHED_AT, REPORTING_TIMEZONE, arrow_schema
from .tables import FORMULA_VERSION as FORMULA_COLUMN

if TYPE_CHECKING:
    from . import Store

log = logging.getLogger("tutormax.refresh")

PAGE_WORKERS = 2  # pages re-derived and written side by side (PostgreSQL)
# A write the database ended to break a deadlock (or could not serialize) is made again,
# in a transaction of its own, this many times at most: its guard still holds, so a row
# written by the other side meanwhile is skipped, as in a run that never met it.
CONFLICT_RETRIES = 3
GUARD = "_guard"  # PostgreSQL: the row version read, xmin (the concurrency guard)

# (kind, rows scanned so far, rows in the table)
Progress = Callable[[str, int, int], None]


@dataclass
class RefreshCounts:
    kind: str
    scanned: int = 0
    changed: int = 0  # derived values or provenance differed: rewritten
    unchanged: int = 0  # the same values (a tutor's enriched_at is still restamped)
    skipped: int = 0  # its input changed after this refresh read it: left as it was
    unreadable: int = 0  # not scanned: a stored value is not of its column's type; left as it was
    seconds: float = 0.0
    # The first UNREADABLE_SHOWN of those, each {key, column, value}: what to fix by hand.
    unreadable_rows: list[dict[str, str]] = field(default_factory=list)

    # Rows written back and committed: the changed ones, and the tutors restamped (not in
    # --json: what a run that stops mid-way says it had written).
    committed: int = field(default=0, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["committed"]
        return out


@dataclass(frozen=True)
class RefreshOptions:
    as_of: datetime
    timezone: str = DEFAULT_TIMEZONE
    kinds: tuple[str, ...] = KIND_ORDER
    batch_size: int = DEFAULT_BATCH_ROWS
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size}: must be at least 1")


class _Rollback(Exception):
    pass


def refresh(
    store: Store,
    opts: RefreshOptions,
    progress: Progress | None = None,
    between: Callable[[str, pa.Table], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[RefreshCounts]:
    """Refresh every kind asked for, parents first. `between(kind, batch)` is called after a
    batch is read and before it is written back (tests use it to write concurrently).

    `stop` is asked after every page (the CLI's Ctrl-C or SIGTERM): when it says so, the
    pages in flight are finished and the run ends with `errors.Interrupted`, saying what was
    written back; a stop at once (KeyboardInterrupt) rolls back the page it lands in. A
    fatal error (the database goes away) says the same in its message (SPEC §6a)."""
    out: list[RefreshCounts] = []
    try:
        for kind in (k for k in KIND_ORDER if k in opts.kinds):
            out.append(RefreshCounts(kind))
            _refresh_kind(store, kind, opts, progress, between, out[-1], stop)
    except (_Stopped, KeyboardInterrupt):
        raise Interrupted(_refreshed_note(out, opts.dry_run)) from None
    except TutormaxError as exc:
        exc.message += _refreshed_note(out, opts.dry_run)
        exc.args = (exc.message,)
        raise
    return out


class _Stopped(Exception):
    pass


def _refreshed_note(counts: list[RefreshCounts], dry_run: bool) -> str:
    if dry_run:
        return " (dry run: nothing was written)"
    each = ", ".join(f"{c.kind} {c.scanned:,} scanned, {c.committed:,} written" for c in counts)
    return f" ({each}, in whole pages; refresh again to finish: rows already right are kept)"


def _refresh_kind(
    store: Store,
    kind: str,
    opts: RefreshOptions,
    progress: Progress | None,
    between: Callable[[str, pa.Table], None] | None,
    counts: RefreshCounts,
    stop: Callable[[], bool] | None,
) -> None:
    started = time.perf_counter()
    total = store.row_counts()[kind]
    if not opts.dry_run:
        store.prepare_refresh(kind)
    ctx = Context(as_of=opts.as_of, timezone=opts.timezone)

    failed: list[tuple[int, int, int, int]] = []  # what a page that failed had committed

    def page(stored: pa.Table, _: int) -> tuple[int, int, int, int]:
        """Re-derive and write back one page: (rows, written, skipped, committed)."""
        read = stored.num_rows
        stored, unreadable = typed(kind, stored)
        if unreadable:
            _note_unreadable(counts, unreadable)
            read -= len({i for i, _, _ in unreadable})
        fresh = rederive(store, kind, stored, ctx)
        changed = differs(kind, stored, fresh)
        if between is not None:
            between(kind, stored)
        # Changed rows, then (tutors only) the unchanged ones whose enriched_at moves to the
        # new as-of: two writes, so each count is exact.
        n_changed = _count(changed)
        wrote = _write(store, kind, fresh.filter(changed), opts.dry_run)
        restamp = _count(pc.invert(changed)) if kind == "tutors" else 0
        kept = pc.invert(changed)
        try:
            restamped = _write(store, kind, fresh.filter(kept), opts.dry_run) if restamp else 0
        except BaseException:  # the changed rows were committed: they count
            failed.append((n_changed, wrote, n_changed - wrote, 0 if opts.dry_run else wrote))
            raise
        committed = 0 if opts.dry_run else wrote + restamped
        return read, wrote, (n_changed - wrote) + (restamp - restamped), committed

    # Pages are disjoint key ranges, each written in a transaction of its own: on PostgreSQL
    # two are worked on side by side, each on its own connection (the database updates one
    # while the other is derived); their counts are taken in key order.
    workers = PAGE_WORKERS if store.concurrent_writes else 1
    pages = ((p, 0) for p in _pages(store, kind, opts.batch_size))

    def add(rows: int, wrote: int, skipped: int, committed: int) -> None:
        counts.scanned += rows
        counts.changed += wrote
        counts.skipped += skipped
        counts.committed += committed
        counts.unchanged = counts.scanned - counts.changed - counts.skipped

    late: list[tuple[Any, tuple[int, int, int, int]]] = []  # in flight when the run stopped
    try:
        with closing(in_order(page, pages, workers, late)) as done:
            for _, result in done:
                add(*result)
                if progress is not None:
                    progress(kind, counts.scanned, total)
                if stop is not None and stop():
                    raise _Stopped
    finally:
        for _, result in late:  # written back while the run stopped
            add(*result)
        for partial in failed:  # its first write committed, its second failed
            add(*partial)
    counts.seconds = round(time.perf_counter() - started, 3)


def _pages(store: Store, kind: str, size: int) -> Iterator[pa.Table]:
    """The stored rows of a kind in keyset pages, the next page read on a thread of its own
    (its own connection) while the caller derives and writes back this one: the database
    reads one while it updates the other."""
    key = KINDS[kind].key
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tutormax-refresh") as pool:
        ahead = pool.submit(store.read_page, kind, None, size)
        while (page := ahead.result()).num_rows:
            ahead = pool.submit(store.read_page, kind, page[key][-1].as_py(), size)
            yield page


def _count(mask: pa.Array) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


def _write(store: Store, kind: str, rows: pa.Table, dry_run: bool) -> int:
    """Write back in one transaction; a dry run rolls it back (the count is what it did).
    A transaction the database ended to break a deadlock is tried again (CONFLICT_RETRIES)."""
    if not rows.num_rows:
        return 0
    for retry in range(CONFLICT_RETRIES):
        try:
            return _write_once(store, kind, rows, dry_run)
        except DatabaseConflict as exc:
            log.info("%s: %s; writing the page again (%d of %d)", kind, exc.message, retry + 1,
                     CONFLICT_RETRIES)  # fmt: skip
    return _write_once(store, kind, rows, dry_run)


def _write_once(store: Store, kind: str, rows: pa.Table, dry_run: bool) -> int:
    written = 0
    try:
        with store.transaction():
            written = store.update_derived(kind, rows)
            if dry_run:
                raise _Rollback
    except _Rollback:
        pass
    return written


def typed(kind: str, raw: pa.Table) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """A page as read → the Arrow types of a fresh load (arrow_schema), by the same rules
    (lists arrive as JSON text); the guard column, if any, is kept as it is.

    A stored value that is not of its column's type (a row changed by hand: text in an
    integer column of SQLite, PostgreSQL's 'infinity' or a year past Arrow's range in a
    timestamp) cannot be re-derived: its row is dropped from the page, and returned as
    (row, column, value) — every such value, by rules.arrow.cast_each, which finds each
    one whatever its neighbours."""
    schema = arrow_schema(kind)
    k = KINDS[kind]
    cols, names = [], []
    bad: list[tuple[int, str, str]] = []
    for f in schema:
        arr = raw[f.name].combine_chunks()
        required = f.name in k.column_names and k.column(f.name).required
        if pa.types.is_list(f.type) and not pa.types.is_list(arr.type):
            text = arr.cast(pa.string())  # JSON, or a DBA's text: PostgreSQL's array literals
            arr = _parsed(text, Column(f.name, Type.LIST, required=required), bad,
                          arrays_as_json(text))  # fmt: skip
        elif is_text(arr.type) and f.type in _TYPE_OF:  # a column a DBA made text (or numeric)
            arr = _parsed(arr, Column(f.name, _TYPE_OF[f.type], required=required), bad)
        elif arr.type != f.type:
            arr = _cast_each(arr, f, bad)
        cols.append(arr)
        names.append(f.name)
    if GUARD in raw.column_names:
        cols.append(raw[GUARD].combine_chunks())
        names.append(GUARD)
    table = pa.table(cols, names=names)
    if bad:
        gone = pa.array(sorted({i for i, _, _ in bad}), pa.int64())
        keep = pc.invert(pc.is_in(pa.array(range(table.num_rows), pa.int64()), gone))
        keys = table[k.key].to_pylist()
        bad = [(i, f"{keys[i]} {col}", value) for i, col, value in bad]
        table = table.filter(keep)
    return table, bad


# The field types a stored value read as text is parsed back to, by the field's CSV rule.
_TYPE_OF = {t.arrow: t for t in (Type.INT, Type.FLOAT, Type.BOOL)}


def _parsed(
    raw: pa.Array, column: Column, bad: list[tuple[int, str, str]], text: pa.Array | None = None
) -> pa.Array:
    """Stored text (`raw`, or `text` made of it) → the field's type by its CSV rule: the
    parse, and a required field's presence (a stored value was checked when it was
    loaded). A value the rule cannot read, or reads as none in a required field (a blank
    a DBA wrote), or that `text` could not be made of, is unreadable (`bad`). An int field
    a DBA made numeric(p, s) writes `60.00`: its zero decimals are dropped."""
    text = raw if text is None else text
    if column.type is Type.INT:
        text = pc.replace_substring_regex(text, r"^(\s*-?\d+)\.0*(\s*)$", r"\1\2")
    typed_arr, problems = check_column(column, text)
    unread = (PARSE_CODES[column.type], REQUIRED)  # (not the other rules: checked at load)
    lost = pc.and_(pc.is_valid(raw), pc.is_null(text))  # text could not be made of it
    masks = [p.mask for p in problems if p.code in unread] + [lost]
    for i in sorted({i for m in masks for i in pc.indices_nonzero(m).to_pylist()}):
        bad.append((i, column.name, repr(raw[i].as_py())[:80]))
    return typed_arr


def _cast_each(arr: pa.Array, f: pa.Field, bad: list[tuple[int, str, str]]) -> pa.Array:
    target = f.type

    def cast(a: pa.Array) -> pa.Array:
        if pa.types.is_timestamp(target):  # stored naive UTC, or already an instant
            a = a if pa.types.is_timestamp(a.type) else a.cast(pa.timestamp("us"))
        return a.cast(target)

    typed_arr, mask = cast_each(arr, cast, target)
    if mask is not None:
        for i in pc.indices_nonzero(mask).to_pylist():
            bad.append((i, f.name, repr(arr[i].as_py())[:80]))
    return typed_arr


UNREADABLE_SHOWN = 20


def _note_unreadable(counts: RefreshCounts, unreadable: list[tuple[int, str, str]]) -> None:
    counts.unreadable += len({i for i, _, _ in unreadable})
    for _, where, value in unreadable:
        if len(counts.unreadable_rows) < UNREADABLE_SHOWN:
            key, _, column = where.rpartition(" ")
            counts.unreadable_rows.append({"key": key, "column": column, "value": value})


def rederive(store: Store, kind: str, stored: pa.Table, ctx: Context) -> pa.Table:
    """The stored rows with derived fields and provenance computed afresh (feedback reads
    its sessions' starts from the sessions table, as a fresh load does)."""
    k = KINDS[kind]
    inputs = stored.select(list(k.column_names))
    if kind == "feedback":
        ctx = Context(ctx.as_of, ctx.timezone, store.session_starts)
    derived = derive(kind, inputs, ctx)
    n = stored.num_rows
    table = stored
    for name in derived.column_names:
        table = table.set_column(table.schema.get_field_index(name), name, derived[name])
    provenance = {
        ENRICHED_AT: pa.repeat(pa.scalar(ctx.as_of, pa.timestamp("us", tz="UTC")), n),
        REPORTING_TIMEZONE: pa.repeat(pa.scalar(ctx.timezone, pa.string()), n),
        FORMULA_COLUMN: pa.repeat(pa.scalar(FORMULA_VERSION, pa.int64()), n),
    }
    for name, arr in provenance.items():
        table = table.set_column(table.schema.get_field_index(name), name, arr)
    return table


def differs(kind: str, stored: pa.Table, fresh: pa.Table) -> pa.Array:
    """Rows whose derived values, reporting timezone or formula version differ (nulls
    compared as values: a null that stays null is the same)."""
    names = [f.name for f in fields_for(kind)] + [REPORTING_TIMEZONE, FORMULA_COLUMN]
    out = pa.array([False] * stored.num_rows, pa.bool_())  # (a page of none: still bool)
    for name in names:
        a, b = stored[name].combine_chunks(), fresh[name].combine_chunks()
        same = pc.or_(pc.and_(pc.is_null(a), pc.is_null(b)), pc.fill_null(pc.equal(a, b), False))
        out = pc.or_(out, pc.invert(same))
    return out
