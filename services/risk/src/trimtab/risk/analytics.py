"""Glue between a tenant's model, the reference history and the pure measures: what the API and
the handlers call. No I/O beyond the (cached) reference history.

Decimal <-> float happens here: the domain computes in floats, the API and events carry Decimal
strings (percentages with 4 places, weights and betas with 6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal

import numpy as np

from .domain.assessment import History, Limits, risk_inputs
from .domain.ewma import EwmaCovariance
from .domain.factors import FactorModel, statistical_factors
from .domain.garch import MIN_OBSERVATIONS, GarchFit, fit_garch
from .domain.history import ReferenceHistory
from .domain.model import RiskModel
from .domain.portfolio import is_cash
from .domain.profile import RiskProfile, measure, weight_matrix
from .domain.scenarios import BUILTIN, Scenario, ShockSet, build_shocks
from .domain.stress import StressResult, stress
from .reference import ReferenceUnavailable, load_reference
from .schemas import ConcentrationOut, RiskMeasuresOut

PCT = Decimal("0.0001")
UNIT = Decimal("0.000001")
DAYS = Decimal("0.01")
#: wide enough to hold any finite float to a few places (1.8e308: 309 digits), so that a huge
#: number is reported, not an InvalidOperation of the default 28 digits
_WIDE = Context(prec=400, rounding=ROUND_HALF_EVEN)


def fixed(x: float | None, places: Decimal, scale: int = 1) -> Decimal | None:
    """`x * scale` as a Decimal with `places`, half to even; None if not finite."""
    if x is None or not math.isfinite(x):
        return None
    return _WIDE.multiply(Decimal(repr(float(x))), scale).quantize(places, context=_WIDE)


def pct(x: float | None) -> Decimal | None:
    return fixed(x, PCT, 100)


def unit(x: float | None) -> Decimal | None:
    return fixed(x, UNIT)


def floats(weights: Mapping[str, Decimal] | None) -> dict[str, float]:
    return {s: float(w) for s, w in (weights or {}).items() if w != 0 and not is_cash(s)}


def reference() -> ReferenceHistory | None:
    try:
        return load_reference()
    except ReferenceUnavailable:
        return None


def sectors_for(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    ref = reference()
    return {**(dict(ref.sectors) if ref else {}), **(extra or {})}


def measures_out(p: RiskProfile, garch_vol: float | None = None) -> RiskMeasuresOut:
    return RiskMeasuresOut(
        vol_annual_pct=pct(p.vol_annual), score=p.score, downside_1y_pct=pct(p.downside_1y),
        parametric_pct={k: pct(v) for k, v in p.parametric.items()},
        historical_pct={k: pct(v) for k, v in p.historical.items()},
        historical_days=p.historical_days, historical_excluded=list(p.historical_excluded),
        max_drawdown_pct=pct(p.max_drawdown), beta=unit(p.beta),
        tracking_error_annual_pct=pct(p.tracking_error_annual),
        concentration=ConcentrationOut(
            largest_symbol=p.largest_symbol, largest_weight=unit(p.largest_weight),
            top5_weight=unit(p.top5_weight), herfindahl=unit(p.herfindahl),
            largest_sector=p.largest_sector, largest_sector_weight=unit(p.largest_sector_weight),
            sector_weights={k: unit(v) for k, v in p.sector_weights.items()}),
        liquidity_days=fixed(p.liquidity_days, DAYS),
        garch_vol_annual_pct=pct(garch_vol),
    )


#: distinct symbols one request may measure: a risk view is an n x n covariance and its
#: eigendecomposition (n^3 work, n^2 memory); 2,000 take one to two seconds on one core
MAX_SYMBOLS = 2000


class TooManySymbols(ValueError):
    """More distinct symbols in one request than `MAX_SYMBOLS`."""


def check_symbols(symbols: Sequence[str]) -> None:
    if len(symbols) > MAX_SYMBOLS:
        raise TooManySymbols(f"{len(symbols)} distinct symbols in the request, more than the "
                             f"{MAX_SYMBOLS} one request may measure: split it")


@dataclass(frozen=True)
class ProfileInputs:
    """What `measure_profiles` needs, taken from the model: no reference to it remains, so the
    measuring can run on another thread while the model is updated (`prepare_profiles`)."""

    cov: EwmaCovariance
    history: History
    rows: list[dict[str, float]]
    target: dict[str, float]
    symbols: list[str]
    sectors: dict[str, str]


def prepare_profiles(
    model: RiskModel, portfolios: Sequence[Mapping[str, Decimal]], limits: Limits,
    target: Mapping[str, Decimal] | None = None, sectors: Mapping[str, str] | None = None,
) -> ProfileInputs:
    """Copy what some portfolios' measures need out of the model (O(n^2) for n symbols)."""
    rows = [floats(p) for p in portfolios]
    tgt = floats(target)
    syms = sorted({s for r in rows for s in r} | set(tgt))
    return ProfileInputs(model.covariance.subset(syms), model.recent_returns(syms, limits.history_days),
                         rows, tgt, syms, sectors_for(sectors))


