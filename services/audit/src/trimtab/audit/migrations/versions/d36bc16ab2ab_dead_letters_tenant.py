"""dead letters record the event's tenant: a parked key is parked for that tenant only

Revision ID: d36bc16ab2ab
Revises: cab4e73feb61
Create Date: 2026-11-25 03:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = 'd36bc16ab2ab'
down_revision = 'cab4e73feb61'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('dead_letters', sa.Column('tenant_id', sa.String(length=64), nullable=True), schema='audit')


def downgrade() -> None:
    op.drop_column('dead_letters', 'tenant_id', schema='audit')
