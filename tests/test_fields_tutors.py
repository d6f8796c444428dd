"""SPEC §3 tutor fields: boundary tables."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fieldcases import AS_OF, derive_one, derive_rows, table, ts

from tutormax_cli.fields import Context, derive

US = timedelta(microseconds=1)
DAY = timedelta(days=1)


def tutor(**values: object) -> dict[str, object]:
    row: dict[str, object] = {"onboarding_date": AS_OF - 100 * DAY, "subjects": ["Math"]}
    row.update(values)
    return row


# (onboarded this long before as-of) -> tenure_days, is_new_tutor, experience_level
TENURE_CASES = [
    pytest.param(0 * DAY, 0, True, "junior", id="onboarded-at-as-of"),
    pytest.param(DAY - US, 0, True, "junior", id="1us-before-1-day"),
    pytest.param(29 * DAY, 29, True, "junior", id="29-days"),
    pytest.param(30 * DAY - US, 29, True, "junior", id="1us-before-30-days"),
    pytest.param(30 * DAY, 30, False, "junior", id="30-days-not-new"),
    pytest.param(89 * DAY, 89, False, "junior", id="89-days"),
    pytest.param(90 * DAY - US, 89, False, "junior", id="1us-before-90-days"),
    pytest.param(90 * DAY, 90, False, "mid", id="90-days-mid"),
    pytest.param(364 * DAY, 364, False, "mid", id="364-days"),
    pytest.param(365 * DAY - US, 364, False, "mid", id="1us-before-365-days"),
    pytest.param(365 * DAY, 365, False, "senior", id="365-days-senior"),
    pytest.param(3650 * DAY + 5 * US, 3650, False, "senior", id="ten-years"),
    pytest.param(-US, 0, True, "junior", id="future-by-1us-clamped"),
    pytest.param(-400 * DAY, 0, True, "junior", id="future-by-400-days-clamped"),
]


@pytest.mark.parametrize(("ago", "days", "new", "level"), TENURE_CASES)
def test_tenure_new_and_level(ago: timedelta, days: int, new: bool, level: str) -> None:
    out = derive_one("tutors", tutor(onboarding_date=AS_OF - ago))
    assert (out["tenure_days"], out["is_new_tutor"], out["experience_level"]) == (
        days,
        new,
        level,
    )


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata", "America/New_York", "Pacific/Chatham"])
def test_tenure_is_elapsed_time_not_calendar_dates(tz: str) -> None:
    # 23 h 59 min apart, on different calendar dates in every one of these zones.
    out = derive_one(
        "tutors",
        tutor(onboarding_date=ts("2024-11-06T17:01:00Z")),
        as_of=ts("2024-11-07T17:00:00Z"),
        tz=tz,
    )
    assert out["tenure_days"] == 0


def test_tenure_across_dst_counts_24h_days() -> None:
    # 2024-03-10 has 23 local hours in New York; tenure counts 24 h periods regardless.
    out = derive_one(
        "tutors",
        tutor(onboarding_date=ts("2024-03-09T12:00:00Z")),
        as_of=ts("2024-03-10T11:59:59Z"),
        tz="America/New_York",
    )
    assert out["tenure_days"] == 0


SUBJECT_CASES = [
    pytest.param(["Math", "SAT Prep"], 2, id="two-distinct"),
    pytest.param(["Math", " math ", "MATH", "mAtH"], 1, id="case-and-trim"),
    pytest.param(["Math", "Maths"], 2, id="near-but-different"),
    pytest.param(["ß", "SS", "ss", "Ss"], 1, id="sharp-s-casefolds-to-ss"),
    pytest.param(["Straße", "STRASSE", "strasse"], 1, id="strasse"),
    pytest.param(["Σ", "σ", "ς"], 1, id="final-sigma"),
    pytest.param(["ﬁ", "FI"], 1, id="fi-ligature"),
    pytest.param(["İstanbul", "istanbul"], 2, id="dotted-capital-I-is-not-i-under-casefold"),
    pytest.param(["\u00a0Math\u2003", "Math\n"], 1, id="unicode-whitespace-trimmed"),
    pytest.param(["", "  ", "\t\n", "\u3000"], 0, id="only-blanks"),
    pytest.param(["Math", "", " "], 1, id="blanks-ignored"),
    pytest.param(["Math", None], 1, id="null-item-ignored"),
    pytest.param([], 0, id="empty-list"),
    pytest.param(None, 0, id="null-list"),
]


@pytest.mark.parametrize(("subjects", "count"), SUBJECT_CASES)
def test_subject_count(subjects: list[str | None] | None, count: int) -> None:
    assert derive_one("tutors", tutor(subjects=subjects))["subject_count"] == count


def test_subject_count_stays_aligned_with_rows() -> None:
    lists = [["a", "b"], [], ["c"], None, ["a", "A", " b"], [" "], ["x", "y", "z", "X"]]
    out = derive_rows("tutors", [tutor(subjects=s) for s in lists])
    assert [r["subject_count"] for r in out] == [2, 0, 1, 0, 2, 0, 3]


def test_subject_count_on_a_sliced_table() -> None:
    t = table("tutors", [tutor(subjects=s) for s in [["a"], ["b", "c"], [], ["d", "D", "e"]]])
    out = derive("tutors", t.slice(1), Context(as_of=AS_OF))
    assert out["subject_count"].to_pylist() == [2, 0, 2]


NY = "America/New_York"
# as-of 2024-11-07T17:00Z is 12:00 EST (UTC-5) and 22:30 IST (UTC+5:30).
ACTIVE_CASES = [
    pytest.param(NY, "2024-11-07T05:00:00Z", True, id="ny-local-midnight-start"),
    pytest.param(NY, "2024-11-07T04:59:59.999999Z", False, id="ny-1us-before-local-midnight"),
    pytest.param(NY, "2024-11-08T04:59:59.999999Z", True, id="ny-last-us-of-local-day"),
    pytest.param(NY, "2024-11-08T05:00:00Z", False, id="ny-next-local-day"),
    pytest.param(NY, "2024-11-07T02:00:00Z", False, id="ny-same-utc-date-but-previous-local"),
    pytest.param("UTC", "2024-11-07T02:00:00Z", True, id="utc-same-date"),
    pytest.param("UTC", "2024-11-07T00:00:00Z", True, id="utc-midnight"),
    pytest.param("UTC", "2024-11-06T23:59:59.999999Z", False, id="utc-1us-before-midnight"),
    pytest.param("Asia/Kolkata", "2024-11-07T18:29:59.999999Z", True, id="ist-last-us-of-day"),
    pytest.param("Asia/Kolkata", "2024-11-07T18:30:00Z", False, id="ist-next-day"),
    pytest.param("Asia/Kolkata", "2024-11-06T18:30:00Z", True, id="ist-midnight"),
    pytest.param(NY, "2025-11-07T17:00:00Z", False, id="same-date-next-year"),
    pytest.param(NY, None, False, id="null-updated-at"),
]


@pytest.mark.parametrize(("tz", "updated", "active"), ACTIVE_CASES)
def test_is_active_today(tz: str, updated: str | None, active: bool) -> None:
    row = tutor(updated_at=ts(updated) if updated else None)
    assert derive_one("tutors", row, tz=tz)["is_active_today"] is active


def test_is_active_today_uses_local_date_of_as_of() -> None:
    # as-of 04:30Z on Nov 8 is 23:30 on Nov 7 in New York.
    row = tutor(updated_at=ts("2024-11-07T05:00:00Z"))
    as_of = ts("2024-11-08T04:30:00Z")
    assert derive_one("tutors", row, as_of=as_of, tz=NY)["is_active_today"] is True
    assert derive_one("tutors", row, as_of=as_of, tz="UTC")["is_active_today"] is False


def test_as_of_given_in_another_offset_is_the_same_instant() -> None:
    row = tutor(onboarding_date=ts("2024-10-08T17:00:00Z"), updated_at=ts("2024-11-07T16:00Z"))
    out = derive_one("tutors", row, as_of=ts("2024-11-07T22:30:00+05:30"))
    assert (out["tenure_days"], out["is_active_today"]) == (30, True)


def test_empty_table() -> None:
    assert derive_rows("tutors", []) == []
