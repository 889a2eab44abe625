"""risk assessments of proposals, for the narratives' risk figures

Revision ID: 5e1f0a7c3b92
Revises: 39071a3549bd
Create Date: 2026-11-24 23:30:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '5e1f0a7c3b92'
down_revision = '39071a3549bd'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'risk_assessments',
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('proposal_id', sa.UUID(), nullable=False),
        sa.Column('event_id', sa.UUID(), nullable=False),
        sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('tenant_id', 'proposal_id', name=op.f('pk_risk_assessments')),
        schema='explainer',
    )


def downgrade() -> None:
    op.drop_table('risk_assessments', schema='explainer')
