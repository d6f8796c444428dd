"""Tutor rows, and the few tutor facts that sessions recompute from a tutor's number."""

from __future__ import annotations

import pyarrow as pa

from ..schema import TUTORS
from .compute import DAY, SEC, ids, lookup, pc, pick_slot
from .plan import Batch, Plan
from .rng import Rng, distinct_picks, with_fraction
from .vocab import (
    ARCHETYPES,
    EDUCATION,
    EMAIL_DOMAINS,
    FIRST_NAME_DISPLAY,
    FIRST_NAME_HANDLES,
    LAST_NAME_DISPLAY,
    LAST_NAME_HANDLES,
    LOCATIONS,
    ONBOARD_FIRST_DAY,
    ONBOARD_LAST_DAY,
    STATUS,
    SUBJECT_NAMES,
    SUBJECT_TYPES,
    UPDATED_LAST_US,
)

_NULL = pa.scalar(None, pa.string())


def tutor_core(rng: Rng, t: pa.Array) -> dict[str, pa.Array]:
    """What sessions need to know about tutor number t (uint64)."""
    day = rng.randint("tutors.onboarding.day", t, ONBOARD_FIRST_DAY, ONBOARD_LAST_DAY)
    with_time = rng.chance("tutors.onboarding.with_time", t, 0.3)
    secs = rng.randint("tutors.onboarding.secs", t, 8 * 3600, 20 * 3600)
    onboarding = pc.add(pc.multiply(day, DAY), pc.if_else(with_time, pc.multiply(secs, SEC), 0))
    subject_count = pc.add(rng.pick("tutors.subjects.count", t, (45, 35, 20)), 1)
    subjects = distinct_picks(rng, "tutors.subjects", t, len(SUBJECT_NAMES), 3)
    return {
        "day": day,
        "onboarding": onboarding,
        "subject_count": subject_count,
        "subject0": subjects[0],
        "subject1": subjects[1],
        "subject2": subjects[2],
    }


def _subjects(rng: Rng, t: pa.Array, core: dict[str, pa.Array]) -> tuple[list[pa.Array], pa.Array]:
    """1–3 distinct subjects, sometimes followed by a case/space/blank variant of the first
    (valid, and it tests subject_count's trimming, casefolding and blank-skipping)."""
    real = [lookup(SUBJECT_NAMES, core[f"subject{j}"]) for j in range(3)]
    variant_kind = rng.pick("tutors.subjects.variant", t, (92, 3, 2, 2, 1))
    variants = [
        _NULL,
        pc.utf8_lower(real[0]),
        pc.binary_join_element_wise("  ", real[0], " ", ""),
        pc.utf8_upper(real[0]),
        pa.scalar("", pa.string()),
    ]
    variant = pick_slot(variants, variant_kind)
    count = core["subject_count"]
    has_variant = pc.greater(variant_kind, 0)
    slots = []
    for j in range(4):
        real_j = real[j] if j < 3 else _NULL
        after_real = pc.if_else(pc.and_(has_variant, pc.equal(count, j)), variant, _NULL)
        slots.append(pc.if_else(pc.less(j, count), real_j, after_real))
    return slots, pc.add(count, pc.cast(has_variant, pa.int64()))


def tutors_batch(rng: Rng, plan: Plan, t: pa.Array) -> Batch:
    core = tutor_core(rng, t)
    number = pc.cast(t, pa.int64())
    first_i = rng.randint("tutors.first_name", t, 0, len(FIRST_NAME_DISPLAY) - 1)
    last_i = rng.randint("tutors.last_name", t, 0, len(LAST_NAME_DISPLAY) - 1)
    name = pc.binary_join_element_wise(
        lookup(FIRST_NAME_DISPLAY, first_i), lookup(LAST_NAME_DISPLAY, last_i), " "
    )
    email = pc.binary_join_element_wise(
        lookup(FIRST_NAME_HANDLES, first_i),
        ".",
        lookup(LAST_NAME_HANDLES, last_i),
        pc.cast(pc.add(number, 1), pa.string()),
        "@",
        rng.choice("tutors.email.domain", t, [(d, 1) for d in EMAIL_DOMAINS]),
        "",
    )

    subject_type = lookup(SUBJECT_TYPES, core["subject0"])
    created = pc.subtract(
        core["onboarding"], pc.multiply(rng.randint("tutors.created_at.s", t, 0, 21 * 86400), SEC)
    )
    created = with_fraction(rng, "tutors.created_at", t, created)
    span = pc.subtract(UPDATED_LAST_US, core["onboarding"])
    updated_s = pc.cast(
        pc.floor(pc.multiply(rng.uniform("tutors.updated_at.s", t), pc.divide(span, SEC))),
        pa.int64(),
    )
    updated = with_fraction(
        rng, "tutors.updated_at", t, pc.add(core["onboarding"], pc.multiply(updated_s, SEC))
    )
    baseline = pc.divide(pc.cast(rng.randint("tutors.baseline", t, 5, 200), pa.float64()), 10.0)
    baseline = pc.if_else(rng.chance("tutors.baseline.zero", t, 0.02), 0.0, baseline)
    location = rng.choice("tutors.location", t, [(x, 1) for x in LOCATIONS])

    values = {
        "tutor_id": ids("tut_", number, plan.tutor_width),
        "name": name,
        "email": email,
        "onboarding_date": core["onboarding"],
        "status": rng.choice("tutors.status", t, STATUS),
        "age": rng.optional("tutors.age", t, rng.randint("tutors.age", t, 19, 68), 0.15),
        "location": rng.optional("tutors.location", t, location, 0.1),
        "education_level": rng.optional(
            "tutors.education_level", t, rng.choice("tutors.education", t, EDUCATION), 0.1
        ),
        "subject_type": rng.optional("tutors.subject_type", t, subject_type, 0.1),
        "behavioral_archetype": rng.optional(
            "tutors.behavioral_archetype", t, rng.choice("tutors.archetype", t, ARCHETYPES), 0.1
        ),
        "baseline_sessions_per_week": rng.optional("tutors.baseline", t, baseline, 0.1),
        "created_at": rng.optional("tutors.created_at", t, created, 0.1),
        "updated_at": rng.optional("tutors.updated_at", t, updated, 0.15),
    }
    return Batch(TUTORS, t, values, {"subjects": _subjects(rng, t, core)})
