"""What the Store needs of one database, and what every backend shares.

A backend is one module (`postgres.py`, `sqlite.py`) exporting `BACKEND`: how to make its
engine, filter by many keys in one bound parameter, lock the schema while it changes,
begin a write transaction, tell its driver's failures apart (SPEC §6: outage, schema
mismatch, operator problem, else a bug), phrase a refused row, and write a batch. The
Store picks `BACKENDS[url.get_backend_name()]`; adding a database is one module and one
entry there. Only a backend imports its driver (psycopg2 is imported by postgres.py alone).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import pyarrow as pa
import sqlalchemy as sa

from ..errors import DatabaseError
from .tables import RowRefused

BACKENDS: dict[str, str] = {  # SQLAlchemy backend name → module
    "postgresql": "tutormax_cli.store.postgres",
    "sqlite": "tutormax_cli.store.sqlite",
}
SAVEPOINT = "tutormax_write"
REFUSAL_MAX_CHARS = 300


class Batch(Protocol):
    """One `Store.write` call: `attempt(lo, hi)` writes rows [lo, hi) in a savepoint and
    returns (inserted, updated), or raises RowRefused leaving no trace."""

    def attempt(self, lo: int, hi: int) -> tuple[int, int]: ...
    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    driver_errors: tuple[type[BaseException], ...]  # everything its driver raises

    def engine(self, url: sa.URL) -> sa.Engine: ...
    def key_filter(self, col: sa.ColumnElement[Any], ids: pa.Array) -> sa.ColumnElement[bool]: ...
    def lock_schema(self, conn: sa.Connection) -> None: ...
    def begin(self, conn: sa.Connection) -> None: ...
    def fault(self, exc: BaseException) -> type[DatabaseError] | None: ...
    def batch(
        self, dbapi_conn: Any, kind: str, table: pa.Table, existing: Callable[[], pa.Array]
    ) -> Batch: ...
    def read_page(self, dbapi_conn: Any, kind: str, after: str | None, limit: int) -> pa.Table: ...
    def update_derived(self, dbapi_conn: Any, kind: str, rows: pa.Table) -> int: ...
    def prepare_refresh(self, dbapi_conn: Any, kind: str) -> bool: ...


def backend_for(name: str) -> Backend:
    """The backend of a SQLAlchemy backend name ("postgres" is PostgreSQL too)."""
    module = BACKENDS.get("postgresql" if name == "postgres" else name)
    if module is None:
        raise ValueError(f"unsupported database {name!r} (expected postgresql:// or sqlite:///)")
    backend: Backend = importlib.import_module(module).BACKEND
    return backend


def short(text: str) -> str:
    """A database message, one line, bounded."""
    lines = text.strip().splitlines()
    first = lines[0] if lines else "refused"
    return first if len(first) <= REFUSAL_MAX_CHARS else first[: REFUSAL_MAX_CHARS - 3] + "..."


@contextmanager
def savepoint(
    cursor: Any, row_caused: Callable[[BaseException], bool], message: Callable[[Any], str]
) -> Iterator[None]:
    """One write attempt under a SAVEPOINT: a refusal a row can cause (`row_caused`) rolls
    it back and becomes RowRefused (with the database's words); anything else goes up
    untouched."""
    cursor.execute(f"SAVEPOINT {SAVEPOINT}")
    try:
        yield
    except Exception as exc:
        if not row_caused(exc):
            raise
        cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        cursor.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        raise RowRefused(message(exc)) from exc
    cursor.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")


def bisect(
    attempt: Callable[[int, int], tuple[int, int]], n: int
) -> tuple[int, int, list[tuple[int, str]]]:
    """Run attempt(0, n); on a refusal split the range until each bad row stands alone."""
    inserted = updated = 0
    refused: list[tuple[int, str]] = []
    pending = [(0, n)]
    while pending:
        lo, hi = pending.pop()
        try:
            ins, upd = attempt(lo, hi)
        except RowRefused as exc:
            if hi - lo == 1:
                refused.append((lo, exc.message))
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
            continue
        inserted += ins
        updated += upd
    refused.sort()
    return inserted, updated, refused
