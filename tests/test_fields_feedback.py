"""SPEC §3 feedback fields: boundary tables and exact rounding."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from fieldcases import derive_one, derive_rows, table, ts

from tutormax_cli.fields import Context, derive
from tutormax_cli.schema import CATEGORY_RATINGS

SUBMITTED = ts("2024-11-07T15:00:00Z")


def feedback(**values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "feedback_id": "f1",
        "session_id": "s1",
        "overall_rating": 4,
        "submitted_at": SUBMITTED,
    }
    row.update(values)
    return row


@pytest.mark.parametrize(
    ("rating", "positive", "poor"),
    [
        pytest.param(1, False, True, id="1"),
        pytest.param(2, False, True, id="2-poor"),
        pytest.param(3, False, False, id="3-neither"),
        pytest.param(4, True, False, id="4-positive"),
        pytest.param(5, True, False, id="5"),
    ],
)
def test_positive_and_poor(rating: int, positive: bool, poor: bool) -> None:
    out = derive_one("feedback", feedback(overall_rating=rating))
    assert (out["is_positive"], out["is_poor"]) == (positive, poor)


# category ratings (in CATEGORY_RATINGS order, None = missing) -> mean, population variance
RATING_CASES = [
    pytest.param([None] * 5, None, None, id="none"),
    pytest.param([5, None, None, None, None], 5.0, 0.0, id="one"),
    pytest.param([None, None, None, None, 3], 3.0, 0.0, id="only-last"),
    pytest.param([1, 2, None, None, None], 1.5, 0.25, id="1-2"),
    pytest.param([1, 2, 2, None, None], 1.67, 0.22, id="1-2-2"),
    pytest.param([1, 1, 2, None, None], 1.33, 0.22, id="1-1-2"),
    pytest.param([1, 1, 1, 2, None], 1.25, 0.19, id="var-0.1875"),
    pytest.param([1, 5, None, None, None], 3.0, 4.0, id="1-5"),
    pytest.param([1, 2, 3, 4, 5], 3.0, 2.0, id="1-to-5"),
    pytest.param([1, 1, 2, 2, 2], 1.6, 0.24, id="var-6/25"),
    pytest.param([5, 5, 5, 5, 4], 4.8, 0.16, id="4.8"),
    pytest.param([None, 4, None, 5, 5], 4.67, 0.22, id="gaps"),
    pytest.param([2, 3, 3, None, None], 2.67, 0.22, id="2.666"),
    pytest.param([1, 5, 5, None, None], 3.67, 3.56, id="var-32/9"),
]


@pytest.mark.parametrize(("ratings", "mean", "variance"), RATING_CASES)
def test_category_mean_and_variance(
    ratings: list[int | None], mean: float | None, variance: float | None
) -> None:
    out = derive_one("feedback", feedback(**dict(zip(CATEGORY_RATINGS, ratings, strict=True))))
    assert (out["avg_category_rating"], out["category_variance"]) == (mean, variance)


TEXT_CASES = [
    pytest.param(None, False, id="null"),
    pytest.param("", False, id="empty"),
    pytest.param("   ", False, id="spaces"),
    pytest.param("\t\n\r ", False, id="ascii-whitespace"),
    pytest.param("\u00a0\u2003\u3000", False, id="unicode-whitespace"),
    pytest.param("ok", True, id="text"),
    pytest.param("  .  ", True, id="punctuation"),
    pytest.param("\u200b", True, id="zero-width-space-is-not-whitespace"),
]


@pytest.mark.parametrize(("text", "has"), TEXT_CASES)
def test_has_text_feedback(text: str | None, has: bool) -> None:
    assert derive_one("feedback", feedback(free_text_feedback=text))["has_text_feedback"] is has


# submitted − session start -> hours, half-even on the exact value
DELAY_CASES = [
    pytest.param(timedelta(0), 0.0, id="zero"),
    pytest.param(timedelta(hours=1), 1.0, id="1h"),
    pytest.param(timedelta(hours=36, minutes=30), 36.5, id="36.5h"),
    pytest.param(timedelta(seconds=90), 0.02, id="90s-0.025-to-even-0.02"),
    pytest.param(timedelta(seconds=54), 0.02, id="54s-0.015-to-even-0.02"),
    pytest.param(timedelta(seconds=18), 0.0, id="18s-0.005-to-even-0.00"),
    pytest.param(timedelta(seconds=126), 0.04, id="126s-0.035-to-even-0.04"),
    pytest.param(timedelta(seconds=162), 0.04, id="162s-0.045-to-even-0.04"),
    pytest.param(timedelta(seconds=90, microseconds=-1), 0.02, id="just-below-0.025"),
    pytest.param(timedelta(seconds=90, microseconds=1), 0.03, id="just-above-0.025"),
    pytest.param(timedelta(seconds=17, microseconds=999_999), 0.0, id="just-below-0.005"),
    pytest.param(timedelta(seconds=18, microseconds=1), 0.01, id="just-above-0.005"),
    pytest.param(timedelta(hours=2, seconds=90), 2.02, id="2.025"),
    pytest.param(timedelta(days=400, seconds=54), 9600.02, id="large-9600.015"),
    pytest.param(timedelta(seconds=-90), -0.02, id="neg-90s"),
    pytest.param(timedelta(seconds=-54), -0.02, id="neg-54s"),
    pytest.param(timedelta(seconds=-18), 0.0, id="neg-18s-to-zero"),
    pytest.param(timedelta(seconds=-126), -0.04, id="neg-126s"),
    pytest.param(timedelta(seconds=-90, microseconds=-1), -0.03, id="neg-just-beyond-half"),
    pytest.param(timedelta(seconds=-89), -0.02, id="neg-89s"),
    pytest.param(timedelta(seconds=-30), -0.01, id="neg-30s"),
    pytest.param(timedelta(hours=-3), -3.0, id="neg-3h"),
]


@pytest.mark.parametrize(("delay", "hours"), DELAY_CASES)
def test_feedback_delay_hours_exact_rounding(delay: timedelta, hours: float) -> None:
    row = feedback(session_scheduled_start=SUBMITTED - delay)
    assert derive_one("feedback", row)["feedback_delay_hours"] == hours


def lookup(
    known: Mapping[str, datetime | None], calls: list[list[str]]
) -> Callable[[pa.Array], pa.Array]:
    """A session-start lookup over `known` that records the ids it is asked about."""

    def session_start(ids: pa.Array) -> pa.Array:
        calls.append(ids.to_pylist())
        return pa.array([known.get(i) for i in ids.to_pylist()], pa.timestamp("us", tz="UTC"))

    return session_start


def test_session_start_comes_from_record_then_lookup_then_null() -> None:
    starts = {"s1": SUBMITTED - timedelta(hours=1), "s2": SUBMITTED - timedelta(hours=2)}
    calls: list[list[str]] = []
    rows = [
        feedback(session_id="s1", session_scheduled_start=SUBMITTED - timedelta(hours=5)),
        feedback(session_id="s1"),
        feedback(session_id="unknown"),
        feedback(session_id="s2"),
    ]
    out = derive_rows("feedback", rows, session_start=lookup(starts, calls))
    assert [r["feedback_delay_hours"] for r in out] == [5.0, 1.0, None, 2.0]
    assert calls == [["s1", "unknown", "s2"]]  # only the rows the record does not settle


def test_lookup_not_called_when_every_record_has_its_start() -> None:
    calls: list[list[str]] = []
    row = feedback(session_scheduled_start=SUBMITTED)
    out = derive_rows("feedback", [row], session_start=lookup({}, calls))
    assert out[0]["feedback_delay_hours"] == 0.0
    assert calls == []


def test_no_lookup_and_no_record_start_is_null() -> None:
    assert derive_one("feedback", feedback())["feedback_delay_hours"] is None


def test_lookup_may_answer_in_another_unit_or_zone() -> None:
    def session_start(ids: pa.Array) -> pa.Array:
        return pa.array(
            [SUBMITTED - timedelta(seconds=90)] * len(ids), pa.timestamp("ms", "+05:30")
        )

    out = derive_one("feedback", feedback(), session_start=session_start)
    assert out["feedback_delay_hours"] == 0.02


def test_all_optional_null() -> None:
    out = derive_one("feedback", feedback(overall_rating=3))
    assert out == {
        "is_positive": False,
        "is_poor": False,
        "avg_category_rating": None,
        "category_variance": None,
        "has_text_feedback": False,
        "feedback_delay_hours": None,
    }


def test_output_types() -> None:
    out = derive("feedback", table("feedback", [feedback()]), Context(as_of=SUBMITTED))
    assert out.schema.types == [
        pa.bool_(),
        pa.bool_(),
        pa.float64(),
        pa.float64(),
        pa.bool_(),
        pa.float64(),
    ]
