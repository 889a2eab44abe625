"""proposals keep the OMS's reports of orders it will never fill (OrdersUnfilled)

Revision ID: 5e2b7c1d9a04
Revises: 1eefc930d27a
Create Date: 2026-11-25 07:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '5e2b7c1d9a04'
down_revision = '1eefc930d27a'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('proposals', sa.Column('unfilled', postgresql.JSONB(astext_type=sa.Text()),
                                         server_default='[]', nullable=False), schema='optimizer')


def downgrade() -> None:
    op.drop_column('proposals', 'unfilled', schema='optimizer')
