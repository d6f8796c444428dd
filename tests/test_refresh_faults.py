"""`tutormax refresh` where it used to fail: pages of unreadable rows, columns a DBA changed,
and an `enrich` of the same keys running beside it (PostgreSQL)."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pytest
import sqlalchemy as sa
from dbfixtures import fresh_pg_database
from sqlalchemy.dialects import postgresql

from tutormax_cli.errors import DatabaseConflict, DatabaseUnavailable
from tutormax_cli.fields import Context, derive, fields_for
from tutormax_cli.schema import KINDS
from tutormax_cli.store import Store
from tutormax_cli.store.refresh import RefreshOptions, refresh

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
TUTORS = str(Path(__file__).parent.parent / "sample_data" / "tutors.csv")
SESSIONS = str(Path(__file__).parent.parent / "sample_data" / "sessions.csv")


def tm(*args: str, code: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([TUTORMAX, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    return done


def sql(url: str, *statements: str) -> list[tuple]:
    """Run statements in one transaction (TimeZone UTC); the last one's rows."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'")
            for s in statements:
                cur.execute(s)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def _break_rows(url: str) -> None:
    """The first two tutors (in key order) hold a value not of its column's type, so that at
    --batch-size 1 and 2 a page holds nothing else."""
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.execute("UPDATE tutors SET age = 'forty' WHERE tutor_id IN "
                         "(SELECT tutor_id FROM tutors ORDER BY tutor_id LIMIT 2)")  # fmt: skip
        conn.close()
        return
    sql(url, "UPDATE tutors SET onboarding_date = 'infinity' WHERE tutor_id IN "
             "(SELECT tutor_id FROM tutors ORDER BY tutor_id LIMIT 2)")  # fmt: skip


def test_a_page_of_unreadable_rows_gives_the_same_verdict_at_every_batch_size(
    db_url: str,
) -> None:
    """A page whose every row was unreadable crashed refresh (exit 3, an Arrow error from a
    mask of type null): at --batch-size 1 one bad row did, at the default it did not. Now
    every batch size names the same rows, refreshes the same others, and exits 1."""
    tm("enrich", TUTORS, "--db", db_url, "--as-of", "2025-01-15")
    _break_rows(db_url)
    seen = []
    for size in ("1", "2", "3", "16000"):
        done = tm("refresh", "--db", db_url, "--kind", "tutors", "--as-of", "2025-09-01",
                  "--batch-size", size, "--json", code=1)  # fmt: skip
        (tutors,) = json.loads(done.stdout)["kinds"]
        assert (tutors["scanned"], tutors["unreadable"]) == (23, 2), size
        assert tutors["changed"] + tutors["unchanged"] == 23, size
        seen.append(sorted((r["key"], r["column"]) for r in tutors["unreadable_rows"]))
    assert all(s == seen[0] for s in seen), seen
    human = tm("refresh", "--db", db_url, "--kind", "tutors", "--batch-size", "1", code=1)
    assert "fix or delete them" in human.stderr


TIMESTAMPS = ("onboarding_date", "enriched_at", "updated_at")


def _tenure(url: str) -> dict[str, tuple]:
    """Each tutor's derived values and the day of its enriched_at, as text."""
    names = [f.name for f in fields_for("tutors")]
    cols = ", ".join(f'"{n}"::text' for n in names)
    rows = sql(url, f"SELECT tutor_id, {cols}, left(enriched_at::text, 10) FROM tutors")
    return {r[0]: tuple(r[1:]) for r in rows}


