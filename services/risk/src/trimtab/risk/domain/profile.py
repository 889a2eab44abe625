"""All measures of a few portfolios in one vectorized pass: the body of an assessment. Pure.

`RiskInputs` is what the model knows about some symbols: their covariance (priors filled in,
PSD), a window of daily log returns on which all of them traded (for historical measures), and
their sectors. `measure()` evaluates every measure of `measures.py` and `concentration.py` for
every row of a weight matrix at once and unpacks the result into one `RiskProfile` per row.
Historical measures leave out symbols without returns in the window (too new): those are named
in `historical_excluded` and already carry a `prior_used` flag in the parametric figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import measures as m
from .concentration import concentration, liquidity_days
from .score import downside_1y, score

MIN_HISTORY_DAYS = 60


@dataclass(frozen=True)
class RiskInputs:
    symbols: tuple[str, ...]
    cov_daily: np.ndarray
    #: (T x h) daily log returns of `history_symbols` on days all of them traded
    log_returns: np.ndarray
    history_symbols: tuple[str, ...]
    sectors: Mapping[str, str] = field(default_factory=dict)
    prior_used: tuple[str, ...] = ()


@dataclass(frozen=True)
class RiskProfile:
    vol_annual: float
    score: int
    downside_1y: float
    #: "var_95_1d", "cvar_99_10d", ... (losses as positive fractions)
    parametric: dict[str, float]
    historical: dict[str, float]
    historical_days: int
    historical_excluded: tuple[str, ...]
    max_drawdown: float | None
    beta: float | None
    tracking_error_annual: float | None
    largest_symbol: str | None
    largest_weight: float
    top5_weight: float
    herfindahl: float
    largest_sector: str | None
    largest_sector_weight: float
    sector_weights: dict[str, float]
    liquidity_days: float | None


def _key(kind: str, level: float, horizon: int) -> str:
    return f"{kind}_{round(level * 100)}_{horizon}d"


def _nan_to_none(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def measure(
    W: np.ndarray, inputs: RiskInputs, target: np.ndarray | None = None,
    shares: np.ndarray | None = None, adv_shares: np.ndarray | None = None,
    participation: float = 0.2,
) -> list[RiskProfile]:
    """Every measure of every row of W (portfolios x inputs.symbols)."""
    W = m.as_matrix(W)
    k = W.shape[0]
    cov = inputs.cov_daily
    vol_d = np.sqrt(m.variance_daily(W, cov))
    vol_a = vol_d * np.sqrt(m.TRADING_DAYS)
    par: dict[str, np.ndarray] = {}
    for lvl in m.LEVELS:
        for h in m.HORIZONS:
            par[_key("var", lvl, h)] = m.parametric_var(vol_d, lvl, h)
            par[_key("cvar", lvl, h)] = m.parametric_cvar(vol_d, lvl, h)

    col = {s: i for i, s in enumerate(inputs.symbols)}
    hcols = np.array([col[s] for s in inputs.history_symbols], dtype=np.intp)
    held = (W != 0).any(axis=0)
    in_hist = np.zeros(len(inputs.symbols), dtype=bool)
    in_hist[hcols] = True
    excluded = tuple(s for s, h, i in zip(inputs.symbols, held, in_hist, strict=True) if h and not i)
    T = len(inputs.log_returns)
    hist: dict[str, np.ndarray] = {}
    mdd = np.full(k, np.nan)
    if T >= MIN_HISTORY_DAYS:
        Wh = W[:, hcols]
        for lvl in m.LEVELS:
            for h in m.HORIZONS:
                v, c = m.historical_var_cvar(Wh, inputs.log_returns, lvl, h)
                hist[_key("var", lvl, h)], hist[_key("cvar", lvl, h)] = v, c
        mdd = m.max_drawdown(Wh, inputs.log_returns)

    beta = te = np.full(k, np.nan)
    if target is not None:
        beta = m.beta_to(W, target, cov)
        te = m.tracking_error_annual(W, target, cov)
    conc = concentration(W, inputs.symbols, inputs.sectors)
    liq = np.full(k, np.nan)
    if shares is not None and adv_shares is not None:
        liq = liquidity_days(shares, adv_shares, participation)
    scores, down = score(vol_a), downside_1y(vol_a)

    out = []
    for i in range(k):
        li, si = int(conc.largest_index[i]), int(conc.largest_sector_index[i])
        out.append(RiskProfile(
            vol_annual=float(vol_a[i]), score=int(scores[i]), downside_1y=float(down[i]),
            parametric={key: float(v[i]) for key, v in par.items()},
            historical={key: float(v[i]) for key, v in hist.items()},
            historical_days=T, historical_excluded=excluded,
            max_drawdown=_nan_to_none(mdd[i]), beta=_nan_to_none(beta[i]),
            tracking_error_annual=_nan_to_none(te[i]),
            largest_symbol=inputs.symbols[li] if conc.largest_weight[i] > 0 else None,
            largest_weight=float(conc.largest_weight[i]), top5_weight=float(conc.top5_weight[i]),
            herfindahl=float(conc.herfindahl[i]),
            largest_sector=conc.sector_names[si] if si >= 0 else None,
            largest_sector_weight=float(conc.largest_sector_weight[i]),
            sector_weights={nm: float(conc.sector_weights[i, j])
                            for j, nm in enumerate(conc.sector_names) if conc.sector_weights[i, j]},
            liquidity_days=_nan_to_none(liq[i]),
        ))
    return out


def weight_matrix(rows: Sequence[Mapping[str, float]], symbols: Sequence[str]) -> np.ndarray:
    col = {s: i for i, s in enumerate(symbols)}
    W = np.zeros((len(rows), len(symbols)))
    for r, weights in enumerate(rows):
        for s, w in weights.items():
            if s in col:
                W[r, col[s]] += float(w)
    return W
