"""`tutormax db init | upgrade | current`: the schema and its version (SPEC §5)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .common import handle_errors, out, print_json, settings
from .options import DbUrl, JsonFlag

app = typer.Typer(
    help="The database schema: create, upgrade, show its version.", no_args_is_help=True
)

_SAID = {
    "empty": "no tutormax tables",
    "v010": "tutormax 0.1.0's tables (no version table)",
    "current": "at this version's schema",
    "behind": "behind this version's schema",
    "ahead": "ahead of this tutormax (a newer one wrote it)",
    "unknown": "tables named like tutormax's, in no layout tutormax wrote",
}


def _store(db: str | None, absent: str = "create") -> Any:
    """Open the database. A SQLite file that is not there is created (`absent="create"`:
    init, upgrade); a command that only reads creates nothing: it refuses it (`"refuse"`, a
    mistyped path: exit 2) or reads an empty in-memory database instead (`"empty"`)."""
    from ..errors import UsageError
    from ..store import Store, sqlite_file

    url = settings().database(db)
    file = sqlite_file(url)
    if absent != "create" and file is not None and not file.exists():
        if absent == "refuse":
            raise UsageError(f"{file}: no such database, and none is created (--db?)")
        url = "sqlite://"
    return Store.connect(url)


def _upgrade(db: str | None, json_out: bool, verb: str) -> None:
    from ..store.migrate import upgrade

    with _store(db) as store:
        before, after = upgrade(store)
        counts = store.row_counts()
        where = store.url_masked
    doc = {
        "database": where,
        "before": {"status": before.status, "revision": before.revision},
        "revision": after.revision,
        "tables": counts,
    }
    if json_out:
        print_json(doc)
        return
    if before.status == "current":
        out.print(f"{where} is at revision {after.revision} already: nothing to do", markup=False)
    else:
        out.print(f"{verb} {where}: {_SAID[before.status]} → revision {after.revision}",
                  markup=False)  # fmt: skip
    out.print(", ".join(f"{k} {v:,} rows" for k, v in counts.items()), markup=False)


@app.command("init")
@handle_errors
def init(db: DbUrl = None, json_out: JsonFlag = False) -> None:
    """Create the tutors, sessions and feedback tables (`db upgrade` on an empty database;
    on one that holds them already, it upgrades them, keeping every row).

    Example:

      tutormax db init --db postgresql://app@localhost/tutoring
    """
    _upgrade(db, json_out, "created")


@app.command("upgrade")
@handle_errors
def upgrade(
    db: DbUrl = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL it would run instead of running it.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Bring a database written by an earlier tutormax (0.1.0 included) to this version's
    schema, in place, keeping every row. Idempotent; two at once are safe (a lock).

    Example:

      tutormax db upgrade --db postgresql://app@localhost/tutoring --sql
    """
    if sql:  # creates nothing: for a SQLite file not there yet, the SQL that would create it
        from ..store.migrate import upgrade_sql

        with _store(db, absent="empty") as store:
            out.print(upgrade_sql(store), markup=False, highlight=False, end="")
        return
    _upgrade(db, json_out, "upgraded")


@app.command("current")
@handle_errors
def current(db: DbUrl = None, json_out: JsonFlag = False) -> None:
    """Show the database's schema revision, and whether it is this version's.

    Example:

      tutormax db current --json
    """
    from ..store.migrate import refuse, state

    with _store(db, absent="refuse") as store:
        with store.connect_once() as conn:
            now = state(conn)
        where = store.url_masked
        if json_out:
            print_json({"database": where, "status": now.status, "revision": now.revision,
                        "head": now.head, "problem": now.problem})  # fmt: skip
        refuse(now, store, ("unknown",))  # a layout no tutormax wrote: exit 2, said once
    if json_out:
        return
    out.print(f"{where}: {_SAID[now.status]} (revision {now.revision or '-'}; this tutormax "
              f"writes {now.head})", markup=False)  # fmt: skip
    if now.needs_upgrade and now.status != "empty":
        out.print("run `tutormax db upgrade` to bring it to this version", markup=False)
