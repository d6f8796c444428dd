"""Session rows, and the session facts that feedback recomputes from a session's number."""

from __future__ import annotations

import pyarrow as pa

from ..schema import SESSIONS
from .compute import DAY, HOUR, MIN, SEC, ids, lookup, mod, null_where, pc, pick_slot
from .plan import Batch, Plan
from .rng import Rng, with_fraction
from .tutors import tutor_core
from .vocab import (
    DURATIONS,
    HOURS,
    MINUTES,
    SESSION_FIRST_DAY,
    SESSION_LAST_DAY,
    SESSION_TYPES,
    SUBJECT_NAMES,
)


def session_core(rng: Rng, plan: Plan, s: pa.Array) -> dict[str, pa.Array]:
    """What feedback needs to know about session number s (uint64)."""
    # A few tutors teach much more than others: skew, then scatter over tutor numbers.
    rank = pc.cast(
        pc.floor(pc.multiply(pc.power(rng.uniform("sessions.tutor", s), 1.6), plan.tutors)),
        pa.int64(),
    )
    rank = pc.min_element_wise(rank, plan.tutors - 1)
    mult, off = plan.tutor_map
    tutor = mod(pc.add(pc.multiply(rank, mult), off), plan.tutors)
    tc = tutor_core(rng, pc.cast(tutor, pa.uint64()))

    first_day = pc.max_element_wise(pc.add(tc["day"], 1), SESSION_FIRST_DAY)
    first_day = pc.min_element_wise(first_day, SESSION_LAST_DAY)
    day = rng.randint("sessions.day", s, first_day, SESSION_LAST_DAY)
    hour = rng.choice("sessions.hour", s, HOURS)
    minute = rng.choice("sessions.minute", s, MINUTES)
    start = pc.add(
        pc.add(pc.multiply(day, DAY), pc.multiply(pc.cast(hour, pa.int64()), HOUR)),
        pc.multiply(pc.cast(minute, pa.int64()), MIN),
    )
    which = rng.randint("sessions.subject", s, 0, pc.subtract(tc["subject_count"], 1))
    subject = pick_slot([tc["subject0"], tc["subject1"], tc["subject2"]], which)
    number = pc.add(
        pc.cast(
            pc.floor(pc.multiply(pc.power(rng.uniform("sessions.number", s), 2.0), 40)), pa.int64()
        ),
        1,
    )
    number = rng.optional("sessions.number", s, number, 0.1)
    first = pc.if_else(
        pc.is_null(number), rng.chance("sessions.first.guess", s, 0.1), pc.equal(number, 1)
    )
    return {
        "tutor": tutor,
        "student": rng.randint("sessions.student", s, 0, plan.students - 1),
        "start": start,
        "duration": pc.cast(rng.choice("sessions.duration", s, DURATIONS), pa.int64()),
        "subject": subject,
        "session_number": number,
        "is_first_session": rng.optional("sessions.first", s, first, 0.08),
    }


def _lateness_s(rng: Rng, s: pa.Array) -> pa.Array:
    """Lateness in seconds: mostly on time (even early), some 4–15 min, a few worse."""
    band = rng.pick("sessions.late.band", s, (75, 20, 5))
    return pick_slot(
        [
            rng.randint("sessions.late.on_time", s, -180, 240),
            rng.randint("sessions.late.late", s, 240, 900),
            rng.randint("sessions.late.very", s, 900, 2400),
        ],
        band,
    )


def _engagement(rng: Rng, s: pa.Array, objectives: pa.Array) -> pa.Array:
    """A score in [0, 1] with two decimals, higher when the objectives were met."""
    score = pc.add(
        pc.add(rng.uniform("sessions.score.a", s), rng.uniform("sessions.score.b", s)),
        rng.uniform("sessions.score.c", s),
    )
    score = pc.add(pc.multiply(score, 100 / 3), pc.if_else(objectives, 12.0, -10.0))
    return pc.divide(
        pc.cast(
            pc.min_element_wise(pc.max_element_wise(pc.floor(score), 0.0), 100.0), pa.float64()
        ),
        100.0,
    )


