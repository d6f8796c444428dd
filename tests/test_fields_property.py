"""Property tests: the vectorized fields agree with a plain per-record oracle.

The oracle below is written from SPEC §3 with the standard library only (datetime,
zoneinfo, fractions, str.casefold); it imports nothing from tutormax_cli. The package is
used only to build the input table and to run `derive`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from fieldcases import table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutormax_cli.fields import REGISTRY, Context, derive

# ---------------------------------------------------------------- the oracle (stdlib only)

US = timedelta(microseconds=1)
RATING_NAMES = (
    "subject_knowledge_rating",
    "communication_rating",
    "patience_rating",
    "engagement_rating",
    "helpfulness_rating",
)


def _hundredths(x: Fraction) -> float:
    return float(round(x, 2))  # Fraction.__round__ is exact round-half-even


def oracle_tutor(r: dict[str, Any], as_of: datetime, tz: str) -> dict[str, Any]:
    zone = ZoneInfo(tz)
    days = max(0, (as_of - r["onboarding_date"]) // timedelta(days=1))
    subjects = {s.strip().casefold() for s in r["subjects"] or [] if s is not None and s.strip()}
    updated = r["updated_at"]
    return {
        "tenure_days": days,
        "is_new_tutor": days < 30,
        "experience_level": "junior" if days < 90 else "mid" if days < 365 else "senior",
        "subject_count": len(subjects),
        "is_active_today": updated is not None
        and updated.astimezone(zone).date() == as_of.astimezone(zone).date(),
    }


def oracle_session(r: dict[str, Any], tz: str) -> dict[str, Any]:
    local = r["scheduled_start"].astimezone(ZoneInfo(tz))
    h = local.hour
    if 5 <= h < 12:
        bucket = "morning"
    elif 12 <= h < 17:
        bucket = "afternoon"
    elif 17 <= h < 22:
        bucket = "evening"
    else:
        bucket = "night"
    start, end = r["actual_start"], r["actual_end"]
    if r["late_start_minutes"] is not None:
        late = Fraction(r["late_start_minutes"])
    elif start is not None:
        late = Fraction((start - r["scheduled_start"]) // US, 60_000_000)
    else:
        late = Fraction(0)
    if r["no_show"] is True:
        duration: int | None = 0
    elif start is None:
        duration = None
    else:
        if end is None:
            end = r["scheduled_start"] + timedelta(minutes=r["duration_minutes"])
        duration = max(0, (end - start) // timedelta(minutes=1))
    return {
        "is_weekend": local.weekday() in (5, 6),
        "time_of_day": bucket,
        "is_late_start": late > 5,
        "actual_duration_minutes": duration,
        "week_of_year": local.isocalendar().week,
        "month_of_year": local.month,
    }


def oracle_feedback(r: dict[str, Any], known: dict[str, datetime | None] | None) -> dict[str, Any]:
    ratings = [r[n] for n in RATING_NAMES if r[n] is not None]
    mean = var = None
    if ratings:
        m = Fraction(sum(ratings), len(ratings))
        mean = _hundredths(m)
        var = _hundredths(sum((x - m) ** 2 for x in ratings) / len(ratings))
    start = r["session_scheduled_start"]
    if start is None and known is not None:
        start = known.get(r["session_id"])
    delay = None
    if start is not None:
        delay = _hundredths(Fraction((r["submitted_at"] - start) // US, 3_600_000_000))
    text = r["free_text_feedback"]
    return {
        "is_positive": r["overall_rating"] >= 4,
        "is_poor": r["overall_rating"] < 3,
        "avg_category_rating": mean,
        "category_variance": var,
        "has_text_feedback": text is not None and text.strip() != "",
        "feedback_delay_hours": delay,
    }


# ---------------------------------------------------------------- generators

ZONES = [
    "UTC",
    "America/New_York",
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Europe/Dublin",
]
LOW = datetime(1950, 1, 1, tzinfo=UTC)
HIGH = datetime(2045, 12, 31, tzinfo=UTC)


@cache
def transitions() -> tuple[datetime, ...]:
    """UTC instants where a zone's offset changes (found by stepping and bisecting)."""
    found: list[datetime] = []
    for name in ZONES:
        zone = ZoneInfo(name)
        t = datetime(2019, 1, 1, tzinfo=UTC)
        while t < datetime(2026, 1, 1, tzinfo=UTC):
            nxt = t + timedelta(hours=6)
            if t.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
                lo, hi = t, nxt
                while hi - lo > timedelta(seconds=1):
                    mid = lo + (hi - lo) / 2
                    same = mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset()
                    lo, hi = (mid, hi) if same else (lo, mid)
                found.append(hi)
            t = nxt
    return tuple(found)


def _near(anchor: datetime, span: timedelta) -> st.SearchStrategy[datetime]:
    n = span // US
    return st.integers(-n, n).map(lambda d: anchor + d * US)


