"""Schema versions (SPEC §5): Alembic migrations shipped in the package, run from code.

`migrations/` holds the revisions (no alembic.ini: the Config is built here); the version
lives in the table `tutormax_schema_version` (not Alembic's default name, so a database
shared with an application that has its own Alembic history is not confused).

* `state(conn)` — where a database stands: `empty` (no tutormax table), `v010` (the
  three tables exactly as 0.1.0 wrote them, no version table), `current`, `behind`,
  `ahead` (a revision this tutormax does not know: written by a newer one), or `unknown`
  (tutormax's tables in no layout we know).
* `upgrade(store)` — stamp a 0.1.0 database, then migrate to head; idempotent; under the
  backend's schema lock (pg_advisory_xact_lock; SQLite's BEGIN IMMEDIATE), so two
  processes never migrate at once.
* `check(store)` — what every command that opens a database runs first: behind, ahead or
  unknown is an error (exit 2) before anything is written.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import DatabaseError

if TYPE_CHECKING:
    from . import Store

VERSION_TABLE = "tutormax_schema_version"
MIGRATIONS = Path(__file__).parent / "migrations"
V010 = "0001_v010"
TABLE_NAMES = ("tutors", "sessions", "feedback")


class SchemaBehind(DatabaseError):
    """The database was written by an earlier tutormax: `tutormax db upgrade` brings it here."""


class SchemaAhead(DatabaseError):
    """The database was written by a newer tutormax: this one must not write to it."""


@dataclass(frozen=True)
class SchemaState:
    status: str  # empty | v010 | current | behind | ahead | unknown
    revision: str | None  # the stored revision (None: no version table)
    head: str

    @property
    def needs_upgrade(self) -> bool:
        return self.status in ("empty", "v010", "behind")


def _config(url: str | None = None, connection: Any = None, sql_out: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config(output_buffer=sql_out)
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    from alembic.script import ScriptDirectory

    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None
    return str(rev)


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False


def state(conn: sa.Connection) -> SchemaState:
    from alembic.migration import MigrationContext

    top = head()
    inspector = sa.inspect(conn)
    present = [t for t in TABLE_NAMES if inspector.has_table(t)]
    if not inspector.has_table(VERSION_TABLE):
        if not present:
            return SchemaState("empty", None, top)
        return SchemaState("v010" if _is_v010(inspector) else "unknown", None, top)
    revision = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()
    if revision is None:
        return SchemaState("empty" if not present else "unknown", None, top)
    if revision == top:
        return SchemaState("current", revision, top)
    return SchemaState("behind" if _known(revision) else "ahead", revision, top)


def _is_v010(inspector: Any) -> bool:
    """The three tables hold exactly the columns 0.1.0 created (in any order)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_v010", MIGRATIONS / "versions" / "0001_v010.py")
    assert spec is not None and spec.loader is not None
    v010 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v010)
    for table, columns in v010.COLUMNS.items():
        if not inspector.has_table(table):
            return False
        found = {c["name"] for c in inspector.get_columns(table)}
        if found != {name for name, _type, _nullable in columns}:
            return False
    return True


def upgrade(store: Store) -> tuple[SchemaState, SchemaState]:
    """Bring the database to head (stamping a 0.1.0 one first); (before, after)."""
    from alembic import command

    with store.transaction(), store.errors("upgrading the schema"):
        conn = store.connection
        store.backend.lock_schema(conn)  # one migration at a time, whatever the process
        before = state(conn)
        if before.status == "ahead":
            raise _ahead(before, store)
        if before.status == "unknown":
            raise _unknown(store)
        cfg = _config(connection=conn)
        if before.status == "v010":
            command.stamp(cfg, V010)
        if before.status != "current":
            command.upgrade(cfg, "head")
        after = state(conn)
    return before, after


def upgrade_sql(store: Store) -> str:
    """The SQL `upgrade` would run on this database, without running it (`--sql`)."""
    from alembic import command

    with store.connect_once() as conn:
        before = state(conn)
    if before.status == "ahead":
        raise _ahead(before, store)
    if before.status == "unknown":
        raise _unknown(store)
    if before.status == "current":
        return f"-- {store.url_masked} is at {before.head}: nothing to do\n"
    start = V010 if before.status == "v010" else before.revision
    out = io.StringIO()
    cfg = _config(url=f"{store.backend.name}://", sql_out=out)  # the dialect; no secrets
    if start is None:
        command.upgrade(cfg, "head", sql=True)
    else:
        if before.status == "v010":
            out.write(f"-- a 0.1.0 database: stamped {V010} first\n")
        command.upgrade(cfg, f"{start}:head", sql=True)
    return out.getvalue()


def check(store: Store, *, create: bool = False, empty_ok: bool = False) -> SchemaState:
    """Before a command touches a table: an empty database is created when `create` (enrich,
    worker) or accepted as it is when `empty_ok` (a dry run, stats); else its version must
    be this tutormax's."""
    with store.connect_once() as conn:
        now = state(conn)
    if now.status == "current":
        return now
    if now.status == "empty" and create:
        return upgrade(store)[1]
    if now.status == "empty" and empty_ok:
        return now
    if now.status == "ahead":
        raise _ahead(now, store)
    if now.status == "unknown":
        raise _unknown(store)
    if now.status == "empty":
        raise SchemaBehind(
            f"{store.url_masked} has no tutormax tables yet",
            hint="run `tutormax db init` (or `tutormax db upgrade`) to create them",
        )
    at = "0.1.0 (no version table)" if now.status == "v010" else f"revision {now.revision}"
    raise SchemaBehind(
        f"{store.url_masked} holds the schema of an earlier tutormax ({at}); this one writes "
        f"revision {now.head}",
        hint="run `tutormax db upgrade` (it keeps every row); nothing was written",
    )


def _ahead(now: SchemaState, store: Store) -> SchemaAhead:
    return SchemaAhead(
        f"{store.url_masked} is at revision {now.revision}, which this tutormax does not know "
        f"(its newest is {now.head}): a newer tutormax wrote it",
        hint="upgrade tutormax; nothing was written",
    )


def _unknown(store: Store) -> DatabaseError:
    return DatabaseError(
        f"{store.url_masked} holds tables named tutors, sessions or feedback that no tutormax "
        "version wrote (no version table, other columns)",
        hint="point --db at another database, or rename those tables",
    )
