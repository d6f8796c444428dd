"""The benchmark's Polars reference: SPEC §3's session and feedback fields as Polars lazy
expressions, as a Polars user would write them.

`polars_files(jobs, ...)` runs (kind, src, dst) jobs in order: `pl.scan_csv(schema=…)`
(every column's type declared: Datetime[us, UTC], Int64, Boolean, Float64, String) or
`pl.scan_parquet`, the derived fields as expressions, `sink_parquet`. Output: the input
columns in input order, typed as tutormax's Parquet output has them, then the derived
fields, rows in input order. Feedback is joined to the sessions Parquet this run just
wrote (one row per session_id assumed, as the bench data has), keeping the feedback's order.

A yardstick for speed, not the product: it assumes valid input and does no validation,
rejects or database work. Where it can differ from SPEC, it says so:

* Rounding is exact half-even on integers (µs, rating sums), like tutormax.
* has_text_feedback uses the regex `\\S` of Rust's regex crate (Unicode White_Space), which
  differs from Python's str.isspace on a few control characters (U+001C-U+001F).
* A JSON list cell (improvement_areas) is decoded with `str.json_decode`; the
  `;`/`|`-joined list forms of SPEC §1 are not read.

Run: `python -m bench.polars_reference AS_OF KIND SRC DST [KIND SRC DST …]` (threads: the
POLARS_MAX_THREADS environment variable, which must be set before Polars is imported).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from tutormax_cli.schema import CATEGORY_RATINGS, KINDS, Type

_US_PER_MINUTE = 60_000_000
_US_PER_HOUR = 60 * _US_PER_MINUTE

_UTC = pl.Datetime("us", "UTC")
_POLARS_TYPES: dict[Type, Any] = {
    Type.STRING: pl.String,
    Type.INT: pl.Int64,
    Type.FLOAT: pl.Float64,
    Type.BOOL: pl.Boolean,
    Type.TIMESTAMP: _UTC,
    Type.LIST: pl.String,  # read as text, decoded from JSON below
}


def _scan(path: Path, kind: str) -> pl.LazyFrame:
    if path.suffix.lower() == ".parquet":
        return pl.scan_parquet(path)
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    spec = KINDS[kind]
    known = set(spec.column_names)
    schema: dict[str, Any] = {
        name: _POLARS_TYPES[spec.column(name).type] if name in known else pl.String
        for name in header
    }
    frame = pl.scan_csv(path, schema=schema)
    lists = [c.name for c in spec.columns if c.type is Type.LIST and c.name in header]
    if lists:
        frame = frame.with_columns(pl.col(c).str.json_decode(pl.List(pl.String)) for c in lists)
    return frame


def _us(name: str) -> pl.Expr:
    return pl.col(name).dt.epoch("us")


def _sessions(frame: pl.LazyFrame, tz: str) -> pl.LazyFrame:
    local = pl.col("scheduled_start").dt.convert_time_zone(tz)
    hour = local.dt.hour()
    late = pl.col("late_start_minutes")
    end = pl.coalesce(
        _us("actual_end"), _us("scheduled_start") + pl.col("duration_minutes") * _US_PER_MINUTE
    )
    minutes = ((end - _us("actual_start")) // _US_PER_MINUTE).clip(lower_bound=0)
    return frame.with_columns(
        is_weekend=local.dt.weekday() >= 6,  # Monday = 1 … Sunday = 7
        time_of_day=pl.when((hour >= 5) & (hour < 12))
        .then(pl.lit("morning"))
        .when((hour >= 12) & (hour < 17))
        .then(pl.lit("afternoon"))
        .when((hour >= 17) & (hour < 22))
        .then(pl.lit("evening"))
        .otherwise(pl.lit("night")),
        is_late_start=pl.when(late.is_not_null())
        .then(late > 5)
        .when(pl.col("actual_start").is_not_null())
        .then(_us("actual_start") - _us("scheduled_start") > 5 * _US_PER_MINUTE)
        .otherwise(False),
        actual_duration_minutes=pl.when(pl.col("no_show").fill_null(False))
        .then(pl.lit(0, pl.Int64))
        .when(pl.col("actual_start").is_null())
        .then(pl.lit(None, pl.Int64))
        .otherwise(minutes),
        week_of_year=local.dt.week().cast(pl.Int64),  # ISO-8601 week
        month_of_year=local.dt.month().cast(pl.Int64),
    )


def _round2(num: pl.Expr, den: pl.Expr | int) -> pl.Expr:
    """Exact half-even rounding of num/den (ints, den > 0) to an integer, as a float / 100:
    num/den is the value × 100. Polars' `//` and `%` on ints are floor division and a
    non-negative remainder."""
    q = num // den
    twice_r = (num - q * den) * 2
    up = (twice_r > den) | ((twice_r == den) & (q % 2 == 1))
    hundredths = q + up.cast(pl.Int64)
    # NOTE: Polars divides by a scalar as a product with its reciprocal (380 * 0.01 is
    # 3.8000000000000003); a division by a column is IEEE's correctly rounded quotient.
    return hundredths.cast(pl.Float64) / (hundredths * 0 + 100).cast(pl.Float64)


def _feedback(frame: pl.LazyFrame, sessions: pl.LazyFrame | None) -> pl.LazyFrame:
    columns = frame.collect_schema().names()
    cats = [pl.col(c) for c in CATEGORY_RATINGS]
    n = pl.sum_horizontal(c.is_not_null().cast(pl.Int64) for c in cats)
    total = pl.sum_horizontal(c.fill_null(0) for c in cats)
    squares = pl.sum_horizontal((c * c).fill_null(0) for c in cats)
    start = pl.col("session_scheduled_start")
    if sessions is not None:
        starts = sessions.select(
            pl.col("session_id"), pl.col("scheduled_start").alias("__session_start")
        )
        frame = frame.join(starts, on="session_id", how="left", maintain_order="left")
        start = pl.coalesce(start, pl.col("__session_start"))
    safe_n = pl.when(n > 0).then(n).otherwise(1)
    text = pl.col("free_text_feedback")
    frame = frame.with_columns(
        is_positive=pl.col("overall_rating") >= 4,
        is_poor=pl.col("overall_rating") < 3,
        avg_category_rating=pl.when(n > 0).then(_round2(100 * total, safe_n)),
        category_variance=pl.when(n > 0).then(
            _round2(100 * (n * squares - total * total), safe_n * safe_n)
        ),
        has_text_feedback=text.str.contains(r"\S").fill_null(False),
        feedback_delay_hours=_round2(
            _us("submitted_at") - start.dt.epoch("us"), _US_PER_HOUR // 100
        ),
    )
    derived = [
        "is_positive",
        "is_poor",
        "avg_category_rating",
        "category_variance",
        "has_text_feedback",
        "feedback_delay_hours",
    ]
    return frame.select(*columns, *derived)


def polars_files(jobs: list[tuple[str, Path, Path]], *, timezone: str = "UTC") -> float:
    """(kind, src, dst) after (kind, src, dst); feedback joins an earlier job's sessions
    output. Returns wall seconds."""
    started = time.perf_counter()
    sessions_out: Path | None = None
    for kind, src, dst in jobs:
        frame = _scan(Path(src), kind)
        if kind == "sessions":
            frame = _sessions(frame, timezone)
        elif kind == "feedback":
            joined = pl.scan_parquet(sessions_out) if sessions_out is not None else None
            frame = _feedback(frame, joined)
        else:
            raise ValueError(f"the Polars reference does sessions and feedback, not {kind!r}")
        frame.sink_parquet(dst)
        if kind == "sessions":
            sessions_out = Path(dst)
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    _as_of, rest = argv[0], argv[1:]  # as-of: only tutor fields need it
    jobs = [(rest[i], Path(rest[i + 1]), Path(rest[i + 2])) for i in range(0, len(rest), 3)]
    polars_files(jobs)


if __name__ == "__main__":
    main(sys.argv[1:])
