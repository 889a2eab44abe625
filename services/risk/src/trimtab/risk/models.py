"""Tables of the risk schema: daily closes, risk-model metadata, and proposal assessments.

Every row carries its tenant: each firm's prices, model and assessments are its own. The closes
are the model's only input (the covariance itself lives in memory and is rebuilt from them at
start-up); `risk_models` records which model an assessment used.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from trimtab.shared.db import service_metadata
from trimtab.shared.outbox import infra_tables

SCHEMA = "risk"
metadata = service_metadata(SCHEMA)
infra = infra_tables(metadata)

daily_closes = Table(
    "daily_closes",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("day", Date, nullable=False),
    Column("close_usd", Numeric(18, 6), nullable=False),
    #: the tick that set this close: a later tick of the same day replaces it, an earlier not
    Column("as_of", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "symbol", "day"),
)

risk_models = Table(
    "risk_models",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    #: counts changes of the model's inputs (a completed day with returns, or a correction)
    Column("version", BigInteger, nullable=False),
    Column("decay", Numeric(8, 6), nullable=False),
    Column("halflife_days", Numeric(12, 4), nullable=False),
    Column("window_start", Date, nullable=True),
    Column("window_end", Date, nullable=True),
    Column("observations", Integer, nullable=False),
    Column("symbols", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id"),
)

assessments = Table(
    "assessments",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("proposal_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", String(200), nullable=False),
    Column("pre_vol_annual_pct", Numeric(12, 4), nullable=False),
    Column("post_vol_annual_pct", Numeric(12, 4), nullable=False),
    Column("model_name", String(64), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("window_start", Date, nullable=True),
    Column("window_end", Date, nullable=True),
    Column("observations", Integer, nullable=False),
    Column("halflife_days", Numeric(12, 4), nullable=True),
    Column("flags", JSONB, nullable=False),
    #: the inputs, so the assessment can be replayed against the same model version
    Column("pre_weights", JSONB, nullable=False),
    Column("post_weights", JSONB, nullable=False),
    Column("correlation_id", UUID(as_uuid=True), nullable=False),
    #: the RebalanceProposed event that caused it, the RiskAssessed / RiskAlerted events it made
    Column("causation_id", UUID(as_uuid=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("alert_id", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "proposal_id"),
)
