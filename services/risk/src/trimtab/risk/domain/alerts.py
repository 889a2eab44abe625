"""Early-warning decisions: the metrics of every watched account and a hysteresis state machine
that turns them into "raise" and "clear" transitions. Pure numpy, vectorized over accounts.

A condition is *active* once its metric has gone above its trigger; it then stays active (and
silent) until the metric falls to its clear level, `trigger * (1 - hysteresis)`, or below. The
gap keeps a metric hovering at the limit from raising and clearing every day. An unknown metric
(NaN: no price, too little history, no tolerance set) changes nothing: the state is held.

Conditions and their metrics (one number per account):
- `concentration`: the largest position's weight, against the concentration limit;
- `sector_concentration`: the largest sector's weight, against the sector limit;
- `above_tolerance`: the risk score, against the client's tolerance score;
- `vol_regime`: the EWMA volatility forecast of the portfolio over its mean over the previous
  `lookback` days (a ratio), against the regime factor (e.g. 1.5: the forecast jumped by half);
- `drawdown`: the fall of the portfolio's value from its running peak, in percent, against the
  drawdown limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONDITIONS = ("concentration", "sector_concentration", "above_tolerance", "vol_regime", "drawdown")
CLEARED_SUFFIX = ".cleared"


@dataclass(frozen=True)
class Transitions:
    active: np.ndarray  # the new state, per account
    fired: np.ndarray  # went active now
    cleared: np.ndarray  # went inactive now


def clear_level(trigger: np.ndarray | float, hysteresis: float) -> np.ndarray:
    if not 0.0 <= hysteresis < 1.0:
        raise ValueError("hysteresis must lie in [0, 1)")
    return np.asarray(trigger, dtype=float) * (1.0 - hysteresis)


def step(active: np.ndarray, metric: np.ndarray, trigger: np.ndarray | float,
         hysteresis: float) -> Transitions:
    """One evaluation of one condition for every account (arrays of the same length)."""
    active = np.asarray(active, dtype=bool)
    metric = np.asarray(metric, dtype=float)
    trig = np.broadcast_to(np.asarray(trigger, dtype=float), metric.shape)
    known = np.isfinite(metric) & np.isfinite(trig)
    with np.errstate(invalid="ignore"):
        fired = known & ~active & (metric > trig)
        cleared = known & active & (metric <= clear_level(trig, hysteresis))
    return Transitions((active | fired) & ~cleared, fired, cleared)


def drawdown_pct(values: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """100 * (1 - value / running peak); NaN where the peak is not positive."""
    values, peaks = np.asarray(values, dtype=float), np.asarray(peaks, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(peaks > 0, 100.0 * (1.0 - values / peaks), np.nan)


def portfolio_vol_annual(W: np.ndarray, cov_daily: np.ndarray, trading_days: int = 252) -> np.ndarray:
    """Annualized volatility of each row of W (accounts x symbols) under a daily covariance."""
    var = np.einsum("ij,jk,ik->i", W, cov_daily, W) if W.size else np.zeros(len(W))
    return np.sqrt(np.clip(var, 0.0, None) * trading_days)


@dataclass(frozen=True)
class VolRegime:
    forecast_daily: np.ndarray  # EWMA vol forecast after the last day, per account
    level_daily: np.ndarray  # mean forecast over the `lookback` days before it
    ratio: np.ndarray  # forecast / level (NaN: too little history)


def vol_regime(port_returns: np.ndarray, decay: float, lookback: int, warmup: int = 20) -> VolRegime:
    """EWMA (RiskMetrics, bias-corrected as the model) volatility path of each column of
    `port_returns` (days x accounts, daily log returns) and the jump of its last value against the
    mean of the `lookback` values before. Needs `lookback + warmup` days: an EWMA fresh from its
    start is too noisy to call a regime."""
    R = np.atleast_2d(np.asarray(port_returns, dtype=float))
    T, A = R.shape
    nan = np.full(A, np.nan)
    if T < lookback + warmup or lookback < 1:
        return VolRegime(nan, nan, nan)
    s = np.zeros(A)
    path = np.empty((T, A))
    for t in range(T):  # T steps of A-wide vector ops: accounts are the vectorized axis
        s = decay * s + (1.0 - decay) * R[t] ** 2
        path[t] = np.sqrt(s / (1.0 - decay ** (t + 1)))
    forecast, level = path[-1], path[-1 - lookback:-1].mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(level > 0, forecast / level, np.nan)
    return VolRegime(forecast, level, ratio)
