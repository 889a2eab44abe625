"""executions by account and time: a drift's snapshot lists the executions applied to its account

Revision ID: 9d3e5f7a1b48
Revises: 6a1c9e3b5d27
Create Date: 2026-11-25 07:30:00
"""

from alembic import op

revision = '9d3e5f7a1b48'
down_revision = '6a1c9e3b5d27'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_executions_account_applied', 'executions', ['tenant_id', 'account_id', 'applied_at'],
                    unique=False, schema='drift_monitor')


def downgrade() -> None:
    op.drop_index('ix_executions_account_applied', table_name='executions', schema='drift_monitor')
