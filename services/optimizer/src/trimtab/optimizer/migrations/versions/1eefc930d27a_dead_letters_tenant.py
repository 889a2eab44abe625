"""dead letters record the event's tenant: a parked key is parked for that tenant only

Revision ID: 1eefc930d27a
Revises: 7be1d2c4a9f3
Create Date: 2026-11-25 03:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '1eefc930d27a'
down_revision = '7be1d2c4a9f3'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('dead_letters', sa.Column('tenant_id', sa.String(length=64), nullable=True), schema='optimizer')


def downgrade() -> None:
    op.drop_column('dead_letters', 'tenant_id', schema='optimizer')
