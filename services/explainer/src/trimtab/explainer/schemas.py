"""Response models of the explainer API (separate from the table and from the event)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from trimtab.shared.money import DecimalStr


class TradeExplanationOut(BaseModel):
    symbol: str
    price_usd: DecimalStr | None
    #: continuous (pre-rounding) trade in shares, buy positive; base + sum of contributions
    trade_shares: DecimalStr
    base_shares: DecimalStr
    contributions_shares: dict[str, DecimalStr]
    trade_usd: DecimalStr | None
    contributions_usd: dict[str, DecimalStr]


class ExplanationOut(BaseModel):
    explanation_id: uuid.UUID
    proposal_id: uuid.UUID
    account_id: str
    snapshot_hash: str
    optimizer_version: str
    proposal_optimizer_version: str
    method: str
    drivers: list[str]
    resolves: int
    elapsed_ms: DecimalStr | None
    trades: list[TradeExplanationOut]
    narrative_advisor: str
    narrative_client: str
    correlation_id: uuid.UUID
    created_at: datetime


class NarrativeOut(BaseModel):
    proposal_id: uuid.UUID
    account_id: str
    #: for the advisor: every order, its reasons in dollars and percentage points, lots, tax
    advisor: str
    #: for the client: the same in plain language
    client: str
