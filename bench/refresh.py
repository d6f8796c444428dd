"""Bench: `tutormax refresh` on PostgreSQL against a fresh load of the same rows (issue 11).

Steps, each a child process timed with its own peak RSS (bench/__main__.py `timed`):
  sessions  1M sessions loaded fresh (`enrich` into an empty database, tutors loaded first,
            untimed), then `refresh --timezone America/New_York --kind sessions`: every row's
            reporting timezone changes, so every session is re-derived in full and written.
  tutors    100k tutors loaded fresh, then `refresh --as-of <a year later> --kind tutors`:
            every tutor's tenure fields and `enriched_at` change.
Ratio = refresh rows/s / fresh-load rows/s (target ≥ 0.8); memory target ≤ 300 MiB.
Scratch databases come from bench/postgres.py's `scratch_database`.

    python -m bench --only refresh --rows 1000000
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import sqlalchemy as sa

from bench.postgres import scratch_database

AS_OF = "2025-06-01T00:00:00Z"
LATER = "2026-06-01T00:00:00Z"


def _tutors_only(dataset_dir: Path, tutors: int, tutormax: Any) -> Path:
    """A file of `tutors` tutors (tutormax generate, seeded), made once."""
    target = dataset_dir / f"tutors-only-{tutors}"
    path = target / "tutors.csv"
    if not path.exists():
        argv = tutormax("generate", "--out", target, "--tutors", tutors,
                        "--sessions", 0, "--feedback", 0, "--seed", 11)  # fmt: skip
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def _count(url: str, sql: str) -> int:
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return int(cur.fetchone()[0])


def run(rows: int, dataset: Callable[..., dict[str, Path]], timed: Any, tutormax: Any) -> None:
    data = dataset(rows, max(rows // 100, 10), "parquet")
    n_tutors = max(rows // 10, 10)
    tutors_file = _tutors_only(data["sessions"].parent.parent, n_tutors, tutormax)
    pairs = []
    with scratch_database() as url:
        timed("tutors", tutormax("enrich", data["tutors"], "--db", url, "--as-of", AS_OF), 0)
        fresh = timed(f"fresh load, {rows:,} sessions", tutormax(
            "enrich", data["sessions"], "--db", url, "--as-of", AS_OF), rows)  # fmt: skip
        refresh = timed("refresh --timezone (every session)", tutormax(
            "refresh", "--db", url, "--kind", "sessions", "--timezone", "America/New_York",
            "--as-of", AS_OF, "--json"), rows)  # fmt: skip
        moved = _count(url, "SELECT count(*) FROM sessions "
                            "WHERE reporting_timezone = 'America/New_York'")  # fmt: skip
        assert moved == rows, f"refresh re-derived {moved:,} of {rows:,} sessions"
        pairs.append((fresh, refresh))
    with scratch_database() as url:
        fresh = timed(f"fresh load, {n_tutors:,} tutors", tutormax(
            "enrich", tutors_file, "--db", url, "--as-of", AS_OF), n_tutors)  # fmt: skip
        refresh = timed("refresh --as-of (every tutor)", tutormax(
            "refresh", "--db", url, "--kind", "tutors", "--as-of", LATER, "--json"),
            n_tutors)  # fmt: skip
        moved = _count(url, f"SELECT count(*) FROM tutors WHERE enriched_at = '{LATER}'")
        assert moved == n_tutors, f"refresh moved {moved:,} of {n_tutors:,} tutors"
        pairs.append((fresh, refresh))
    print("\n== refresh on PostgreSQL; ratio = refresh rows/s / fresh load rows/s ==")
    print(f"{'step':44} {'wall s':>8} {'rows/s':>10} {'peak MiB':>9} {'ratio':>7}")
    for fresh, refresh in pairs:
        for r in (fresh, refresh):
            ratio = f"{refresh.rate / fresh.rate:.2f}" if r is refresh else ""
            print(f"{r.label:44} {r.seconds:8.2f} {r.rate:10,.0f} {r.rss_mib:9.0f} {ratio:>7}")
    print(json.dumps({"refresh": [
        {"step": r.label, "seconds": round(r.seconds, 2), "rows_per_s": round(r.rate),
         "peak_mib": round(r.rss_mib)} for pair in pairs for r in pair]}))  # fmt: skip
