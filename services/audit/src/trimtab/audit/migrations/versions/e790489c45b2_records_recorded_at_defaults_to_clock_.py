"""records.recorded_at defaults to clock_timestamp()

The consumer writes a run's records with COPY (handlers.py), which cannot call a function per
row; the column default does it instead, as each row is inserted under the append lock, so
recorded_at keeps ascending with seq exactly as the INSERT ... clock_timestamp() did. A writer
that names the column still sets it.

Revision ID: e790489c45b2
Revises: b856bec9e4d4
Create Date: 2026-11-24 13:26:31.774635
"""

import sqlalchemy as sa
from alembic import op

revision = 'e790489c45b2'
down_revision = 'b856bec9e4d4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("records", "recorded_at", schema="audit", existing_type=sa.DateTime(timezone=True),
                    existing_nullable=False, server_default=sa.text("clock_timestamp()"))


def downgrade() -> None:
    op.alter_column("records", "recorded_at", schema="audit", existing_type=sa.DateTime(timezone=True),
                    existing_nullable=False, server_default=None)
