"""Request and response models of the risk API (separate from the tables and the events)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trimtab.shared.events import RiskModelInfo
from trimtab.shared.money import DecimalStr

from .domain.history import MARKET


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


class FactorModelOut(BaseModel):
    """Statistical factors of the model's covariance in factor form (see domain/factors.py):
    daily covariance ~= exposures' @ exposures + diag(specific_var_daily), factor covariance I."""

    method: Literal["pca-of-ewma-covariance"] = "pca-of-ewma-covariance"
    model_version: str
    window_start: date | None
    window_end: date | None
    symbols: list[str]
    factor_names: list[str]
    #: k rows (one per factor) of n exposures, daily return units
    exposures: list[list[float]]
    factor_covariance: list[list[float]]
    specific_var_daily: list[float]
    explained_fraction: float


class GarchOut(BaseModel):
    symbol: str
    model_version: str
    window_start: date | None
    window_end: date | None
    observations: int
    omega: float
    alpha: float
    beta: float
    persistence: float
    #: next-day forecast, annualized; and the 1-year (252-day) forecast, annualized
    vol_1d_annual_pct: DecimalStr
    vol_1y_annual_pct: DecimalStr
    long_run_vol_annual_pct: DecimalStr | None


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
    #: correlation shrinkage towards the average correlation applied to every risk view
    shrinkage: DecimalStr
    symbols: list[SymbolRiskOut]
    factors: FactorModelOut
    #: GARCH(1,1) per security, only with `?garch=true` (fitting takes ~30 ms a symbol)
    garch: list[GarchOut] | None = None


#: weights per portfolio of a request (a what-if's weights, its target, a stressed portfolio)
MAX_WEIGHTS = 1000
#: entries of the lookup maps of a request (sectors, prices, ADVs): one per symbol it can hold
#: (`analytics.MAX_SYMBOLS`)
MAX_LOOKUP = 2000


def long_only_and_funded(v: dict[str, Decimal]) -> dict[str, Decimal]:
    """Weights are fractions of account value: each finite and >= 0, together at most 1 (what
    they leave out is cash). So every weight is in [0, 1] (a huge one, 1e400, overflows a float)."""
    if not all(w.is_finite() for w in v.values()):
        raise ValueError("weights must be finite numbers")
    negative = sorted(s for s, w in v.items() if w < 0)
    if negative:
        raise ValueError(f"weights must not be negative: {', '.join(negative)}")
    total = sum(v.values(), Decimal(0))
    if total > 1:
        raise ValueError(f"weights sum to {total}, more than 1 (100 % of the account)")
    return v


class WhatIfIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: weights by symbol as fractions of account value; what they leave out is cash
    weights: dict[str, Decimal] = Field(min_length=1, max_length=MAX_WEIGHTS)
    #: the target (model portfolio) for beta and tracking error (with `weights`, at most
    #: `analytics.MAX_SYMBOLS` distinct symbols)
    target_weights: dict[str, Decimal] | None = Field(default=None, max_length=MAX_WEIGHTS)
    #: sectors by symbol, over the reference GICS sectors
    sectors: dict[str, str] | None = Field(default=None, max_length=MAX_LOOKUP)
    #: for liquidity: account value, prices and average daily volumes (shares)
    account_value_usd: Decimal | None = Field(default=None, gt=0)
    prices_usd: dict[str, Decimal] | None = Field(default=None, max_length=MAX_LOOKUP)
    adv_shares: dict[str, Decimal] | None = Field(default=None, max_length=MAX_LOOKUP)
    participation: Decimal = Field(default=Decimal("0.2"), gt=0, le=1)
    #: a risk score (1..99) to flag against
    tolerance_score: int | None = Field(default=None, ge=1, le=99)
    #: scenario ids to stress the portfolio under (default: the built-in ones; [] for none)
    scenario_ids: list[str] | None = None
    #: also fit a GARCH(1,1) to the portfolio's return history (~50 ms)
    garch: bool = False

    @field_validator("weights")
    @classmethod
    def _long_only_and_funded(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        return long_only_and_funded(v)


class ConcentrationOut(BaseModel):
    largest_symbol: str | None
    largest_weight: DecimalStr
    top5_weight: DecimalStr
    herfindahl: DecimalStr
    largest_sector: str | None
    largest_sector_weight: DecimalStr
    sector_weights: dict[str, DecimalStr]


class RiskMeasuresOut(BaseModel):
    """Every measure of one portfolio. Percentages are of account value; losses are positive."""

    vol_annual_pct: DecimalStr
    #: 1..99: the 95 % one-year expected downside in percent (docs/risk.md)
    score: int
    downside_1y_pct: DecimalStr
    #: var_95_1d, cvar_95_1d, var_95_10d, ..., var_99_10d, cvar_99_10d (percent)
    parametric_pct: dict[str, DecimalStr]
    historical_pct: dict[str, DecimalStr]
    historical_days: int
    historical_excluded: list[str]
    max_drawdown_pct: DecimalStr | None
    beta: DecimalStr | None
    tracking_error_annual_pct: DecimalStr | None
    concentration: ConcentrationOut
    liquidity_days: DecimalStr | None
    garch_vol_annual_pct: DecimalStr | None = None


class StressCellOut(BaseModel):
    scenario_id: str
    pnl_pct: DecimalStr
    worst_pct: DecimalStr


class WhatIfOut(BaseModel):
    vol_annual_pct: DecimalStr
    cash_weight: DecimalStr
    flags: list[str]
    model: RiskModelInfo
    measures: RiskMeasuresOut
    stress: list[StressCellOut] = Field(default_factory=list)


class AccountRiskOut(BaseModel):
    account_id: str
    proposal_id: uuid.UUID
    assessed_at: datetime
    tolerance_score: int | None
    flags: list[str]
    #: the account's holdings when last assessed (the proposal's pre-trade weights) ...
    current: RiskMeasuresOut
    #: ... and the portfolio that proposal would make, both measured under today's model
    proposed: RiskMeasuresOut
    model: RiskModelInfo


class RiskProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tolerance_score: int = Field(ge=1, le=99)
    concentration_limit: Decimal | None = Field(default=None, gt=0, le=1)
    drawdown_limit_pct: Decimal | None = Field(default=None, gt=0, le=100)
    #: the answers the score came from, kept for the record
    questionnaire: dict[str, Any] | None = None


class RiskProfileOut(RiskProfileIn):
    account_id: str
    #: what the tolerance means: the 95 % one-year downside and the volatility that reaches it
    tolerance_downside_1y_pct: DecimalStr
    tolerance_vol_annual_pct: DecimalStr
    updated_by: str
    updated_at: datetime


class ScenarioIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9\-_.]*$")
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["historical", "market", "sector", "factor", "vector"]
    start: date | None = None
    end: date | None = None
    #: simple returns: {"market": "-0.2"}, {"Energy": "-0.3"}, {"MTUM": "-0.1"}, {"AAPL": "-0.5"}
    shocks: dict[str, Decimal] = Field(default_factory=dict, max_length=5000)
    propagate: bool = True
    description: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _shape(self) -> ScenarioIn:
        if self.kind == "historical":
            if self.start is None or self.end is None or self.end <= self.start:
                raise ValueError("a historical scenario needs start < end")
            if self.shocks:
                raise ValueError("a historical scenario takes no shocks")
        elif not self.shocks:
            raise ValueError(f"a {self.kind} scenario needs shocks")
        if self.kind == "market" and set(self.shocks) != {MARKET}:
            raise ValueError(f'a market scenario has exactly one shock, keyed "{MARKET}"')
        if any(not v.is_finite() or v < -1 for v in self.shocks.values()):
            raise ValueError("shocks are simple returns, finite and >= -1")
        return self


class ScenarioOut(BaseModel):
    scenario_id: str
    name: str
    kind: str
    start: date | None
    end: date | None
    shocks: dict[str, DecimalStr]
    propagate: bool
    description: str
    builtin: bool


class StressPortfolioIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200)
    #: as a what-if's: fractions of account value, each >= 0, at most 1 together
    weights: dict[str, Decimal] = Field(max_length=MAX_WEIGHTS)

    @field_validator("weights")
    @classmethod
    def _long_only_and_funded(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        return long_only_and_funded(v)


class StressIn(BaseModel):
    """Up to 10,000 portfolios; together at most `analytics.MAX_SYMBOLS` distinct symbols (422
    beyond: the risk view is n x n)."""

    model_config = ConfigDict(extra="forbid")
    portfolios: list[StressPortfolioIn] = Field(min_length=1, max_length=10_000)
    #: default: every built-in and every tenant scenario
    scenario_ids: list[str] | None = Field(default=None, max_length=100)
    sectors: dict[str, str] | None = Field(default=None, max_length=MAX_LOOKUP)


class StressPortfolioOut(BaseModel):
    id: str
    #: one per scenario, in `scenario_ids` order (percent of account value; loss negative)
    pnl_pct: list[DecimalStr]
    #: deepest fall inside each scenario (percent, positive)
    worst_pct: list[DecimalStr]
    worst_scenario_id: str


class StressOut(BaseModel):
    scenario_ids: list[str]
    #: per scenario, the symbols it had no history for (moved as the market)
    proxied: dict[str, list[str]]
    #: per scenario, the first and last close replayed (historical only)
    windows: dict[str, list[date]]
    portfolios: list[StressPortfolioOut]
    elapsed_ms: DecimalStr


class AlertStateOut(BaseModel):
    #: concentration, sector_concentration, above_tolerance, vol_regime or drawdown
    condition: str
    active: bool
    #: the numbers when it was raised (or, once cleared, when it cleared)
    values: dict[str, DecimalStr]
    alert_id: uuid.UUID | None
    raised_at: datetime | None
    cleared_at: datetime | None


class AccountAlertsOut(BaseModel):
    account_id: str
    #: the holdings the warnings watch (symbol -> units), from the latest assessed proposal
    watched_units: dict[str, DecimalStr]
    watched_since: date | None
    alerts: list[AlertStateOut]
