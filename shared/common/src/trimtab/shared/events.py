"""The event contract: one pydantic payload model per event type, and the topic each lives on.

This module is the published contract with every consumer, the OMS included: `jsonschema.py`
renders it as JSON Schema and AsyncAPI. Money and quantities are Decimal strings on the wire;
weights are fractions of account value (0.25 = 25 %); names carry their unit.
A breaking change is a new topic version (`...v2`), never an edit here.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .money import DecimalStr

#: The optimizer derives a proposal's id from the drift that caused it (one drift, one proposal),
#: so the drift monitor can tell a decision about its pending drift from one about an older one.
PROPOSAL_NAMESPACE = uuid.UUID("0c9b6f0e-3a57-5d0c-8f1e-6f7074696d7a")


def proposal_id_for(tenant_id: str, drift_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(PROPOSAL_NAMESPACE, f"{tenant_id}/{drift_id}")

AccountType = Literal["taxable", "tax_deferred", "tax_exempt"]
AutomationLevel = Literal["propose_only", "advisor_approval", "automatic"]
Side = Literal["buy", "sell"]
RebalanceMode = Literal["both", "buy_only", "sell_only"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- market.ticks.v1


class PriceTicked(_Model):
    """A new price for one security (key: symbol)."""

    symbol: str = Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")
    price_usd: DecimalStr = Field(gt=0)
    as_of: datetime
    source: str = Field(default="api", max_length=32)


# ---------------------------------------------------------------- portfolio.drift.v1


class LotSnapshot(_Model):
    lot_id: str
    shares: DecimalStr = Field(gt=0)
    cost_basis_usd_per_share: DecimalStr = Field(ge=0)
    acquired_on: date


class PositionSnapshot(_Model):
    symbol: str
    shares: DecimalStr = Field(ge=0)
    lots: list[LotSnapshot] = Field(default_factory=list)


class SecuritySnapshot(_Model):
    """What the optimizer needs to know of a security at the snapshot's time."""

    symbol: str
    price_usd: DecimalStr = Field(gt=0)
    asset_class: str = "equity"
    half_spread_bps: DecimalStr = Decimal("2")
    commission_usd_per_share: DecimalStr = Decimal("0")
    #: Optional: when `price_usd` was quoted (the snapshot's `as_of` is the triggering tick's
    #: time; each symbol's price may be a little older or newer). The optimizer's price-move
    #: expiry compares later quotes with it. Left out of the JSON when absent.
    price_as_of: datetime | None = Field(default=None, exclude_if=lambda v: v is None)


class DriftPolicy(_Model):
    #: The band (fraction of the account's value) a security may drift from its target.
    band_abs: DecimalStr = Field(default=Decimal("0.05"), gt=0, le=1)
    automation: AutomationLevel = "advisor_approval"
    max_turnover: DecimalStr | None = Field(default=None, gt=0)
    #: Optional: a band per symbol where it differs from `band_abs` (relative bands: 20 % of a
    #: 50 % target is 10 %, of a 5 % target 1 %); left out of the JSON when absent.
    band_by_symbol: dict[str, Annotated[DecimalStr, Field(gt=0, le=1)]] | None = Field(
        default=None, exclude_if=lambda v: v is None)


class TaxRates(_Model):
    short_term: DecimalStr = Decimal("0.37")
    long_term: DecimalStr = Decimal("0.20")


#: How far back `AccountSnapshot.applied_executions` lists executions; the optimizer compares the
#: executions it recorded in a shorter window (`EXECUTIONS_CHECK_DAYS`), so that clocks and lag
#: between the two services cannot make an execution fall between the windows. A producer with
#: more than `MAX_APPLIED_EXECUTIONS` in the window states None (not checked) rather than fail.
EXECUTIONS_WINDOW_DAYS = 8
EXECUTIONS_CHECK_DAYS = 7
MAX_APPLIED_EXECUTIONS = 5000


