"""Tables of the optimizer schema: proposals with their lifecycle, API idempotency keys, the
households' executed trades (the wash-sale rule's 30-day memory), and the latest price per symbol
(price-move expiry).

A proposal row keeps everything needed to replay and audit it: the input snapshot and its hash,
the published `RebalanceProposed` payload, the risk assessment and explanation as they arrived,
the decision (who, when, why), and the correlation id and event id of the proposal, so that
decisions taken later through the API continue the same chain.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from trimtab.shared.db import service_metadata
from trimtab.shared.outbox import infra_tables

SCHEMA = "optimizer"
metadata = service_metadata(SCHEMA)
infra = infra_tables(metadata)

proposals = Table(
    "proposals",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("proposal_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("drift_id", UUID(as_uuid=True), nullable=True),
    #: The account's advisor as the drift named it (null: unknown): the advisor's queue.
    Column("advisor_id", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("automation", String(32), nullable=False),
    Column("snapshot", JSONB, nullable=False),
    Column("snapshot_hash", String(64), nullable=True),
    #: The snapshot's `as_of` (a copy out of the JSON): only prices newer than this can expire
    #: the proposal, and the tick query compares it without reading the whole snapshot.
    Column("snapshot_as_of", DateTime(timezone=True), nullable=False),
    Column("orders", JSONB, nullable=False),
    Column("order_count", Integer, nullable=False),
    #: The RebalanceProposed payload as published (null for a failed solve: nothing was proposed).
    Column("payload", JSONB, nullable=True),
    Column("risk", JSONB, nullable=True),
    Column("explanation", JSONB, nullable=True),
    #: Fills reported by the OMS, in arrival order.
    Column("fills", JSONB, nullable=False, server_default="[]"),
    #: Orders the OMS reported it will never fill (`OrdersUnfilled`), each with its report id.
    Column("unfilled", JSONB, nullable=False, server_default="[]"),
    Column("failure_kind", String(64), nullable=True),
    Column("failure_constraint", String(64), nullable=True),
    Column("decision", String(16), nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("decision_automatic", Boolean, nullable=True),
    Column("decision_reason", Text, nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    #: PROPOSAL_EXECUTION_WINDOW_S when the proposal was stored (null: no window). An approval
    #: sets `execute_by` = decided_at + this: the orders' time in force, on TradesApproved.
    Column("execution_window_s", Float, nullable=True),
    Column("execute_by", DateTime(timezone=True), nullable=True),
    Column("correlation_id", UUID(as_uuid=True), nullable=False),
    #: Event id of the RebalanceProposed (or, for a failed solve, of the DriftDetected): the
    #: causation of decisions taken later through the API or by the TTL.
    Column("proposed_event_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "proposal_id"),
    # One proposal per drift: a drift event re-sent under a new event id proposes nothing new.
    UniqueConstraint("tenant_id", "drift_id", name="uq_proposals_tenant_drift"),
)
Index("ix_proposals_tenant_account_created", proposals.c.tenant_id, proposals.c.account_id,
      proposals.c.created_at)
Index("ix_proposals_tenant_advisor_state", proposals.c.tenant_id, proposals.c.advisor_id,
      proposals.c.state, proposals.c.created_at)
# The TTL sweep scans open proposals only; keep that scan small however many are decided.
Index("ix_proposals_open_created", proposals.c.created_at,
      postgresql_where=proposals.c.state.in_(["proposed", "assessed", "explained", "ready"]))
#: The open states (domain.lifecycle.OPEN), as the partial indexes spell them. A query must
#: repeat them as literals (not bound parameters) for the planner to use those indexes.
OPEN_STATES = ("proposed", "assessed", "explained", "ready")
#: The symbols of a proposal's orders as a JSON array (`["VTI", "BND"]`): a tick finds the open
#: proposals trading its symbol with `ORDER_SYMBOLS ?| array[...]` on the GIN index below.
ORDER_SYMBOLS = func.jsonb_path_query_array(proposals.c.orders, text("'$[*].symbol'::jsonpath"))
Index("ix_proposals_open_order_symbols", ORDER_SYMBOLS, postgresql_using="gin",
      postgresql_where=proposals.c.state.in_(list(OPEN_STATES)))

# Approvals whose orders are not all filled or reported unfilled (proposals.AWAITING_EXECUTION):
# the sweep counts them for the awaiting-execution gauges.
Index("ix_proposals_awaiting_execution", proposals.c.tenant_id, proposals.c.decided_at,
      postgresql_where=proposals.c.state.in_(["approved", "overridden"]))

# Approvals with a time in force: the sweep ends those past it plus the grace (proposals.end_overdue).
Index("ix_proposals_execute_by", proposals.c.execute_by,
      postgresql_where=and_(proposals.c.state.in_(["approved", "overridden"]), proposals.c.execute_by.isnot(None)))

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    #: SHA-256 of method, path and canonical body: a key reused for another request is refused.
    Column("request_hash", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "key"),
)

#: Every fill the optimizer learns of (`TradesExecuted`), by household: the wash-sale rule looks
#: 30 days back across every account of the household, so each new proposal's context carries the
#: household's recent trades from here. One row per fill; a redelivered execution adds nothing.
household_trades = Table(
    "household_trades",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("execution_id", String(200), nullable=False),
    #: The fill's position in its execution report.
    Column("seq", Integer, nullable=False),
    #: Null when the account's household is not known (the account is then its own household).
    Column("household_id", String(64), nullable=True),
    Column("proposal_id", UUID(as_uuid=True), nullable=True),
    Column("symbol", String(16), nullable=False),
    Column("side", String(4), nullable=False),
    Column("executed_at", DateTime(timezone=True), nullable=False),
    #: executed_at's date in UTC: the trade date the wash-sale window counts in.
    Column("trade_date", Date, nullable=False),
    #: A sell of at least one lot below its cost basis (only those start a wash-sale window).
    Column("realized_loss", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "account_id", "execution_id", "seq"),
)
Index("ix_household_trades_household_date", household_trades.c.tenant_id, household_trades.c.household_id,
      household_trades.c.trade_date)
Index("ix_household_trades_account_date", household_trades.c.tenant_id, household_trades.c.account_id,
      household_trades.c.trade_date)

#: The newest price the optimizer has seen per symbol (`PriceTicked`), to expire open proposals
#: whose prices moved too far since their snapshot. An older tick never replaces a newer price.
latest_prices = Table(
    "latest_prices",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("symbol", String(16), nullable=False),
    Column("price_usd", Numeric(20, 8), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "symbol"),
)

#: Reference data per security (reference.py): market-impact inputs, wash-sale and substitute
#: groups, tax drag, as `SecurityContext` in the event contract (decimal values kept exactly as
#: given; null: not known). Each drift's context gets the rows of its snapshot's symbols.
security_reference = Table(
    "security_reference",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("symbol", String(16), nullable=False),
    #: Daily return volatility, a fraction (0.02 = 2 % a day).
    Column("sigma_daily", Numeric, nullable=True),
    #: Average daily traded value, US dollars.
    Column("adv_usd", Numeric, nullable=True),
    Column("wash_group", String(64), nullable=True),
    Column("substitute_group", String(64), nullable=True),
    #: Yearly tax cost of holding one dollar in a taxable account, a fraction a year.
    Column("tax_drag", Numeric, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "symbol"),
)

#: The tenant's current factor risk model (`FactorModelContext` JSON, as given): a drift's
#: context gets its rows of the snapshot's symbols when the drift brings no model of its own.
risk_models = Table(
    "risk_models",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("model", JSONB, nullable=False),
    #: New on every PUT: the key of the parsed model a process keeps (reference.py), so each
    #: event reads only this, never the (possibly megabytes of) JSON, while the model is unchanged.
    Column("version", UUID(as_uuid=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id"),
)