instants = st.one_of(
    st.integers(0, (HIGH - LOW) // US).map(lambda d: LOW + d * US),
    st.sampled_from(transitions()).flatmap(lambda t: _near(t, timedelta(hours=3))),
    # whole minutes and seconds, to hit the hour and midnight boundaries exactly
    st.integers(0, (HIGH - LOW) // timedelta(minutes=30)).map(
        lambda n: LOW + n * timedelta(minutes=30)
    ),
)
zones = st.sampled_from(ZONES)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def whole_days_before(base: datetime) -> st.SearchStrategy[datetime]:
    """base − n days, exactly or 1 µs either side: the tenure thresholds."""
    return st.builds(
        lambda n, e: base - n * timedelta(days=1) + e * US,
        st.sampled_from([0, 1, 29, 30, 89, 90, 364, 365]) | st.integers(-2, 400),
        st.sampled_from([-1, 0, 1]),
    )


def offset_of(base: datetime, lo: timedelta, hi: timedelta) -> st.SearchStrategy[datetime]:
    return st.one_of(
        st.integers(lo // US, hi // US).map(lambda d: base + d * US),
        st.integers(lo // timedelta(seconds=30), hi // timedelta(seconds=30)).map(
            lambda n: base + n * timedelta(seconds=30)
        ),
    )


TRICKY_SUBJECTS = [
    "Math", "math", " MATH ", "ß", "SS", "ss", "Straße", "STRASSE", "İ", "i", "ı", "I",
    "Σ", "σ", "ς", "ﬁ", "FI", "", " ", "\u00a0", "\u3000", "\u200b", "K", "\u212a", "ǅ", "ǆ",
]  # fmt: skip
# characters whose case folding differs from simple lower-casing, and Unicode whitespace
CONFUSABLE = "İIiı\u0307ßsSſσςΣKk\u212aǅǆǄﬁf \u00a0\u3000"
# small pool, so that items which fold together meet in one list
FOLDING = ["İ", "i", "I", "i\u0307", "ı", "ß", "ss", "SS", "ẞ", "ſ", "s", "Σ", "ς", " σ"]
subject = st.one_of(
    st.sampled_from(TRICKY_SUBJECTS),
    st.text(st.sampled_from(CONFUSABLE), max_size=3),
    st.text(st.characters(codec="utf-8"), max_size=6),
    st.none(),
)


@st.composite
def tutor_case(draw: st.DrawFn) -> tuple[list[dict[str, Any]], datetime, str]:
    tz = draw(zones)
    as_of = draw(instants)
    rows = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "onboarding_date": st.one_of(
                        instants,
                        offset_of(as_of, -timedelta(days=400), timedelta(days=2)),
                        whole_days_before(as_of),
                    ),
                    "subjects": st.one_of(
                        st.lists(subject, max_size=6),
                        st.lists(st.sampled_from(FOLDING), max_size=6),
                        st.none(),
                    ),
                    "updated_at": maybe(
                        st.one_of(instants, offset_of(as_of, -timedelta(days=2), timedelta(days=2)))
                    ),
                }
            ),
            max_size=12,
        )
    )
    return rows, as_of.astimezone(ZoneInfo(draw(zones))), tz


@st.composite
def session_row(draw: st.DrawFn) -> dict[str, Any]:
    scheduled = draw(instants)
    actual = draw(
        maybe(
            st.one_of(
                offset_of(scheduled, -timedelta(hours=1), timedelta(hours=3)),
                # around the 5-minute lateness threshold, to the second and microsecond
                st.integers(240, 360).map(lambda n: scheduled + n * timedelta(seconds=1)),
                st.integers(-2, 2).map(lambda n: scheduled + timedelta(minutes=5) + n * US),
            )
        )
    )
    base = actual or scheduled
    return {
        "scheduled_start": scheduled,
        "duration_minutes": draw(st.integers(0, 480)),
        "actual_start": actual,
        "actual_end": draw(maybe(offset_of(base, -timedelta(hours=1), timedelta(hours=9)))),
        "late_start_minutes": draw(maybe(st.one_of(st.integers(0, 12), st.integers(0, 2**62)))),
        "no_show": draw(maybe(st.booleans())),
    }


SESSION_IDS = ["s1", "s2", "s3", "s4"]
WHITESPACE = " \t\n\r\x0b\x0c\x1c\x85\u00a0\u1680\u2003\u2028\u3000"
text = st.one_of(
    st.text(st.sampled_from(WHITESPACE), max_size=4),
    st.text(st.sampled_from(WHITESPACE + "\u200bx."), max_size=4),
    st.text(st.characters(codec="utf-8"), max_size=5),
)


@st.composite
def feedback_row(draw: st.DrawFn) -> dict[str, Any]:
    submitted = draw(instants)
    delay = st.one_of(
        st.integers(-(10 * 86_400_000_000), 40 * 86_400_000_000),
        st.integers(-5000, 5000).map(lambda n: n * 18_000_000),  # exact .xx5 hours
    )
    row = {
        "session_id": draw(st.sampled_from(SESSION_IDS)),
        "overall_rating": draw(st.integers(1, 5)),
        "submitted_at": submitted,
        "free_text_feedback": draw(maybe(text)),
        "session_scheduled_start": draw(maybe(delay.map(lambda d: submitted - d * US))),
    }
    for name in RATING_NAMES:
        row[name] = draw(maybe(st.integers(1, 5)))
    return row