class AccountSnapshot(_Model):
    """Everything the optimizer, risk and explainer need about one account, as of one moment."""

    account_id: str
    household_id: str | None = None
    account_type: AccountType = "taxable"
    model_id: str | None = None
    cash_usd: DecimalStr
    cash_reserve_usd: DecimalStr = Decimal("0")
    positions: list[PositionSnapshot]
    #: Target weights by symbol (fractions of account value, summing to at most 1).
    targets: dict[str, DecimalStr]
    securities: list[SecuritySnapshot]
    #: Never traded (compliance restriction list): neither bought nor sold.
    restricted: list[str] = Field(default_factory=list)
    policy: DriftPolicy = DriftPolicy()
    tax_rates: TaxRates = TaxRates()
    as_of: datetime
    # The screens below are optional and left out of the JSON when empty, so snapshots without
    # them serialize (and hash) exactly as before the fields existed.
    #: Never bought (the client's or advisor's "never buy" list); may be sold. Their target in
    #: `targets` is already 0.
    never_buy: list[str] = Field(default_factory=list, max_length=500, exclude_if=lambda v: not v)
    #: Excluded by the client's ESG screen: never bought, and their target in `targets` is 0
    #: (the model's weight spread over the rest).
    esg_excluded: list[str] = Field(default_factory=list, max_length=500, exclude_if=lambda v: not v)
    #: The targets without the ESG screen (only with `esg_excluded`): what the account would hold
    #: if the screen were lifted. The explainer uses it to say what the screen changed.
    targets_before_esg: dict[str, DecimalStr] | None = Field(default=None, exclude_if=lambda v: v is None)
    #: The OMS executions (`TradesExecuted.execution_id`) applied to this book in the last
    #: `EXECUTIONS_WINDOW_DAYS` days, as the drift monitor knows them: the optimizer refuses to
    #: solve a snapshot missing one it already recorded for the account (a book without those
    #: fills would sell lots already sold or buy twice). None (left out): not stated, not checked.
    applied_executions: list[str] | None = Field(default=None, max_length=MAX_APPLIED_EXECUTIONS,
                                                 exclude_if=lambda v: v is None)



# The optimizer's context: what a rebalance needs beyond the snapshot. It mirrors
# `trimtab.rebalance.RebalanceContext.to_json()` field for field (`RebalanceContext.from_json`
# reads this model's JSON as is). Money and fractions are decimal strings like everywhere else;
# only the factor model's matrix is JSON numbers (risk-model figures, not money, and a
# 500 x 15 matrix of strings would triple the event). Every field has the empty context's value
# as its default, so `{}` is the empty context.

_Finite = Annotated[float, Field(allow_inf_nan=False)]


class SecurityContext(_Model):
    """Per security: market-impact inputs and wash-sale / substitute groups."""

    #: Daily return volatility (0.02 = 2 % a day).
    sigma_daily: DecimalStr | None = Field(default=None, ge=0)
    #: Average daily traded value, dollars.
    adv_usd: DecimalStr | None = Field(default=None, gt=0)
    #: Substantially identical securities share a wash group (a loss in one and a buy of any
    #: other within 30 days is a wash sale); absent: the security is its own group.
    wash_group: str | None = Field(default=None, min_length=1, max_length=64)
    #: Securities that can stand in for each other's exposure (a harvested loss is replaced from it).
    substitute_group: str | None = Field(default=None, min_length=1, max_length=64)
    #: Household mode (asset location): the yearly tax cost of holding one dollar of it in a
    #: taxable account (0.01665 = 1.665 % a year); absent: derived from its asset class.
    tax_drag: DecimalStr | None = None


class FactorModelContext(_Model):
    """A factor risk model: one row of loadings per symbol (k columns) and specific variances."""

    name: str = Field(default="factor-model", max_length=100)
    symbols: list[str] = Field(min_length=1)
    loadings: list[list[_Finite]]
    specific_var: list[Annotated[_Finite, Field(ge=0)]]

    @model_validator(mode="after")
    def _shapes(self) -> FactorModelContext:
        n = len(self.symbols)
        if len(self.loadings) != n or len(self.specific_var) != n:
            raise ValueError("factor model: one row of loadings and one specific variance per symbol")
        if len({len(row) for row in self.loadings}) > 1:
            raise ValueError("factor model: every row of loadings has the same number of factors")
        return self


class HouseholdTrade(_Model):
    """A trade of the wash-sale window (30 days) in any account of the household."""

    account_id: str = Field(min_length=1, max_length=64)
    symbol: str = Field(min_length=1, max_length=16)
    side: Side
    trade_date: date
    #: For sells: the sale realized a loss (only loss sales start a wash-sale window).
    realized_loss: bool = False


