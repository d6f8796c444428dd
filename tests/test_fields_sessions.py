"""SPEC §3 session fields: boundary tables."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
from fieldcases import derive_one, derive_rows, table, ts

from tutormax_cli.fields._arrow import local

NY = "America/New_York"
START = "2024-11-07T14:00:00Z"  # a Thursday


def session(**values: object) -> dict[str, object]:
    row: dict[str, object] = {"scheduled_start": ts(START), "duration_minutes": 60}
    row.update(values)
    return row


def calendar(start: str, tz: str) -> tuple[object, ...]:
    out = derive_one("sessions", session(scheduled_start=ts(start)), tz=tz)
    return (out["is_weekend"], out["time_of_day"], out["week_of_year"], out["month_of_year"])


HOUR_CASES = [
    pytest.param("00:00:00", "night", id="h00"),
    pytest.param("04:59:59.999999", "night", id="h04-last-us"),
    pytest.param("05:00:00", "morning", id="h05"),
    pytest.param("11:59:59", "morning", id="h11"),
    pytest.param("12:00:00", "afternoon", id="h12"),
    pytest.param("16:59:59", "afternoon", id="h16"),
    pytest.param("17:00:00", "evening", id="h17"),
    pytest.param("21:59:59", "evening", id="h21"),
    pytest.param("22:00:00", "night", id="h22"),
    pytest.param("23:59:59", "night", id="h23"),
]


@pytest.mark.parametrize(("clock", "bucket"), HOUR_CASES)
def test_time_of_day_boundaries(clock: str, bucket: str) -> None:
    out = derive_one("sessions", session(scheduled_start=ts(f"2024-11-07T{clock}Z")))
    assert out["time_of_day"] == bucket


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kolkata", "Asia/Kathmandu"])
@pytest.mark.parametrize(("clock", "bucket"), HOUR_CASES)
def test_time_of_day_reads_local_hour(tz: str, clock: str, bucket: str) -> None:
    offsets = {NY: "-05:00", "Asia/Kolkata": "+05:30", "Asia/Kathmandu": "+05:45"}
    local = ts(f"2024-11-07T{clock}{offsets[tz]}")
    assert calendar(local.isoformat(), tz)[1] == bucket


# (UTC instant, zone) -> is_weekend, time_of_day, week_of_year, month_of_year
CALENDAR_CASES = [
    pytest.param("2024-11-09T02:00:00Z", "UTC", (True, "night", 45, 11), id="utc-saturday"),
    pytest.param(
        "2024-11-09T02:00:00Z", NY, (False, "evening", 45, 11), id="ny-saturday-utc-is-friday"
    ),
    pytest.param("2024-11-11T03:00:00Z", NY, (True, "night", 45, 11), id="ny-monday-utc-is-sun"),
    pytest.param("2024-11-10T23:00:00Z", NY, (True, "evening", 45, 11), id="ny-sunday"),
    pytest.param("2024-11-11T05:00:00Z", NY, (False, "night", 46, 11), id="ny-monday-midnight"),
    pytest.param("2024-12-01T03:00:00Z", NY, (True, "night", 48, 11), id="ny-month-end"),
    pytest.param("2024-11-30T20:00:00Z", "Asia/Kolkata", (True, "night", 48, 12), id="ist-dec"),
    pytest.param("2020-12-31T12:00:00Z", "UTC", (False, "afternoon", 53, 12), id="week-53"),
    pytest.param("2021-01-03T12:00:00Z", "UTC", (True, "afternoon", 53, 1), id="jan-3-in-w53"),
    pytest.param("2021-01-04T12:00:00Z", "UTC", (False, "afternoon", 1, 1), id="w1-of-2021"),
    pytest.param("2024-12-30T12:00:00Z", "UTC", (False, "afternoon", 1, 12), id="dec-30-in-w1"),
    pytest.param("2024-12-30T03:00:00Z", NY, (True, "night", 52, 12), id="ny-dec-29-still-w52"),
    pytest.param("2025-01-01T02:00:00Z", NY, (False, "evening", 1, 12), id="ny-new-year-eve"),
    pytest.param("2026-01-01T02:00:00Z", NY, (False, "evening", 1, 12), id="ny-2025-12-31-w1"),
    pytest.param("2021-01-04T03:00:00Z", NY, (True, "night", 53, 1), id="ny-utc-w1-local-w53"),
]


@pytest.mark.parametrize(("start", "tz", "expected"), CALENDAR_CASES)
def test_calendar_fields(start: str, tz: str, expected: tuple[object, ...]) -> None:
    assert calendar(start, tz) == expected


# New York DST: 2024-03-10 02:00 EST jumps to 03:00 EDT; 2024-11-03 02:00 EDT falls back to
# 01:00 EST. (UTC instant) -> local hour bucket, weekday-derived is_weekend (both Sundays).
DST_CASES = [
    pytest.param("2024-03-10T05:59:59Z", "night", id="spring-00:59-est"),
    pytest.param("2024-03-10T06:59:59Z", "night", id="spring-01:59-est"),
    pytest.param("2024-03-10T07:00:00Z", "night", id="spring-03:00-edt"),
    pytest.param("2024-03-10T08:59:59Z", "night", id="spring-04:59-edt"),
    pytest.param("2024-03-10T09:00:00Z", "morning", id="spring-05:00-edt-not-04-est"),
    pytest.param("2024-11-03T05:30:00Z", "night", id="fall-01:30-edt"),
    pytest.param("2024-11-03T06:30:00Z", "night", id="fall-01:30-est-repeat"),
    pytest.param("2024-11-03T07:00:00Z", "night", id="fall-02:00-est"),
    pytest.param("2024-11-03T09:30:00Z", "night", id="fall-04:30-est-not-05-edt"),
    pytest.param("2024-11-03T10:00:00Z", "morning", id="fall-05:00-est"),
    pytest.param("2024-11-03T16:59:59Z", "morning", id="fall-11:59-est"),
    pytest.param("2024-11-03T17:00:00Z", "afternoon", id="fall-12:00-est"),
]


@pytest.mark.parametrize(("start", "bucket"), DST_CASES)
def test_dst_transitions_in_new_york(start: str, bucket: str) -> None:
    month = int(start[5:7])
    iso_week = {3: 10, 11: 44}[month]  # both transition days are Sundays
    assert calendar(start, NY) == (True, bucket, iso_week, month)


def test_dst_hours_exactly() -> None:
    starts = [
        "2024-03-10T06:59:59Z",
        "2024-03-10T07:00:00Z",
        "2024-11-03T05:30:00Z",
        "2024-11-03T06:30:00Z",
        "2024-11-03T07:00:00Z",
    ]
    t = table("sessions", [session(scheduled_start=ts(s)) for s in starts])
    assert pc.hour(local(t["scheduled_start"], NY)).to_pylist() == [1, 3, 1, 1, 2]


LATE_CASES = [
    pytest.param(None, None, False, id="nothing-known-is-0"),
    pytest.param(None, "14:00:00", False, id="on-time"),
    pytest.param(None, "13:50:00", False, id="early"),
    pytest.param(None, "14:05:00", False, id="exactly-5-min"),
    pytest.param(None, "14:05:00.000001", True, id="5-min-1us"),
    pytest.param(None, "14:05:01", True, id="5-min-1s"),
    pytest.param(None, "14:05:30", True, id="5-min-30s"),
    pytest.param(None, "14:06:00", True, id="6-min"),
    pytest.param(5, None, False, id="given-5"),
    pytest.param(6, None, True, id="given-6"),
    pytest.param(0, "14:20:00", False, id="given-0-overrides-actual-20-min"),
    pytest.param(5, "14:05:30", False, id="given-5-overrides-actual-5m30s"),
    pytest.param(10, "14:00:00", True, id="given-10-overrides-on-time-actual"),
    pytest.param(2**62, None, True, id="given-huge-no-overflow"),
]


@pytest.mark.parametrize(("given", "actual", "late"), LATE_CASES)
def test_is_late_start(given: int | None, actual: str | None, late: bool) -> None:
    row = session(
        late_start_minutes=given, actual_start=ts(f"2024-11-07T{actual}Z") if actual else None
    )
    assert derive_one("sessions", row)["is_late_start"] is late


# (actual_start, actual_end, duration_minutes, no_show) -> actual_duration_minutes
DURATION_CASES = [
    pytest.param("14:00:00", "14:45:00", 60, None, 45, id="start-and-end"),
    pytest.param("14:00:00", "14:45:59.999999", 60, None, 45, id="floor-of-end"),
    pytest.param("14:00:30", "14:45:00", 60, None, 44, id="floor-44.5"),
    pytest.param("14:10:00", None, 60, None, 50, id="no-end-uses-schedule"),
    pytest.param("14:10:30", None, 60, None, 49, id="no-end-floor-49.5"),
    pytest.param("13:50:00", None, 60, None, 70, id="early-start-no-end"),
    pytest.param("14:00:00", "15:00:00", 30, None, 60, id="end-wins-over-duration"),
    pytest.param("14:00:00", "13:59:00", 60, None, 0, id="end-before-start-is-0"),
    pytest.param("15:30:00", None, 60, None, 0, id="start-after-planned-end-is-0"),
    pytest.param("14:00:00", "14:00:59", 60, None, 0, id="under-a-minute"),
    pytest.param("14:00:00", None, 0, None, 0, id="zero-duration"),
    pytest.param(None, None, 60, None, None, id="no-actual-start-null"),
    pytest.param(None, "14:45:00", 60, None, None, id="end-without-start-null"),
    pytest.param(None, None, 60, False, None, id="not-no-show-no-start-null"),
    pytest.param(None, None, 60, True, 0, id="no-show-no-start-0"),
    pytest.param("14:00:00", "14:45:00", 60, True, 0, id="no-show-wins"),
    pytest.param("14:00:00", "14:45:00", 60, False, 45, id="no-show-false"),
]


@pytest.mark.parametrize(("start", "end", "planned", "no_show", "minutes"), DURATION_CASES)
def test_actual_duration_minutes(
    start: str | None, end: str | None, planned: int, no_show: bool | None, minutes: int | None
) -> None:
    row = session(
        actual_start=ts(f"2024-11-07T{start}Z") if start else None,
        actual_end=ts(f"2024-11-07T{end}Z") if end else None,
        duration_minutes=planned,
        no_show=no_show,
    )
    assert derive_one("sessions", row)["actual_duration_minutes"] == minutes


def test_all_optional_null() -> None:
    out = derive_one("sessions", session())
    assert out == {
        "is_weekend": False,
        "time_of_day": "afternoon",
        "is_late_start": False,
        "actual_duration_minutes": None,
        "week_of_year": 45,
        "month_of_year": 11,
    }


def test_rows_stay_aligned() -> None:
    rows = [
        session(actual_start=ts("2024-11-07T14:06:00Z")),
        session(no_show=True),
        session(scheduled_start=ts("2024-11-09T09:00:00Z"), late_start_minutes=1),
    ]
    out = derive_rows("sessions", rows)
    assert [r["is_late_start"] for r in out] == [True, False, False]
    assert [r["actual_duration_minutes"] for r in out] == [54, 0, None]
    assert [r["is_weekend"] for r in out] == [False, False, True]
