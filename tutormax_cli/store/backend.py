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
        self,
        dbapi_conn: Any,
        kind: str,
        table: pa.Table,
        existing: Callable[[], pa.Array],
        plain: bool,
    ) -> Batch: ...
    def read_page(self, dbapi_conn: Any, kind: str, after: str | None, limit: int) -> pa.Table: ...
    def update_derived(self, dbapi_conn: Any, kind: str, rows: pa.Table) -> int: ...
    def prepare_refresh(self, dbapi_conn: Any, kind: str) -> bool: ...
    def may_skip_rows(self, dbapi_conn: Any, kind: str) -> bool: ...


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
    cursor: Any,
    row_caused: Callable[[BaseException], bool],
    message: Callable[[Any], str],
    cancelled: Callable[[BaseException], bool] | None = None,
) -> Iterator[None]:
    """One write attempt under a SAVEPOINT: a refusal a row can cause (`row_caused`), or a
    cancellation (`cancelled`: a statement timeout), rolls it back and becomes RowRefused
    (with the database's words); anything else goes up untouched."""
    cursor.execute(f"SAVEPOINT {SAVEPOINT}")
    try:
        yield
    except Exception as exc:
        stopped = cancelled is not None and cancelled(exc)
        if not (stopped or row_caused(exc)):
            raise
        cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        cursor.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        raise RowRefused(message(exc), cancelled=stopped) from exc
    cursor.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")


def bisect(
    attempt: Callable[[int, int], tuple[int, int]], n: int
) -> tuple[int, int, list[tuple[int, str]]]:
    """Run attempt(0, n); on a refusal split the range until each bad row stands alone.

    A cancelled attempt (a statement timeout) is split the same way, so a row whose write
    is slow on its own is refused alone and the rest written. But when the whole batch and
    both its halves are cancelled, it is the batch (or the database), not a row: the
    cancellation goes up (errors.StatementCancelled), rather than every row being tried,
    and waited for, alone."""
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
                continue
            mid = (lo + hi) // 2
            halves = [(mid, hi), (lo, mid)]
            if exc.cancelled and (lo, hi) == (0, n):
                halves, cancels = [], 0
                for a, b in (lo, mid), (mid, hi):  # both, before going deeper
                    try:
                        ins, upd = attempt(a, b)
                    except RowRefused as again:
                        cancels += again.cancelled
                        if b - a == 1:
                            refused.append((a, again.message))
                        else:
                            halves.insert(0, (a, b))
                        continue
                    inserted += ins
                    updated += upd
                if cancels == 2:
                    raise (exc.__cause__ or exc) from None
            pending += halves
            continue
        inserted += ins
        updated += upd
    refused.sort()
    return inserted, updated, refused
