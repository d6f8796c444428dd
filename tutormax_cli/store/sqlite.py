"""SQLite: connection setup and the write path (`executemany` upsert in the transaction).

pysqlite's own transaction handling breaks SAVEPOINTs, so it is switched off and BEGIN is
emitted by SQLAlchemy's `begin` event (the recipe from SQLAlchemy's SQLite docs). Write
transactions use BEGIN IMMEDIATE so two writers queue on the busy timeout instead of
failing on a lock upgrade.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import event

from .tables import TABLES, RowRefused, dump_list, upsert_clause

IMMEDIATE = "tutormax_begin_immediate"  # Connection.info flag for the next BEGIN
_SAVEPOINT = "tutormax_write"
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError)
_CHUNK_ROWS = 5_000


def setup_engine(engine: sa.Engine) -> None:
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


def is_row_error(exc: BaseException) -> bool:
    return isinstance(exc, _ROW_ERRORS)


def refusal_message(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _python_columns(table: pa.Table) -> list[list[Any]]:
    """Each column as the Python values sqlite3 binds, in SQLAlchemy's storage formats."""
    columns = []
    for col in table.columns:
        arr = col.combine_chunks()
        if pa.types.is_timestamp(arr.type):
            # NOTE: a cast gives SQLAlchemy's format ("2024-01-31 18:00:00.000000") 28x
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

    `existing` (aligned with the rows) says which keys were stored before the call; with
    `total_changes` (which a skipped `DO UPDATE … WHERE` does not bump) it makes the
    inserted / updated / unchanged counts exact.
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
        # Keys absent when the batch began go in by plain INSERT (measured ~25% faster than
        # the upsert): the write transaction is BEGIN IMMEDIATE and keys are unique in a
        # batch, so no one can add them meanwhile. Only the others need ON CONFLICT.
        self.insert_sql = f'INSERT INTO "{kind}" ({cols}) VALUES ({marks})'
        self.sql = (
            f'INSERT INTO "{kind}" AS t ({cols}) VALUES ({marks}) {upsert_clause(kind, "IS NOT")}'
        )

    def attempt(self, lo: int, hi: int) -> tuple[int, int]:
        cur = self.cur
        cur.execute(f"SAVEPOINT {_SAVEPOINT}")
        before = self.conn.total_changes
        try:
            # Python rows are built a chunk at a time: a whole batch of them (millions of
            # objects) would set the process's peak memory.
            for start in range(lo, hi, _CHUNK_ROWS):
                part = self.table.slice(start, min(_CHUNK_ROWS, hi - start))
                rows = list(zip(*_python_columns(part), strict=True))
                new = self.new[start : start + len(rows)]
                cur.executemany(self.insert_sql, (r for r, n in zip(rows, new, strict=True) if n))
                cur.executemany(self.sql, (r for r, n in zip(rows, new, strict=True) if not n))
        except _ROW_ERRORS as exc:
            cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            raise RowRefused(refusal_message(exc)) from exc
        changed = self.conn.total_changes - before
        cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        inserted = sum(self.new[lo:hi])
        return inserted, changed - inserted

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.cur.close()