class OptimizerContext(_Model):
    """What the optimizer uses beyond the snapshot (the JSON of `RebalanceContext`)."""

    securities: dict[str, SecurityContext] = Field(default_factory=dict)
    factor_model: FactorModelContext | None = None
    recent_trades: list[HouseholdTrade] = Field(default_factory=list, max_length=10_000)
    #: Net tax (gains minus the benefit of losses) the rest of the year may still realize, dollars.
    tax_budget_usd: DecimalStr | None = None
    #: Hard cap on net realized gains (gains minus losses), dollars.
    gain_cap_usd: DecimalStr | None = Field(default=None, ge=0)
    mode: RebalanceMode = "both"
    #: Cash to raise on top of the snapshot's `cash_reserve_usd`, dollars.
    withdrawal_usd: DecimalStr = Field(default=Decimal("0"), ge=0)
    #: A loss lot is harvestable when its loss is at least this many dollars ...
    harvest_min_loss_usd: DecimalStr = Field(default=Decimal("0"), ge=0)
    #: ... and at least this fraction of its basis (0.05 = 5 %).
    harvest_min_loss_pct: DecimalStr = Field(default=Decimal("0"), ge=0, le=1)
    #: Market-impact coefficient b in b sigma sqrt(V0 / ADV) |t|^(3/2).
    impact_b: DecimalStr = Field(default=Decimal("1"), ge=0)


class DriftDetected(_Model):
    drift_id: uuid.UUID
    account_id: str
    snapshot: AccountSnapshot
    total_value_usd: DecimalStr
    weights: dict[str, DecimalStr]
    deviations: dict[str, DecimalStr]
    max_abs_deviation: DecimalStr
    rule: str
    breached: list[str]
    #: What the producer knows beyond the snapshot (mandate: tax budget, mode, ...). Optional;
    #: the optimizer adds the household's recent trades it knows of before it solves.
    context: OptimizerContext | None = None
    #: The account's advisor (who decides its proposals); optional, left out when unknown.
    advisor_id: str | None = Field(default=None, max_length=64, exclude_if=lambda v: v is None)


# ---------------------------------------------------------------- rebalance.proposed.v1


class LotInstruction(_Model):
    lot_id: str
    shares: DecimalStr = Field(gt=0)


class Order(_Model):
    symbol: str
    side: Side
    shares: DecimalStr = Field(gt=0)
    est_price_usd: DecimalStr
    est_notional_usd: DecimalStr
    est_cost_usd: DecimalStr = Decimal("0")
    lots: list[LotInstruction] = Field(default_factory=list)
    #: Set on trades.approved.v1: the OMS's idempotency key for this order.
    client_order_id: str | None = None


class SolverInfo(_Model):
    solver: str
    status: str
    solve_ms: DecimalStr
    cvxpy_version: str
    optimizer_version: str
    #: The BLAS kernel the optimizer's numpy ran ("Katmai": OpenBLAS's Prescott table, the pinned
    #: one; trimtab.shared.numeric): a replay is bit-identical only on the same kernel. Left out
    #: of the JSON when not known (records made before it was recorded).
    blas_core: str | None = Field(default=None, max_length=64, exclude_if=lambda v: v is None)


class RebalanceProposed(_Model):
    proposal_id: uuid.UUID
    account_id: str
    drift_id: uuid.UUID | None = None
    snapshot: AccountSnapshot
    snapshot_hash: str
    orders: list[Order]
    pre_weights: dict[str, DecimalStr]
    post_weights: dict[str, DecimalStr]
    objective: dict[str, DecimalStr]
    est_cost_usd: DecimalStr
    est_tax_usd: DecimalStr
    solver: SolverInfo
    #: The exact context the proposal was solved with (null: the snapshot alone). A replay or an
    #: explanation needs it to re-solve the same problem. Optional; absent from older producers.
    context: OptimizerContext | None = None
    #: The objective's driver weights the proposal was solved with (absent: the defaults of
    #: `solver.optimizer_version`).
    driver_weights: dict[str, DecimalStr] | None = None
    #: Realized gains by term (`short_term_gain_usd`, `long_term_gain_usd`), losses harvested
    #: (`harvested_loss_usd`, positive), the tax of each term and `tax_total_usd` (= `est_tax_usd`),
    #: all USD from the lot arithmetic. Optional; absent from older producers.
    tax_breakdown: dict[str, DecimalStr] | None = None
    #: Estimated cost by kind, USD: `half_spread_usd`, `commission_usd`, `impact_usd`, `total_usd`.
    cost_breakdown: dict[str, DecimalStr] | None = None
    #: Weight minus target per symbol (fractions of the account's value), before and after.
    pre_drift: dict[str, DecimalStr] | None = None
    post_drift: dict[str, DecimalStr] | None = None
    #: What a reviewer should know: wash-sale decisions, rounding repairs, orders dropped under
    #: the minimum notional.
    notes: list[str] | None = None


