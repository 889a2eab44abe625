"""Request and response models of the risk API (separate from the tables and the events)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trimtab.shared.events import RiskModelInfo
from trimtab.shared.money import DecimalStr


class AssessmentOut(BaseModel):
    proposal_id: uuid.UUID
    account_id: str
    pre_vol_annual_pct: DecimalStr
    post_vol_annual_pct: DecimalStr
    model: RiskModelInfo
    flags: list[str]
    pre_weights: dict[str, DecimalStr]
    post_weights: dict[str, DecimalStr]
    correlation_id: uuid.UUID
    created_at: datetime


class SymbolRiskOut(BaseModel):
    symbol: str
    #: daily returns the model has seen for this symbol
    observations: int
    #: EWMA annualized volatility in percent; None before the symbol's first return
    vol_annual_pct: DecimalStr | None
    #: False while observations < the minimum: portfolios then use the prior for it
    known: bool


class RiskModelOut(BaseModel):
    name: str
    version: str
    decay: DecimalStr
    halflife_days: DecimalStr
    window_start: date | None
    window_end: date | None
    #: trading days with returns folded into the model
    observations: int
    min_observations: int
    #: hash of the covariance (10 significant digits): equal models have equal digests
    digest: str
    symbols: list[SymbolRiskOut]


class WhatIfIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: weights by symbol as fractions of account value; what they leave out is cash
    weights: dict[str, Decimal] = Field(min_length=1, max_length=1000)

    @field_validator("weights")
    @classmethod
    def _long_only_and_funded(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        negative = sorted(s for s, w in v.items() if w < 0)
        if negative:
            raise ValueError(f"weights must not be negative: {', '.join(negative)}")
        if not all(w.is_finite() for w in v.values()):
            raise ValueError("weights must be finite numbers")
        total = sum(v.values(), Decimal(0))
        if total > 1:
            raise ValueError(f"weights sum to {total}, more than 1 (100 % of the account)")
        return v


class WhatIfOut(BaseModel):
    vol_annual_pct: DecimalStr
    cash_weight: DecimalStr
    flags: list[str]
    model: RiskModelInfo