def measure_profiles(
    inp: ProfileInputs, limits: Limits, shares: Sequence[Mapping[str, float]] | None = None,
    adv: Mapping[str, float] | None = None, participation: float = 0.2,
) -> tuple[list[RiskProfile], tuple[str, ...], tuple[str, ...]]:
    """(profiles, symbols, prior_used): the CPU-heavy part, safe off the event loop."""
    view, inputs = risk_inputs(inp.cov, inp.symbols, limits, inp.history, inp.sectors)
    W = weight_matrix(inp.rows, view.symbols)
    t = weight_matrix([inp.target], view.symbols)[0] if inp.target else None
    sh = ad = None
    if shares is not None and adv is not None:
        sh = weight_matrix(list(shares), view.symbols)
        ad = np.array([adv.get(s, np.nan) for s in view.symbols], dtype=float)
    return measure(W, inputs, t, sh, ad, participation), view.symbols, view.prior_used


def profiles(
    model: RiskModel, portfolios: Sequence[Mapping[str, Decimal]], limits: Limits,
    target: Mapping[str, Decimal] | None = None, sectors: Mapping[str, str] | None = None,
    shares: Sequence[Mapping[str, float]] | None = None, adv: Mapping[str, float] | None = None,
    participation: float = 0.2,
) -> tuple[list[RiskProfile], tuple[str, ...], tuple[str, ...]]:
    """(profiles, symbols, prior_used) of some portfolios under the tenant's model."""
    return measure_profiles(prepare_profiles(model, portfolios, limits, target, sectors), limits,
                            shares, adv, participation)


def portfolio_garch(model: RiskModel, weights: Mapping[str, Decimal], limits: Limits) -> GarchFit | None:
    """GARCH(1,1) of the portfolio's own return series over the history window, if long enough."""
    w = floats(weights)
    syms, r = model.recent_returns(list(w), max(limits.history_days, 1000), MIN_OBSERVATIONS)
    if len(r) < MIN_OBSERVATIONS or not syms:
        return None
    port = np.log1p(np.expm1(r) @ np.array([w[s] for s in syms]))
    return fit_garch(port, window_start=model.window_start, window_end=model.window_end,
                     model_version=str(model.version))


def security_garch(model: RiskModel, symbols: Sequence[str], days: int = 1000) -> list[tuple[str, GarchFit]]:
    out = []
    for s in symbols:
        syms, r = model.recent_returns([s], days, MIN_OBSERVATIONS)
        if syms:
            out.append((s, fit_garch(r[:, 0], window_start=model.window_start,
                                     window_end=model.window_end, model_version=str(model.version))))
    return out


def factor_model(model: RiskModel, limits: Limits) -> FactorModel:
    syms = [s for s in model.covariance.symbols
            if model.covariance.observations(s) >= limits.min_observations]
    view, _ = risk_inputs(model.covariance, syms, limits)
    return statistical_factors(view.symbols, view.cov_daily)


@dataclass(frozen=True)
class StressInputs:
    """What `stress_prepared` needs, taken from the model (`prepare_stress`)."""

    reference: ReferenceHistory
    cov: EwmaCovariance
    rows: list[dict[str, float]]
    symbols: list[str]


def prepare_stress(model: RiskModel, portfolios: Sequence[Mapping[str, Decimal]]) -> StressInputs:
    """Copy what stressing some portfolios needs out of the model (O(n^2) for n symbols);
    raises `ReferenceUnavailable` and `TooManySymbols`."""
    ref = reference()
    if ref is None:
        raise ReferenceUnavailable("stress tests need the reference price history")
    rows = [floats(p) for p in portfolios]
    syms = sorted({s for r in rows for s in r})
    check_symbols(syms)
    return StressInputs(ref, model.covariance.subset(syms), rows, syms)


def stress_prepared(
    inp: StressInputs, scenarios: Sequence[Scenario], limits: Limits,
    sectors: Mapping[str, str] | None = None,
) -> tuple[StressResult, tuple[str, ...], ShockSet]:
    """The CPU-heavy part of a stress run (risk view, shocks, the matrix pass): safe off the
    event loop."""
    view, _ = risk_inputs(inp.cov, inp.symbols, limits)
    shocks = build_shocks(scenarios, view.symbols, inp.reference, view.cov_daily, sectors)
    return stress(weight_matrix(inp.rows, view.symbols), shocks), view.symbols, shocks


def run_stress(
    model: RiskModel, scenarios: Sequence[Scenario], portfolios: Sequence[Mapping[str, Decimal]],
    limits: Limits, sectors: Mapping[str, str] | None = None,
) -> tuple[StressResult, tuple[str, ...], ShockSet]:
    return stress_prepared(prepare_stress(model, portfolios), scenarios, limits, sectors)


BUILTIN_BY_ID = {s.scenario_id: s for s in BUILTIN}
