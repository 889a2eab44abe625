"""dead letters record the event's tenant: a parked key is parked for that tenant only

Revision ID: 6ef2fe1259db
Revises: b4d8f2a6c1e3
Create Date: 2026-11-25 03:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '6ef2fe1259db'
down_revision = 'b4d8f2a6c1e3'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('dead_letters', sa.Column('tenant_id', sa.String(length=64), nullable=True), schema='explainer')


def downgrade() -> None:
    op.drop_column('dead_letters', 'tenant_id', schema='explainer')
