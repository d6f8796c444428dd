"""The SQLite backend: engine, faults and the write path (`executemany` upsert).

pysqlite's own transaction handling breaks SAVEPOINTs, so it is switched off and BEGIN is
emitted by SQLAlchemy's `begin` event (the recipe from SQLAlchemy's SQLite docs). Write
transactions use BEGIN IMMEDIATE so two writers queue on the busy timeout instead of
failing on a lock upgrade; that lock is also what holds a schema change alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import event

from ..errors import DatabaseError, DatabaseUnavailable, SchemaMismatch
from .backend import savepoint, short
from .tables import TABLES, dump_list, upsert_clause

IMMEDIATE = "tutormax_begin_immediate"  # Connection.info flag for the next BEGIN
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError)  # a trigger's RAISE(ABORT) too
_CHUNK_ROWS = 5_000


def _row_caused(exc: BaseException) -> bool:
    return isinstance(exc, _ROW_ERRORS)


BUSY_TIMEOUT_S = 30  # workers sharing one file wait this long for each other's writes
_OUTAGE = ("database is locked", "database table is locked", "disk i/o error")
_SCHEMA = ("no such table", "no such column", "has no column named")


def refusal_message(exc: BaseException) -> str:
    return short(str(exc) or type(exc).__name__)


class SqliteBackend:
    name = "sqlite"
    driver_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def engine(self, url: sa.URL) -> sa.Engine:
        db = url.database or ""
        if db and db != ":memory:" and not db.startswith("file:") and not os.path.isabs(db):
            url = url.set(database=os.path.abspath(db))  # relative to the folder we start in
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            with contextlib.suppress(OSError):  # like --out does; else connecting says why
                os.makedirs(os.path.dirname(url.database) or ".", exist_ok=True)
        args = {} if "timeout" in url.query else {"timeout": BUSY_TIMEOUT_S}
        engine = sa.create_engine(
            url.set(drivername="sqlite+pysqlite"), pool_pre_ping=True, connect_args=args
        )
        _setup(engine)
        return engine

    def key_filter(self, col: sa.ColumnElement[Any], ids: pa.Array) -> sa.ColumnElement[bool]:
        listed: Any = sa.bindparam("ids", json.dumps(ids.to_pylist()))
        values = sa.func.json_each(listed).table_valued("value")
        return col.in_(sa.select(values.c.value))

    def lock_schema(self, conn: sa.Connection) -> None:
        """The write transaction is BEGIN IMMEDIATE: it holds the database's write lock."""

    def begin(self, conn: sa.Connection) -> None:
        conn.info[IMMEDIATE] = True

    def fault(self, exc: BaseException) -> type[DatabaseError] | None:
        if not isinstance(exc, sqlite3.Error):
            return None
        text = str(exc).lower()
        if any(s in text for s in _OUTAGE):
            return DatabaseUnavailable
        if any(s in text for s in _SCHEMA):
            return SchemaMismatch
        if "unable to open" in text or "readonly" in text or "not authorized" in text:
            return DatabaseError
        return None

    def batch(
        self,
        dbapi_conn: Any,
        kind: str,
        table: pa.Table,
        existing: Callable[[], pa.Array],
        plain: bool,
    ) -> SqliteBatch:
        return SqliteBatch(dbapi_conn, kind, table, existing())

    def read_page(self, dbapi_conn: Any, kind: str, after: str | None, limit: int) -> pa.Table:
        return read_page(dbapi_conn, kind, after, limit)

    def update_derived(self, dbapi_conn: Any, kind: str, rows: pa.Table) -> int:
        return update_derived(dbapi_conn, kind, rows)

    def prepare_refresh(self, dbapi_conn: Any, kind: str) -> bool:
        """Nothing: SQLite looks each row up by its primary key whatever it knows."""
        return False

    def may_skip_rows(self, dbapi_conn: Any, kind: str) -> bool:
        """Whether a trigger on the table can keep a row out without an error (a BEFORE
        trigger's `SELECT RAISE(IGNORE)`): any trigger on it, to be safe."""
        cur = dbapi_conn.cursor()
        try:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'trigger' "
                "AND lower(tbl_name) = lower(?))",
                (kind,),
            )
            return bool(cur.fetchone()[0])
        finally:
            cur.close()


