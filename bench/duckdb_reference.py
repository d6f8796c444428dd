"""The benchmark's DuckDB reference: SPEC §3's derived fields written in DuckDB SQL, as a
DuckDB user would write them.

`duckdb_enrich(kind, src, dst, ...)` reads one CSV or Parquet file, computes the derived
fields of its kind in the reporting timezone and writes Parquet with COPY … TO: the input
columns in input order, each of its type in tutormax_cli.schema (as tutormax's own Parquet
output has them; unknown extra columns as read, and an input column named like a derived
field dropped, SPEC §1), then the derived fields, rows in input order.

A CSV is read with its column types declared (`read_csv(…, columns = {…})`: TIMESTAMPTZ,
BIGINT, BOOLEAN, DOUBLE, VARCHAR[]), so DuckDB's own parsers type it while reading, not
VARCHAR then macros; so the file must be in forms DuckDB reads (the bench's export CSV is:
bench/dataset.py). `duckdb_files(jobs, ...)` runs several kinds on one connection, as one
script would: feedback is joined to the sessions Parquet this run just wrote.

It is a yardstick for speed and a second opinion on values, not the product: it assumes
valid input (a bad timestamp makes the whole run fail) and does no validation, rejects or
database work. Where it can differ from SPEC, it says so:

* Rounding (avg_category_rating, category_variance, feedback_delay_hours) is exact
  half-even on integers (µs, rating sums), NOT DuckDB's round(), which rounds half away
  from zero on a binary double (round(0.025, 2) = 0.03; SPEC wants 0.02).
* subject_count compares items with lower(), not Unicode casefold ("ß" vs "ss" differ).
* has_text_feedback looks for a non-whitespace character with RE2's `\\S`, which treats
  only ASCII whitespace as whitespace (Python's str.isspace also knows U+00A0 etc.).
* The feedback join assumes one row per session_id (the bench data has that); tutormax
  keeps the newest version of a duplicated session.

Needs duckdb (the `bench` extra); the package itself never imports this module.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import duckdb

from tutormax_cli.schema import CATEGORY_RATINGS, KINDS, Type

DERIVED: dict[str, tuple[str, ...]] = {
    "tutors": (
        "tenure_days",
        "is_new_tutor",
        "experience_level",
        "subject_count",
        "is_active_today",
    ),
    "sessions": (
        "is_weekend",
        "time_of_day",
        "is_late_start",
        "actual_duration_minutes",
        "week_of_year",
        "month_of_year",
    ),
    "feedback": (
        "is_positive",
        "is_poor",
        "avg_category_rating",
        "category_variance",
        "has_text_feedback",
        "feedback_delay_hours",
    ),
}


_US_PER_MINUTE = 60_000_000
_US_PER_DAY = 86_400_000_000

# A column that does not arrive with its SPEC type (a Parquet file typed otherwise) is
# converted with these; typed CSV columns and Parquet columns of the SPEC type pass
# through untouched (see _typed).
_MACROS = """
-- SPEC §2: 'T' or space, optional fraction, Z / ±HH:MM / none (= UTC, TimeZone is UTC),
-- or a bare date (= midnight UTC). DuckDB's cast reads all of these.
CREATE MACRO tm_ts(x) AS CAST(x AS TIMESTAMPTZ);
CREATE MACRO tm_list(x) AS CASE  -- a JSON array, or items joined by ';' or '|'
    WHEN starts_with(trim(x), '[') THEN from_json(x, '["VARCHAR"]')
    ELSE string_split_regex(x, '[;|]')
END;
CREATE MACRO tm_bool(x) AS CASE
    WHEN lower(trim(CAST(x AS VARCHAR))) IN ('true', '1', 'yes', 't') THEN true
    WHEN lower(trim(CAST(x AS VARCHAR))) IN ('false', '0', 'no', 'f') THEN false