@pytest.mark.postgres
@pytest.mark.parametrize("new_type", ["timestamp", "text", "timestamp(3) with time zone"])
def test_tutors_timestamps_a_dba_changed_are_read_by_refresh(
    pg_url: str, tmp_path: Path, new_type: str
) -> None:
    """A DBA changed tutors' timestamptz columns to `timestamp` (or text): enrich still wrote
    them, but refresh read them as `… +00` text (AT TIME ZONE on a naive timestamp gives a
    timestamptz) and found every row unreadable. Now it reads what the column holds:
    every row refreshed, equal to a fresh load at that as-of, and a second refresh changes
    nothing."""
    tm("enrich", TUTORS, "--db", pg_url, "--as-of", "2025-01-15")
    alters = ", ".join(f'ALTER "{c}" TYPE {new_type}' for c in TIMESTAMPS)
    sql(pg_url, f"ALTER TABLE tutors {alters}")
    changed = tmp_path / "tutors.csv"
    changed.write_text(Path(TUTORS).read_text().replace("Math", "Maths"))
    tm("enrich", str(changed), "--db", pg_url, "--as-of", "2025-02-01")  # the write path
    done = tm("refresh", "--db", pg_url, "--kind", "tutors", "--as-of", "2025-09-01", "--json")
    (tutors,) = json.loads(done.stdout)["kinds"]
    assert (tutors["scanned"], tutors["unreadable"], tutors["skipped"]) == (25, 0, 0)
    with fresh_pg_database() as fresh:
        tm("enrich", str(changed), "--db", fresh, "--as-of", "2025-09-01")
        assert _tenure(pg_url) == _tenure(fresh)
    again = tm("refresh", "--db", pg_url, "--kind", "tutors", "--as-of", "2025-09-01", "--json")
    (tutors,) = json.loads(again.stdout)["kinds"]
    assert (tutors["scanned"], tutors["changed"], tutors["unreadable"]) == (25, 0, 0)


# -- refresh beside enrich (PostgreSQL) ---------------------------------------------------------

TRIALS = 4


def _consistent(url: str) -> int:
    """How many sessions hold derived values other than those of their own inputs at their
    own provenance (as-of, timezone): a row half one writer's, half the other's."""
    k = KINDS["sessions"]
    names = [*k.column_names, *(f.name for f in fields_for("sessions")), "enriched_at",
             "reporting_timezone"]  # fmt: skip
    import pyarrow as pa
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        with engine.connect() as conn:
            rows = (
                conn.exec_driver_sql(f"SELECT {', '.join(names)} FROM sessions ORDER BY session_id")
                .mappings()
                .all()
            )
    finally:
        engine.dispose()
    wrong = 0
    by_context: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        by_context.setdefault((r["enriched_at"], r["reporting_timezone"]), []).append(dict(r))
    for (as_of, zone), group in by_context.items():
        inputs = pa.table({c.name: pa.array([g[c.name] for g in group], c.type.arrow)
                           for c in k.columns})  # fmt: skip
        fresh = derive("sessions", inputs, Context(as_of=as_of, timezone=zone))
        for name in fresh.column_names:
            got = [g[name] for g in group]
            want = fresh[name].to_pylist()
            wrong += sum(1 for a, b in zip(got, want, strict=True) if a != b)
    return wrong


