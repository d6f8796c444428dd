"""SPEC §1 as data: the three kinds, their columns, types, rules, keys and parents.

Everything that needs to know what a tutor, a session or a feedback record looks like —
validation, kind inference, the database tables, the docs — reads it from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import pyarrow as pa

from .errors import InputError


class Type(StrEnum):
    """Logical column types; each maps to one Arrow type after validation."""

    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    LIST = "list"

    @property
    def arrow(self) -> pa.DataType:
        return _ARROW_TYPES[self]


_ARROW_TYPES: dict[Type, pa.DataType] = {
    Type.STRING: pa.string(),
    Type.INT: pa.int64(),
    Type.FLOAT: pa.float64(),
    Type.BOOL: pa.bool_(),
    Type.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Type.LIST: pa.list_(pa.string()),
}

# SPEC: ids are 1–50 characters.
ID_MAX_CHARS = 50
# SPEC §6a: a field over its cap is rejected unread.
FIELD_MAX_BYTES = 1 << 20
# A JSON Lines line, and a CSV record once its fields are within FIELD_MAX_BYTES, over this
# is a malformed row, rejected unread.
RECORD_MAX_BYTES = 16 * FIELD_MAX_BYTES
# SPEC §6a, bounded structure. A JSON value (a record, an envelope, a JSON list in a CSV cell)
# nested deeper than this is rejected before anything builds it.
JSON_MAX_DEPTH = 64
# Columns of a file header, or keys of one JSON record: more is refused (exit 2 for a
# header, `malformed_row` / `poison` for a record).
MAX_COLUMNS = 1024
# Items of one list field (`subjects`, `improvement_areas`): more is `invalid_list`.
LIST_MAX_ITEMS = 10_000
# The rejects file echoes at most this many bytes of one value (then its length), and of one
# row's values together (the fields in error first; the rest are counted, not echoed).
REJECT_ECHO_BYTES = 1024
REJECT_ROW_ECHO_BYTES = 4096


@dataclass(frozen=True)
class Column:
    """One input field of a kind and the SPEC §1 rule it must satisfy."""

    name: str
    type: Type = Type.STRING
    required: bool = False
    min_chars: int | None = None  # strings: length bounds, in characters
    max_chars: int | None = None
    non_blank: bool = False  # strings: at least one non-whitespace character
    trim: bool = False  # keys: surrounding spaces are not part of the value
    email: bool = False  # strings: exactly one '@' with text on both sides
    choices: tuple[str, ...] | None = None  # strings: allowed values
    min_value: float | None = None  # numbers: inclusive bounds
    max_value: float | None = None


def _id(name: str) -> Column:
    return Column(name, Type.STRING, required=True, min_chars=1, max_chars=ID_MAX_CHARS, trim=True)


def _rating(name: str, required: bool = False) -> Column:
    return Column(name, Type.INT, required=required, min_value=1, max_value=5)


@dataclass(frozen=True)
class Kind:
    """A record kind: its columns, its key and the keys of its parents."""

    name: str
    columns: tuple[Column, ...]
    key: str
    parents: tuple[tuple[str, str], ...] = ()  # (column, parent kind name)
    # Columns that, seen in a header, say "this file is of this kind".
    signature: tuple[str, ...] = field(default=())

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


TUTORS = Kind(
    name="tutors",
    key="tutor_id",
    signature=("tutor_id", "onboarding_date"),
    columns=(
        _id("tutor_id"),
        Column("name", required=True, non_blank=True),
        Column("email", required=True, email=True),
        Column("onboarding_date", Type.TIMESTAMP, required=True),
        Column("status", required=True, choices=("active", "inactive", "churned")),
        Column("subjects", Type.LIST, required=True),
        Column("age", Type.INT),
        Column("location"),
        Column("education_level"),
        Column("subject_type"),
        Column("behavioral_archetype"),
        Column("baseline_sessions_per_week", Type.FLOAT, min_value=0),
        Column("created_at", Type.TIMESTAMP),
        Column("updated_at", Type.TIMESTAMP),
    ),
)

SESSIONS = Kind(
    name="sessions",
    key="session_id",
    parents=(("tutor_id", "tutors"),),
    signature=("session_id", "scheduled_start"),
    columns=(
        _id("session_id"),
        _id("tutor_id"),
        _id("student_id"),
        Column("scheduled_start", Type.TIMESTAMP, required=True),
        Column("duration_minutes", Type.INT, required=True, min_value=0, max_value=480),
        Column("subject", required=True, non_blank=True),
        Column("actual_start", Type.TIMESTAMP),
        Column("actual_end", Type.TIMESTAMP),
        Column("late_start_minutes", Type.INT, min_value=0),
        Column("session_number", Type.INT, min_value=1),
        Column("no_show", Type.BOOL),
        Column("is_first_session", Type.BOOL),
        Column("tutor_initiated_reschedule", Type.BOOL),
        Column("learning_objectives_met", Type.BOOL),
        Column("technical_issues", Type.BOOL),
        Column("engagement_score", Type.FLOAT, min_value=0, max_value=1),
        Column("session_type"),
        Column("created_at", Type.TIMESTAMP),
        Column("updated_at", Type.TIMESTAMP),
    ),
)

CATEGORY_RATINGS = (
    "subject_knowledge_rating",
    "communication_rating",
    "patience_rating",
    "engagement_rating",
    "helpfulness_rating",
)

FEEDBACK = Kind(
    name="feedback",
    key="feedback_id",
    parents=(("session_id", "sessions"), ("tutor_id", "tutors")),
    signature=("feedback_id", "overall_rating"),
    columns=(
        _id("feedback_id"),
        _id("session_id"),
        _id("student_id"),
        _id("tutor_id"),
        _rating("overall_rating", required=True),
        Column("submitted_at", Type.TIMESTAMP, required=True),
        *(_rating(name) for name in CATEGORY_RATINGS),
        Column("free_text_feedback"),
        Column("would_recommend", Type.BOOL),
        Column("is_first_session", Type.BOOL),
        Column("improvement_areas", Type.LIST),
        Column("session_scheduled_start", Type.TIMESTAMP),
        Column("created_at", Type.TIMESTAMP),
    ),
)

# Processing order when one run is given several kinds (SPEC §4): parents first.
KINDS: dict[str, Kind] = {k.name: k for k in (TUTORS, SESSIONS, FEEDBACK)}
KIND_ORDER: tuple[str, ...] = tuple(KINDS)


def get_kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise InputError(
            f"unknown kind {name!r}: expected one of {', '.join(KIND_ORDER)}"
        ) from None


def infer_kind(columns: Iterable[str], source: str = "input") -> Kind:
    """Tell a file's kind from its column names; name the missing columns when it can't."""
    present = set(columns)
    matches = [k for k in KINDS.values() if set(k.required) <= present]
    if len(matches) == 1:
        return matches[0]
    by_signature = [k for k in matches if set(k.signature) <= present]
    if len(by_signature) == 1:
        return by_signature[0]
    # Name what is missing for the closest kind, so the user can fix the header.
    closest = min(KINDS.values(), key=lambda k: len(set(k.required) - present))
    missing = [c for c in closest.required if c not in present]
    if not missing:  # several kinds fit: ambiguous
        raise InputError(
            f"{source}: cannot tell the kind (fits {', '.join(k.name for k in matches)}); "
            "pass --kind"
        )
    raise InputError(
        f"{source}: cannot tell the kind; closest is {closest.name}, "
        f"missing columns: {', '.join(missing)}{_near(missing, present)} (or pass --kind)"
    )


def check_columns(kind: Kind, columns: Iterable[str], source: str) -> None:
    """Fail before any batch when a required column is absent from the header."""
    present = set(columns)
    missing = [c for c in kind.required if c not in present]
    if missing:
        raise InputError(
            f"{source}: missing required {kind.name} columns: {', '.join(missing)}"
            f"{_near(missing, present)}"
        )


def _near(missing: list[str], present: set[str]) -> str:
    """The header's names that are a missing column but for blanks around it or its case
    (`"tutor_id "`, `Email`), which a name matches only exactly: said, so the user sees why."""
    near = sorted(
        (repr(p), m) for m in missing for p in present if p != m and p.strip().lower() == m
    )
    if not near:
        return ""
    shown = ", ".join(f"{p} is not {m}" for p, m in near[:5])
    return f" (the header's {shown}: names match exactly, blanks and case included)"
