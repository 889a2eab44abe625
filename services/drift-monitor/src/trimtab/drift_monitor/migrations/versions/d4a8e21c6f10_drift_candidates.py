"""drift candidates waiting for their tick batch to settle

Revision ID: d4a8e21c6f10
Revises: ca2ea7dc99b4
Create Date: 2026-11-24 23:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = 'd4a8e21c6f10'
down_revision = 'ca2ea7dc99b4'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'drift_candidates',
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('account_id', sa.String(length=64), nullable=False),
        sa.Column('tick_as_of', sa.DateTime(timezone=True), nullable=False),
        sa.Column('cause', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('tenant_id', 'account_id', name=op.f('pk_drift_candidates')),
        schema='drift_monitor',
    )
    op.create_index('ix_drift_candidates_created', 'drift_candidates', ['created_at'], unique=False,
                    schema='drift_monitor')


def downgrade() -> None:
    op.drop_index('ix_drift_candidates_created', table_name='drift_candidates', schema='drift_monitor')
    op.drop_table('drift_candidates', schema='drift_monitor')
