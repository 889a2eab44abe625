"""the OMS's reports of orders that will never fill (trades.unfilled.v1): counted once, and found
by an approval that arrives after them

Revision ID: 3f7d2a9c4e61
Revises: 8b22761f0ee4
Create Date: 2026-11-26 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '3f7d2a9c4e61'
down_revision = '8b22761f0ee4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'unfilled_reports',
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('report_id', sa.String(length=128), nullable=False),
        sa.Column('account_id', sa.String(length=64), nullable=False),
        sa.Column('proposal_id', sa.UUID(), nullable=False),
        sa.Column('event_id', sa.UUID(), nullable=False),
        sa.Column('orders', sa.Integer(), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('tenant_id', 'report_id', name=op.f('pk_unfilled_reports')),
        schema='drift_monitor',
    )
    op.create_index('ix_unfilled_reports_proposal', 'unfilled_reports', ['tenant_id', 'proposal_id'], unique=False,
                    schema='drift_monitor')


def downgrade() -> None:
    op.drop_index('ix_unfilled_reports_proposal', table_name='unfilled_reports', schema='drift_monitor')
    op.drop_table('unfilled_reports', schema='drift_monitor')
