"""Risk measures of many portfolios at once: volatility, VaR, CVaR, drawdown, beta, tracking error.

Pure numpy. Every function takes a weight matrix `W` of shape (portfolios x symbols), weights as
fractions of account value (what a row leaves out is cash, which neither moves nor varies), and
returns one value per row, so pre- and post-trade (or ten thousand accounts) cost one pass.

Conventions (published in docs/risk.md):
- Losses are positive fractions of account value (0.031 = the account loses 3.1 %).
- Parametric VaR/CVaR: zero-mean normal daily returns with the model's covariance;
  `VaR = z * sigma * sqrt(h)`, `CVaR = sigma * sqrt(h) * pdf(z) / (1 - level)`. The h-day figure
  scales with sqrt(h) (square-root-of-time, as Basel's 10-day VaR).
- Historical VaR/CVaR: the portfolio's simple returns replayed over the model's window of daily
  returns (h-day: overlapping h-day compounded returns). With the losses sorted worst first and
  `k = ceil(N * (1 - level))`, VaR is the k-th worst loss and CVaR the mean of the k worst.
- Maximum drawdown: of the portfolio's wealth path over the same window, rebalanced daily to
  the weights (constant-mix), as a positive fraction.
"""

from __future__ import annotations

import math

import numpy as np

TRADING_DAYS = 252
LEVELS = (0.95, 0.99)
HORIZONS = (1, 10)
#: standard normal quantiles and densities at the published levels (scipy-free hot path)
Z = {0.95: 1.6448536269514722, 0.99: 2.3263478740408408}
PDF_Z = {lvl: math.exp(-z * z / 2) / math.sqrt(2 * math.pi) for lvl, z in Z.items()}


def as_matrix(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w[None, :] if w.ndim == 1 else w


def variance_daily(W: np.ndarray, cov_daily: np.ndarray) -> np.ndarray:
    """w' S w per row, clipped at zero (a PSD S gives >= 0 up to rounding)."""
    W = as_matrix(W)
    return np.maximum(np.einsum("ki,ij,kj->k", W, cov_daily, W), 0.0)


def vol_annual(W: np.ndarray, cov_daily: np.ndarray) -> np.ndarray:
    return np.sqrt(variance_daily(W, cov_daily) * TRADING_DAYS)


def parametric_var(vol_daily: np.ndarray, level: float, horizon_days: int = 1) -> np.ndarray:
    return Z[level] * np.asarray(vol_daily) * math.sqrt(horizon_days)


def parametric_cvar(vol_daily: np.ndarray, level: float, horizon_days: int = 1) -> np.ndarray:
    return np.asarray(vol_daily) * math.sqrt(horizon_days) * PDF_Z[level] / (1.0 - level)


def simple_returns(log_returns: np.ndarray, horizon_days: int = 1) -> np.ndarray:
    """(T x n) daily log returns -> (T-h+1 x n) overlapping h-day simple returns."""
    r = np.asarray(log_returns, dtype=float)
    if horizon_days > 1:
        c = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(r, axis=0)])
        r = c[horizon_days:] - c[:-horizon_days]
    return np.expm1(r)


def tail_var_cvar(losses: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Historical VaR and CVaR of (N x k) losses, per column (see the module docstring)."""
    n = losses.shape[0]
    if n == 0:
        nan = np.full(losses.shape[1], np.nan)
        return nan, nan
    k = max(1, math.ceil(n * (1.0 - level) - 1e-9))
    # the k largest losses per column, without a full sort
    worst = -np.partition(-losses, k - 1, axis=0)[:k]
    return worst.min(axis=0), worst.mean(axis=0)


def historical_var_cvar(
    W: np.ndarray, log_returns: np.ndarray, level: float, horizon_days: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    losses = -(simple_returns(log_returns, horizon_days) @ as_matrix(W).T)
    return tail_var_cvar(losses, level)


def max_drawdown(W: np.ndarray, log_returns: np.ndarray) -> np.ndarray:
    """Worst peak-to-trough fall of the daily-rebalanced wealth path, per row."""
    W = as_matrix(W)
    if len(log_returns) == 0:
        return np.zeros(W.shape[0])
    port = np.log1p(simple_returns(log_returns) @ W.T)  # (T x k) portfolio log returns
    wealth = np.vstack([np.zeros((1, W.shape[0])), np.cumsum(port, axis=0)])
    peak = np.maximum.accumulate(wealth, axis=0)
    return -np.expm1((wealth - peak).min(axis=0))


def beta_to(W: np.ndarray, target: np.ndarray, cov_daily: np.ndarray) -> np.ndarray:
    """Beta of each row against the target portfolio: cov(w, t) / var(t); NaN for a riskless t."""
    t = np.asarray(target, dtype=float)
    var_t = float(t @ cov_daily @ t)
    if var_t <= 0:
        return np.full(as_matrix(W).shape[0], np.nan)
    return (as_matrix(W) @ cov_daily @ t) / var_t


def tracking_error_annual(W: np.ndarray, target: np.ndarray, cov_daily: np.ndarray) -> np.ndarray:
    return vol_annual(as_matrix(W) - np.asarray(target, dtype=float)[None, :], cov_daily)