def _setup(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.info.pop(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _python_columns(table: pa.Table) -> list[list[Any]]:
    """Each column as the Python values sqlite3 binds, in SQLAlchemy's storage formats."""
    columns = []
    for col in table.columns:
        arr = col.combine_chunks()
        if pa.types.is_timestamp(arr.type):
            # NOTE: a cast gives SQLAlchemy's format ("2024-01-31 18:00:00.000000"), much
            # faster than pc.strftime with the same result.
            text = arr.cast(pa.timestamp("us")).cast(pa.string())
            columns.append(text.to_pylist())
        elif pa.types.is_list(arr.type):
            columns.append([None if v is None else dump_list(v) for v in arr.to_pylist()])
        else:
            columns.append(arr.to_pylist())
    return columns


class SqliteBatch:
    """One `Store.write` call on SQLite; `attempt(lo, hi)` upserts rows [lo, hi).

    `existing` (aligned with the rows) says which keys were stored before the call: those
    go by the upsert, the others by a plain INSERT; each statement's own count of rows
    changed makes the inserted / updated / unchanged counts exact.
    """

    def __init__(self, dbapi_conn: Any, kind: str, table: pa.Table, existing: pa.Array) -> None:
        self.conn = dbapi_conn
        self.cur = dbapi_conn.cursor()
        self.table = table
        self.new = [not e for e in existing.fill_null(False).to_pylist()]
        names = [c.name for c in TABLES[kind].columns]
        assert names == table.column_names
        cols = ", ".join(f'"{n}"' for n in names)
        marks = ", ".join("?" for _ in names)
        # Keys absent when the batch began go in by plain INSERT (cheaper than the upsert):
        # the write transaction is BEGIN IMMEDIATE and keys are unique in a
        # batch, so no one can add them meanwhile. Only the others need ON CONFLICT.
        self.insert_sql = f'INSERT INTO "{kind}" ({cols}) VALUES ({marks})'
        self.sql = (
            f'INSERT INTO "{kind}" AS t ({cols}) VALUES ({marks}) {upsert_clause(kind, "IS NOT")}'
        )

    def attempt(self, lo: int, hi: int) -> tuple[int, int]:
        cur = self.cur
        inserted = updated = 0
        with savepoint(cur, _row_caused, refusal_message):
            # Python rows are built a chunk at a time: a whole batch of them (millions of
            # objects) would set the process's peak memory. The counts are the database's
            # (a row a trigger skips with RAISE(IGNORE) is in neither; Store.write).
            for start in range(lo, hi, _CHUNK_ROWS):
                part = self.table.slice(start, min(_CHUNK_ROWS, hi - start))
                rows = list(zip(*_python_columns(part), strict=True))
                new = self.new[start : start + len(rows)]
                # rowcount: the rows each statement changed itself (total_changes would
                # count a trigger's own writes too); a skipped DO UPDATE … WHERE is none
                cur.executemany(self.insert_sql, (r for r, n in zip(rows, new, strict=True) if n))
                inserted += max(cur.rowcount, 0)
                cur.executemany(self.sql, (r for r, n in zip(rows, new, strict=True) if not n))
                updated += max(cur.rowcount, 0)
        return inserted, updated

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.cur.close()


BACKEND = SqliteBackend()


# -- refresh: keyset pages out by SELECT, derived values back by executemany UPDATE ------------


def read_page(dbapi_conn: Any, kind: str, after: str | None, limit: int) -> pa.Table:
    """The next `limit` rows after key `after`, every column; the guard column holds the
    input columns exactly as stored (JSON), which the write-back compares."""
    import json

    from ..schema import KINDS
    from .refresh import GUARD
    from .tables import arrow_schema

    schema = arrow_schema(kind)
    k = KINDS[kind]
    cols = ", ".join(f'"{f.name}"' for f in schema)
    where, args = (f'WHERE "{k.key}" > ?', (after,)) if after is not None else ("", ())
    cur = dbapi_conn.cursor()
    try:
        cur.execute(
            f'SELECT {cols} FROM "{kind}" {where} ORDER BY "{k.key}" LIMIT {int(limit)}', args
        )
        rows = cur.fetchall()
    finally:
        cur.close()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for f, values in zip(schema, columns, strict=True):
        try:
            if pa.types.is_timestamp(f.type):
                arrays.append(pa.array(values, pa.string()).cast(pa.timestamp("us")))
            elif pa.types.is_list(f.type):
                arrays.append(pa.array(values, pa.string()))
            elif pa.types.is_boolean(f.type):
                arrays.append(pa.array(values, pa.int64()).cast(pa.bool_()))
            else:
                arrays.append(pa.array(values, f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            # A value of another type (SQLite keeps what it is given: a row changed by
            # hand): the column as text, which refresh.typed casts value by value.
            arrays.append(pa.array([None if v is None else str(v) for v in values], pa.string()))
    n_inputs = len(k.column_names)
    digests = [json.dumps(list(r[:n_inputs])) for r in rows]
    return pa.table([*arrays, pa.array(digests, pa.string())], names=[*schema.names, GUARD])


def update_derived(dbapi_conn: Any, kind: str, rows: pa.Table) -> int:
    """Write back derived values and provenance where the input columns still hold what was
    read (`IS` each value: null-safe); returns how many rows were updated."""
    import json

    from ..fields import fields_for
    from ..schema import KINDS
    from .refresh import GUARD
    from .tables import PROVENANCE

    k = KINDS[kind]
    names = [*(f.name for f in fields_for(kind)), *PROVENANCE]
    sets = ", ".join(f'"{n}" = ?' for n in names)
    guard = " AND ".join(f'"{c}" IS ?' for c in k.column_names)
    sql = f'UPDATE "{kind}" SET {sets} WHERE "{k.key}" = ? AND {guard}'
    values = _python_columns(rows.select(names))
    read = [json.loads(d) for d in rows[GUARD].to_pylist()]
    params = (
        [*v, r[k.column_names.index(k.key)], *r]
        for v, r in zip(zip(*values, strict=True), read, strict=True)
    )
    cur = dbapi_conn.cursor()
    try:
        cur.executemany(sql, params)
        return int(cur.rowcount)
    finally:
        cur.close()
