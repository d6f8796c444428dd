"""Provenance: each row records what its derived values depend on (SPEC §5).

`reporting_timezone` (the IANA zone its calendar fields were read in) and
`formula_version` (fields.FORMULA_VERSION of the formulas that computed them), beside
`enriched_at` (the as-of). Rows written before this revision have neither: `tutormax
refresh` re-derives them in full.

Revision ID: 0002_provenance
Revises: 0001_v010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_provenance"
down_revision = "0001_v010"
branch_labels = None
depends_on = None

TABLES = ("tutors", "sessions", "feedback")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("reporting_timezone", sa.Text(), nullable=True))
            batch.add_column(sa.Column("formula_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("formula_version")
            batch.drop_column("reporting_timezone")
