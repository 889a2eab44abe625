"""an OMS report id is unique per proposal, not per tenant (as the optimizer counts them): an OMS
that numbers its reports per account or per day reuses ids across proposals

Revision ID: 6a1c9e3b5d27
Revises: 3f7d2a9c4e61
Create Date: 2026-11-25 07:10:00
"""

from alembic import op

revision = '6a1c9e3b5d27'
down_revision = '3f7d2a9c4e61'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint('pk_unfilled_reports', 'unfilled_reports', schema='drift_monitor', type_='primary')
    op.create_primary_key('pk_unfilled_reports', 'unfilled_reports', ['tenant_id', 'proposal_id', 'report_id'],
                          schema='drift_monitor')
    # The primary key's prefix (tenant_id, proposal_id) serves the approval's look-up now.
    op.drop_index('ix_unfilled_reports_proposal', table_name='unfilled_reports', schema='drift_monitor')


def downgrade() -> None:
    op.create_index('ix_unfilled_reports_proposal', 'unfilled_reports', ['tenant_id', 'proposal_id'], unique=False,
                    schema='drift_monitor')
    op.drop_constraint('pk_unfilled_reports', 'unfilled_reports', schema='drift_monitor', type_='primary')
    op.create_primary_key('pk_unfilled_reports', 'unfilled_reports', ['tenant_id', 'report_id'],
                          schema='drift_monitor')
