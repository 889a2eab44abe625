"""drift candidates count their failed decisions (a poison candidate is given up, not retried forever)

Revision ID: a9c5e3f7b214
Revises: d4a8e21c6f10
Create Date: 2026-11-25 01:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = 'a9c5e3f7b214'
down_revision = 'd4a8e21c6f10'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('drift_candidates', sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
                  schema='drift_monitor')
    op.add_column('drift_candidates', sa.Column('last_error', sa.Text(), nullable=True), schema='drift_monitor')


def downgrade() -> None:
    op.drop_column('drift_candidates', 'last_error', schema='drift_monitor')
    op.drop_column('drift_candidates', 'attempts', schema='drift_monitor')
