"""Schema versions (SPEC §5), on SQLite and PostgreSQL: the migrations build exactly the
tables this version writes; a database written by tutormax 0.1.0 (kept in tests/fixtures,
made by the released code) upgrades in place keeping every row; a database behind or ahead
of this version is refused with exit 2 before anything is written; two upgrades at once
are safe."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbfixtures import engine_for

from tutormax_cli.store import Store, metadata
from tutormax_cli.store.migrate import VERSION_TABLE, head

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = Path(__file__).parent.parent / "sample_data"
INPUT_COLUMNS = {  # a few input columns of each table, compared row by row
    "tutors": "tutor_id, name, email, onboarding_date, subjects, updated_at",
    "sessions": "session_id, tutor_id, scheduled_start, duration_minutes, actual_end",
    "feedback": "feedback_id, session_id, overall_rating, improvement_areas, submitted_at",
}


def rows(url: str, sql: str) -> list[tuple]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def snapshot(url: str) -> dict[str, list[tuple]]:
    return {t: rows(url, f"SELECT {cols} FROM {t} ORDER BY 1") for t, cols in INPUT_COLUMNS.items()}


def tm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TUTORMAX, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(name="v010_url")
def v010_url_fixture(db_url: str, tmp_path: Path) -> str:
    """A database exactly as tutormax 0.1.0 left it (sample data, --as-of 2025-01-15,
    --timezone America/New_York): a copy of the SQLite file, or the PostgreSQL dump loaded."""
    if db_url.startswith("sqlite"):
        path = tmp_path / "v010.db"
        shutil.copy(FIXTURES / "tutormax-0.1.0.sqlite", path)
        return f"sqlite:///{path}"
    if shutil.which("psql") is None:
        pytest.skip("psql is needed to load the 0.1.0 PostgreSQL dump")
    u = sa.make_url(db_url)
    load = subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", u.host or "127.0.0.1", "-p",
         str(u.port or 5432), "-U", u.username or "postgres", "-d", u.database or "",
         "-f", str(FIXTURES / "tutormax-0.1.0.postgres.sql")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert load.returncode == 0, load.stderr
    return db_url


def test_the_migrations_build_exactly_the_tables_this_version_writes(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with Store.connect(db_url) as store:
        store.init_schema()
    engine = engine_for(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            diffs = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_a_010_database_upgrades_in_place_and_keeps_every_row(v010_url: str) -> None:
    before = snapshot(v010_url)
    assert sum(map(len, before.values())) == 25 + 200 + 150
    current = json.loads(tm("db", "current", "--db", v010_url, "--json").stdout)
    assert (current["status"], current["revision"]) == ("v010", None)
    sql = tm("db", "upgrade", "--db", v010_url, "--sql")
    assert sql.returncode == 0 and "ADD COLUMN reporting_timezone" in sql.stdout
    assert json.loads(tm("db", "current", "--db", v010_url, "--json").stdout)["status"] == "v010"
    done = tm("db", "upgrade", "--db", v010_url, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["before"]["status"] == "v010" and doc["revision"] == head()
    assert snapshot(v010_url) == before
    assert rows(v010_url, "SELECT count(*) FROM tutors WHERE reporting_timezone IS NULL") == [
        (25,)
    ]  # written by 0.1.0: unknown, re-derived in full by `tutormax refresh`
    again = tm("db", "upgrade", "--db", v010_url)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    # and the upgraded database takes the same input again as if it had always been ours
    enrich = tm("enrich", str(SAMPLE / "tutors.csv"), "--db", v010_url, "--as-of",
                "2025-01-15", "--timezone", "America/New_York", "--json")  # fmt: skip
    assert enrich.returncode == 0, enrich.stderr
    assert json.loads(enrich.stdout)["files"][0]["updated"] == 25  # now with its provenance


@pytest.mark.parametrize(
    "command",
    [["enrich", str(SAMPLE / "tutors.csv")], ["enrich", "--dry-run", str(SAMPLE / "tutors.csv")],
     ["refresh"], ["stats", "--redis", "redis://127.0.0.1:1/0"]],
    ids=["enrich", "dry-run", "refresh", "stats"],
)  # fmt: skip
def test_a_database_behind_this_version_is_refused_before_anything_is_written(
    v010_url: str, command: list[str]
) -> None:
    before = snapshot(v010_url)
    done = tm(*command, "--db", v010_url)
    assert done.returncode == 2, done.stderr  # stats too: it reports, counts nothing, exits 2
    assert "tutormax db upgrade" in done.stderr and "Traceback" not in done.stderr
    assert snapshot(v010_url) == before


@pytest.mark.redis
def test_a_worker_on_a_database_behind_this_version_exits_2(
    v010_url: str, redis_url: str, prefix: str
) -> None:
    before = snapshot(v010_url)
    done = tm("worker", "--burst", "--db", v010_url, "--redis", redis_url, "--prefix", prefix)
    assert done.returncode == 2 and "tutormax db upgrade" in done.stderr, done.stderr
    assert snapshot(v010_url) == before


def test_a_database_ahead_of_this_version_is_refused(db_url: str) -> None:
    with Store.connect(db_url) as store:
        store.init_schema()
    engine = engine_for(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'")
    engine.dispose()
    for command in (["enrich", str(SAMPLE / "tutors.csv")], ["db", "upgrade"],
                    ["stats", "--redis", "redis://127.0.0.1:1/0"]):  # fmt: skip
        done = tm(*command, "--db", db_url)
        assert done.returncode == 2, done.stderr
        assert "a newer tutormax wrote it" in done.stderr
    assert rows(db_url, "SELECT count(*) FROM tutors") == [(0,)]
    assert json.loads(tm("db", "current", "--db", db_url, "--json").stdout)["status"] == "ahead"


def test_tables_in_no_layout_tutormax_wrote_are_refused(db_url: str) -> None:
    engine = engine_for(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE tutors (id integer primary key, name text)")
    engine.dispose()
    done = tm("enrich", str(SAMPLE / "tutors.csv"), "--db", db_url)
    assert done.returncode == 2 and "no tutormax version wrote" in done.stderr


def test_two_upgrades_at_once_are_safe(v010_url: str) -> None:
    before = snapshot(v010_url)
    procs = [
        subprocess.Popen([TUTORMAX, "db", "upgrade", "--db", v010_url, "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    statuses = sorted(json.loads(out)["before"]["status"] for out, _ in results)
    assert statuses == ["current", "v010"]  # one migrated, the other found it done
    assert snapshot(v010_url) == before
    assert rows(v010_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(head(),)]


def test_db_init_on_an_empty_database_creates_the_schema(db_url: str) -> None:
    done = tm("db", "init", "--db", db_url, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["before"]["status"] == "empty" and doc["revision"] == head()
    assert doc["tables"] == {"tutors": 0, "sessions": 0, "feedback": 0}


def test_the_010_fixtures_are_what_the_released_code_wrote() -> None:
    """The fixtures must not be edited by hand: their digests are pinned here."""
    digests = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(FIXTURES.glob("tutormax-0.1.0.*"))
    }
    assert digests == PINNED, digests


PINNED = {
    "tutormax-0.1.0.postgres.sql": "3ebd7990ceff9780",
    "tutormax-0.1.0.sqlite": "a1cc27b916a7ab97",
}
