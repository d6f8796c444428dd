"""Bench: `tutormax enrich` into PostgreSQL versus a plain COPY of the same enriched rows.

Steps, each timed in a child process (tutormax) or on one connection (COPY):
  fresh    sessions into an empty table (tutors loaded first, untimed)
  again    the same file once more: every row already stored, nothing to write
  half     the same file into a table that already holds its first half
  copy     COPY of the enriched rows (exported from `fresh`) into an empty copy of the
           sessions table with the same primary key, foreign key and indexes
  sqlite   the same file into a fresh SQLite database
Scratch databases `tutormax_bench_*` are created through TUTORMAX_TEST_PG_URL (default
postgresql://postgres@127.0.0.1:5432/postgres) and dropped afterwards.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow.parquet as pq
import sqlalchemy as sa

ADMIN_URL = os.environ.get("TUTORMAX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"tutormax_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(
        sa.make_url(ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def copy_reference(url: str, rows: int) -> float:
    """Export the enriched sessions, then time COPY into an empty twin table (PK + FK)."""
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg2.connect(dsn)
    try:
        with tempfile.TemporaryFile() as buf, conn.cursor() as cur:
            cur.copy_expert("COPY sessions TO STDOUT WITH (FORMAT csv)", buf)
            cur.execute("CREATE TABLE sessions_copy (LIKE sessions INCLUDING ALL)")
            cur.execute(
                "ALTER TABLE sessions_copy ADD FOREIGN KEY (tutor_id) REFERENCES tutors (tutor_id)"
            )
            conn.commit()
            buf.seek(0)
            started = time.perf_counter()
            cur.copy_expert("COPY sessions_copy FROM STDIN WITH (FORMAT csv)", buf, size=1 << 20)
            conn.commit()
            seconds = time.perf_counter() - started
            cur.execute("SELECT count(*) FROM sessions_copy")
            assert cur.fetchone()[0] == rows
        return seconds
    finally:
        conn.close()


def run(rows: int, dataset: Callable[..., dict[str, Path]], timed: Any, tutormax: Any) -> None:
    data = dataset(rows, max(rows // 100, 10), "parquet")
    tutors, sessions = data["tutors"], data["sessions"]
    half = sessions.with_name("sessions-first-half.parquet")
    if not half.exists():
        table = pq.read_table(sessions)
        pq.write_table(table.slice(0, table.num_rows // 2), half)
    as_of = ("--as-of", "2025-06-01T00:00:00Z")
    results = []
    with scratch_database() as url:
        timed("tutors", tutormax("enrich", tutors, "--db", url, *as_of), 0)
        results.append(timed("tutormax fresh load", tutormax(
            "enrich", sessions, "--db", url, *as_of), rows))  # fmt: skip
        results.append(timed("tutormax re-load, identical file", tutormax(
            "enrich", sessions, "--db", url, *as_of), rows))  # fmt: skip
        copy_s = copy_reference(url, rows)
    with scratch_database() as url:
        timed("tutors", tutormax("enrich", tutors, "--db", url, *as_of), 0)
        timed("first half", tutormax("enrich", half, "--db", url, *as_of), 0)
        results.append(timed("tutormax re-load, half exists", tutormax(
            "enrich", sessions, "--db", url, *as_of), rows))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        timed("tutors", tutormax("enrich", tutors, "--db", url, *as_of), 0)
        sqlite_run = timed("tutormax into SQLite", tutormax(
            "enrich", sessions, "--db", url, *as_of), rows)  # fmt: skip

    copy_rate = rows / copy_s
    print(f"\n== PostgreSQL: {rows:,} sessions; ratio = tutormax rows/s / COPY rows/s ==")
    print(
        f"{'step':44} {'wall s':>8} {'rows/s':>10} {'peak MiB':>9} {'vs COPY':>8} {'vs fresh':>8}"
    )
    print(f"{'COPY into empty table (PK+FK)':44} {copy_s:8.2f} {copy_rate:10,.0f} {'':>9} {1:8.2f}")
    fresh_rate = results[0].rate
    for r in results:
        print(f"{r.label:44} {r.seconds:8.2f} {r.rate:10,.0f} {r.rss_mib:9.0f} "
              f"{r.rate / copy_rate:8.2f} {r.rate / fresh_rate:8.2f}")  # fmt: skip
    print(f"{sqlite_run.label:44} {sqlite_run.seconds:8.2f} {sqlite_run.rate:10,.0f} "
          f"{sqlite_run.rss_mib:9.0f}")  # fmt: skip
