"""risk assessments indexed by arrival, for their retention purge

Revision ID: b4d8f2a6c1e3
Revises: 5e1f0a7c3b92
Create Date: 2026-11-25 01:10:00
"""

from alembic import op

revision = 'b4d8f2a6c1e3'
down_revision = '5e1f0a7c3b92'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_risk_assessments_received', 'risk_assessments', ['received_at'], unique=False,
                    schema='explainer')


def downgrade() -> None:
    op.drop_index('ix_risk_assessments_received', table_name='risk_assessments', schema='explainer')
