"""Probe: `Store.write` throughput on PostgreSQL versus a bare COPY of the same rows.

    .venv/bin/python bench/pg_store_probe.py [--rows 100000] [--batch 10000]

Creates a scratch database `tutormax_test_probe_<hex>` through TUTORMAX_TEST_PG_URL
(default postgresql://postgres@127.0.0.1:5432/postgres) and drops it afterwards. Measures,
for N generated sessions (1,000 tutors stored first):
  fresh    Store.write into the empty table, one transaction per batch
  rewrite  the same batches again (every row unchanged: nothing rewritten)
  update   every row with one input column changed (every row updated)
  copy     one COPY of the same rows, as CSV rendered beforehand (not timed), into an
           empty copy of the sessions table (same PK, FK and indexes), then COMMIT
"""

from __future__ import annotations

import argparse
import io
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa

from tutormax_cli.config import mask_url
from tutormax_cli.fields import Context, derive
from tutormax_cli.schema import KINDS
from tutormax_cli.store import Store

ADMIN_URL = os.environ.get("TUTORMAX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AS_OF = datetime(2024, 11, 7, 12, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def with_derived(kind: str, table: pa.Table) -> pa.Table:
    derived = derive(kind, table, Context(as_of=AS_OF))
    for name in derived.column_names:
        table = table.append_column(name, derived.column(name))
    return table.append_column("enriched_at", pa.array([AS_OF] * table.num_rows, TS))


def tutors(n: int) -> pa.Table:
    k = KINDS["tutors"]
    values = {
        "tutor_id": [f"T{i:05d}" for i in range(n)],
        "name": [f"Tutor {i}" for i in range(n)],
        "email": [f"t{i}@example.com" for i in range(n)],
        "onboarding_date": [AS_OF - timedelta(days=i % 900) for i in range(n)],
        "status": ["active"] * n,
        "subjects": [["Math", "SAT Prep"]] * n,
    }
    return with_derived(
        "tutors",
        pa.table(
            {c.name: pa.array(values.get(c.name, [None] * n), c.type.arrow) for c in k.columns}
        ),
    )


def sessions(n: int, n_tutors: int) -> pa.Table:
    k = KINDS["sessions"]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    starts = [start + timedelta(minutes=37 * i) for i in range(n)]
    values = {
        "session_id": [f"S{i:08d}" for i in range(n)],
        "tutor_id": [f"T{i % n_tutors:05d}" for i in range(n)],
        "student_id": [f"ST{i % 50000:06d}" for i in range(n)],
        "scheduled_start": starts,
        "duration_minutes": [30 + 15 * (i % 5) for i in range(n)],
        "subject": ["Math", "Physics", "SAT Prep", "Chemistry"] * (n // 4) + ["Math"] * (n % 4),
        "actual_start": [s + timedelta(seconds=(i * 47) % 900) for i, s in enumerate(starts)],
        "session_number": [1 + i % 40 for i in range(n)],
        "no_show": [i % 50 == 0 for i in range(n)],
        "engagement_score": [(i % 101) / 100 for i in range(n)],
        "updated_at": [s + timedelta(hours=2) for s in starts],
    }
    table = pa.table(
        {c.name: pa.array(values.get(c.name, [None] * n), c.type.arrow) for c in k.columns}
    )
    return with_derived("sessions", table)


def batches(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def timed_writes(store: Store, parts: list[pa.Table]) -> tuple[float, list[int]]:
    totals = [0, 0, 0, 0]
    t0 = time.perf_counter()
    for part in parts:
        with store.transaction():
            r = store.write("sessions", part)
        for i, v in enumerate((r.inserted, r.updated, r.unchanged, len(r.refused))):
            totals[i] += v
    return time.perf_counter() - t0, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--tutors", type=int, default=1_000)
    args = parser.parse_args()

    name = f"tutormax_test_probe_{uuid.uuid4().hex[:10]}"
    admin_dsn = sa.make_url(ADMIN_URL).set(drivername="postgresql")
    admin = psycopg2.connect(admin_dsn.render_as_string(hide_password=False))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    print(f"database {mask_url(url)}; {args.rows:,} sessions, batches of {args.batch:,}")
    try:
        tutor_table = tutors(args.tutors)
        table = sessions(args.rows, args.tutors)
        changed = table.set_column(
            table.schema.get_field_index("subject"),
            "subject",
            pc.binary_join_element_wise(table.column("subject"), "!", ""),
        )
        with Store.connect(url) as store:
            store.init_schema()
            store.write("tutors", tutor_table)
            results = {}
            for label, source in (("fresh", table), ("rewrite", table), ("update", changed)):
                results[label] = timed_writes(store, batches(source, args.batch))

            # baseline: COPY the same rows (as tz-aware CSV, like any export) into a copy
            sink = io.BytesIO()
            pacsv.write_csv(
                table.drop_columns(["subjects"] if "subjects" in table.column_names else []),
                sink,
                pacsv.WriteOptions(include_header=False),
            )
            payload = sink.getvalue()
            dbapi = psycopg2.connect(url)
            try:
                with dbapi.cursor() as cur:
                    cur.execute("CREATE TABLE sessions_copy (LIKE sessions INCLUDING ALL)")
                    cur.execute(
                        "ALTER TABLE sessions_copy ADD FOREIGN KEY (tutor_id) "
                        "REFERENCES tutors (tutor_id)"
                    )
                    dbapi.commit()
                    cols = ", ".join(f'"{c}"' for c in table.column_names)
                    t0 = time.perf_counter()
                    cur.copy_expert(
                        f"COPY sessions_copy ({cols}) FROM STDIN WITH (FORMAT csv)",
                        io.BytesIO(payload),
                        size=1 << 20,
                    )
                    dbapi.commit()
                    copy_s = time.perf_counter() - t0
            finally:
                dbapi.close()
            assert store.row_counts()["sessions"] == args.rows
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    copy_rate = args.rows / copy_s
    print(f"{'method':<10}{'seconds':>9}{'rows/s':>10}{'vs COPY':>9}  ins/upd/unch/refused")
    for label, (secs, totals) in results.items():
        rate = args.rows / secs
        print(f"{label:<10}{secs:>9.2f}{rate:>10,.0f}{rate / copy_rate:>9.2f}  {totals}")
    print(f"{'copy':<10}{copy_s:>9.2f}{copy_rate:>10,.0f}{1:>9.2f}")


if __name__ == "__main__":
    main()
