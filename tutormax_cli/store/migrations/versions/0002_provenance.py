"""Provenance: each row records what its derived values depend on (SPEC §5).

`reporting_timezone` (the IANA zone its calendar fields were read in) and
`formula_version` (fields.FORMULA_VERSION of the formulas that computed them), beside
`enriched_at` (the as-of). Rows written before this revision have neither: `tutormax
refresh` re-derives them in full.

A column already there (a DBA added it, or ran part of `db upgrade --sql` by hand) is left
as it is: only the missing ones are added.

Revision ID: 0002_provenance
Revises: 0001_v010
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from tutormax_cli.store.migrate import present_columns

revision = "0002_provenance"
down_revision = "0001_v010"
branch_labels = None
depends_on = None

TABLES = ("tutors", "sessions", "feedback")
ADDED: list[tuple[str, Any, bool]] = [
    ("reporting_timezone", sa.Text(), True),
    ("formula_version", sa.Integer(), True),
]
COLUMNS = {table: ADDED for table in TABLES}  # (name, type, nullable) this revision adds


def upgrade() -> None:
    for table in TABLES:
        there = present_columns(table)
        missing = [(name, type_, null) for name, type_, null in COLUMNS[table] if name not in there]
        if not missing:
            continue
        with op.batch_alter_table(table) as batch:
            for name, type_, nullable in missing:
                batch.add_column(sa.Column(name, type_, nullable=nullable))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("formula_version")
            batch.drop_column("reporting_timezone")
