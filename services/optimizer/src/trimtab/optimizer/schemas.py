"""Request and response models of the optimizer API (separate from the tables)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

from trimtab.shared.events import (
    AccountSnapshot,
    ExplanationCreated,
    FactorModelContext,
    OptimizerContext,
    Order,
    RiskAssessed,
    SecurityContext,
    SolverInfo,
)
from trimtab.shared.limits import MAX_ADV_USD, MAX_SIGMA_DAILY
from trimtab.shared.money import DecimalStr

StateName = Literal["proposed", "assessed", "explained", "ready", "approved", "rejected",
                    "overridden", "executed", "unfilled", "failed", "expired"]


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


class EndExecutionIn(BaseModel):
    """Why a supervisor ends an approval the OMS will not finish (after checking with the OMS desk)."""
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=400)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class OverrideIn(BaseModel):
    """The advisor's orders replacing the proposal's (prices and costs are recomputed)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)
    #: Not `min_length=1`: an empty list is refused by the override's re-validation, whose 422
    #: says what to do instead (reject).
    orders: list[Order] = Field(
        max_length=1000, description="The orders to trade instead, at least one (to trade nothing, "
                                     "reject the proposal): whole shares, except a lot sold whole.")


class WhatIfIn(BaseModel):
    """A what-if with a context: the snapshot and what to solve it with beyond it. (A bare
    `AccountSnapshot` body is a what-if without one.) As for a drift, the tenant's reference data
    of the snapshot's symbols (where the context has none) and the household's recent trades the
    optimizer knows of are added to the context's."""

    model_config = ConfigDict(extra="forbid")
    snapshot: AccountSnapshot
    context: OptimizerContext | None = None


class DecisionOut(BaseModel):
    decision: Literal["approved", "rejected", "overridden", "expired"]
    decided_by: str
    automatic: bool
    reason: str | None
    decided_at: datetime


class FailureOut(BaseModel):
    kind: str
    constraint: str | None


class ProposalSummary(BaseModel):
    proposal_id: uuid.UUID
    account_id: str
    drift_id: uuid.UUID | None
    #: The account's advisor as the drift named it (null: unknown).
    advisor_id: str | None = None
    state: StateName
    automation: str
    snapshot_hash: str | None
    orders: list[Order]
    est_cost_usd: DecimalStr | None
    est_tax_usd: DecimalStr | None
    has_risk: bool
    has_explanation: bool
    decision: DecisionOut | None
    failure: FailureOut | None
    correlation_id: uuid.UUID
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> ProposalSummary:
        return cls.model_validate(_common(row))


class ProposalOut(ProposalSummary):
    """One proposal with everything it was decided on: input, solution, risk and explanation."""

    snapshot: AccountSnapshot
    pre_weights: dict[str, DecimalStr]
    post_weights: dict[str, DecimalStr]
    objective: dict[str, DecimalStr]
    solver: SolverInfo | None
    risk: RiskAssessed | None
    explanation: ExplanationCreated | None
    fills: list[dict[str, Any]]
    #: Orders the OMS reported it will never fill (rejected, canceled, expired), with the report's
    #: id and time: with `fills` they end the approval (`executed` or `unfilled`).
    unfilled: list[dict[str, Any]] = []
    #: The approved orders' time in force (TradesApproved.execute_by); past it plus
    #: PROPOSAL_EXECUTION_GRACE_S without fills or a report, Trimtab declares them expired. Null:
    #: not approved, or no window.
    execute_by: datetime | None = None
    #: The context the proposal was solved with (null: the snapshot alone) and its driver weights.
    context: OptimizerContext | None = None
    driver_weights: dict[str, DecimalStr] | None = None
    #: Realized gains by term, losses harvested and the tax of each term, USD (null: older proposals).
    tax_breakdown: dict[str, DecimalStr] | None = None
    #: Estimated cost by kind (half spread, commission, market impact, total), USD.
    cost_breakdown: dict[str, DecimalStr] | None = None
    #: Weight minus target per symbol, fractions of the account's value, before and after.
    pre_drift: dict[str, DecimalStr] | None = None
    post_drift: dict[str, DecimalStr] | None = None
    #: Wash-sale decisions, rounding repairs and dropped orders, in words.
    notes: list[str] | None = None

    @classmethod
    def from_row(cls, row: Any) -> ProposalOut:
        payload = row.payload or {}
        return cls.model_validate({
            **_common(row), "snapshot": row.snapshot,
            "pre_weights": payload.get("pre_weights", {}),
            "post_weights": payload.get("post_weights", {}),
            "objective": payload.get("objective", {}), "solver": payload.get("solver"),
            "risk": row.risk, "explanation": row.explanation, "fills": row.fills or [],
            "unfilled": row.unfilled or [], "execute_by": row.execute_by,
            "context": payload.get("context"), "driver_weights": payload.get("driver_weights"),
            **{k: payload.get(k) for k in ("tax_breakdown", "cost_breakdown", "pre_drift", "post_drift",
                                           "notes")},
        })


