"""The PostgreSQL backend: engine, faults, and the write path (a batch COPYed straight into
its table when its keys are new, else COPYed into a TEMP staging table, then one upsert).

COPY + `INSERT … SELECT … ON CONFLICT` is the fast way in (README, performance). COPY
takes the binary format (pgbinary: nothing to parse) into the staging tables, and into a
table whose columns the catalog shows of tutormax's types; into any other, CSV, with
timestamps as naive UTC (pyarrow writes tz-aware ones far slower) read with TimeZone UTC,
set for that COPY alone (see PgBatch._copy_direct).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.errors
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from ..errors import (
    DatabaseConflict,
    DatabaseError,
    DatabaseUnavailable,
    SchemaMismatch,
    StatementCancelled,
)
from ..schema import KINDS
from . import pgbinary
from .backend import savepoint, short
from .pgtext import copy_ready, staged_columns, text_array_literal, unchanged_left_out
from .tables import TABLES, RowRefused, upsert_clause

_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, batch_size=8192)
# What a server error that is not an outage, a schema mismatch or the operator's (_fault)
# is taken for: the rows' doing (a constraint, a trigger's RAISE with any code, a value
# too big for an index), and their batch is split until each refused row stands alone.
# Not our own SQL (class 42, but for _SCHEMA_CODES: a bug in tutormax).
_OUR_SQL_CLASS = "42"
_CONNECT_ARGS = {"connect_timeout": 10, "application_name": "tutormax"}
SCHEMA_LOCK = 7406917710  # pg_advisory_xact_lock key: one schema change at a time
_DIRECT = "tutormax_direct"  # the savepoint of a COPY straight into the table
_TZ_KEPT = "tutormax.timezone"  # where that COPY keeps the session's TimeZone
# A table's column types as pgbinary names them (format_type without the modifier), and
# its kind of relation ('p': partitioned).
# Also, for pgtext.staged_columns, the type under a domain (its base) and its category
# ('S': text of any kind, citext in any schema included).
_COLUMN_TYPES = (
    "SELECT a.attname, format_type(a.atttypid, NULL), c.relkind, format_type(b.oid, NULL), "
    "b.typcategory FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    "JOIN pg_type t ON t.oid = a.atttypid "
    "JOIN pg_type b ON b.oid = COALESCE(NULLIF(t.typbasetype, 0), t.oid) "
    "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
)

# SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_CANCELLED = "57014"  # query_canceled: a statement timeout, or pg_cancel_backend
_OUTAGE_CLASSES = ("08", "53", "57")  # connection exception, insufficient resources, shutdown
_OUTAGE_CODES = {"55P03"}  # lock timeout
_CONFLICT_CODES = {"40001", "40P01"}  # serialization failure, deadlock: an outage too
_SCHEMA_CODES = {"42P01", "42703", "42804", "42P10"}  # undefined table/column, wrong type
_OPERATOR_CLASSES = ("28", "3D", "25")  # authorization, no such database, read-only server
_OPERATOR_CODES = {"42501", "XX001", "XX002"}  # insufficient privilege, corrupt data/index


def row_caused(exc: BaseException) -> bool:
    if not isinstance(exc, psycopg2.Error) or not exc.pgcode:
        return False  # no SQLSTATE: the client failed, not a row
    return exc.pgcode[:2] != _OUR_SQL_CLASS and _fault(exc) is None


def cancelled(exc: BaseException) -> bool:
    """The server cancelled the statement: a write the batch's bisection splits (backend)."""
    return isinstance(exc, psycopg2.Error) and exc.pgcode == _CANCELLED


def _fault(exc: BaseException) -> type[DatabaseError] | None:
    if not isinstance(exc, psycopg2.Error):
        return None
    code = exc.pgcode or ""
    if not code:  # no SQLSTATE: the client itself failed (refused, reset, closed)
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return DatabaseUnavailable
        return None
    if code == _CANCELLED:  # not an outage: retried as it is, it is cancelled again
        return StatementCancelled
    if code in _CONFLICT_CODES:
        return DatabaseConflict
    if code[:2] in _OUTAGE_CLASSES or code in _OUTAGE_CODES:
        return DatabaseUnavailable
    if code in _SCHEMA_CODES:
        return SchemaMismatch
    if code[:2] in _OPERATOR_CLASSES or code in _OPERATOR_CODES:
        return DatabaseError
    return None


