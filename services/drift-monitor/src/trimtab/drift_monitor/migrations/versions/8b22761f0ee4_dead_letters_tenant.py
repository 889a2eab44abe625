"""dead letters record the event's tenant: a parked key is parked for that tenant only

Revision ID: 8b22761f0ee4
Revises: a9c5e3f7b214
Create Date: 2026-11-25 03:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '8b22761f0ee4'
down_revision = 'a9c5e3f7b214'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('dead_letters', sa.Column('tenant_id', sa.String(length=64), nullable=True), schema='drift_monitor')


def downgrade() -> None:
    op.drop_column('dead_letters', 'tenant_id', schema='drift_monitor')
