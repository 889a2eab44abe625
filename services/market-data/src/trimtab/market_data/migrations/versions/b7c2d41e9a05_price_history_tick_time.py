"""price_history keeps the time of the tick that set each day's price

A later batch carrying an older tick of the same day (a late, out-of-order delivery) must not
replace the day's newer price: the upsert compares `tick_as_of`. Rows written before this
revision have none (NULL): the next tick of that day replaces them, as before.

Revision ID: b7c2d41e9a05
Revises: 9184cb613187
Create Date: 2026-11-24 23:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = 'b7c2d41e9a05'
down_revision = '9184cb613187'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('price_history', sa.Column('tick_as_of', sa.DateTime(timezone=True), nullable=True),
                  schema='market_data')


def downgrade() -> None:
    op.drop_column('price_history', 'tick_as_of', schema='market_data')