# ---------------------------------------------------------------- properties

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _derive(kind: str, rows: list[dict[str, Any]], ctx: Context) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = derive(kind, table(kind, rows), ctx).to_pylist()
    assert len(out) == len(rows)
    return out


@FAST
@given(tutor_case())
def test_tutors_match_oracle(case: tuple[list[dict[str, Any]], datetime, str]) -> None:
    rows, as_of, tz = case
    out = _derive("tutors", rows, Context(as_of=as_of, timezone=tz))
    assert out == [oracle_tutor(r, as_of, tz) for r in rows]


@FAST
@given(st.lists(session_row(), max_size=12), zones)
def test_sessions_match_oracle(rows: list[dict[str, Any]], tz: str) -> None:
    out = _derive("sessions", rows, Context(as_of=datetime.now(UTC), timezone=tz))
    assert out == [oracle_session(r, tz) for r in rows]


@FAST
@given(
    st.lists(feedback_row(), max_size=12),
    maybe(st.fixed_dictionaries({s: maybe(instants) for s in SESSION_IDS})),
)
def test_feedback_match_oracle(
    rows: list[dict[str, Any]], known: dict[str, datetime | None] | None
) -> None:
    def session_start(ids: pa.Array) -> pa.Array:
        assert known is not None
        return pa.array([known[i] for i in ids.to_pylist()], pa.timestamp("us", tz="UTC"))

    ctx = Context(as_of=datetime.now(UTC), session_start=None if known is None else session_start)
    out = _derive("feedback", rows, ctx)
    assert out == [oracle_feedback(r, known) for r in rows]


# ---------------------------------------------------------------- the registry

SPEC_ORDER = [
    ("tutors", "tenure_days"),
    ("tutors", "is_new_tutor"),
    ("tutors", "experience_level"),
    ("tutors", "subject_count"),
    ("tutors", "is_active_today"),
    ("sessions", "is_weekend"),
    ("sessions", "time_of_day"),
    ("sessions", "is_late_start"),
    ("sessions", "actual_duration_minutes"),
    ("sessions", "week_of_year"),
    ("sessions", "month_of_year"),
    ("feedback", "is_positive"),
    ("feedback", "is_poor"),
    ("feedback", "avg_category_rating"),
    ("feedback", "category_variance"),
    ("feedback", "has_text_feedback"),
    ("feedback", "feedback_delay_hours"),
]


def test_registry_has_the_17_fields_in_spec_order() -> None:
    assert [(f.kind, f.name) for f in REGISTRY] == SPEC_ORDER


@pytest.mark.parametrize("field", REGISTRY, ids=lambda f: f.name)
def test_every_field_documents_its_spec_sentence(field: Any) -> None:
    assert field.doc.strip()
    assert field.compute.__doc__ and field.compute.__name__ == field.name


_T0 = datetime(2024, 11, 7, 14, tzinfo=UTC)
FIXED_ROWS: dict[str, list[dict[str, Any]]] = {
    "tutors": [
        {"onboarding_date": _T0 - timedelta(days=d), "subjects": subj, "updated_at": upd}
        for d, subj, upd in [(1, ["a", "A"], _T0), (40, [], None), (400, ["b", "c"], _T0)]
    ],
    "sessions": [
        {"scheduled_start": _T0 + timedelta(days=d), "duration_minutes": 60, "actual_start": a}
        for d, a in [(0, _T0 + timedelta(minutes=6)), (1, None), (2, _T0 + timedelta(days=2))]
    ],
    "feedback": [
        {"session_id": "s1", "overall_rating": r, "submitted_at": _T0, "patience_rating": p,
         "session_scheduled_start": _T0 - timedelta(seconds=90) if p else None}
        for r, p in [(5, 1), (2, None), (3, 4)]
    ],
}  # fmt: skip


@pytest.mark.parametrize("kind", ["tutors", "sessions", "feedback"])
def test_empty_and_multi_chunk_tables(kind: str) -> None:
    """derive works on 0 rows and gives the same answer on a table split into chunks."""
    rows = FIXED_ROWS[kind]
    ctx = Context(as_of=_T0, timezone="America/New_York")
    assert derive(kind, table(kind, []), ctx).num_rows == 0
    whole = derive(kind, table(kind, rows), ctx)
    chunked = pa.concat_tables([table(kind, rows[:1]), table(kind, rows[1:])])
    assert chunked.column(0).num_chunks == 2
    assert derive(kind, chunked, ctx).equals(whole)
    oracle = {
        "tutors": lambda r: oracle_tutor(r, _T0, "America/New_York"),
        "sessions": lambda r: oracle_session(r, "America/New_York"),
        "feedback": lambda r: oracle_feedback(r, None),
    }[kind]
    assert whole.to_pylist() == [oracle(r) for r in table(kind, rows).to_pylist()]
