"""dead letters record the event's tenant: a parked key is parked for that tenant only

Revision ID: 805e069c727a
Revises: dbc9368bb2a7
Create Date: 2026-11-25 03:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '805e069c727a'
down_revision = 'dbc9368bb2a7'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('dead_letters', sa.Column('tenant_id', sa.String(length=64), nullable=True), schema='risk')


def downgrade() -> None:
    op.drop_column('dead_letters', 'tenant_id', schema='risk')
