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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .money import DecimalStr

AccountType = Literal["taxable", "tax_deferred", "tax_exempt"]
AutomationLevel = Literal["propose_only", "advisor_approval", "automatic"]
Side = Literal["buy", "sell"]


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


class DriftPolicy(_Model):
    band_abs: DecimalStr = Field(default=Decimal("0.05"), gt=0, le=1)
    automation: AutomationLevel = "advisor_approval"
    max_turnover: DecimalStr | None = Field(default=None, gt=0)


class TaxRates(_Model):
    short_term: DecimalStr = Decimal("0.37")
    long_term: DecimalStr = Decimal("0.20")


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
    restricted: list[str] = Field(default_factory=list)
    policy: DriftPolicy = DriftPolicy()
    tax_rates: TaxRates = TaxRates()
    as_of: datetime


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