END;
-- Non-negative remainder, and exact half-even rounding of num/den to 2 decimals, where
-- num/den is the value times 100 (den > 0). Not round(): that is half away from zero.
CREATE MACRO tm_pmod(a, b) AS ((a % b) + b) % b;
CREATE MACRO tm_floordiv(a, b) AS (a - tm_pmod(a, b)) // b;
CREATE MACRO tm_round2(num, den) AS CAST(
    tm_floordiv(num, den)
    + CASE
        WHEN 2 * tm_pmod(num, den) > den THEN 1
        WHEN 2 * tm_pmod(num, den) = den AND tm_pmod(tm_floordiv(num, den), 2) = 1 THEN 1
        ELSE 0
      END
    AS DOUBLE) / 100;
"""


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source(path: Path, kind: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header = _csv_header(path)
        known = set(KINDS[kind].column_names)
        types = ", ".join(
            f"{_lit(name)}: "
            f"{_lit(_SQL_TYPES[KINDS[kind].column(name).type] if name in known else 'VARCHAR')}"
            for name in header
        )
        return (
            f"read_csv({_lit(str(path))}, header = true, delim = ',', quote = '\"', "
            f"escape = '\"', auto_detect = false, columns = {{{types}}})"
        )
    if suffix == ".parquet":
        return f"read_parquet({_lit(str(path))})"
    raise ValueError(f"{path}: the DuckDB reference reads .csv or .parquet, not {suffix!r}")


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return next(csv.reader(f))


def _columns(con: duckdb.DuckDBPyConnection, source: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]


_SQL_TYPES = {
    Type.STRING: "VARCHAR",
    Type.INT: "BIGINT",
    Type.FLOAT: "DOUBLE",
    Type.BOOL: "BOOLEAN",
    Type.TIMESTAMP: "TIMESTAMPTZ",
    Type.LIST: "VARCHAR[]",
}


def _typed(name: str, duck_type: str, type_: Type | None) -> str:
    """Column `name` as its SPEC §1 type (schema.Type); unknown columns as read."""
    col = _ident(name)
    native = duck_type.upper().replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")
    if type_ is None or native == _SQL_TYPES[type_]:
        return col
    if type_ is Type.TIMESTAMP:
        return f"tm_ts({col})"
    if type_ is Type.BOOL:
        return f"tm_bool({col})"
    if type_ is Type.LIST:
        return f"tm_list({col})"
    return f"CAST({col} AS {_SQL_TYPES[type_]})"


class _Input:
    """One input file: its columns typed as in schema.py, and NULL for absent optional ones."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, kind: str) -> None:
        self.source = _source(path, kind)
        self.kind = KINDS[kind]
        self.columns = [
            (name, duck_type)
            for name, duck_type in _columns(con, self.source)
            if name not in DERIVED[kind]  # an input named like a derived field is replaced
        ]
        self.names = {name for name, _ in self.columns}

    def typed_select(self) -> str:
        """SELECT list: the input columns, in input order, each as its SPEC type."""
        known = set(self.kind.column_names)
        return ", ".join(
            f"{_typed(name, t, self.kind.column(name).type if name in known else None)} "
            f"AS {_ident(name)}"
            for name, t in self.columns
        )

    def output_columns(self, table: str) -> str:
        return ", ".join(f"{table}.{_ident(name)}" for name, _ in self.columns)

    def ref(self, name: str) -> str:
        """A typed input column, or a typed NULL when the file lacks it."""
        if name in self.names:
            return _ident(name)
        return f"NULL::{_SQL_TYPES[self.kind.column(name).type]}"


def _local(expr: str, tz: str) -> str:
    """A TIMESTAMPTZ as wall-clock time in the reporting timezone."""
    return f"timezone({_lit(tz)}, {expr})"