# ---------------------------------------------------------------- risk.assessed.v1 / alerts


class RiskModelInfo(_Model):
    name: str
    version: str
    window_start: date | None = None
    window_end: date | None = None
    observations: int = 0
    halflife_days: DecimalStr | None = None


class RiskAssessed(_Model):
    proposal_id: uuid.UUID
    account_id: str
    pre_vol_annual_pct: DecimalStr
    post_vol_annual_pct: DecimalStr
    model: RiskModelInfo
    flags: list[str] = Field(default_factory=list)
    # What the risk service measured, before (`pre_`) and after (`post_`) the proposed trades.
    # Optional and left out of the JSON when absent (older producers), so such events serialize
    # exactly as before the fields existed. A consumer must read an absent field as "not
    # measured", never as zero or as "no breach".
    #: Risk score 1-99: about the % of value lost or more in one year out of twenty (docs/risk.md).
    pre_score: int | None = Field(default=None, ge=1, le=99, exclude_if=lambda v: v is None)
    post_score: int | None = Field(default=None, ge=1, le=99, exclude_if=lambda v: v is None)
    #: The client's tolerance on the same scale (absent: the account has no risk profile).
    tolerance_score: int | None = Field(default=None, ge=1, le=99, exclude_if=lambda v: v is None)
    #: Account value the USD figures are of: before, the snapshot's cash plus positions at its
    #: prices; after, that minus the proposal's estimated cost (absent: a position had no price).
    pre_value_usd: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    post_value_usd: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    #: Parametric (zero-mean normal) one-day 95 % VaR and CVaR: loss as a positive % of value,
    #: and in USD (% x value).
    pre_var_95_1d_pct: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    post_var_95_1d_pct: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    pre_var_95_1d_usd: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    post_var_95_1d_usd: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    pre_cvar_95_1d_usd: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    post_cvar_95_1d_usd: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    #: Annualized tracking error against the snapshot's targets, % (absent: no targets).
    pre_tracking_error_annual_pct: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    post_tracking_error_annual_pct: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    #: Largest non-cash position after the trades (weight: fraction of value) and largest sector.
    post_largest_symbol: str | None = Field(default=None, exclude_if=lambda v: v is None)
    post_largest_weight: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    post_largest_sector: str | None = Field(default=None, exclude_if=lambda v: v is None)
    post_largest_sector_weight: DecimalStr | None = Field(default=None, exclude_if=lambda v: v is None)
    #: The limits breached (a subset of `flags`; empty: none). Absent: an older producer.
    breaches: list[str] | None = Field(default=None, exclude_if=lambda v: v is None)
    #: The limits applied: `vol_increase_limit_pct` (percentage points), `concentration_limit`
    #: and `sector_limit` (fractions of value); the tolerance is `tolerance_score`.
    limits: dict[str, DecimalStr] | None = Field(default=None, exclude_if=lambda v: v is None)


class RiskAlerted(_Model):
    alert_id: uuid.UUID
    account_id: str | None = None
    kind: str
    message: str
    values: dict[str, DecimalStr] = Field(default_factory=dict)


# ---------------------------------------------------------------- explanation.created.v1


class TradeAttribution(_Model):
    symbol: str
    trade_shares: DecimalStr
    base_shares: DecimalStr
    #: Shapley value of each driver, in shares; base + sum = trade (efficiency).
    contributions_shares: dict[str, DecimalStr]


class ExplanationCreated(_Model):
    explanation_id: uuid.UUID
    proposal_id: uuid.UUID
    account_id: str
    snapshot_hash: str
    optimizer_version: str
    method: str
    drivers: list[str]
    trades: list[TradeAttribution]
    resolves: int
    narrative_advisor: str
    narrative_client: str
    #: The `RiskAssessed` event whose figures (volatility, score, VaR) the narratives quote;
    #: left out when they quote none (the assessment had not arrived). The audit replay passes
    #: that assessment back in.
    risk_event_id: uuid.UUID | None = Field(default=None, exclude_if=lambda v: v is None)


# ---------------------------------------------------------------- decisions and trades


class RebalanceDecided(_Model):
    proposal_id: uuid.UUID
    account_id: str
    decision: Literal["approved", "rejected", "overridden", "expired"]
    decided_by: str
    automatic: bool
    reason: str | None = None
    decided_at: datetime