def sessions_batch(rng: Rng, plan: Plan, s: pa.Array) -> Batch:
    core = session_core(rng, plan, s)
    start, duration = core["start"], core["duration"]

    no_show = rng.chance("sessions.no_show", s, 0.05)
    late_s = _lateness_s(rng, s)
    actual_start = with_fraction(
        rng, "sessions.actual_start", s, pc.add(start, pc.multiply(late_s, SEC))
    )
    has_start = pc.and_(
        pc.invert(no_show), pc.invert(rng.chance("sessions.actual_start.null", s, 0.1))
    )
    actual_start = null_where(pc.invert(has_start), actual_start)
    overrun_s = rng.randint("sessions.actual_end.overrun", s, -300, 600)
    run_us = pc.multiply(pc.add(pc.multiply(duration, 60), overrun_s), SEC)
    actual_end = with_fraction(rng, "sessions.actual_end", s, pc.add(actual_start, run_us))
    actual_end = rng.optional("sessions.actual_end", s, actual_end, 0.15)
    # late_start_minutes: given for 40% of shows; whole minutes of lateness, never < 0.
    late_min = pc.if_else(
        pc.is_null(actual_start),
        rng.pick("sessions.late_minutes.guess", s, (50, 10, 8, 6, 5, 5, 4, 3, 3, 2, 2, 2)),
        pc.max_element_wise(pc.divide(late_s, 60), 0),
    )
    late_min = null_where(
        pc.or_(no_show, pc.invert(rng.chance("sessions.late_minutes.given", s, 0.4))),
        late_min,
    )
    objectives = rng.chance("sessions.objectives", s, 0.75)

    ended = pc.coalesce(actual_end, pc.add(start, pc.multiply(duration, MIN)))
    created = pc.subtract(
        start, pc.multiply(rng.randint("sessions.created_at.s", s, 3600, 21 * 86400), SEC)
    )
    updated = pc.add(
        ended, pc.multiply(rng.randint("sessions.updated_at.s", s, 60, 2 * 86400), SEC)
    )
    values = {
        "session_id": ids("ses_", pc.cast(s, pa.int64()), plan.session_width),
        "tutor_id": ids("tut_", core["tutor"], plan.tutor_width),
        "student_id": ids("stu_", core["student"], plan.student_width),
        "scheduled_start": start,
        "duration_minutes": duration,
        "subject": lookup(SUBJECT_NAMES, core["subject"]),
        "actual_start": actual_start,
        "actual_end": actual_end,
        "late_start_minutes": late_min,
        "session_number": core["session_number"],
        "no_show": rng.optional("sessions.no_show", s, no_show, 0.05),
        "is_first_session": core["is_first_session"],
        "tutor_initiated_reschedule": rng.optional(
            "sessions.reschedule", s, rng.chance("sessions.reschedule", s, 0.08), 0.1
        ),
        "learning_objectives_met": null_where(
            pc.or_(no_show, rng.chance("sessions.objectives.null", s, 0.1)), objectives
        ),
        "technical_issues": rng.optional(
            "sessions.technical_issues",
            s,
            rng.chance("sessions.technical_issues", s, 0.07),
            0.1,
        ),
        "engagement_score": null_where(
            pc.or_(no_show, rng.chance("sessions.score.null", s, 0.1)),
            _engagement(rng, s, objectives),
        ),
        "session_type": rng.optional(
            "sessions.session_type", s, rng.choice("sessions.type", s, SESSION_TYPES), 0.05
        ),
        "created_at": rng.optional(
            "sessions.created_at", s, with_fraction(rng, "sessions.created_at", s, created), 0.1
        ),
        "updated_at": rng.optional(
            "sessions.updated_at", s, with_fraction(rng, "sessions.updated_at", s, updated), 0.2
        ),
    }
    return Batch(SESSIONS, s, values, {})