def _tutors_sql(src: _Input, as_of: str, tz: str) -> str:
    as_of_ts = f"CAST({_lit(as_of)} AS TIMESTAMPTZ)"
    tenure = f"greatest(0, (epoch_us({as_of_ts}) - epoch_us(onboarding_date)) // {_US_PER_DAY})"
    subject_count = (
        "len(list_distinct(list_filter(list_transform(subjects, "
        "lambda s: lower(regexp_replace(s, '^\\s+|\\s+$', '', 'g'))), lambda s: s <> '')))"
    )
    return f"""
        WITH t AS (SELECT {src.typed_select()} FROM {src.source}),
        u AS (SELECT *, {tenure} AS __tenure FROM t)
        SELECT {src.output_columns("u")},
            __tenure AS tenure_days,
            __tenure < 30 AS is_new_tutor,
            CASE WHEN __tenure < 90 THEN 'junior' WHEN __tenure < 365 THEN 'mid'
                 ELSE 'senior' END AS experience_level,
            {subject_count} AS subject_count,
            coalesce(
                CAST({_local(src.ref("updated_at"), tz)} AS DATE)
                    = CAST({_local(as_of_ts, tz)} AS DATE),
                false) AS is_active_today
        FROM u
    """


def _sessions_sql(src: _Input, tz: str) -> str:
    late, no_show = src.ref("late_start_minutes"), src.ref("no_show")
    actual_start, actual_end = src.ref("actual_start"), src.ref("actual_end")
    return f"""
        WITH t AS (SELECT {src.typed_select()} FROM {src.source}),
        u AS (SELECT *, {_local("scheduled_start", tz)} AS __local FROM t)
        SELECT {src.output_columns("u")},
            isodow(__local) >= 6 AS is_weekend,
            CASE WHEN hour(__local) >= 5 AND hour(__local) < 12 THEN 'morning'
                 WHEN hour(__local) >= 12 AND hour(__local) < 17 THEN 'afternoon'
                 WHEN hour(__local) >= 17 AND hour(__local) < 22 THEN 'evening'
                 ELSE 'night' END AS time_of_day,
            CASE WHEN {late} IS NOT NULL THEN {late} > 5
                 WHEN {actual_start} IS NOT NULL THEN
                     epoch_us({actual_start}) - epoch_us(scheduled_start) > 5 * {_US_PER_MINUTE}
                 ELSE false END AS is_late_start,
            CASE WHEN {no_show} THEN 0
                 WHEN {actual_start} IS NULL THEN NULL
                 -- // truncates toward zero; only negatives differ from floor, and those
                 -- are clamped to 0 anyway.
                 ELSE greatest(0, (coalesce(epoch_us({actual_end}), epoch_us(scheduled_start)
                                            + duration_minutes * {_US_PER_MINUTE})
                                   - epoch_us({actual_start})) // {_US_PER_MINUTE})
            END AS actual_duration_minutes,
            weekofyear(__local) AS week_of_year,  -- ISO-8601 week
            month(__local) AS month_of_year
        FROM u
    """


