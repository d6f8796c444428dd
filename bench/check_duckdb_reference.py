"""Check bench/duckdb_reference.py against a plain-Python reading of SPEC §3.

Generates a small data set with tutormax_cli.generate (Parquet, and the bench's export CSV
of the same values: bench/dataset.py), runs
duckdb_enrich on every kind, and compares every derived value and the row order with an
independent per-row implementation (datetime, zoneinfo, fractions). Run:

    .venv/bin/python bench/check_duckdb_reference.py [--rows 2000]
    .venv/bin/python -m bench.check_duckdb_reference

Exit 0 when everything matches. Needs duckdb (the `bench` extra).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

# Run as a script, bench/ is sys.path[0], where bench/queue.py would shadow the standard
# library's queue (pyarrow imports it): put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import pyarrow.parquet as pq  # noqa: E402

from bench.dataset import export_csv  # noqa: E402
from bench.duckdb_reference import DERIVED, duckdb_enrich  # noqa: E402
from tutormax_cli.generate import generate  # noqa: E402
from tutormax_cli.schema import CATEGORY_RATINGS  # noqa: E402

_TRUE = {"true", "1", "yes", "t"}
_FALSE = {"false", "0", "no", "f"}


def ts(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def to_bool(value: Any) -> bool | None:
    if value is None or value == "" or isinstance(value, bool):
        return value if value != "" else None
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def to_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return value
    if value.strip().startswith("["):
        return list(json.loads(value))
    return re.split(r"[;|]", value)


def round2(value: Fraction) -> float:
    return float(round(value, 2))  # Fraction rounds half-even, exactly


def expected(
    kind: str, row: dict[str, Any], as_of: datetime, tz: ZoneInfo, starts: dict[str, datetime]
) -> dict[str, Any]:
    if kind == "tutors":
        onboarding = ts(row["onboarding_date"])
        assert onboarding is not None
        tenure = max(0, (as_of - onboarding) // timedelta(days=1))
        updated = ts(row["updated_at"])
        items = {s.strip().casefold() for s in to_list(row["subjects"]) if s.strip()}
        return {
            "tenure_days": tenure,
            "is_new_tutor": tenure < 30,
            "experience_level": "junior" if tenure < 90 else "mid" if tenure < 365 else "senior",
            "subject_count": len(items),
            "is_active_today": updated is not None
            and updated.astimezone(tz).date() == as_of.astimezone(tz).date(),
        }
    if kind == "sessions":
        start = ts(row["scheduled_start"])
        assert start is not None
        local = start.astimezone(tz)
        actual_start, actual_end = ts(row["actual_start"]), ts(row["actual_end"])
        late_given = to_int(row["late_start_minutes"])
        if late_given is not None:
            late = Fraction(late_given)
        elif actual_start is not None:
            late = Fraction((actual_start - start) // timedelta(microseconds=1), 60_000_000)
        else:
            late = Fraction(0)
        if to_bool(row["no_show"]):
            duration: int | None = 0
        elif actual_start is None:
            duration = None
        else:
            end = actual_end or start + timedelta(minutes=to_int(row["duration_minutes"]) or 0)
            duration = max(0, (end - actual_start) // timedelta(minutes=1))
        h = local.hour
        return {
            "is_weekend": local.weekday() >= 5,
            "time_of_day": "morning"
            if 5 <= h < 12
            else "afternoon"
            if 12 <= h < 17
            else "evening"
            if 17 <= h < 22
            else "night",
            "is_late_start": late > 5,
            "actual_duration_minutes": duration,
            "week_of_year": local.isocalendar().week,
            "month_of_year": local.month,
        }
    overall = to_int(row["overall_rating"])
    assert overall is not None
    cats = [c for c in (to_int(row[name]) for name in CATEGORY_RATINGS) if c is not None]
    mean = Fraction(sum(cats), len(cats)) if cats else None
    start = ts(row.get("session_scheduled_start")) or starts.get(row["session_id"])
    submitted = ts(row["submitted_at"])
    assert submitted is not None
    text = row["free_text_feedback"]
    return {
        "is_positive": overall >= 4,
        "is_poor": overall < 3,
        "avg_category_rating": round2(mean) if mean is not None else None,
        "category_variance": round2(
            sum(((c - mean) * (c - mean) for c in cats), Fraction(0)) / len(cats)
        )
        if mean is not None
        else None,
        "has_text_feedback": bool(text and text.strip()),
        "feedback_delay_hours": None
        if start is None
        else round2(Fraction((submitted - start) // timedelta(microseconds=1), 3_600_000_000)),
    }


def read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [{k: (v if v != "" else None) for k, v in r.items()} for r in csv.DictReader(f)]
    return pq.read_table(path).to_pylist()


def check(data: Path, out: Path, as_of_text: str, tz_name: str) -> int:
    as_of = ts(as_of_text)
    assert as_of is not None
    tz = ZoneInfo(tz_name)
    ext = next(data.glob("tutors.*")).suffix
    sessions_path = data / f"sessions{ext}"
    starts = {r["session_id"]: ts(r["scheduled_start"]) for r in read_rows(sessions_path)}
    failures = 0
    for kind in DERIVED:
        src = data / f"{kind}{ext}"
        dst = out / f"{kind}-{ext[1:]}-{tz_name.replace('/', '_')}.parquet"
        seconds = duckdb_enrich(
            kind,
            src,
            dst,
            as_of=as_of_text,
            timezone=tz_name,
            sessions_src=sessions_path if kind == "feedback" else None,
        )
        inputs, outputs = read_rows(src), pq.read_table(dst).to_pylist()
        key = {"tutors": "tutor_id", "sessions": "session_id", "feedback": "feedback_id"}[kind]
        assert [r[key] for r in inputs] == [r[key] for r in outputs], f"{kind}: row order"
        bad = 0
        for row_in, row_out in zip(inputs, outputs, strict=True):
            want = expected(kind, row_in, as_of, tz, starts)  # type: ignore[arg-type]
            got = {name: row_out[name] for name in DERIVED[kind]}
            if got != want:
                bad += 1
                if bad <= 5:
                    print(f"  MISMATCH {kind} {row_in[key]}: got {got} want {want}")
        print(
            f"{kind:9} {ext:9} {tz_name:17} rows={len(inputs):6} mismatches={bad} ({seconds:.2f}s)"
        )
        failures += bad
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000, help="sessions and feedback rows")
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        native = generate(
            root / "parquet",
            tutors=max(1, args.rows // 20),
            sessions=args.rows,
            feedback=args.rows,
            seed=7,
            fmt="parquet",
            batch_rows=max(1, args.rows // 3),
        )
        (root / "csv").mkdir()
        for kind, path in native.items():
            export_csv(path, root / "csv" / f"{kind}.csv")
        for fmt in ("csv", "parquet"):
            data = root / fmt
            for tz_name in ("UTC", "America/New_York", "Asia/Kolkata"):
                failures += check(data, root, "2025-06-30T12:00:00Z", tz_name)
        # The CSV is the Parquet's values as text, so once typed
        # by the reference, both outputs must be equal, input columns included.
        for kind in DERIVED:
            for tz_name in ("UTC", "America/New_York", "Asia/Kolkata"):
                name = tz_name.replace("/", "_")
                from_csv = pq.read_table(root / f"{kind}-csv-{name}.parquet")
                from_parquet = pq.read_table(root / f"{kind}-parquet-{name}.parquet")
                same = from_csv.to_pylist() == from_parquet.to_pylist()
                print(f"{kind:9} csv == parquet output ({tz_name}): {same}")
                failures += 0 if same else 1
    print("OK" if failures == 0 else f"FAILED: {failures} mismatching rows")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