class TradesApproved(_Model):
    """The contract with order-management systems (key: account_id).

    `client_order_id` of every order is deterministic in (proposal_id, symbol, side), so an OMS
    that sees the event twice can drop the second copy by that id.
    """

    proposal_id: uuid.UUID
    account_id: str
    approved_by: str
    orders: list[Order]
    #: The market time the orders were priced at (the snapshot's `as_of`): an OMS may use it to
    #: judge how stale the estimated prices are. Optional; absent from older producers.
    priced_as_of: datetime | None = None
    #: The orders' time in force (FIX ExpireTime, good till date): an OMS must not start working
    #: them after this time, cancels what is still working then, and reports what was not filled
    #: on `trades.unfilled.v1` (status `expired`). If neither fills nor a report have closed the
    #: approval by this time plus the optimizer's grace (`PROPOSAL_EXECUTION_GRACE_S`), Trimtab
    #: declares the rest expired itself. Optional; absent from older producers and where the
    #: optimizer sets no window (`PROPOSAL_EXECUTION_WINDOW_S=0`).
    execute_by: datetime | None = None


class Fill(_Model):
    client_order_id: str
    symbol: str
    side: Side
    shares: DecimalStr = Field(gt=0)
    price_usd: DecimalStr = Field(gt=0)
    executed_at: datetime
    lots: list[LotInstruction] = Field(default_factory=list)


class TradesExecuted(_Model):
    execution_id: str
    proposal_id: uuid.UUID | None = None
    account_id: str
    fills: list[Fill]


class UnfilledOrder(_Model):
    client_order_id: str = Field(min_length=1, max_length=64)
    symbol: str
    side: Side
    #: Shares of the order the OMS will never fill (the rest of it, if some were filled).
    unfilled_shares: DecimalStr = Field(gt=0)
    #: How the order ended at the OMS (FIX OrdStatus): refused before working, cancelled while
    #: working, or expired at the end of its time in force.
    status: Literal["rejected", "canceled", "expired"]
    reason: str = Field(min_length=1, max_length=500)


class OrdersUnfilled(_Model):
    """OMS -> Trimtab (key: account_id): orders of an approval that ended without filling in
    full. With the fills (`TradesExecuted`) it closes the approval: once every order is filled
    or reported here, the proposal is `executed` (all filled) or `unfilled` (some shares never
    traded), and the account may be approved again. `report_id` is the OMS's id of this report,
    unique per proposal: a redelivered report (same proposal and id) counts once. A report
    overlapping earlier ones counts only for the shares they left."""

    report_id: str = Field(min_length=1, max_length=128)
    proposal_id: uuid.UUID
    account_id: str
    orders: list[UnfilledOrder] = Field(min_length=1)
    reported_at: datetime


# ---------------------------------------------------------------- the registry

#: event type -> (topic, payload model, schema version)
EVENTS: dict[str, tuple[str, type[BaseModel], int]] = {
    "PriceTicked": ("market.ticks.v1", PriceTicked, 1),
    "DriftDetected": ("portfolio.drift.v1", DriftDetected, 1),
    "RebalanceProposed": ("rebalance.proposed.v1", RebalanceProposed, 1),
    "RiskAssessed": ("risk.assessed.v1", RiskAssessed, 1),
    "RiskAlerted": ("risk.alerts.v1", RiskAlerted, 1),
    "ExplanationCreated": ("explanation.created.v1", ExplanationCreated, 1),
    "RebalanceDecided": ("rebalance.decided.v1", RebalanceDecided, 1),
    "TradesApproved": ("trades.approved.v1", TradesApproved, 1),
    "TradesExecuted": ("trades.executed.v1", TradesExecuted, 1),
    "OrdersUnfilled": ("trades.unfilled.v1", OrdersUnfilled, 1),
}

_BY_MODEL = {model: (etype, version) for etype, (_, model, version) in EVENTS.items()}

TOPICS: list[str] = sorted({topic for topic, _, _ in EVENTS.values()})


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def event_type_of(model: type[BaseModel]) -> tuple[str, int]:
    try:
        return _BY_MODEL[model]
    except KeyError:
        raise TypeError(f"{model.__name__} is not a registered event payload") from None


def topic_of(event_type: str) -> str:
    return EVENTS[event_type][0]


def payload_model(event_type: str) -> type[BaseModel]:
    return EVENTS[event_type][1]
