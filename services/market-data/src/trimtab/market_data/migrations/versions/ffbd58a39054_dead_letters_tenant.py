"""dead letters record the event's tenant: a parked key is parked for that tenant only

Revision ID: ffbd58a39054
Revises: b7c2d41e9a05
Create Date: 2026-11-25 03:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = 'ffbd58a39054'
down_revision = 'b7c2d41e9a05'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('dead_letters', sa.Column('tenant_id', sa.String(length=64), nullable=True), schema='market_data')


def downgrade() -> None:
    op.drop_column('dead_letters', 'tenant_id', schema='market_data')
