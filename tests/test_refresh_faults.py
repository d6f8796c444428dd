"""`tutormax refresh` where it used to fail: pages of unreadable rows, columns a DBA changed,
and an `enrich` of the same keys running beside it (PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from dbfixtures import fresh_pg_database

from tutormax_cli.fields import fields_for

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
TUTORS = str(Path(__file__).parent.parent / "sample_data" / "tutors.csv")


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