def refusal_message(exc: BaseException) -> str:
    """The database's own words, short: the primary message and its DETAIL line."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        return short(str(exc) or type(exc).__name__)
    if cancelled(exc):
        primary = f"the database cancelled this row's write: {primary}"
    detail = getattr(diag, "message_detail", None)
    return short(f"{primary} ({detail})" if detail else primary)


class PostgresBackend:
    name = "postgresql"
    driver_errors: tuple[type[BaseException], ...] = (psycopg2.Error,)

    def __init__(self) -> None:
        self._odds = _DirectOdds()

    def engine(self, url: sa.URL) -> sa.Engine:
        # The COPY fast path needs psycopg2, whatever driver the URL names.
        url = url.set(drivername="postgresql+psycopg2")
        args = {k: v for k, v in _CONNECT_ARGS.items() if k not in url.query}
        return sa.create_engine(url, pool_pre_ping=True, connect_args=args)

    def key_filter(self, col: sa.ColumnElement[Any], ids: pa.Array) -> sa.ColumnElement[bool]:
        """`col = ANY(ids)`, the ids sent as one array literal of no declared type, which
        PostgreSQL reads as an array of the column's own type: so a key column a DBA made
        char(n) is compared as char(n), by its index (a text[] cast the column instead,
        and a 1,000-id lookup on 1M rows scanned the table: 626 ms against 9 ms).

        NOTE: a Python list bound as an array is rendered by psycopg2 as ARRAY['…', …] one
        element at a time, slower than the query itself (README, Performance)."""
        literal = sa.bindparam("ids", text_array_literal(ids), type_=sa.types.NullType())
        return col == sa.any_(literal)

    def lock_schema(self, conn: sa.Connection) -> None:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")

    def begin(self, conn: sa.Connection) -> None:
        """Nothing to say before BEGIN: row locks and ON CONFLICT handle concurrency."""

    def fault(self, exc: BaseException) -> type[DatabaseError] | None:
        return _fault(exc)

    def batch(
        self,
        dbapi_conn: Any,
        kind: str,
        table: pa.Table,
        existing: Callable[[], pa.Array],
        plain: bool,
    ) -> PgBatch:
        return PgBatch(dbapi_conn, kind, table, self._odds, plain)

    # refresh's three steps are in postgres_refresh.py (imported when a refresh runs).

    def read_page(self, dbapi_conn: Any, kind: str, after: str | None, limit: int) -> pa.Table:
        from .postgres_refresh import read_page

        return read_page(dbapi_conn, kind, after, limit)

    def update_derived(self, dbapi_conn: Any, kind: str, rows: pa.Table) -> int:
        from .postgres_refresh import update_derived

        return update_derived(dbapi_conn, kind, rows)

    def may_skip_rows(self, dbapi_conn: Any, kind: str) -> bool:
        """Whether the table has a trigger that can keep a row out without an error: an
        enabled user trigger on INSERT or UPDATE, for each row or statement (a BEFORE row
        trigger that returns NULL skips the row; any may delete rows), on the table or on
        any partition of it. tgtype's bits: 4 insert, 16 update. Foreign keys' triggers are
        internal.

        The table is locked first in the mode the write takes anyway (ROW EXCLUSIVE, which
        CREATE TRIGGER waits for): a trigger created after this look waits for the batch's
        transaction to end, instead of slipping in between the look and the write. A rule
        on the table is refused: COPY ignores rules and the upsert cannot run through them,
        so a row's fate would depend on the write path its batch took."""
        table = f'"{kind}"'
        with dbapi_conn.cursor() as cur:
            cur.execute(
                f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE; "
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid IN (SELECT "
                "to_regclass(%s) UNION ALL SELECT relid FROM pg_partition_tree(to_regclass(%s))) "
                "AND NOT tgisinternal AND tgenabled <> 'D' AND tgtype & 20 <> 0), "
                "(SELECT string_agg(rulename, ', ') FROM pg_rules WHERE tablename = %s "
                "AND schemaname = current_schema())",
                (table, table, kind),
            )
            triggers, rules = cur.fetchone()
        if rules:
            raise DatabaseError(
                f"table {kind} has rules ({rules}): tutormax writes with COPY, which ignores "
                "rules, and with INSERT … ON CONFLICT … RETURNING, which cannot run through "
                "them, so a row's fate would depend on its batch; drop the rules (a trigger "
                "does what a rule does, and tutormax accounts for what it keeps out)"
            )
        return bool(triggers)

    def prepare_refresh(self, dbapi_conn: Any, kind: str) -> bool:
        from .postgres_refresh import analyze_if_stale

        return analyze_if_stale(dbapi_conn, kind)


class _DirectOdds:
    """Whether a batch's rows are worth COPYing straight into the table (see PgBatch): yes
    until a COPY meets a stored key; then the next 1, 2, 4… (at most 64) batches of that kind
    go the staged way at once, and one more tries. A re-load pays a failed COPY now and then,
    a fresh load never."""

    MAX_SKIP = 64

    def __init__(self) -> None:
        self._skip: dict[str, int] = {}  # kind → batches still to stage without trying
        self._next: dict[str, int] = {}  # kind → the skip after the next failure

    def worth_trying(self, kind: str) -> bool:
        left = self._skip.get(kind, 0)
        if left:
            self._skip[kind] = left - 1
        return not left

    def record(self, kind: str, worked: bool) -> None:
        if worked:
            self._next.pop(kind, None)
            return
        skip = self._next.get(kind, 1)
        self._skip[kind] = skip
        self._next[kind] = min(2 * skip, self.MAX_SKIP)


class PgBatch:
    """One `Store.write` call on PostgreSQL; `attempt(lo, hi)` upserts rows [lo, hi).

    The first attempt at a whole batch COPYs it straight into the table, as a bulk load
    would, in a savepoint: if every key is new and every row fits, that is the whole write
    (all inserted). Any refusal — a stored key, a constraint — rolls that back, and the
    batch takes the general way: COPY into a TEMP staging table, then one upsert, bisected
    on refusals. No lock is needed: the COPY either writes every row or none."""

    def __init__(
        self,
        dbapi_conn: Any,
        kind: str,
        table: pa.Table,
        odds: _DirectOdds | None = None,
        plain: bool = False,
    ) -> None:
        self.cur = dbapi_conn.cursor()
        self.kind = kind
        self.odds = odds
        self.table = table
        names = table.column_names
        assert [c.name for c in TABLES[kind].columns] == names
        stage = f"tutormax_stage_{kind}"
        cols = ", ".join(f'"{n}"' for n in names)
        create = pgbinary.stage_table_sql(stage, table.schema)
        self.cur.execute(f"{create}; {_COLUMN_TYPES}", (f'"{kind}"',))
        catalog = self.cur.fetchall()
        self.types: dict[str, str] = {n: t for n, t, *_ in catalog}  # the table's, as it is now
        bases = {n: (base, category) for n, _, _, base, category in catalog}
        key = KINDS[kind].key
        self.truncate_sql = f"TRUNCATE {stage}"
        self.copy_sql = f"COPY {stage} ({cols}) FROM STDIN WITH (FORMAT binary)"
        self.direct_sql = f'COPY "{kind}" ({cols}) FROM STDIN WITH (FORMAT {{fmt}})'
        selected = staged_columns(table.schema, bases)
        upsert = (
            f'INSERT INTO "{kind}" AS t ({cols}) SELECT {selected} FROM {stage} s '
            f"{unchanged_left_out(kind, table, self.types) if plain else ''}"
            f'ORDER BY s."{key}" {upsert_clause(kind, "IS DISTINCT FROM")}'
        )  # rows locked in key order, as refresh locks them: no deadlock between the two
        if any(relkind == "p" for _, _, relkind, *_ in catalog):
            # A partitioned table returns no system column (xmax): inserted are the rows
            # whose key the statement's snapshot did not hold (one another transaction
            # inserted meanwhile counts as inserted, not updated).
            self.upsert_sql = (
                f'WITH held AS MATERIALIZED (SELECT s."{key}" AS k FROM {stage} s '
                f'JOIN "{kind}" o ON o."{key}" = s."{key}"), '
                f'up AS ({upsert} RETURNING t."{key}" AS k) SELECT count(*) FILTER '
                "(WHERE NOT EXISTS (SELECT 1 FROM held WHERE held.k = up.k)), count(*) FROM up"
            )
        else:
            self.upsert_sql = (
                f"WITH up AS ({upsert} RETURNING (t.xmax = 0) AS ins) "
                "SELECT count(*) FILTER (WHERE ins), count(*) FROM up"
            )

    def attempt(self, lo: int, hi: int) -> tuple[int, int]:
        """(inserted, updated) for rows [lo, hi); raises RowRefused, leaving no trace."""
        cur = self.cur
        whole = lo == 0 and hi == self.table.num_rows
        if whole and self.odds is not None and self.odds.worth_trying(self.kind):
            worked = self._copy_direct()
            self.odds.record(self.kind, worked)
            if worked:
                return hi - lo, 0
        data = pgbinary.encode(self.table.slice(lo, hi - lo))
        with savepoint(cur, row_caused, refusal_message, cancelled):
            cur.execute(self.truncate_sql)
            cur.copy_expert(self.copy_sql, data, size=1 << 20)
            cur.execute(self.upsert_sql)
            inserted, returned = cur.fetchone()
        return int(inserted), int(returned) - int(inserted)

    def _copy_direct(self) -> bool:
        """COPY the rows straight into the table; False (and no trace) if it refuses any,
        RowRefused (no trace) if the database cancels it (bisect splits the batch then).

        In the binary format when the catalog says the table's columns are of types the
        values can be sent as (pgbinary.encode; nothing to parse), else in CSV, whose
        timestamps are naive UTC (see the module docstring) and the table's timestamptz:
        that COPY reads them with TimeZone UTC, set for it alone (the session's own
        setting is kept aside and put back: `SET LOCAL … DEFAULT` would give the server's
        default, not the session's)."""
        cur = self.cur
        names = self.table.column_names
        try:
            data: Any = pgbinary.encode(self.table, [self.types.get(n, "") for n in names])
            sql, keep, restore = self.direct_sql.format(fmt="binary"), "", ""
        except TypeError:  # a column of another type (a DBA's change): CSV
            sql, data = self.direct_sql.format(fmt="csv"), pa.BufferReader(self._csv())
            keep = (
                f"; SELECT set_config('{_TZ_KEPT}', current_setting('TimeZone'), true), "
                "set_config('TimeZone', 'UTC', true)"
            )
            restore = f"SELECT set_config('TimeZone', current_setting('{_TZ_KEPT}'), true); "
        cur.execute(f"SAVEPOINT {_DIRECT}{keep}")
        try:
            cur.copy_expert(sql, data, size=1 << 20)
        except psycopg2.Error as exc:
            stopped = cancelled(exc)
            if not (stopped or row_caused(exc)):
                raise
            cur.execute(f"ROLLBACK TO SAVEPOINT {_DIRECT}; RELEASE SAVEPOINT {_DIRECT}")
            if stopped:
                raise RowRefused(refusal_message(exc), cancelled=True) from exc
            return False
        cur.execute(f"{restore}RELEASE SAVEPOINT {_DIRECT}")
        return True

    def _csv(self) -> pa.Buffer:
        """The whole batch as COPY CSV, for a table whose column types are not exactly
        tutormax's (text is read by any type that can read it)."""
        sink = pa.BufferOutputStream()
        pacsv.write_csv(copy_ready(self.table), sink, _CSV_OPTIONS)
        return sink.getvalue()

    def close(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self.cur.close()


BACKEND = PostgresBackend()
