"""Tables of the risk schema: daily closes, risk-model metadata, proposal assessments, client
risk profiles, user-defined scenarios, the watched portfolios of accounts and the state of their
early-warning conditions.

Every row carries its tenant: each firm's prices, model and assessments are its own. The closes
are the model's only input (the covariance itself lives in memory and is rebuilt from them at
start-up); `risk_models` records which model an assessment used.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
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
    #: risk scores (1..99) before and after, and the client's tolerance at the time (if set)
    Column("pre_score", SmallInteger, nullable=True),
    Column("post_score", SmallInteger, nullable=True),
    Column("tolerance_score", SmallInteger, nullable=True),
    Column("target_weights", JSONB, nullable=True),
    #: every measure before and after (the API's `RiskMeasuresOut`, as JSON)
    Column("measures", JSONB, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "proposal_id"),
)

risk_profiles = Table(
    "risk_profiles",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("account_id", String(200), nullable=False),
    #: the risk score (1..99) the client accepts: see docs/risk.md for its meaning
    Column("tolerance_score", SmallInteger, nullable=False),
    #: optional per-account limits replacing the service's defaults
    Column("concentration_limit", Numeric(6, 4), nullable=True),
    Column("drawdown_limit_pct", Numeric(8, 4), nullable=True),
    Column("questionnaire", JSONB, nullable=True),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "account_id"),
    CheckConstraint("tolerance_score BETWEEN 1 AND 99", name="tolerance_score_range"),
)

scenarios = Table(
    "scenarios",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("scenario_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    #: start/end for historical, shocks and propagate for the others
    Column("spec", JSONB, nullable=False),
    Column("description", String(1000), nullable=False, server_default=""),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "scenario_id"),
    UniqueConstraint("tenant_id", "name", name="scenarios_name_unique"),
)

alert_states = Table(
    "alert_states",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("account_id", String(200), nullable=False),
    #: e.g. "concentration", "above_tolerance", "vol_regime", "drawdown"
    Column("condition", String(64), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("values", JSONB, nullable=False),
    Column("alert_id", UUID(as_uuid=True), nullable=True),
    Column("raised_at", DateTime(timezone=True), nullable=True),
    Column("cleared_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("tenant_id", "account_id", "condition"),
)

watched_portfolios = Table(
    "watched_portfolios",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("account_id", String(200), nullable=False),
    #: the proposal whose snapshot set it, and that snapshot's time (a late older one is ignored)
    Column("proposal_id", UUID(as_uuid=True), nullable=False),
    Column("snapshot_as_of", DateTime(timezone=True), nullable=False),
    #: {symbol: shares} (decimal strings) and the snapshot's prices, for symbols without closes
    Column("units", JSONB, nullable=False),
    Column("ref_prices_usd", JSONB, nullable=False),
    Column("cash_usd", Numeric(20, 6), nullable=False),
    #: the last complete day of closes when it became known: the running peak starts there
    Column("since_day", Date, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "account_id"),
)


#: `created_by` / `updated_by` hold who changed a row: the token's subject, cut to the column
RECORDED_BY_MAX = 200


def recorded_by(subject: str) -> str:
    """The subject as the `*_by` columns (String(200)) hold it: at most 200 characters (the
    shared auth refuses longer subjects today; this keeps an insert from failing if it does not)."""
    return subject[:RECORDED_BY_MAX]
