"""Schema versions (SPEC §5): Alembic migrations shipped in the package, run from code.

`migrations/` holds the revisions (no alembic.ini: the Config is built here); the version
lives in the table `tutormax_schema_version` (not Alembic's default name, so a database
shared with an application that has its own Alembic history is not confused).

* `state(conn)` — where a database stands: `empty` (no tutormax table), `v010` (the
  three tables with every column 0.1.0 wrote, no version table), `current`, `behind`,
  `ahead` (a revision this tutormax does not know: written by a newer one), or `unknown`
  (a layout no tutormax wrote: more than one version row, a table or a column the stored
  revision has missing, tables named like ours without a version table). Columns beyond a
  revision's (a DBA's) are ignored, as the database ignores them (SPEC §4).
* `upgrade(store)` — stamp a 0.1.0 database, then migrate to head; idempotent (each
  revision adds only the columns not there yet: `present_columns`); under the
  backend's schema lock (pg_advisory_xact_lock; SQLite's BEGIN IMMEDIATE), so two
  processes never migrate at once.
* `check(store)` — what every command that opens a database runs first: behind, ahead or
  unknown is an error (`refuse`: exit 2, one line) before anything is written.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
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


class SchemaOther(DatabaseError):
    """The database is not at this tutormax's schema: every command refuses it (exit 2)."""


class SchemaBehind(SchemaOther):
    """The database was written by an earlier tutormax: `tutormax db upgrade` brings it here."""


class SchemaAhead(SchemaOther):
    """The database was written by a newer tutormax: this one must not write to it."""


class SchemaUnknown(SchemaOther):
    """Tables, columns or version rows in a layout no tutormax wrote (`SchemaState.problem`)."""


@dataclass(frozen=True)
class SchemaState:
    status: str  # empty | v010 | current | behind | ahead | unknown
    revision: str | None  # the stored revision (None: no version table, or no one revision)
    head: str
    # the columns of each tutormax table present (a missing table has no entry)
    columns: dict[str, frozenset[str]] = field(default_factory=dict, compare=False)
    problem: str | None = None  # unknown: what is wrong, after the database's URL
    hint: str | None = None  # unknown: the way out

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
    rev = _script().get_current_head()
    assert rev is not None
    return str(rev)


@functools.cache
def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def _known(revision: str) -> bool:
    from alembic.util.exc import CommandError

    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


@functools.cache
def columns_at(revision: str) -> dict[str, frozenset[str]]:
    """The columns each table has at a known revision: the union of the `COLUMNS` every
    revision up to it declares it adds (tables.py's for head; the test of the migrations
    holds them equal)."""
    found: dict[str, set[str]] = {t: set() for t in TABLE_NAMES}
    for script in _script().iterate_revisions(revision, "base"):
        for table, spec in getattr(script.module, "COLUMNS", {}).items():
            found[table] |= {name for name, *_rest in spec}
    return {t: frozenset(names) for t, names in found.items()}


def present_columns(table: str) -> set[str]:
    """Inside a migration: the columns `table` has already, so a revision adds only the
    ones missing (a half-migrated database: a DBA added some, or ran part of the `--sql`
    script). Offline (`--sql`) they are the ones `upgrade_sql` read from the database."""
    from alembic import context, op

    if context.is_offline_mode():
        return set(context.config.attributes.get("present", {}).get(table, ()))
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _version_rows(conn: sa.Connection, inspector: Any) -> list[str] | None:
    """The revisions the version table holds (None: there is no version table)."""
    if not inspector.has_table(VERSION_TABLE):
        return None
    return [str(r[0]) for r in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]


