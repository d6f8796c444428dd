"""Feedback rows: each about a generated session, by that session's student, after it ended."""

from __future__ import annotations

import pyarrow as pa

from ..schema import FEEDBACK
from .compute import MIN, SEC, ids, lookup, mod, null_where, pc
from .plan import Batch, Plan
from .rng import Rng, distinct_picks, with_fraction
from .sessions import session_core
from .vocab import (
    BLANK_TEXT,
    CATEGORY_DELTA,
    FEEDBACK_BAND_SIZE,
    FEEDBACK_TEXT,
    IMPROVEMENT_AREAS,
    OVERALL,
)


def _category_ratings(rng: Rng, f: pa.Array, overall: pa.Array) -> dict[str, pa.Array]:
    """Each *_rating column besides overall: overall ± 1, often null, sometimes all null."""
    all_null = rng.chance("feedback.categories.none", f, 0.1)
    categories = {}
    for name in FEEDBACK.column_names:
        if not name.endswith("_rating") or name == "overall_rating":
            continue
        delta = rng.choice(f"feedback.{name}", f, CATEGORY_DELTA)
        value = pc.min_element_wise(pc.max_element_wise(pc.add(overall, delta), 1), 5)
        null = pc.or_(all_null, rng.chance(f"feedback.{name}.null", f, 0.15))
        categories[name] = null_where(null, pc.cast(value, pa.int64()))
    return categories


def _delay_s(rng: Rng, f: pa.Array) -> pa.Array:
    """Seconds from session end to submission: mostly within hours, sometimes days (≤ 14)."""
    delay_min = pc.multiply(
        pc.negate(pc.ln(pc.subtract(1.0, rng.uniform("feedback.delay", f)))), 600.0
    )
    delay_min = pc.min_element_wise(pc.add(pc.floor(delay_min), 5.0), 14 * 24 * 60.0)
    return pc.add(
        pc.multiply(pc.cast(delay_min, pa.int64()), 60), rng.randint("feedback.delay.s", f, 0, 59)
    )


def _free_text(rng: Rng, f: pa.Array, overall: pa.Array) -> pa.Array:
    """A text matching the rating's band; some blank, many null."""
    band = pc.if_else(pc.greater_equal(overall, 4), 0, pc.if_else(pc.equal(overall, 3), 1, 2))
    text_i = pc.add(
        pc.multiply(pc.cast(band, pa.int64()), FEEDBACK_BAND_SIZE),
        rng.randint("feedback.text", f, 0, FEEDBACK_BAND_SIZE - 1),
    )
    text = pc.if_else(
        rng.chance("feedback.text.blank", f, 0.06),
        rng.choice("feedback.text.blank_kind", f, [(b, 1) for b in BLANK_TEXT]),
        lookup(FEEDBACK_TEXT, text_i),
    )
    return rng.optional("feedback.text", f, text, 0.3)


def feedback_batch(rng: Rng, plan: Plan, f: pa.Array) -> Batch:
    number = pc.cast(f, pa.int64())
    mult, off = plan.feedback_map
    session = mod(pc.add(pc.multiply(number, mult), off), plan.sessions)
    core = session_core(rng, plan, pc.cast(session, pa.uint64()))

    overall = pc.cast(rng.choice("feedback.overall", f, OVERALL), pa.int64())
    ended = pc.add(core["start"], pc.multiply(core["duration"], MIN))
    submitted = with_fraction(
        rng, "feedback.submitted_at", f, pc.add(ended, pc.multiply(_delay_s(rng, f), SEC))
    )
    created = pc.add(
        submitted, pc.multiply(rng.randint("feedback.created_at.ms", f, 0, 3000), 1000)
    )
    recommend_p = pc.if_else(
        pc.greater_equal(overall, 4), 0.92, pc.if_else(pc.equal(overall, 3), 0.5, 0.1)
    )
    recommend = rng.chance("feedback.recommend", f, recommend_p)

    areas = [
        lookup(IMPROVEMENT_AREAS, i)
        for i in distinct_picks(rng, "feedback.areas", f, len(IMPROVEMENT_AREAS), 3)
    ]
    area_count = rng.optional(
        "feedback.areas", f, rng.pick("feedback.areas.count", f, (20, 45, 25, 10)), 0.35
    )

    values = {
        "feedback_id": ids("fb_", number, plan.feedback_width),
        "session_id": ids("ses_", session, plan.session_width),
        "student_id": ids("stu_", core["student"], plan.student_width),
        "tutor_id": ids("tut_", core["tutor"], plan.tutor_width),
        "overall_rating": overall,
        "submitted_at": submitted,
        **_category_ratings(rng, f, overall),
        "free_text_feedback": _free_text(rng, f, overall),
        "would_recommend": rng.optional("feedback.recommend", f, recommend, 0.1),
        "is_first_session": core["is_first_session"],
        "session_scheduled_start": null_where(
            rng.chance("feedback.session_start.absent", f, 0.5), core["start"]
        ),
        "created_at": rng.optional("feedback.created_at", f, created, 0.2),
    }
    return Batch(FEEDBACK, f, values, {"improvement_areas": (areas, area_count)})
