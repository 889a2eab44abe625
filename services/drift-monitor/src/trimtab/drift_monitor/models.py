"""Tables of the drift-monitor schema: the book (advisors, households, model portfolios and their
sleeves, accounts, tax lots), the latest prices seen on market.ticks.v1, the drifts raised, the
executions applied and the OMS's reports of orders that will never fill.

Every row carries its tenant, and every key starts with it. `accounts.revision` goes up on every
change to an account, its lots, its withdrawals, its model's targets or policy, or its drift state.
`changed_xid` (accounts, prices) is the id of the last transaction that wrote the row
(pg_current_xact_id()): the engine asks only for rows written by transactions that may not have
been visible to its previous sync (see cache.py), by one indexed range query.

Policies are JSONB objects of `rules.Policy` fields: the model's, then the account's overrides.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from trimtab.shared.db import service_metadata
from trimtab.shared.outbox import infra_tables

#: The writing transaction's id as a bigint (xid8 is 64-bit, never wraps).
CURRENT_XID = text("(pg_current_xact_id()::text)::bigint")

SCHEMA = "drift_monitor"
metadata = service_metadata(SCHEMA)
infra = infra_tables(metadata)

ID_LEN = 64
LOT_ID_LEN = 200  # bought lots take the OMS client_order_id, whose length we do not control
SYMBOL_LEN = 16

advisors = Table(
    "advisors",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("advisor_id", String(ID_LEN), nullable=False),
    Column("name", String(200), nullable=False),
    Column("email", String(254), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "advisor_id"),
)

households = Table(
    "households",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("household_id", String(ID_LEN), nullable=False),
    Column("name", String(200), nullable=True),
    Column("advisor_id", String(ID_LEN), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "household_id"),
    ForeignKeyConstraint(["tenant_id", "advisor_id"],
                         [f"{SCHEMA}.advisors.tenant_id", f"{SCHEMA}.advisors.advisor_id"]),
)
Index("ix_households_advisor", households.c.tenant_id, households.c.advisor_id)

model_portfolios = Table(
    "model_portfolios",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("model_id", String(ID_LEN), nullable=False),
    Column("name", String(200), nullable=False),
    Column("policy", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "model_id"),
)

model_targets = Table(
    "model_targets",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("model_id", String(ID_LEN), nullable=False),
    Column("symbol", String(SYMBOL_LEN), nullable=False),
    Column("weight", Numeric(12, 10), nullable=False),
    PrimaryKeyConstraint("tenant_id", "model_id", "symbol"),
    ForeignKeyConstraint(["tenant_id", "model_id"],
                         [f"{SCHEMA}.model_portfolios.tenant_id", f"{SCHEMA}.model_portfolios.model_id"],
                         ondelete="CASCADE"),
    CheckConstraint("weight >= 0 AND weight <= 1", name="weight_range"),
)

#: Sleeves: a model's weight in another model (expanded to security targets, domain/sleeves.py).
model_sleeves = Table(
    "model_sleeves",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("model_id", String(ID_LEN), nullable=False),
    Column("child_model_id", String(ID_LEN), nullable=False),
    Column("weight", Numeric(12, 10), nullable=False),
    PrimaryKeyConstraint("tenant_id", "model_id", "child_model_id"),
    ForeignKeyConstraint(["tenant_id", "model_id"],
                         [f"{SCHEMA}.model_portfolios.tenant_id", f"{SCHEMA}.model_portfolios.model_id"],
                         ondelete="CASCADE"),
    # A model in use as a sleeve cannot disappear under its parents.
    # Named: the naming convention (first column) would give both foreign keys the same name.
    ForeignKeyConstraint(["tenant_id", "child_model_id"],
                         [f"{SCHEMA}.model_portfolios.tenant_id", f"{SCHEMA}.model_portfolios.model_id"],
                         name="fk_model_sleeves_child_model"),
    CheckConstraint("weight > 0 AND weight <= 1", name="sleeve_weight_range"),
    CheckConstraint("model_id <> child_model_id", name="sleeve_not_self"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("account_id", String(ID_LEN), nullable=False),
    Column("household_id", String(ID_LEN), nullable=True),
    Column("advisor_id", String(ID_LEN), nullable=True),
    Column("account_type", String(16), nullable=False),
    Column("model_id", String(ID_LEN), nullable=False),
    Column("cash_usd", Numeric(20, 6), nullable=False),
    Column("cash_reserve_usd", Numeric(20, 6), nullable=False),
    #: Never trade (neither buy nor sell).
    Column("restricted", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("never_buy", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("esg_excluded", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    #: Replaces the model's targets for this account when set.
    Column("custom_targets", JSONB(none_as_null=True), nullable=True),
    #: Overrides of the model's policy, field by field.
    Column("policy", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("tax_short_term", Numeric(6, 4), nullable=False),
    Column("tax_long_term", Numeric(6, 4), nullable=False),
    Column("drift_state", String(16), nullable=False, server_default="armed"),
    Column("pending_drift_id", UUID(as_uuid=True), nullable=True),
    Column("pending_proposal_id", UUID(as_uuid=True), nullable=True),
    Column("rearmed_at", DateTime(timezone=True), nullable=True),
    Column("last_rebalanced_at", DateTime(timezone=True), nullable=True),
    Column("revision", BigInteger, nullable=False, server_default="1"),
    Column("changed_xid", BigInteger, nullable=False, server_default=CURRENT_XID),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "account_id"),
    ForeignKeyConstraint(["tenant_id", "model_id"],
                         [f"{SCHEMA}.model_portfolios.tenant_id", f"{SCHEMA}.model_portfolios.model_id"]),
    ForeignKeyConstraint(["tenant_id", "advisor_id"],
                         [f"{SCHEMA}.advisors.tenant_id", f"{SCHEMA}.advisors.advisor_id"]),
    CheckConstraint("account_type IN ('taxable', 'tax_deferred', 'tax_exempt')", name="account_type"),
    CheckConstraint("drift_state IN ('armed', 'pending', 'executing')", name="drift_state"),
    CheckConstraint("cash_reserve_usd >= 0", name="reserve_nonnegative"),
)
Index("ix_accounts_household", accounts.c.tenant_id, accounts.c.household_id)
Index("ix_accounts_model", accounts.c.tenant_id, accounts.c.model_id)
Index("ix_accounts_advisor", accounts.c.tenant_id, accounts.c.advisor_id, accounts.c.account_id)
Index("ix_accounts_changed", accounts.c.tenant_id, accounts.c.changed_xid)

lots = Table(
    "lots",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("account_id", String(ID_LEN), nullable=False),
    Column("lot_id", String(LOT_ID_LEN), nullable=False),
    Column("symbol", String(SYMBOL_LEN), nullable=False),
    Column("shares", Numeric(28, 8), nullable=False),
    Column("cost_basis_usd_per_share", Numeric(20, 8), nullable=False),
    Column("acquired_on", Date, nullable=False),
    PrimaryKeyConstraint("tenant_id", "account_id", "lot_id"),
    ForeignKeyConstraint(["tenant_id", "account_id"],
                         [f"{SCHEMA}.accounts.tenant_id", f"{SCHEMA}.accounts.account_id"],
                         ondelete="CASCADE"),
    CheckConstraint("shares > 0", name="shares_positive"),
    CheckConstraint("cost_basis_usd_per_share >= 0", name="basis_nonnegative"),
)

prices = Table(
    "prices",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("symbol", String(SYMBOL_LEN), nullable=False),
    Column("price_usd", Numeric(20, 8), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    # Defaults until securities' data reaches this service on an event of its own.
    Column("asset_class", String(32), nullable=False, server_default="equity"),
    Column("half_spread_bps", Numeric(10, 4), nullable=False, server_default="2"),
    Column("commission_usd_per_share", Numeric(10, 6), nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("changed_xid", BigInteger, nullable=False, server_default=CURRENT_XID),
    PrimaryKeyConstraint("tenant_id", "symbol"),
)
Index("ix_prices_changed", prices.c.tenant_id, prices.c.changed_xid)

withdrawals = Table(
    "withdrawals",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("withdrawal_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", String(ID_LEN), nullable=False),
    Column("amount_usd", Numeric(20, 6), nullable=False),
    Column("due_on", Date, nullable=False),
    #: open -> paid | cancelled
    Column("status", String(16), nullable=False, server_default="open"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("tenant_id", "withdrawal_id"),
    ForeignKeyConstraint(["tenant_id", "account_id"],
                         [f"{SCHEMA}.accounts.tenant_id", f"{SCHEMA}.accounts.account_id"],
                         ondelete="CASCADE"),
    CheckConstraint("amount_usd > 0", name="amount_positive"),
    CheckConstraint("status IN ('open', 'paid', 'cancelled')", name="status"),
)
Index("ix_withdrawals_account", withdrawals.c.tenant_id, withdrawals.c.account_id, withdrawals.c.status)

cash_flows = Table(
    "cash_flows",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("flow_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", String(ID_LEN), nullable=False),
    Column("amount_usd", Numeric(20, 6), nullable=False),
    Column("note", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "flow_id"),
)

drifts = Table(
    "drifts",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("drift_id", UUID(as_uuid=True), nullable=False),
    Column("account_id", String(ID_LEN), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("correlation_id", UUID(as_uuid=True), nullable=False),
    Column("total_value_usd", Numeric(20, 2), nullable=False),
    Column("max_abs_deviation", Numeric(14, 10), nullable=False),
    Column("rule", String(32), nullable=False),
    Column("breached", JSONB, nullable=False),
    #: pending -> approved | overridden | rejected | expired; approved | overridden -> executed
    #: (fills) | unfilled (the OMS will never fill its orders: trades.unfilled.v1)
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("proposal_id", UUID(as_uuid=True), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("tenant_id", "drift_id"),
)
Index("ix_drifts_account", drifts.c.tenant_id, drifts.c.account_id, drifts.c.detected_at)

#: Accounts a tick made drift candidates, waiting for the tick batch to settle (handlers.py).
#: Written in the tick's transaction, deleted by the transaction that decides them: a candidate
#: whose in-memory window was lost (a crash, a commit whose reply was lost) is still here, and
#: the sweep decides it.
drift_candidates = Table(
    "drift_candidates",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("account_id", String(ID_LEN), nullable=False),
    #: the newest tick time among the ticks that made it a candidate
    Column("tick_as_of", DateTime(timezone=True), nullable=False),
    #: the envelope of the tick that last made it a candidate (the drift's cause and trace)
    Column("cause", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    #: failed decisions so far, and the last one's error (`DriftHandlers._failed`)
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    PrimaryKeyConstraint("tenant_id", "account_id"),
)
Index("ix_drift_candidates_created", drift_candidates.c.created_at)

executions = Table(
    "executions",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("execution_id", String(200), nullable=False),
    Column("account_id", String(ID_LEN), nullable=False),
    Column("proposal_id", UUID(as_uuid=True), nullable=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("fills", Integer, nullable=False),
    Column("cash_delta_usd", Numeric(20, 6), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "execution_id"),
)
#: A drift's snapshot lists the executions applied to its account lately (firing.applied_executions).
Index("ix_executions_account_applied", executions.c.tenant_id, executions.c.account_id, executions.c.applied_at)

#: The OMS's reports that orders of an approval will never fill (trades.unfilled.v1), one row per
#: report: a report redelivered under a new event id counts once, and an approval that arrives
#: after its proposal's report (another topic) finds it here and does not wait for fills.
unfilled_reports = Table(
    "unfilled_reports",
    metadata,
    Column("tenant_id", String(ID_LEN), nullable=False),
    Column("report_id", String(128), nullable=False),
    Column("account_id", String(ID_LEN), nullable=False),
    Column("proposal_id", UUID(as_uuid=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    #: orders the report names
    Column("orders", Integer, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # A report id is the OMS's, unique per proposal (`OrdersUnfilled.report_id`): an OMS that
    # numbers reports per account or per day reuses ids across proposals.
    PrimaryKeyConstraint("tenant_id", "proposal_id", "report_id"),
)