def _few(names: list[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _lacking(found: dict[str, frozenset[str]], expected: dict[str, frozenset[str]]) -> str:
    """What the tables lack of `expected` (tables missing, then columns), '' if nothing;
    columns beyond `expected` are a DBA's and are ignored (SPEC §4)."""
    absent = [t for t in TABLE_NAMES if t not in found]
    said = [f"table {_few(absent)} {'is' if len(absent) == 1 else 'are'} missing"] if absent else []
    said += [
        f"{t} lacks column {_few(sorted(expected[t] - found[t]))}"
        for t in TABLE_NAMES
        if t in found and expected[t] - found[t]
    ]
    return "; ".join(said)


def state(conn: sa.Connection) -> SchemaState:
    """Where a database stands, read before any work: the version table's rows, then the
    tables and columns the revision they name must have. Every layout this tutormax did not
    write is `unknown`, with `problem` naming what is wrong and `hint` the way out."""
    top = head()
    inspector = sa.inspect(conn)
    found = {
        t: frozenset(c["name"] for c in inspector.get_columns(t))
        for t in TABLE_NAMES
        if inspector.has_table(t)
    }
    revisions = _version_rows(conn, inspector)
    if revisions and len(revisions) > 1:
        return SchemaState(
            "unknown", None, top, found,
            problem=f"has {len(revisions)} rows in its version table {VERSION_TABLE} "
            f"({_few(sorted(revisions))}), where tutormax keeps one",
            hint=f"keep the row of {VERSION_TABLE} that names the revision its tables are at, "
            "delete the others (`tutormax db current` then checks them); nothing was written",
        )  # fmt: skip
    if not revisions:  # no version table, or an empty one: 0.1.0 wrote none
        if not found:
            return SchemaState("empty", None, top, found)
        lacking = _lacking(found, columns_at(V010))
        if not lacking:  # 0.1.0's columns, and maybe a DBA's own: upgraded in place
            return SchemaState("v010", None, top, found)
        return SchemaState(
            "unknown", None, top, found,
            problem="holds tables named tutors, sessions or feedback that no tutormax version "
            f"wrote (no version table; {lacking})",
            hint="point --db at another database, or rename those tables",
        )  # fmt: skip
    revision = revisions[0]
    if not _known(revision):  # a newer tutormax's: its tables are not ours to judge
        return SchemaState("ahead", revision, top, found)
    lacking = _lacking(found, columns_at(revision))
    if lacking:
        return SchemaState(
            "unknown", revision, top, found,
            problem=f"says it is at revision {revision}, but {lacking}",
            hint="a table was dropped or changed by hand: restore it (from a backup), or point "
            "--db at another database; nothing was written",
        )  # fmt: skip
    return SchemaState("current" if revision == top else "behind", revision, top, found)


def upgrade(store: Store) -> tuple[SchemaState, SchemaState]:
    """Bring the database to head (stamping a 0.1.0 one first); (before, after)."""
    from alembic import command

    with store.transaction(), store.errors("upgrading the schema"):
        conn = store.connection
        store.backend.lock_schema(conn)  # one migration at a time, whatever the process
        before = state(conn)
        refuse(before, store, ("ahead", "unknown"))
        cfg = _config(connection=conn)
        if before.status == "v010":
            command.stamp(cfg, V010)
        if before.status != "current":
            command.upgrade(cfg, "head")
        after = state(conn)
        refuse(after, store, ("empty", "v010", "behind", "ahead", "unknown"))  # rolled back
    return before, after


def upgrade_sql(store: Store) -> str:
    """The SQL `upgrade` would run on this database, without running it (`--sql`): the
    columns the database has already are left out, as `upgrade` leaves them."""
    from alembic import command

    with store.connect_once() as conn:
        before = state(conn)
        versioned = sa.inspect(conn).has_table(VERSION_TABLE)
    refuse(before, store, ("ahead", "unknown"))
    if before.status == "current":
        return f"-- {store.url_masked} is at {before.head}: nothing to do\n"
    out = io.StringIO()
    cfg = _config(url=f"{store.backend.name}://", sql_out=out)  # the dialect; no secrets
    cfg.attributes["present"] = before.columns
    if before.status == "empty":
        command.upgrade(cfg, "head", sql=True)
        return out.getvalue()
    if before.status == "v010":
        out.write(f"-- a 0.1.0 database: its version table first, stamped {V010}\n")
        if versioned:  # there, but empty
            out.write(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{V010}');\n\n")
        else:
            command.stamp(cfg, V010, sql=True)
    command.upgrade(cfg, f"{before.revision or V010}:head", sql=True)
    return out.getvalue()


def check(store: Store, *, create: bool = False, empty_ok: bool = False) -> SchemaState:
    """Before a command touches a table: an empty database is created when `create` (enrich,
    worker) or accepted as it is when `empty_ok` (a dry run, stats); else its version must
    be this tutormax's, its tables all there with the columns of that version."""
    with store.connect_once() as conn:
        now = state(conn)
    if now.status == "current":
        return now
    if now.status == "empty" and create:
        return upgrade(store)[1]
    if now.status == "empty" and empty_ok:
        return now
    refuse(now, store, ("empty", "v010", "behind", "ahead", "unknown"))
    raise AssertionError(now)  # refuse raised


def refuse(now: SchemaState, store: Store, statuses: tuple[str, ...]) -> None:
    """Raise the error (exit 2, one line naming the database and what is wrong) of a state
    among `statuses`."""
    if now.status not in statuses:
        return
    where = store.url_masked
    if now.status == "ahead":
        raise SchemaAhead(
            f"{where} is at revision {now.revision}, which this tutormax does not know "
            f"(its newest is {now.head}): a newer tutormax wrote it",
            hint="upgrade tutormax; nothing was written",
        )
    if now.status == "unknown":
        raise SchemaUnknown(f"{where} {now.problem}", hint=now.hint)
    if now.status == "empty":
        raise SchemaBehind(
            f"{where} has no tutormax tables yet",
            hint="run `tutormax db init` (or `tutormax db upgrade`) to create them",
        )
    at = "0.1.0 (no version table)" if now.status == "v010" else f"revision {now.revision}"
    raise SchemaBehind(
        f"{where} holds the schema of an earlier tutormax ({at}); this one writes "
        f"revision {now.head}",
        hint="run `tutormax db upgrade` (it keeps every row); nothing was written",
    )
