"""records leaf_format: recorded_at inside the leaf hash

Each record says how its leaf hash is made (domain/chain.py, LEAF_FORMAT_*): 1, the envelope
alone, for every record written before this revision (the column's default, so existing rows and
a writer of the previous release keep format 1, with recorded_at from clock_timestamp()); 2,
recorded_at and the envelope, which this release's writer sets, together with recorded_at itself
(taken under the append lock, never before the previous record's). Format 2 puts the time a record
was recorded under the chain, the Merkle tree and every signed checkpoint: before, rewriting
recorded_at was invisible to both verifiers.

Adding a column with a constant default rewrites no row and fires no row trigger, so the
append-only trigger stays as it is and nothing hashed changes.

Revision ID: f1a7c3e5b902
Revises: d36bc16ab2ab
Create Date: 2026-11-25 09:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = 'f1a7c3e5b902'
down_revision = 'd36bc16ab2ab'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("records", sa.Column("leaf_format", sa.SmallInteger(), nullable=False, server_default="1"),
                  schema="audit")
    op.create_check_constraint(op.f("ck_records_leaf_format_known"), "records", "leaf_format IN (1, 2)", schema="audit")


def downgrade() -> None:
    # Records of format 2 cannot be verified by a release that does not know the format; the
    # column goes only when there are none.
    n = op.get_bind().execute(sa.text("SELECT count(*) FROM audit.records WHERE leaf_format <> 1")).scalar_one()
    if n:
        raise RuntimeError(f"{n} records have leaf format 2 (recorded_at inside the hash): "
                           "a downgrade would make them unverifiable")
    op.drop_constraint(op.f("ck_records_leaf_format_known"), "records", schema="audit")
    op.drop_column("records", "leaf_format", schema="audit")
