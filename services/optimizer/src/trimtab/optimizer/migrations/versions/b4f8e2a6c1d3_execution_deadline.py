"""the approvals' time in force: execution_window_s on a proposal, execute_by on its approval

`execution_window_s` is the optimizer's PROPOSAL_EXECUTION_WINDOW_S when the proposal was stored
(null: none); an approval then gets `execute_by = decided_at + window`, published on
TradesApproved as the orders' time in force. The sweep ends an approval still awaiting execution
past execute_by plus the grace (its orders declared expired). Rows of before have neither, so no
approval made before is ended this way: its OMS was never told a deadline.

Revision ID: b4f8e2a6c1d3
Revises: 8c4d1e0b7f25
Create Date: 2026-11-25 09:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = 'b4f8e2a6c1d3'
down_revision = '8c4d1e0b7f25'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('proposals', sa.Column('execution_window_s', sa.Float(), nullable=True), schema='optimizer')
    op.add_column('proposals', sa.Column('execute_by', sa.DateTime(timezone=True), nullable=True), schema='optimizer')
    op.create_index('ix_proposals_execute_by', 'proposals', ['execute_by'], unique=False, schema='optimizer',
                    postgresql_where=sa.text("state IN ('approved', 'overridden') AND execute_by IS NOT NULL"))


def downgrade() -> None:
    op.drop_index('ix_proposals_execute_by', table_name='proposals', schema='optimizer',
                  postgresql_where=sa.text("state IN ('approved', 'overridden') AND execute_by IS NOT NULL"))
    op.drop_column('proposals', 'execute_by', schema='optimizer')
    op.drop_column('proposals', 'execution_window_s', schema='optimizer')
