"""Tables of the audit schema: `records`, the append-only, hash-chained log of every event.

`seq` is not a sequence or identity column: a sequence hands out numbers at insert time and never
takes them back, so a rolled-back insert would leave a gap and two concurrent inserts could commit
out of order. The handler computes `max(seq) + 1` under a table lock instead (see handlers.py).
The database refuses UPDATE, DELETE and TRUNCATE on `records` with triggers created in the
migration; they are not expressible in SQLAlchemy Core, so they live there.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    LargeBinary,
    String,
    Table,
)
from sqlalchemy.dialects.postgresql import UUID
from trimtab.shared.db import service_metadata
from trimtab.shared.outbox import infra_tables

SCHEMA = "audit"
metadata = service_metadata(SCHEMA)
infra = infra_tables(metadata)

records = Table(
    "records",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("topic", String(200), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("correlation_id", UUID(as_uuid=True), nullable=False),
    Column("causation_id", UUID(as_uuid=True), nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    #: Extracted from the payload so "everything about this proposal / account" is an index scan.
    Column("proposal_id", UUID(as_uuid=True), nullable=True),
    Column("account_id", String(64), nullable=True),
    Column("payload_valid", Boolean, nullable=False),
    #: The canonical envelope bytes (`Envelope.to_bytes()`): exactly what the leaf hash covers.
    Column("envelope", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("chain_hash", LargeBinary, nullable=False),
    CheckConstraint("seq >= 1", name="seq_positive"),
    CheckConstraint(
        "octet_length(leaf_hash) = 32 AND octet_length(prev_hash) = 32 AND octet_length(chain_hash) = 32",
        name="hash_lengths",
    ),
)
# Every API query is "one tenant, in seq order", narrowed by one of these.
Index("ix_records_tenant_seq", records.c.tenant_id, records.c.seq)
Index("ix_records_tenant_correlation", records.c.tenant_id, records.c.correlation_id, records.c.seq)
Index("ix_records_tenant_event_type", records.c.tenant_id, records.c.event_type, records.c.seq)
Index("ix_records_tenant_proposal", records.c.tenant_id, records.c.proposal_id, records.c.seq,
      postgresql_where=records.c.proposal_id.is_not(None))
Index("ix_records_tenant_account", records.c.tenant_id, records.c.account_id, records.c.seq,
      postgresql_where=records.c.account_id.is_not(None))
