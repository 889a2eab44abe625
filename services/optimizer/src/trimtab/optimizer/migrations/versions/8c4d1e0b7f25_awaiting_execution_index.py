"""a partial index of the approvals awaiting execution (the sweep's gauges count them)

Revision ID: 8c4d1e0b7f25
Revises: 5e2b7c1d9a04
Create Date: 2026-11-25 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '8c4d1e0b7f25'
down_revision = '5e2b7c1d9a04'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_proposals_awaiting_execution', 'proposals', ['tenant_id', 'decided_at'], unique=False,
                    schema='optimizer',
                    postgresql_where=sa.text("state IN ('approved', 'overridden')"))


def downgrade() -> None:
    op.drop_index('ix_proposals_awaiting_execution', table_name='proposals', schema='optimizer',
                  postgresql_where=sa.text("state IN ('approved', 'overridden')"))
