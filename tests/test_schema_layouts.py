"""Layouts no tutormax wrote (SPEC §4, §5), on SQLite and PostgreSQL: every command that opens
a database reads its state first (version rows, tables, columns) and refuses a layout it did
not write with exit 2 and one line naming it, never a traceback, writing nothing; a
half-migrated database, or a 0.1.0 one with a DBA's extra column, upgrades in place; the
read-only `db` commands create no SQLite file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbfixtures import execute_sql
from test_exit_codes import one_error_line
from test_migrations import SAMPLE, engine_for, rows, snapshot, tm, v010_url_fixture

from tutormax_cli.store.migrate import VERSION_TABLE, head

__all__ = ["v010_url_fixture"]  # the fixture `v010_url`: a database as tutormax 0.1.0 left it

CREATE_VERSION_TABLE = f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) PRIMARY KEY)"
REDIS_DOWN = "redis://127.0.0.1:1/0"  # stats still reports the tables without Redis
EVERY_COMMAND = [
    ["db", "current"],
    ["db", "current", "--json"],
    ["db", "upgrade"],
    ["db", "upgrade", "--sql"],
    ["enrich", str(SAMPLE / "tutors.csv"), str(SAMPLE / "sessions.csv"),
     str(SAMPLE / "feedback.jsonl")],
    ["enrich", "--dry-run", str(SAMPLE / "tutors.csv")],
    ["refresh", "--as-of", "2025-02-01"],
    ["stats", "--redis", REDIS_DOWN],
]  # fmt: skip


def everything(url: str) -> dict[str, object]:
    """Every table of the database: its columns and all its rows (nothing written?)."""
    engine = engine_for(url)
    try:
        inspector = sa.inspect(engine)
        with engine.connect() as conn:
            return {
                t: (
                    sorted(c["name"] for c in inspector.get_columns(t)),
                    sorted(map(repr, conn.exec_driver_sql(f"SELECT * FROM {t}"))),
                )
                for t in sorted(inspector.get_table_names())
            }
    finally:
        engine.dispose()


def status(url: str) -> str:
    return str(json.loads(tm("db", "current", "--db", url, "--json").stdout)["status"])


@pytest.fixture(name="current_url")
def current_url_fixture(v010_url: str) -> str:
    """A database at this version's schema, holding 0.1.0's 375 rows."""
    done = tm("db", "upgrade", "--db", v010_url)
    assert done.returncode == 0, done.stderr
    return v010_url


def assert_every_command_refuses(url: str, says: str) -> None:
    before = everything(url)
    for command in EVERY_COMMAND:
        done = tm(*command, "--db", url)
        assert done.returncode == 2, (command, done.stderr)
        line = one_error_line(done.stderr)  # no traceback, one line
        assert says in line, (command, line)
        assert everything(url) == before, command


def test_two_version_rows_are_refused_by_every_command_db_current_included(
    current_url: str,
) -> None:
    execute_sql(current_url, f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('0001_v010')")
    assert_every_command_refuses(current_url, f"has 2 rows in its version table {VERSION_TABLE}")
    doc = json.loads(tm("db", "current", "--db", current_url, "--json").stdout)
    assert doc["status"] == "unknown" and VERSION_TABLE in doc["problem"]


@pytest.mark.parametrize(
    ("damage", "says"),
    [("DROP TABLE feedback", "table feedback is missing"),
     ("ALTER TABLE sessions DROP COLUMN formula_version", "sessions lacks column formula_version")],
    ids=["table-dropped", "column-dropped"],
)  # fmt: skip
def test_a_current_database_missing_a_table_or_column_is_refused_before_the_first_batch(
    current_url: str, damage: str, says: str
) -> None:
    execute_sql(current_url, damage)
    assert_every_command_refuses(current_url, says)


@pytest.mark.parametrize("present", ["all", "one"])
def test_a_half_migrated_database_upgrades_in_place(v010_url: str, present: str) -> None:
    """Stamped 0001_v010, but some of the columns 0002 adds are there already (a DBA added
    them, or ran part of the `--sql` script): the upgrade adds only the others."""
    added = ["tutors"] if present == "one" else ["tutors", "sessions", "feedback"]
    columns = ["reporting_timezone"] if present == "one" else ["reporting_timezone",
                                                               "formula_version"]  # fmt: skip
    execute_sql(
        v010_url,
        *(f"ALTER TABLE {t} ADD COLUMN {c} {'TEXT' if c == 'reporting_timezone' else 'INTEGER'}"
          for t in added for c in columns),
        CREATE_VERSION_TABLE,
        f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('0001_v010')",
    )  # fmt: skip
    before = snapshot(v010_url)
    assert status(v010_url) == "behind"
    sql = tm("db", "upgrade", "--db", v010_url, "--sql")
    assert sql.returncode == 0 and "Traceback" not in sql.stderr, sql.stderr
    assert "tutors ADD COLUMN reporting_timezone" not in sql.stdout  # there already
    assert ("sessions ADD COLUMN reporting_timezone" in sql.stdout) == (present == "one")
    done = tm("db", "upgrade", "--db", v010_url, "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["revision"] == head()
    assert status(v010_url) == "current" and snapshot(v010_url) == before


def test_the_sql_printed_for_a_010_database_runs(v010_url: str) -> None:
    before = snapshot(v010_url)
    sql = tm("db", "upgrade", "--db", v010_url, "--sql")
    assert sql.returncode == 0, sql.stderr
    if v010_url.startswith("sqlite"):
        conn = sqlite3.connect(sa.make_url(v010_url).database or "")
        conn.executescript(sql.stdout)
        conn.close()
    else:
        u = sa.make_url(v010_url)
        run = subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", u.host or "127.0.0.1", "-p",
             str(u.port or 5432), "-U", u.username or "postgres", "-d", u.database or ""],
            input=sql.stdout, capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
    assert status(v010_url) == "current" and snapshot(v010_url) == before
    assert rows(v010_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(head(),)]


def test_a_010_database_with_a_column_a_dba_added_upgrades_keeping_it(v010_url: str) -> None:
    execute_sql(v010_url, "ALTER TABLE tutors ADD COLUMN crm_id TEXT",
            "UPDATE tutors SET crm_id = 'crm-' || tutor_id")  # fmt: skip
    before = snapshot(v010_url)
    assert status(v010_url) == "v010"
    done = tm("db", "upgrade", "--db", v010_url)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert status(v010_url) == "current" and snapshot(v010_url) == before
    kept = "SELECT count(*) FROM tutors WHERE crm_id = 'crm-' || tutor_id"
    assert rows(v010_url, kept) == [(25,)]


@pytest.mark.parametrize("command", [["db", "upgrade", "--sql"], ["stats", "--redis", REDIS_DOWN]])
def test_stats_and_upgrade_sql_refuse_a_database_of_another_version(
    v010_url: str, command: list[str]
) -> None:
    execute_sql(
        v010_url, CREATE_VERSION_TABLE, f"INSERT INTO {VERSION_TABLE} VALUES ('9999_future')"
    )
    before = everything(v010_url)
    done = tm(*command, "--db", v010_url)
    assert done.returncode == 2, done.stderr
    assert "a newer tutormax wrote it" in one_error_line(done.stderr)
    assert everything(v010_url) == before


def test_the_read_only_db_commands_create_no_database(db_url: str, tmp_path: Path) -> None:
    """A mistyped path or name: `db current` says so (exit 2); `db upgrade --sql` prints the
    SQL that would create the schema there (SQLite; PostgreSQL cannot connect: exit 2).
    Neither creates a file, a folder or a database."""
    sqlite = db_url.startswith("sqlite")
    name = "tutormx.db" if sqlite else f"tutormax_test_absent_{uuid.uuid4().hex[:8]}"
    if sqlite:
        url = f"sqlite:///{tmp_path / 'typo' / 'sub' / name}"
    else:
        url = sa.make_url(db_url).set(database=name).render_as_string(hide_password=False)
    done = tm("db", "current", "--db", url)
    assert done.returncode == 2, done.stderr
    assert name in one_error_line(done.stderr)
    sql = tm("db", "upgrade", "--sql", "--db", url)
    if sqlite:
        assert sql.returncode == 0 and "CREATE TABLE tutors" in sql.stdout, sql.stderr
        assert not (tmp_path / "typo").exists()
    else:
        assert sql.returncode == 2 and name in one_error_line(sql.stderr)
        assert rows(db_url, f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == []
