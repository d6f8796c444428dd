"""The schema tutormax 0.1.0 wrote (with `create_all`, before there were migrations).

A database without a version table whose tables hold every one of these columns (and maybe
a DBA's own beside them) is a 0.1.0 database: `tutormax db upgrade` stamps it with this
revision, then migrates it. The column lists are frozen here on purpose: later fields come
in later revisions, never by editing this one; each revision's `COLUMNS` are what it adds
(migrate.columns_at).

Revision ID: 0001_v010
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_v010"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(50)
TEXT = sa.Text()
TS = sa.DateTime(timezone=True)
LIST = sa.Text().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
INT = sa.BigInteger()
FLOAT: sa.Double[float] = sa.Double()
BOOL = sa.Boolean()

# (name, type, nullable) per table, in 0.1.0's column order.
TUTORS = [
    ("tutor_id", ID, False), ("name", TEXT, False), ("email", TEXT, False),
    ("onboarding_date", TS, False), ("status", TEXT, False), ("subjects", LIST, False),
    ("age", INT, True), ("location", TEXT, True), ("education_level", TEXT, True),
    ("subject_type", TEXT, True), ("behavioral_archetype", TEXT, True),
    ("baseline_sessions_per_week", FLOAT, True), ("created_at", TS, True),
    ("updated_at", TS, True), ("tenure_days", INT, True), ("is_new_tutor", BOOL, True),
    ("experience_level", TEXT, True), ("subject_count", INT, True),
    ("is_active_today", BOOL, True), ("enriched_at", TS, False),
]  # fmt: skip
SESSIONS = [
    ("session_id", ID, False), ("tutor_id", ID, False), ("student_id", ID, False),
    ("scheduled_start", TS, False), ("duration_minutes", INT, False), ("subject", TEXT, False),
    ("actual_start", TS, True), ("actual_end", TS, True), ("late_start_minutes", INT, True),
    ("session_number", INT, True), ("no_show", BOOL, True), ("is_first_session", BOOL, True),
    ("tutor_initiated_reschedule", BOOL, True), ("learning_objectives_met", BOOL, True),
    ("technical_issues", BOOL, True), ("engagement_score", FLOAT, True),
    ("session_type", TEXT, True), ("created_at", TS, True), ("updated_at", TS, True),
    ("is_weekend", BOOL, True), ("time_of_day", TEXT, True), ("is_late_start", BOOL, True),
    ("actual_duration_minutes", INT, True), ("week_of_year", INT, True),
    ("month_of_year", INT, True), ("enriched_at", TS, False),
]  # fmt: skip
FEEDBACK = [
    ("feedback_id", ID, False), ("session_id", ID, False), ("student_id", ID, False),
    ("tutor_id", ID, False), ("overall_rating", INT, False), ("submitted_at", TS, False),
    ("subject_knowledge_rating", INT, True), ("communication_rating", INT, True),
    ("patience_rating", INT, True), ("engagement_rating", INT, True),
    ("helpfulness_rating", INT, True), ("free_text_feedback", TEXT, True),
    ("would_recommend", BOOL, True), ("is_first_session", BOOL, True),
    ("improvement_areas", LIST, True), ("session_scheduled_start", TS, True),
    ("created_at", TS, True), ("is_positive", BOOL, True), ("is_poor", BOOL, True),
    ("avg_category_rating", FLOAT, True), ("category_variance", FLOAT, True),
    ("has_text_feedback", BOOL, True), ("feedback_delay_hours", FLOAT, True),
    ("enriched_at", TS, False),
]  # fmt: skip
COLUMNS = {"tutors": TUTORS, "sessions": SESSIONS, "feedback": FEEDBACK}


def _columns(spec: list[tuple[str, Any, bool]]) -> list[sa.Column[Any]]:
    return [sa.Column(name, type_, nullable=nullable) for name, type_, nullable in spec]


def upgrade() -> None:
    op.create_table("tutors", *_columns(TUTORS), sa.PrimaryKeyConstraint("tutor_id"))
    op.create_table(
        "sessions",
        *_columns(SESSIONS),
        sa.PrimaryKeyConstraint("session_id"),
        sa.ForeignKeyConstraint(["tutor_id"], ["tutors.tutor_id"]),
    )
    op.create_index("ix_sessions_tutor_id", "sessions", ["tutor_id"])
    op.create_table(
        "feedback",
        *_columns(FEEDBACK),
        sa.PrimaryKeyConstraint("feedback_id"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.session_id"]),
        sa.ForeignKeyConstraint(["tutor_id"], ["tutors.tutor_id"]),
    )
    op.create_index("ix_feedback_session_id", "feedback", ["session_id"])
    op.create_index("ix_feedback_tutor_id", "feedback", ["tutor_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("sessions")
    op.drop_table("tutors")