@pytest.mark.postgres
def test_refresh_beside_an_enrich_of_the_same_keys_both_finish(pg_url: str, tmp_path: Path) -> None:
    """`refresh` and `enrich` of the same sessions, side by side, each locked rows in an order
    of its own (refresh: the join's; enrich: the file's) and deadlocked: one of them exited
    2 ("deadlock detected"; refresh without saying what it had written). Now both lock in
    key order (and refresh retries a page the database picked as a deadlock's victim):
    every trial, both exit 0, every row is consistent with its own provenance, and every
    row holds the second file's inputs."""
    data = {}
    for seed in (1, 2):
        out = tmp_path / f"g{seed}"
        tm("generate", "--out", str(out), "--tutors", "1000", "--sessions", "20000",
           "--feedback", "0", "--seed", str(seed))  # fmt: skip
        data[seed] = out
    lines = (data[2] / "sessions.csv").read_text().splitlines(keepends=True)
    body = lines[1:]
    random.Random(7).shuffle(body)  # no order of the keys: each batch spans the table
    second = tmp_path / "second.csv"
    second.write_text(lines[0] + "".join(body))
    tm("enrich", str(data[1] / "tutors.csv"), "--db", pg_url)
    overlaps = 0
    for trial in range(TRIALS):
        tm("enrich", str(data[1] / "sessions.csv"), "--db", pg_url, "--as-of", "2025-01-01",
           "--timezone", "America/New_York")  # fmt: skip
        sql(pg_url, "UPDATE sessions SET updated_at = NULL")  # the second file overwrites
        refresh = subprocess.Popen(
            [TUTORMAX, "refresh", "--db", pg_url, "--kind", "sessions", "--as-of", "2025-03-01",
             "--timezone", "Europe/Berlin", "--batch-size", "500", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        enrich = subprocess.run(
            [TUTORMAX, "enrich", str(second), "--db", pg_url, "--as-of", "2025-02-01",
             "--timezone", "Asia/Tokyo", "--batch-size", "1000", "--json"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        r_out, r_err = refresh.communicate(timeout=300)
        assert (enrich.returncode, refresh.returncode) == (0, 0), (trial, enrich.stderr, r_err)
        (counts,) = json.loads(r_out)["kinds"]
        assert counts["scanned"] == 20000 == sum(counts[c] for c in ("changed", "unchanged",
                                                                     "skipped"))  # fmt: skip
        overlaps += counts["skipped"] > 0
        assert _consistent(pg_url) == 0, trial
        zones = dict(sql(pg_url, "SELECT reporting_timezone, count(*) FROM sessions GROUP BY 1"))
        assert set(zones) <= {"Asia/Tokyo", "Europe/Berlin"} and sum(zones.values()) == 20000
    assert overlaps, "refresh and enrich never ran side by side: nothing was tested"


# -- a fault mid-run: what it says it committed ------------------------------------------------


def _written(url: str, sql_text: str) -> int:
    with Store.connect(url) as store, store.engine.connect() as conn:
        return int(conn.exec_driver_sql(sql_text).scalar_one())


@pytest.mark.parametrize("kind", ["sessions", "tutors"])
def test_a_fatal_error_mid_refresh_says_exactly_what_it_committed(
    db_url: str, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A refresh the database stopped mid-way (the deadlock above, a lost connection) exited
    2 without saying what it had written back. Now its one line says it, counted exactly:
    the pages written before it, one in flight beside it, and a tutors page whose changed
    rows were committed before the write of its restamped ones failed."""
    tm("enrich", TUTORS, SESSIONS, "--db", db_url, "--as-of", "2025-01-15")
    if kind == "tutors":  # 5 rows to change (a first write), 20 only to restamp (a second)
        tm("refresh", "--db", db_url, "--kind", "tutors", "--as-of", "2025-09-01")
        engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://"))
        with engine.begin() as conn:
            old = "'2020-01-01 00:00:00.000000'"  # (as SQLite's are stored: UTC, no offset)
            conn.exec_driver_sql(f"UPDATE tutors SET enriched_at = {old}")
            first = "SELECT tutor_id FROM tutors ORDER BY tutor_id LIMIT 5"
            conn.exec_driver_sql(
                f"UPDATE tutors SET subject_count = -1 WHERE tutor_id IN ({first})"
            )
        engine.dispose()
    store = Store.connect(db_url)
    calls = itertools.count()
    real = store.update_derived
    fail_at = 3 if kind == "sessions" else 1  # tutors: one page, its second write fails

    def failing(kind: str, rows: Any) -> int:
        if next(calls) == fail_at:
            raise DatabaseUnavailable(f"refreshing {kind} failed on db: connection lost")
        return real(kind, rows)

    monkeypatch.setattr(store, "update_derived", failing)
    zone = "Europe/Paris" if kind == "sessions" else "UTC"
    opts = RefreshOptions(as_of=datetime(2025, 9, 1, tzinfo=UTC), timezone=zone, kinds=(kind,),
                          batch_size=10 if kind == "sessions" else 25)  # fmt: skip
    try:
        with pytest.raises(DatabaseUnavailable) as stopped:
            refresh(store, opts)
    finally:
        store.close()
    done = ("reporting_timezone = 'Europe/Paris'" if kind == "sessions"
            else "enriched_at > '2025-01-01 00:00:00'")  # fmt: skip
    written = _written(db_url, f"SELECT count(*) FROM {kind} WHERE {done}")
    assert written >= 30 if kind == "sessions" else written == 5  # the 5 changed
    assert f"{kind} {written} scanned, {written} written" in stopped.value.message, (
        stopped.value.message
    )


def test_a_page_the_database_picked_as_a_deadlocks_victim_is_written_again(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page whose transaction the database ended to break a deadlock (SQLSTATE 40P01) is
    written again in a transaction of its own: the run finishes, every row refreshed."""
    tm("enrich", TUTORS, SESSIONS, "--db", db_url, "--as-of", "2025-01-15")
    store = Store.connect(db_url)
    calls = itertools.count()
    real = store.update_derived

    def deadlocked(kind: str, rows: Any) -> int:
        if next(calls) in (1, 2):  # the same page twice
            raise DatabaseConflict(f"refreshing {kind} failed on db: deadlock detected")
        return real(kind, rows)

    monkeypatch.setattr(store, "update_derived", deadlocked)
    opts = RefreshOptions(as_of=datetime(2025, 9, 1, tzinfo=UTC), timezone="Europe/Paris",
                          kinds=("sessions",), batch_size=50)  # fmt: skip
    try:
        (counts,) = refresh(store, opts)
    finally:
        store.close()
    assert (counts.scanned, counts.changed, counts.skipped) == (200, 200, 0)
    assert _written(db_url, "SELECT count(*) FROM sessions "
                            "WHERE reporting_timezone = 'Europe/Paris'") == 200  # fmt: skip


# -- every input column a DBA retyped (PostgreSQL) ----------------------------------------------

FEEDBACK = str(Path(__file__).parent.parent / "sample_data" / "feedback.jsonl")
# The input columns of each field type that are neither a key nor a foreign key (those a
# DBA cannot retype without their constraints), and the types a DBA might give them.
RETYPES = {
    "text": ("STRING", "INT", "FLOAT", "BOOL", "TIMESTAMP", "LIST"),
    "varchar(300)": ("STRING", "LIST"),
    "numeric": ("INT", "FLOAT"),
    "numeric(12,2)": ("INT",),
    "real": ("INT",),
    "timestamp": ("TIMESTAMP",),
    "timestamp(3) with time zone": ("TIMESTAMP",),
    "citext": ("STRING", "TIMESTAMP", "LIST"),  # contrib's case-insensitive text
    "ext.citext": ("TIMESTAMP", "LIST"),  # the same, its extension in a schema of its own
    "words": ("STRING", "TIMESTAMP", "LIST"),  # a domain over text
    "instant": ("TIMESTAMP",),  # a domain over timestamp without time zone
}
SETUP = {
    "citext": ["CREATE EXTENSION IF NOT EXISTS citext"],
    "ext.citext": ["CREATE SCHEMA ext", "CREATE EXTENSION citext SCHEMA ext"],
    "words": ["CREATE DOMAIN words AS text CHECK (length(VALUE) < 10000)"],
    "instant": ["CREATE DOMAIN instant AS timestamp"],
}
_LINKS = {"tutor_id", "session_id", "feedback_id"}


def _retype_sql(new_type: str) -> list[str]:
    out = []
    for kind, k in KINDS.items():
        cols = [c.name for c in k.columns if c.type.name in RETYPES[new_type]]
        alters = [f'ALTER "{c}" TYPE {new_type} USING "{c}"::{new_type}' for c in cols
                  if c not in _LINKS]  # fmt: skip
        if alters:
            out.append(f'ALTER TABLE "{kind}" {", ".join(alters)}')
    return out


def _derived(url: str) -> dict[str, dict[str, tuple]]:
    out = {}
    for kind, k in KINDS.items():
        names = [f.name for f in fields_for(kind)]
        cols = ", ".join(f'"{n}"::text' for n in names)
        rows = sql(url, f'SELECT "{k.key}", {cols} FROM "{kind}"')
        out[kind] = {r[0]: tuple(r[1:]) for r in rows}
    return out


def _refreshed_beside_an_unaltered_database(pg_url: str, files: tuple[str, ...]) -> tuple:
    """Refresh `pg_url` (nothing skipped or unreadable), then load and refresh the same
    files into a database nobody altered: the derived values of both."""
    done = tm("refresh", "--db", pg_url, "--as-of", "2025-09-01", "--json")
    kinds = json.loads(done.stdout)["kinds"]
    assert [(k["kind"], k["unreadable"], k["skipped"]) for k in kinds] == [
        ("tutors", 0, 0), ("sessions", 0, 0), ("feedback", 0, 0)
    ]  # fmt: skip
    with fresh_pg_database() as fresh:
        tm("enrich", *files, "--db", fresh, "--as-of", "2025-03-01")
        tm("refresh", "--db", fresh, "--as-of", "2025-09-01")
        return _derived(pg_url), _derived(fresh)


@pytest.mark.postgres
@pytest.mark.parametrize("new_type", list(RETYPES))
def test_every_input_column_a_dba_retyped_is_loaded_and_refreshed(
    pg_url: str, new_type: str
) -> None:
    """A DBA gave input columns another type (text, varchar, numeric, real, a timestamp
    without zone or with another precision). enrich crashed on sessions' scheduled_start as
    text (exit 3: the feedback join read a str), refresh on a list, a bool made text and an
    int made numeric(12,2) (exit 3, or every row unreadable). Now every column of every kind
    is read back by its field's rule: enrich and refresh exit 0, and the derived values
    equal those of a database nobody retyped. The same input again changes nothing (a list
    or a timestamp made text was written one way straight, another way staged: every row
    updated once)."""
    files = (TUTORS, SESSIONS, FEEDBACK)
    tm("db", "init", "--db", pg_url)
    sql(pg_url, *SETUP.get(new_type, []), *_retype_sql(new_type))
    tm("enrich", *files, "--db", pg_url, "--as-of", "2025-03-01")
    again = json.loads(tm("enrich", *files, "--db", pg_url, "--as-of", "2025-03-01",
                          "--json").stdout)  # fmt: skip
    assert [(f["inserted"], f["updated"]) for f in again["files"]] == [(0, 0)] * 3, again
    ours, unaltered = _refreshed_beside_an_unaltered_database(pg_url, files)
    assert ours == unaltered


@pytest.mark.postgres
def test_a_blank_or_a_nested_literal_a_dba_wrote_is_unreadable_not_a_null(pg_url: str) -> None:
    """In columns a DBA made text, a blank where a value is required (an int, a list) and a
    two-dimensional array literal read as nothing, and refresh wrote null derived values
    over good ones (`''` rating: is_positive null), or counted one subject in
    `{{Math,Art},{Bio,Chem}}`. Each such row is unreadable now: named, exit 1, left as it
    was; a blank in an optional field is still its null."""
    tm("db", "init", "--db", pg_url)
    sql(pg_url, 'ALTER TABLE tutors ALTER subjects TYPE text USING subjects::text',
        'ALTER TABLE feedback ALTER overall_rating TYPE text',
        'ALTER TABLE sessions ALTER late_start_minutes TYPE text')  # fmt: skip
    tm("enrich", TUTORS, SESSIONS, FEEDBACK, "--db", pg_url, "--as-of", "2025-03-01")
    before = _derived(pg_url)
    tutors = sorted(before["tutors"])[:3]
    feedback = sorted(before["feedback"])[:3]
    sessions = sorted(before["sessions"])[:1]
    nested = "{{Math,Art},{Bio,Chem}}"
    sql(pg_url,
        f"UPDATE tutors SET subjects = '' WHERE tutor_id = '{tutors[0]}'",
        f"UPDATE tutors SET subjects = '{nested}' WHERE tutor_id = '{tutors[1]}'",
        f"UPDATE tutors SET subjects = '{{Math,NULL}}' WHERE tutor_id = '{tutors[2]}'",
        f"UPDATE feedback SET overall_rating = '' WHERE feedback_id = '{feedback[0]}'",
        f"UPDATE feedback SET overall_rating = '  ' WHERE feedback_id = '{feedback[1]}'",
        f"UPDATE feedback SET overall_rating = 'abc' WHERE feedback_id = '{feedback[2]}'",
        f"UPDATE sessions SET late_start_minutes = '' "
        f"WHERE session_id = '{sessions[0]}'")  # fmt: skip
    done = tm("refresh", "--db", pg_url, "--as-of", "2025-03-01", "--json", code=1)
    named = {(k["kind"], r["key"], r["column"]) for k in json.loads(done.stdout)["kinds"]
             for r in k["unreadable_rows"]}  # fmt: skip
    assert named == {("tutors", tutors[0], "subjects"), ("tutors", tutors[1], "subjects")} | {
        ("feedback", f, "overall_rating") for f in feedback
    }
    after = _derived(pg_url)
    for kind, keys in (("tutors", tutors[:2]), ("feedback", feedback)):
        assert {k: after[kind][k] for k in keys} == {k: before[kind][k] for k in keys}


@pytest.mark.postgres
def test_keys_a_dba_made_char_n_are_matched_as_the_keys_they_hold(pg_url: str) -> None:
    """`session_id` made char(60) in sessions and feedback: PostgreSQL hands such a key back
    padded with blanks, so every feedback row was rejected as missing its session, and
    refresh skipped every session as changed meanwhile, for ever. The keys are compared as
    the text they hold now: the same rows and derived values as an unaltered database."""
    tm("db", "init", "--db", pg_url)
    sql(pg_url, "ALTER TABLE feedback DROP CONSTRAINT IF EXISTS feedback_session_id_fkey",
        "ALTER TABLE sessions ALTER session_id TYPE char(60)",
        "ALTER TABLE feedback ALTER session_id TYPE char(60)")  # fmt: skip
    files = (TUTORS, SESSIONS, FEEDBACK)
    loaded = json.loads(tm("enrich", *files, "--db", pg_url, "--as-of", "2025-03-01",
                           "--json").stdout)  # fmt: skip
    assert [f["rejected"] for f in loaded["files"]] == [0, 0, 0], loaded
    ours, unaltered = _refreshed_beside_an_unaltered_database(pg_url, files)
    padded = {k: {key.rstrip(): v for key, v in rows.items()} for k, rows in ours.items()}
    assert padded == unaltered


@pytest.mark.postgres
def test_a_key_a_dba_made_char_n_is_looked_up_by_its_index(pg_url: str) -> None:
    """The ids of a parent lookup were sent as text[], which made PostgreSQL cast a char(n)
    key column to text and give up its index (1,000 ids on 1M rows: 626 ms against 9 ms).
    They are an array of the column's own type now: the plan can use the index."""
    from tutormax_cli.store.postgres import BACKEND
    from tutormax_cli.store.tables import TABLES

    tm("db", "init", "--db", pg_url)
    sql(pg_url, "ALTER TABLE feedback DROP CONSTRAINT IF EXISTS feedback_session_id_fkey",
        "ALTER TABLE sessions ALTER session_id TYPE char(60)")  # fmt: skip
    col = TABLES["sessions"].c.session_id
    stmt = sa.select(col).where(BACKEND.key_filter(col, pa.array(["S1", "S2"])))
    compiled = stmt.compile(dialect=postgresql.psycopg2.dialect())
    conn = psycopg2.connect(pg_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET enable_seqscan = off")  # a usable index is taken, however small
            cur.execute(f"EXPLAIN {compiled}", compiled.params)
            plan = " ".join(r[0] for r in cur.fetchall())
    finally:
        conn.close()
    assert "Index Cond" in plan, plan  # the ids are the index's condition, not a filter
