"""Persistence (SPEC §5): the tables, batched upserts, key look-ups, transactions.

One `Store` wraps one SQLAlchemy engine. `transaction()` pins a connection; everything
called inside it (writes, key look-ups) runs on that connection, so a batch sees its own
uncommitted rows. A nested `transaction()` is a SAVEPOINT. Not thread-safe: one Store per
thread.

`write` upserts a batch in one statement per attempt (PostgreSQL: COPY into a staging
table + `INSERT … SELECT … ON CONFLICT`; SQLite: `executemany`). If the database refuses
the batch because of some rows, the batch is bisected under SAVEPOINTs until each bad row
is isolated: the others are written, the bad ones come back in `WriteResult.refused`.
Losing the connection is never a refused row: it raises `errors.DatabaseUnavailable`
(each backend tells outages, schema mismatches and operator problems apart; backend.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from ..config import check_url, mask_url, scrub
from ..errors import DatabaseError
from ..schema import KINDS
from .backend import Backend, backend_for, bisect
from .lookups import Lookups
from .tables import TABLES, arrow_schema, conform, metadata

log = logging.getLogger("tutormax.store")

__all__ = [
    "TABLES", "DatabaseError", "Store", "WriteResult", "arrow_schema", "metadata", "sqlite_file",
]  # fmt: skip


@dataclass
class WriteResult:
    """What one `Store.write` did; the four counts add up to the rows given."""

    inserted: int
    updated: int
    unchanged: int
    refused: list[tuple[int, str]] = field(default_factory=list)  # (row index, db message)

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged + len(self.refused)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0].strip() if lines else type(orig).__name__


def _password_of(url: str) -> str | None:
    try:
        return sa.make_url(url).password
    except (sa.exc.ArgumentError, ValueError):
        return None


def _scrub(text: str, password: str | None) -> str:
    text = text.replace(password, "***") if password else text
    return scrub(text)


def sqlite_file(url: str) -> Path | None:
    """The file a `sqlite:///…` URL names; None for another database, an in-memory one or
    text that is no URL (Store.connect then says what is wrong with it)."""
    try:
        u = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return None
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    return Path(u.database)


def _engine_for(url: str) -> tuple[sa.Engine, Backend]:
    """Check the URL, pick the backend, create the engine (no connection yet)."""
    try:
        u = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ValueError("not a database URL (expected postgresql://… or sqlite:///…)") from None
    backend = backend_for(u.get_backend_name())
    return backend.engine(u), backend


class Store:
    """The database behind tutormax; see the module docstring."""

    url_masked: str

    def __init__(
        self, engine: sa.Engine, backend: Backend, url_masked: str, password: str | None
    ) -> None:
        self.engine = engine
        self.backend = backend
        self.url_masked = url_masked
        self.dialect: str = backend.name  # "postgresql" or "sqlite"
        self.concurrent_writes = backend.name == "postgresql"  # pipeline.BatchStore
        self._password = password
        self._local = threading.local()  # the open transaction's connection, per thread
        self._errors_caught: tuple[type[BaseException], ...] = (
            sa.exc.SQLAlchemyError,
            *backend.driver_errors,
        )
        self._lookups = Lookups(self._reading, backend)

    @classmethod
    def connect(cls, url: str) -> Store:
        """Open the database and check it answers; DatabaseError (masked URL) if not."""
        check_url(url, "--db")
        masked = mask_url(url)
        try:
            engine, backend = _engine_for(url)
        except (ValueError, ImportError, sa.exc.SQLAlchemyError) as exc:
            reason = _scrub(_reason(exc), _password_of(url))
            raise DatabaseError(f"cannot connect to {masked}: {reason}") from None
        store = cls(engine, backend, masked, _password_of(url))
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except store._errors_caught as exc:
            engine.dispose()
            reason = _scrub(_reason(exc), store._password)
            raise DatabaseError(f"cannot connect to {masked}: {reason}") from None
        return store

    # -- connections and transactions ------------------------------------------------------

    @property
    def _conn(self) -> sa.Connection | None:
        """The connection of this thread's open transaction: threads may each have one
        (a run that writes batches side by side), none sees another's."""
        conn: sa.Connection | None = getattr(self._local, "conn", None)
        return conn

    @_conn.setter
    def _conn(self, conn: sa.Connection | None) -> None:
        self._local.conn = conn

    @property
    def connection(self) -> sa.Connection:
        """The connection of the open transaction (inside `transaction()` only)."""
        assert self._conn is not None, "no transaction is open"
        return self._conn

    @contextmanager
    def connect_once(self) -> Iterator[sa.Connection]:
        """The open transaction's connection, else a short-lived one (reads only)."""
        with self._reading() as conn:
            yield conn

    def errors(self, action: str) -> AbstractContextManager[None]:
        """Driver errors inside the block → the tutormax fault they are (see `_errors`)."""
        return self._errors(action)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Driver errors → the tutormax fault they are (store/faults.py), URL masked; a
        failure that is none of those (a bug) is raised as it is."""
        try:
            yield
        except DatabaseError:
            raise
        except self._errors_caught as exc:
            fault = self._fault(exc)
            if fault is None:
                raise
            reason = _scrub(_reason(exc), self._password)
            hint = getattr(fault, "hint_text", None)
            raise fault(f"{action} failed on {self.url_masked}: {reason}", hint=hint) from exc

    def _fault(self, exc: BaseException) -> type[DatabaseError] | None:
        orig = getattr(exc, "orig", None) or exc
        if isinstance(exc, sa.exc.DisconnectionError | sa.exc.TimeoutError):  # the pool's
            from ..errors import DatabaseUnavailable

            return DatabaseUnavailable
        return self.backend.fault(orig)

    def _discard(self, conn: sa.Connection) -> None:
        """Roll back and return a connection; a dead one is invalidated, never raises."""
        try:
            conn.rollback()
        except Exception:
            with suppress(Exception):
                conn.invalidate()
        with suppress(Exception):
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction (a SAVEPOINT when one is open): commit on clean exit, else roll back."""
        if self._conn is not None:
            conn = self._conn
            with self._errors("savepoint"):
                nested = conn.begin_nested()
            try:
                yield
            except BaseException:
                with suppress(Exception):
                    nested.rollback()
                raise
            with self._errors("release savepoint"):
                nested.commit()
            return
        with self._errors("connect"):
            conn = self.engine.connect()
        try:
            self.backend.begin(conn)
            with self._errors("begin"):
                conn.begin()
        except BaseException:
            self._discard(conn)
            raise
        self._conn = conn
        try:
            yield
        except BaseException:
            self._conn = None
            self._discard(conn)
            raise
        self._conn = None
        try:
            with self._errors("commit"):
                conn.commit()
        finally:
            self._discard(conn)

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        """The open transaction's connection, else a short-lived one."""
        if self._conn is not None:
            with self._errors("query"):
                yield self._conn
            return
        with self._errors("query"), self.engine.connect() as conn:
            yield conn

    def init_schema(self) -> None:
        """Create the tables, or bring them to this version's schema (`migrate.upgrade`:
        idempotent, safe to race)."""
        from .migrate import upgrade

        upgrade(self)

    def ping(self) -> None:
        """Check the database answers, on a connection of its own (thread-safe: /readyz)."""
        with self._errors("ping"), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- look-ups (store/lookups.py) ---------------------------------------------------------

    def existing_keys(self, kind: str, keys: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Bool mask aligned with `keys`: the key is stored in that kind's table."""
        return self._lookups.existing_keys(kind, keys)

    def session_starts(self, session_ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Aligned `sessions.scheduled_start` (timestamp[us, UTC]); null when unknown."""
        return self._lookups.session_starts(session_ids)

    def row_counts(self) -> dict[str, int]:
        """Rows per table; 0 for a table not created yet."""
        return self._lookups.row_counts()

    # -- refresh (store/refresh.py) ----------------------------------------------------------

    def read_page(self, kind: str, after: str | None, limit: int) -> pa.Table:
        """The next `limit` stored rows of a kind after key `after`, in key order, with the
        guard of what was read (refresh.GUARD); on a short-lived connection of its own,
        never the open transaction's (refresh reads the next page on another thread)."""
        with self._errors(f"reading {kind}"), self.engine.connect() as conn:
            return self.backend.read_page(conn.connection.dbapi_connection, kind, after, limit)

    def prepare_refresh(self, kind: str) -> bool:
        """Give the planner what a refresh of `kind` needs (PostgreSQL: statistics, when the
        table has none or they are stale); whether anything was done. Its own transaction."""
        with self._errors(f"analyzing {kind}"), self.engine.begin() as conn:
            return self.backend.prepare_refresh(conn.connection.dbapi_connection, kind)

    def update_derived(self, kind: str, rows: pa.Table) -> int:
        """Write back refreshed derived values where the inputs are still those read."""
        with self._errors(f"refreshing {kind}"):
            assert self._conn is not None, "inside a transaction"
            dbapi = self._conn.connection.dbapi_connection
            return self.backend.update_derived(dbapi, kind, rows)

    # -- writes ------------------------------------------------------------------------------

    def write(self, kind: str, table: pa.Table, *, trial: bool = False) -> WriteResult:
        """Upsert a batch (unique keys, parents checked by the caller); see WriteResult.

        `trial`: write, learn which rows the database refuses, then roll the write back
        (inside the caller's transaction; the counts are then those of the trial)."""
        data = conform(kind, table)
        n = data.num_rows
        if n == 0:
            return WriteResult(0, 0, 0, [])
        # Inside the caller's transaction each attempt has its own SAVEPOINT already.
        outer = nullcontext() if self._conn is not None else self.transaction()
        with outer, self._errors(f"writing {kind}"):
            assert self._conn is not None
            undo = self._conn.begin_nested() if trial else None
            dbapi_conn = self._conn.connection.dbapi_connection
            try:
                key = data.column(KINDS[kind].key)
                # a trigger that can keep rows out: which keys were there before (_kept_out)
                plain = not self.backend.may_skip_rows(dbapi_conn, kind)
                before = None if plain else self.existing_keys(kind, key)
                batch = self.backend.batch(  # (SQLite asks which keys are stored: `before`)
                    dbapi_conn,
                    kind,
                    data,
                    lambda: before if before is not None else self.existing_keys(kind, key),
                    plain,
                )
                try:
                    inserted, updated, refused = bisect(batch.attempt, n)
                finally:
                    batch.close()
                if before is not None:
                    inserted, updated, refused = self._kept_out(
                        kind, key, before, (inserted, updated, refused)
                    )
            finally:
                if undo is not None:
                    undo.rollback()
        unchanged = n - inserted - updated - len(refused)
        return WriteResult(inserted, updated, unchanged, refused)

    def _kept_out(
        self,
        kind: str,
        key: pa.ChunkedArray,
        before: pa.Array,
        counts: tuple[int, int, list[tuple[int, str]]],
    ) -> tuple[int, int, list[tuple[int, str]]]:
        """A write's (inserted, updated, refused), with the rows a trigger kept out of the
        table without an error refused: their key is not there after the write (PostgreSQL:
        a BEFORE trigger that returns NULL, a trigger that deletes the row or changes its
        key; SQLite: RAISE(IGNORE), a DELETE). The database's counts leave out a row skipped
        and count one deleted (and a COPY straight into the table counts a stored key it
        skipped as inserted), so they are made again from the keys there before and after:
        inserted, the new keys there now; updated, at most the stored keys still there.
        (A trigger that skips the update of a stored key leaves that key's stored version:
        it counts as unchanged.)"""
        inserted, updated, refused = counts
        after = self.existing_keys(kind, key).to_pylist()
        was = before.to_pylist()
        seen = {i for i, _ in refused}
        out = [i for i, there in enumerate(after) if not there and i not in seen]
        kept = [i for i, there in enumerate(after) if there and i not in seen]
        inserted = sum(1 for i in kept if not was[i])
        updated = min(updated, sum(1 for i in kept if was[i]))
        message = (
            f"not stored: its key is not in table {kind} after the write, and the database "
            "said nothing: a trigger kept the row out, deleted it or changed its key"
        )
        return inserted, updated, sorted(refused + [(i, message) for i in out])
