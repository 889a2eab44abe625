"""proposal advisor

The account's advisor, as `DriftDetected.advisor_id` names it, on each proposal (null for the
proposals made before, and for accounts without one), indexed for the advisor's queue
(`GET /v1/proposals?advisor_id=...&state=ready`).

Revision ID: 7be1d2c4a9f3
Revises: 4c002a915008
Create Date: 2026-11-24 16:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '7be1d2c4a9f3'
down_revision = '4c002a915008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('proposals', sa.Column('advisor_id', sa.String(length=64), nullable=True), schema='optimizer')
    op.create_index('ix_proposals_tenant_advisor_state', 'proposals',
                    ['tenant_id', 'advisor_id', 'state', 'created_at'], unique=False, schema='optimizer')


def downgrade() -> None:
    op.drop_index('ix_proposals_tenant_advisor_state', table_name='proposals', schema='optimizer')
    op.drop_column('proposals', 'advisor_id', schema='optimizer')
