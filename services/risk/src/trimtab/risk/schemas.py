"""Request and response models of the risk API (separate from the tables and the events)."""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from trimtab.shared.events import RiskModelInfo
from trimtab.shared.limits import IsoDate
from trimtab.shared.money import DecimalStr

from .domain.history import MARKET
from .domain.scenarios import MAX_SHOCK, MIN_SHOCK

#: an account id in a path: the tables hold account ids of at most 200 characters
ACCOUNT_ID_MAX = 200
AccountId = Annotated[str, Path(min_length=1, max_length=ACCOUNT_ID_MAX)]
#: a scenario id as the `scenarios` table holds it
ScenarioId = Annotated[str, Field(min_length=1, max_length=64)]


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
#: the largest account value, price and average daily volume a what-if takes: far above any real
#: account or security, far below what overflows the float arithmetic of the measures
MAX_ACCOUNT_USD = Decimal("1e12")
MAX_PRICE_USD = Decimal("1e9")
MAX_ADV_SHARES = Decimal("1e13")
#: places of a what-if's liquidity inputs (a price as `daily_closes.close_usd` holds it): a
#: positive number of at most 6 places is at least 1e-6, never a float 0 to divide by
LIQUIDITY_PLACES = 6
PriceUsd = Annotated[Decimal, Field(gt=0, le=MAX_PRICE_USD, decimal_places=LIQUIDITY_PLACES)]
AdvShares = Annotated[Decimal, Field(gt=0, le=MAX_ADV_SHARES, decimal_places=LIQUIDITY_PLACES)]


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
    #: (each positive, at most 6 decimal places, and at most 1e12 USD, 1e9 USD, 1e13 shares)
    account_value_usd: Decimal | None = Field(default=None, gt=0, le=MAX_ACCOUNT_USD,
                                              decimal_places=LIQUIDITY_PLACES)
    prices_usd: dict[str, PriceUsd] | None = Field(default=None, max_length=MAX_LOOKUP)
    adv_shares: dict[str, AdvShares] | None = Field(default=None, max_length=MAX_LOOKUP)
    participation: Decimal = Field(default=Decimal("0.2"), gt=0, le=1,
                                   decimal_places=LIQUIDITY_PLACES)
    #: a risk score (1..99) to flag against
    tolerance_score: int | None = Field(default=None, ge=1, le=99)
    #: scenario ids to stress the portfolio under (default: the built-in ones; [] for none)
    scenario_ids: list[ScenarioId] | None = Field(default=None, max_length=100)
    #: also fit a GARCH(1,1) to the portfolio's return history (~50 ms); JSON true/false only
    #: (lax mode read 1 or "yes" as true: found by `make fuzz`)
    garch: StrictBool = False

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


#: decimal places of the stored limits (`risk_profiles`: Numeric(6, 4) and Numeric(8, 4)): a
#: limit with more places would be rounded on the way in (0.00001 to 0, which no limit may be)
LIMIT_PLACES = 4


def utf8(text: str) -> str:
    """Text PostgreSQL can store: a JSON escape of half a surrogate pair ("\\ud800") parses to a
    str that has no UTF-8 form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no unpaired surrogate escapes)") from None
    return text


def finite_json(value: Any) -> Any:
    """JSON for a JSONB column: Python's parser reads NaN, Infinity and 1e999 (as inf), which
    PostgreSQL's JSON refuses, and unpaired surrogate escapes, which have no UTF-8 form.
    Iterative: a deeply nested document cannot exhaust the stack."""
    stack = [value]
    while stack:
        x = stack.pop()
        if isinstance(x, float) and not math.isfinite(x):
            raise ValueError("numbers must be finite (no NaN, Infinity or 1e999)")
        if isinstance(x, str):
            utf8(x)
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return value


class RiskProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tolerance_score: int = Field(ge=1, le=99)
    #: at most 4 decimal places, as stored
    concentration_limit: Decimal | None = Field(default=None, gt=0, le=1, decimal_places=LIMIT_PLACES)
    drawdown_limit_pct: Decimal | None = Field(default=None, gt=0, le=100, decimal_places=LIMIT_PLACES)
    #: the answers the score came from, kept for the record
    questionnaire: dict[str, Any] | None = None

    @field_validator("questionnaire")
    @classmethod
    def _storable(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return finite_json(v)


class RiskProfileOut(BaseModel):
    """A stored profile as it is: no input rule applies (a limit stored before the places were
    checked, 0.0000, must still be readable, so that it can be seen and set again)."""

    tolerance_score: int
    concentration_limit: DecimalStr | None
    drawdown_limit_pct: DecimalStr | None
    questionnaire: dict[str, Any] | None
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
    start: IsoDate | None = None
    end: IsoDate | None = None
    #: simple returns: {"market": "-0.2"}, {"Energy": "-0.3"}, {"MTUM": "-0.1"}, {"AAPL": "-0.5"};
    #: each from -1 (-100 %) to 10 (+1,000 %), at most 6 decimal places
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
        for k in self.shocks:
            utf8(k)
        bad = sorted(k for k, v in self.shocks.items() if not _shock_ok(v))
        if bad:
            raise ValueError(
                f"shocks are simple returns from {MIN_SHOCK:g} (-100 %) to {MAX_SHOCK:g} "
                f"(+{MAX_SHOCK * 100:,.0f} %) with at most {SHOCK_PLACES} decimal places: "
                f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}")
        return self


#: decimal places of a shock: with at most two integer digits, 6 places survive the domain's
#: float arithmetic and the response (`repr` of the float) exactly
SHOCK_PLACES = 6


_SHOCK_MIN, _SHOCK_MAX = Decimal(repr(MIN_SHOCK)), Decimal(repr(MAX_SHOCK))


def _shock_ok(v: Decimal) -> bool:
    return (v.is_finite() and _SHOCK_MIN <= v <= _SHOCK_MAX
            and v.normalize().as_tuple().exponent >= -SHOCK_PLACES)  # type: ignore[operator]


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
    #: False for a stored scenario that cannot run (defined before shocks were bounded, e.g. a
    #: market move of +1e300): stress runs leave it out and say so; `problem` says why
    usable: bool = True
    problem: str | None = None


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
    #: default: every built-in and every usable tenant scenario; if given, 1 to 100 ids
    scenario_ids: list[ScenarioId] | None = Field(default=None, min_length=1, max_length=100)
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
    #: the scenarios left out, with why: a stored scenario that cannot run (see `ScenarioOut.usable`)
    skipped: dict[str, str] = Field(default_factory=dict)


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
