"""The shape of one run (counts, id widths, key scrambles) and of one generated batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa

from ..schema import Kind


@dataclass(frozen=True)
class Plan:
    tutors: int
    sessions: int
    feedback: int
    students: int
    seed: int
    tutor_width: int
    session_width: int
    feedback_width: int
    student_width: int
    tutor_map: tuple[int, int]  # popularity rank -> tutor number
    feedback_map: tuple[int, int]  # feedback number -> session number


def make_plan(tutors: int, sessions: int, feedback: int, seed: int) -> Plan:
    students = max(1, sessions // 8)
    return Plan(
        tutors=tutors,
        sessions=sessions,
        feedback=feedback,
        students=students,
        seed=seed,
        tutor_width=max(4, len(str(tutors))),
        session_width=max(6, len(str(sessions))),
        feedback_width=max(6, len(str(feedback))),
        student_width=max(5, len(str(students))),
        tutor_map=_coprime_step(tutors, seed, 1),
        feedback_map=_coprime_step(sessions, seed, 2),
    )


def _coprime_step(n: int, seed: int, salt: int) -> tuple[int, int]:
    """(multiplier, offset) of a bijection i -> (i*multiplier + offset) mod n."""
    if n <= 1:
        return 1, 0
    step = int(n * 0.6180339887) + 1 + (seed * 7919 + salt) % max(1, n // 7)
    while math.gcd(step, n) != 1:
        step += 1
    return step, (seed * 104729 + salt * 31) % n


@dataclass
class Batch:
    """One batch of one kind: plain values; timestamps as int64 µs, lists as (slots, count)."""

    kind: Kind
    idx: pa.Array
    values: dict[str, pa.Array]
    lists: dict[str, tuple[list[pa.Array], pa.Array]]
