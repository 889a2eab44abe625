"""Tables of the explainer schema: one explanation (or one recorded failure) per proposal.

A row keeps what is needed to serve and audit the explanation: the published
`ExplanationCreated` payload, the dollar view of each contribution (the event carries shares),
the versions that produced it, and the correlation and causation of the proposal event.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from trimtab.shared.db import service_metadata
from trimtab.shared.outbox import infra_tables

SCHEMA = "explainer"
metadata = service_metadata(SCHEMA)
infra = infra_tables(metadata)

explanations = Table(
    "explanations",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("proposal_id", UUID(as_uuid=True), nullable=False),
    Column("explanation_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", String(200), nullable=False),
    Column("snapshot_hash", String(128), nullable=False),
    #: "created" (payload set, event published) or "failed" (error set, nothing published)
    Column("status", String(16), nullable=False),
    #: the ExplanationCreated payload as published
    Column("payload", JSONB, nullable=True),
    #: per symbol: price and contributions in dollars (the event carries shares only)
    Column("details", JSONB, nullable=True),
    Column("error_kind", String(64), nullable=True),
    Column("error", Text, nullable=True),
    #: the explainer's optimizer version and the one that made the proposal (replay checks)
    Column("optimizer_version", String(64), nullable=False),
    Column("proposal_optimizer_version", String(64), nullable=False),
    Column("resolves", Integer, nullable=True),
    Column("elapsed_ms", Numeric(12, 3), nullable=True),
    Column("correlation_id", UUID(as_uuid=True), nullable=False),
    #: the RebalanceProposed event explained, and the ExplanationCreated event made
    Column("causation_id", UUID(as_uuid=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "proposal_id"),
    UniqueConstraint("explanation_id", name="uq_explanations_explanation_id"),
)
#: The risk assessments of proposals (`RiskAssessed`, consumed by a consumer group of its own),
#: so that an explanation's narratives can quote the proposal's risk figures.
risk_assessments = Table(
    "risk_assessments",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("proposal_id", UUID(as_uuid=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "proposal_id"),
)

Index("ix_risk_assessments_received", risk_assessments.c.received_at)
Index("ix_explanations_tenant_account_created", explanations.c.tenant_id,
      explanations.c.account_id, explanations.c.created_at)