def _feedback_sql(src: _Input, sessions: _Input | None) -> str:
    ratings = ", ".join(src.ref(r) for r in CATEGORY_RATINGS)
    carried = src.ref("session_scheduled_start")
    if sessions is not None:
        # The sessions of the same run, one row per session_id (see the module docstring).
        with_sessions = f"""
            s AS (SELECT session_id AS __sid, scheduled_start AS __sstart
                  FROM {sessions.source}),"""
        join = "LEFT JOIN s ON t.session_id = s.__sid"
        has_carried = "session_scheduled_start" in src.names
        session_start = f"coalesce(t.{carried}, s.__sstart)" if has_carried else "s.__sstart"
    else:
        with_sessions, join, session_start = "", "", carried
    text = src.ref("free_text_feedback")
    # A join does not keep input order: number the rows, sort on the number at the end.
    return f"""
        WITH t AS (SELECT {src.typed_select()}, row_number() OVER () AS __rn
                   FROM {src.source}),{with_sessions}
        j AS (
            SELECT t.*,
                list_filter([{ratings}], lambda r: r IS NOT NULL) AS __cats,
                epoch_us(submitted_at) - epoch_us({session_start}) AS __delay_us
            FROM t {join}
        ),
        k AS (
            SELECT *,
                len(__cats) AS __n,
                CAST(list_sum(__cats) AS BIGINT) AS __sum,
                CAST(list_sum(list_transform(__cats, lambda r: r * r)) AS BIGINT) AS __sumsq
            FROM j
        )
        SELECT {src.output_columns("k")},
            overall_rating >= 4 AS is_positive,
            overall_rating < 3 AS is_poor,
            -- mean = sum/n; ×100 for 2 decimals
            CASE WHEN __n > 0 THEN tm_round2(100 * __sum, __n) END AS avg_category_rating,
            -- population variance = (n·Σx² − (Σx)²) / n²
            CASE WHEN __n > 0 THEN tm_round2(100 * (__n * __sumsq - __sum * __sum), __n * __n)
            END AS category_variance,
            coalesce(regexp_matches({text}, '\\S'), false) AS has_text_feedback,
            -- hours ×100 = µs / 36,000,000
            tm_round2(__delay_us, 36000000) AS feedback_delay_hours
        FROM k
        ORDER BY __rn
    """


def duckdb_enrich(
    kind: str,
    src: Path,
    dst: Path,
    *,
    as_of: str,
    timezone: str = "UTC",
    sessions_src: Path | None = None,
    threads: int = 2,
) -> float:
    """Enrich `src` (CSV or Parquet) of `kind` into Parquet `dst`; return wall seconds.

    `as_of` is an ISO-8601 instant (used by tutors); `timezone` an IANA name;
    `sessions_src` the run's sessions file (CSV or Parquet), joined for feedback rows that
    carry no session_scheduled_start (without it those rows get a null
    feedback_delay_hours).
    """
    return duckdb_files(
        [(kind, Path(src), Path(dst))],
        as_of=as_of,
        timezone=timezone,
        sessions_src=sessions_src,
        threads=threads,
    )


def duckdb_files(
    jobs: list[tuple[str, Path, Path]],
    *,
    as_of: str,
    timezone: str = "UTC",
    sessions_src: Path | None = None,
    threads: int = 2,
) -> float:
    """(kind, src, dst) after (kind, src, dst) on one connection; feedback is joined to the
    sessions output of an earlier job, else to `sessions_src`. Returns wall seconds."""
    started = time.perf_counter()
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        con.execute("SET TimeZone = 'UTC'")  # an offset-less timestamp is UTC (SPEC §2)
        con.execute("SET preserve_insertion_order = true")  # output follows input
        con.execute("SET enable_progress_bar = false")
        con.execute(_MACROS)
        sessions_file = sessions_src
        for kind, src, dst in jobs:
            if kind not in DERIVED:
                raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(DERIVED)}")
            source = _Input(con, Path(src), kind)
            if kind == "tutors":
                sql = _tutors_sql(source, as_of, timezone)
            elif kind == "sessions":
                sql = _sessions_sql(source, timezone)
            else:
                sessions = _Input(con, Path(sessions_file), "sessions") if sessions_file else None
                sql = _feedback_sql(source, sessions)
            con.execute(f"COPY ({sql}) TO {_lit(str(dst))} (FORMAT parquet)")
            if kind == "sessions":
                sessions_file = Path(dst)
    finally:
        con.close()
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    """`python -m bench.duckdb_reference AS_OF KIND SRC DST [KIND SRC DST …]`"""
    as_of, rest = argv[0], argv[1:]
    jobs = [(rest[i], Path(rest[i + 1]), Path(rest[i + 2])) for i in range(0, len(rest), 3)]
    duckdb_files(jobs, as_of=as_of)


if __name__ == "__main__":
    main(sys.argv[1:])