def _common(row: Any) -> dict[str, Any]:
    payload = row.payload or {}
    return {
        "proposal_id": row.proposal_id, "account_id": row.account_id, "drift_id": row.drift_id,
        "advisor_id": row.advisor_id, "state": row.state, "automation": row.automation, "snapshot_hash": row.snapshot_hash,
        "orders": row.orders, "est_cost_usd": payload.get("est_cost_usd"),
        "est_tax_usd": payload.get("est_tax_usd"), "has_risk": row.risk is not None,
        "has_explanation": row.explanation is not None,
        "decision": None if row.decision is None else {
            "decision": row.decision, "decided_by": row.decided_by,
            "automatic": row.decision_automatic, "reason": row.decision_reason,
            "decided_at": row.decided_at},
        "failure": None if row.failure_kind is None else {
            "kind": row.failure_kind, "constraint": row.failure_constraint},
        "correlation_id": row.correlation_id, "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


# ------------------------------------------------------------------ household what-if

#: The most accounts one household what-if solves (the compiled problem grows with them).
MAX_HOUSEHOLD_ACCOUNTS = 20

HouseholdDriver = Literal["drift", "risk", "cost", "tax", "cash", "restrictions", "esg", "location"]
AccountTypeName = Literal["taxable", "tax_deferred", "tax_exempt"]


class HouseholdWhatIfIn(BaseModel):
    """Every account of one household, solved as one portfolio (household mode, asset location).

    Each snapshot must belong to `household_id` (its `household_id` equal to it, or null).
    The tenant's reference data of the snapshots' symbols (where `context` has none) and the
    household's recent trades the optimizer knows of (every account's fills of the last 30 days)
    are added to `context`'s, as for a single-account what-if."""

    model_config = ConfigDict(extra="forbid")
    household_id: str = Field(min_length=1, max_length=64)
    snapshots: list[AccountSnapshot] = Field(
        min_length=1, max_length=MAX_HOUSEHOLD_ACCOUNTS,
        description=f"One snapshot per account of the household (1 to {MAX_HOUSEHOLD_ACCOUNTS}, "
                    "account ids unique); every security priced the same in every snapshot.")
    targets: dict[str, DecimalStr] | None = Field(
        default=None, description="Household target weights by symbol, fractions of the household's "
                                  "total value (0.4 = 40 %), summing to at most 1; absent: the "
                                  "value-weighted average of the accounts' own targets.")
    context: OptimizerContext | None = Field(
        default=None, description="What to solve with beyond the snapshots (impact data, wash and "
                                  "substitute groups, factor model, tax budget and gain cap for the "
                                  "household, mode). `withdrawal_usd` only with one account: use "
                                  "`withdrawals_usd` otherwise.")
    drivers: dict[HouseholdDriver, DecimalStr] | None = Field(
        default=None, description="Driver weight overrides (nonnegative; cash, restrictions and esg must stay "
                                  "on). `location` (default 1) counts years of yearly tax drag saved "
                                  "against one-time taxes and costs.")
    withdrawals_usd: dict[str, DecimalStr] | None = Field(
        default=None, description="Cash to raise per account id on top of its reserve, US dollars.")
    location_multipliers: dict[AccountTypeName, DecimalStr] | None = Field(
        default=None, description="Location charge per account type, as a multiple of a security's "
                                  "taxable tax drag (defaults: taxable 1, tax_deferred 0, tax_exempt 0).")
    explain: bool = Field(
        default=False, description="Also say why each trade: exact Shapley values of every account's "
                                   "continuous trade over the drivers, location included (up to 128 "
                                   "household solves: seconds for large households).")


class HouseholdTradeWhy(BaseModel):
    """One account's continuous trade of one security and what each driver contributed to it."""

    account_id: str
    symbol: str
    trade_shares: DecimalStr = Field(description="Continuous optimum, shares (buy positive).")
    trade_usd: DecimalStr = Field(description="The same in US dollars at the snapshot's price.")
    contributions_usd: dict[str, DecimalStr] = Field(
        description="Shapley value of each driver, US dollars (positive: toward a buy); they add up "
                    "to `trade_usd` less `base_usd`.")
    base_usd: DecimalStr = Field(description="The trade with every explained driver off, US dollars "
                                             "(0 unless a driver that makes trades is not explained).")
    reason: str = Field(description="The trade and the drivers moving at least 10 % of it, in dollars.")


class HouseholdExplanationOut(BaseModel):
    """Why each trade of a household what-if (`explain: true`)."""

    method: Literal["exact_shapley"] = "exact_shapley"
    drivers: list[str] = Field(description="The players, in order.")
    null_drivers: list[str] = Field(description="Drivers that cannot change this household's problem "
                                                "(or are weighted 0): not players, value 0.")
    trades: list[HouseholdTradeWhy]
    resolves: int = Field(description="Household solves made (coalitions without a motive to trade, "
                                      "and the proposal's own, cost none).")
    coalitions: int
    efficiency_error_shares: DecimalStr = Field(
        description="Largest gap between a trade and the sum of its contributions, shares.")
    elapsed_ms: DecimalStr = Field(description="Time to explain, milliseconds.")


class HouseholdAccountOut(BaseModel):
    """One account's part of a household what-if."""

    account_id: str
    account_type: AccountTypeName
    orders: list[Order] = Field(description="Whole-share orders; sells name their lots (`lots`).")
    est_tax_usd: DecimalStr = Field(description="Estimated tax of the account's sells, US dollars "
                                                "(negative: a tax benefit of harvested losses; 0 "
                                                "outside taxable accounts).")
    est_cost_usd: DecimalStr = Field(description="Estimated trading cost, US dollars.")
    tax_breakdown_usd: dict[str, DecimalStr] = Field(
        description="Realized gains by term, harvested losses and their tax, US dollars.")
    cost_breakdown_usd: dict[str, DecimalStr] = Field(
        description="Half spread, commission, market impact and total, US dollars.")
    pre_weights: dict[str, DecimalStr] = Field(description="The account's weights before, fractions of "
                                                           "the account's value.")
    post_weights: dict[str, DecimalStr] = Field(description="The account's weights after, fractions of "
                                                            "the account's value.")
    cash_before_usd: DecimalStr
    cash_after_usd: DecimalStr
    location_drag_before_usd_per_year: DecimalStr = Field(
        description="Yearly tax drag of the account's holdings before, US dollars a year.")
    location_drag_after_usd_per_year: DecimalStr = Field(
        description="Yearly tax drag of the account's holdings after, US dollars a year.")
    snapshot_hash: str = Field(description="Canonical hash of the account's snapshot as given.")


class DroppedOrder(BaseModel):
    account_id: str
    symbol: str


class HouseholdWhatIfOut(BaseModel):
    """The proposal household mode would give (nothing is stored)."""

    proposal_id: uuid.UUID = Field(description="Deterministic: the same inputs give the same id.")
    household_id: str
    accounts: list[HouseholdAccountOut]
    pre_weights: dict[str, DecimalStr] = Field(description="Household weights before, fractions of the "
                                                           "household's value.")
    post_weights: dict[str, DecimalStr] = Field(description="Household weights after, fractions of the "
                                                            "household's value.")
    target_weights: dict[str, DecimalStr] = Field(description="Household target, fractions of the "
                                                              "household's value.")
    est_tax_usd: DecimalStr = Field(description="Estimated tax of the household's sells, US dollars.")
    est_cost_usd: DecimalStr = Field(description="Estimated trading cost of the household, US dollars.")
    location_drag_before_usd_per_year: DecimalStr = Field(
        description="The household's yearly tax drag from asset location before, US dollars a year.")
    location_drag_after_usd_per_year: DecimalStr = Field(
        description="The household's yearly tax drag from asset location after, US dollars a year.")
    objective: dict[str, DecimalStr] = Field(
        description="Objective by term (drift, risk, cost, tax, cash, location, regularization, total) on "
                    "the final orders, and `<term>_continuous` on the continuous optimum; unitless "
                    "(fractions of the household's value).")
    driver_weights: dict[str, DecimalStr]
    dropped_orders: list[DroppedOrder] = Field(
        description="Orders under the minimum notional dropped in rounding (the household re-solved "
                    "without them).")
    notes: list[str]
    solver: SolverInfo
    snapshot_hashes: dict[str, str] = Field(description="Canonical hash of each snapshot, by account id.")
    context: OptimizerContext | None = Field(
        description="The exact context solved with (the caller's plus the tenant's reference data and "
                    "the household's recent trades from the optimizer's ledger); null: the snapshots alone.")
    context_hash: str | None = Field(description="Canonical hash of the context as the library used it.")
    explanation: HouseholdExplanationOut | None = Field(
        default=None, description="Why each trade (with `explain: true`); null otherwise.")


# ------------------------------------------------------------------ reference data

#: The most securities one `PUT /v1/reference/securities` takes.
MAX_REFERENCE_SECURITIES = 10_000
#: The largest factor model `PUT /v1/reference/risk-model` takes (rows, factors).
MAX_MODEL_SYMBOLS = 10_000
MAX_MODEL_FACTORS = 100

Symbol = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9.\-]+$")]


