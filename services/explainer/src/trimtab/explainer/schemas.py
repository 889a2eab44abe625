"""Response models of the explainer API (separate from the table and from the event)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from trimtab.shared.money import DecimalStr


class CounterfactualOut(BaseModel):
    """At `threshold` (or beyond, in `direction`) of `parameter` the order would not happen;
    `direction` "between": only from `threshold` to `until` (it trades again beyond `until`);
    `threshold` null: no value up to `searched_to` stops it."""

    parameter: str  # band (fraction), price (dollars), tax_rate (long-term, fraction)
    side: str
    current: DecimalStr
    threshold: DecimalStr | None
    until: DecimalStr | None = None
    change_pct: DecimalStr | None
    searched_to: DecimalStr
    direction: str
    resolves: int


class TradeExplanationOut(BaseModel):
    symbol: str
    price_usd: DecimalStr | None
    #: continuous (pre-rounding) trade in shares, buy positive; base + sum of contributions
    trade_shares: DecimalStr
    base_shares: DecimalStr
    contributions_shares: dict[str, DecimalStr]
    trade_usd: DecimalStr | None
    contributions_usd: dict[str, DecimalStr]
    #: what would have had to differ for the order not to happen (largest orders only)
    counterfactuals: list[CounterfactualOut] = []
    wash_sale: str | None = None


class ExplanationOut(BaseModel):
    explanation_id: uuid.UUID
    proposal_id: uuid.UUID
    account_id: str
    snapshot_hash: str
    optimizer_version: str
    proposal_optimizer_version: str
    method: str
    #: the explained drivers (tax split into harvesting losses and avoiding gains): `trades`
    drivers: list[str]
    #: the drivers of the attribution the `ExplanationCreated` event carries (the optimizer's
    #: own, tax whole: what the audit replay recomputes)
    event_drivers: list[str]
    resolves: int
    elapsed_ms: DecimalStr | None
    trades: list[TradeExplanationOut]
    narrative_advisor: str
    narrative_client: str
    #: the charts of this explanation, under .../charts/{name}
    charts: list[str] = []
    correlation_id: uuid.UUID
    created_at: datetime


class NarrativeOut(BaseModel):
    proposal_id: uuid.UUID
    account_id: str
    #: for the advisor: every order, its reasons in dollars and percentage points, lots, tax
    advisor: str
    #: for the client: the same in plain language
    client: str


class ChartsOut(BaseModel):
    proposal_id: uuid.UUID
    #: summary.svg, summary.png, trade-{symbol}.svg, trade-{symbol}.png
    charts: list[str]
