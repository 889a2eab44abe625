"""Tables of the audit schema: `records`, the append-only, hash-chained log of every event; the
Merkle tree's stored interior nodes; and the signed checkpoints (tree heads).

`seq` is not a sequence or identity column: a sequence hands out numbers at insert time and never
takes them back, so a rolled-back insert would leave a gap and two concurrent inserts could commit
out of order. The handler computes `max(seq) + 1` under a table lock instead (see handlers.py).
The database refuses UPDATE, DELETE and TRUNCATE on all three with triggers created in the
migrations; they are not expressible in SQLAlchemy Core, so they live there.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    text,
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
    #: Set by the writer under the append lock (handlers.append: the service's clock, never before
    #: the previous record's), so recorded_at ascends with seq; in leaf format 2 it is inside the
    #: leaf hash. The default (clock_timestamp(), not now(): now() is the transaction's start,
    #: which may be before the previous record's commit) served format-1 writers.
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    #: Extracted from the payload so "everything about this proposal / account" is an index scan.
    Column("proposal_id", UUID(as_uuid=True), nullable=True),
    Column("account_id", String(64), nullable=True),
    #: The payload's household (its own `household_id`, else its account snapshot's); most events
    #: name only the account, so a household's records are these plus its accounts' (queries.py).
    Column("household_id", String(64), nullable=True),
    Column("payload_valid", Boolean, nullable=False),
    #: The canonical envelope bytes (`Envelope.to_bytes()`, which are the bytes on the bus for our
    #: producers' events), or for a foreign message the document holding its envelope as read and
    #: its exact bytes on the bus (domain/bus.py): exactly what the leaf hash covers.
    Column("envelope", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("chain_hash", LargeBinary, nullable=False),
    #: How leaf_hash is made (domain/chain.py): 1 the envelope alone (records before the tenth
    #: session), 2 recorded_at and the envelope.
    Column("leaf_format", SmallInteger, nullable=False, server_default=text("1")),
    CheckConstraint("seq >= 1", name="seq_positive"),
    CheckConstraint("leaf_format IN (1, 2)", name="leaf_format_known"),
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
Index("ix_records_tenant_household", records.c.tenant_id, records.c.household_id, records.c.seq,
      postgresql_where=records.c.household_id.is_not(None))

#: Complete subtree hashes of the RFC 6962 tree over the records' leaves (leaf index = seq - 1):
#: node (level, idx) covers leaves [idx * 2**level, (idx + 1) * 2**level). Level 0 repeats each
#: record's leaf hash on purpose: proofs are then built from this table alone, so a record whose
#: leaf hash was rewritten in `records` cannot vouch for itself, and the verifier can bisect to it.
#: Written in the same transaction as the record that completes them, so any proof or tree head
#: costs O(log n) point reads (domain/merkle.py).
tree_nodes = Table(
    "tree_nodes",
    metadata,
    Column("level", SmallInteger, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    PrimaryKeyConstraint("level", "idx"),
    CheckConstraint("level >= 0 AND level < 64 AND idx >= 0", name="address"),
    CheckConstraint("octet_length(hash) = 32", name="hash_length"),
)

#: Signed tree heads. The signature covers exactly `checkpoint.signed_message(...)` of these columns;
#: the same lines are appended to a file outside the database (AUDIT_CHECKPOINT_DIR).
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    #: SHA-256 of the raw Ed25519 public key, hex: which key signed (keys can be rotated).
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    CheckConstraint("tree_size >= 0", name="size_non_negative"),
    CheckConstraint("octet_length(root_hash) = 32 AND octet_length(signature) = 64", name="lengths"),
)
Index("ix_checkpoints_tree_size", checkpoints.c.tree_size, checkpoints.c.id)