class SecurityReferenceIn(SecurityContext):
    """One security's reference data: `SecurityContext`'s fields (each optional, null: not known)
    and its symbol. Stored as given; replaces the symbol's earlier row whole. Volatility and ADV
    are held to what a solve accepts (`trimtab.shared.limits`): a value stored beyond it made
    every proposal of an account holding the symbol fail."""

    symbol: Symbol

    @field_validator("sigma_daily")
    @classmethod
    def _sigma(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and v > Decimal(repr(MAX_SIGMA_DAILY)):
            raise ValueError(f"sigma_daily must be at most {MAX_SIGMA_DAILY:g} (a daily volatility)")
        return v

    @field_validator("adv_usd")
    @classmethod
    def _adv(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and v > Decimal(repr(MAX_ADV_USD)):
            raise ValueError(f"adv_usd must be at most {MAX_ADV_USD:g} USD")
        return v


class SecuritiesReferenceIn(RootModel[list[SecurityReferenceIn]]):
    root: list[SecurityReferenceIn] = Field(min_length=1, max_length=MAX_REFERENCE_SECURITIES)


class SecurityReferenceOut(SecurityReferenceIn):
    updated_at: datetime


class RiskModelOut(FactorModelContext):
    """The tenant's current factor risk model, as given, and when it was stored."""

    updated_at: datetime
