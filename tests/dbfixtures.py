"""Database fixtures and batch builders shared by the store and pipeline tests.

Fixtures are defined as `<name>_fixture` and registered under `<name>`; conftest.py loads
this module as a plugin (`pytest_plugins`), so every test module can ask for them.

PostgreSQL: every test that asks for `pg_url` gets a fresh database `tutormax_test_<hex>`,
dropped afterwards, created through `TUTORMAX_TEST_PG_URL` (default
`postgresql://postgres@127.0.0.1:5432/postgres`). If the server is unreachable the test
is skipped — unless `CI=true`, where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pytest
import sqlalchemy as sa

from tutormax_cli.config import mask_url
from tutormax_cli.fields import FORMULA_VERSION, Context, derive
from tutormax_cli.schema import KINDS
from tutormax_cli.store import Store

PG_ADMIN_URL = os.environ.get(
    "TUTORMAX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AS_OF = datetime(2024, 11, 7, 12, 0, tzinfo=UTC)
TIMESTAMP = pa.timestamp("us", tz="UTC")


def _admin_dsn() -> str:
    url = sa.make_url(PG_ADMIN_URL).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def pg_admin() -> Any:
    """An autocommit psycopg2 connection to the admin database; skip/fail if unreachable."""
    try:
        conn = psycopg2.connect(_admin_dsn(), connect_timeout=5)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = f"PostgreSQL not reachable at {mask_url(PG_ADMIN_URL)}: {reason}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    conn.autocommit = True
    return conn


@pytest.fixture(name="pg_url")
def pg_url_fixture() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    with fresh_pg_database() as url:
        yield url


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database's URL, dropped on the way out (skip/fail as
    `pg_admin` if the server is unreachable); for fixtures that run tests' work on threads."""
    name = f"tutormax_test_{uuid.uuid4().hex[:12]}"
    admin = pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        url = sa.make_url(PG_ADMIN_URL).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(
    name="db_url",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test runs on SQLite (a file in tmp_path) and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tutormax.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(name="store")
def store_fixture(db_url: str) -> Iterator[Store]:
    """A connected Store with the schema created."""
    s = Store.connect(db_url)
    try:
        s.init_schema()
        yield s
    finally:
        s.close()


def make_table(
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    as_of: datetime = AS_OF,
    enriched_at: datetime | None = None,
) -> pa.Table:
    """A batch as `Store.write` takes it: every input column (null where not given), the
    derived fields computed by the real formulas, and `enriched_at` (default: as_of)."""
    k = KINDS[kind]
    table = pa.table(
        {c.name: pa.array([r.get(c.name) for r in rows], c.type.arrow) for c in k.columns}
    )
    derived = derive(kind, table, Context(as_of=as_of))
    for name in derived.column_names:
        table = table.append_column(name, derived.column(name))
    stamp = enriched_at or as_of
    n = len(rows)
    return (
        table.append_column("enriched_at", pa.array([stamp] * n, TIMESTAMP))
        .append_column("reporting_timezone", pa.array(["UTC"] * n, pa.string()))
        .append_column("formula_version", pa.array([FORMULA_VERSION] * n, pa.int64()))
    )


def engine_for(db_url: str, **options: Any) -> sa.Engine:
    """An SQLAlchemy engine on a test database URL (psycopg2 for PostgreSQL, as tutormax)."""
    url = sa.make_url(db_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    return sa.create_engine(url, **options)


def execute_sql(url: str, *statements: str) -> None:
    """Run SQL on a test database as its DBA would, in one transaction (SQLite or
    PostgreSQL, by its URL)."""
    u = sa.make_url(url)
    if u.get_backend_name() == "postgresql":
        u = u.set(drivername="postgresql+psycopg2")
    engine = sa.create_engine(u)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def tutor(i: int | str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tutor_id": f"T{i}",
        "name": f"Tutor {i}",
        "email": f"t{i}@example.com",
        "onboarding_date": datetime(2024, 1, 1, tzinfo=UTC),
        "status": "active",
        "subjects": ["Math"],
    }
    row.update(values)
    return row


def session(i: int | str, tutor_id: str = "T0", **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "session_id": f"S{i}",
        "tutor_id": tutor_id,
        "student_id": f"ST{i}",
        "scheduled_start": datetime(2024, 11, 7, 14, 0, tzinfo=UTC),
        "duration_minutes": 60,
        "subject": "Math",
    }
    row.update(values)
    return row


def feedback(i: int | str, session_id: str = "S0", tutor_id: str = "T0", **values: Any) -> dict:
    row: dict[str, Any] = {
        "feedback_id": f"F{i}",
        "session_id": session_id,
        "student_id": f"ST{i}",
        "tutor_id": tutor_id,
        "overall_rating": 4,
        "submitted_at": datetime(2024, 11, 8, 9, 0, tzinfo=UTC),
    }
    row.update(values)
    return row


def read_rows(store: Store, kind: str) -> dict[str, dict[str, Any]]:
    """The stored rows of a table, by key, read back through SQLAlchemy."""
    from tutormax_cli.store import TABLES

    table = TABLES[kind]
    key = KINDS[kind].key
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table)).mappings().all()
    return {r[key]: dict(r) for r in rows}
