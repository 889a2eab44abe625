"""Which exposures and conditions drive a portfolio's risk score: Shapley values via `shap`. Pure.

The explained quantity is the score before rounding: the 95 % one-year downside in percent,
100 (1 - exp(-z95 sigma_annual)) (`score.py`), with sigma from the same covariance the score
uses. Features:

- one *exposure* per held symbol: "off" moves its weight to cash (the all-cash portfolio, whose
  downside is 0, is the background);
- optionally the *market conditions*: "on" is the covariance of today's model (EWMA, recent
  days weigh most), "off" a baseline covariance (the long-window sample covariance of the same
  symbols). Its value says how much of the score today's volatility regime adds (or removes)
  compared with calmer (or stormier) average conditions.

The contributions add up to the downside (efficiency: base 0 + sum = downside), which
`attribute_score` checks. Up to `EXACT_MAX` features `shap.explainers.Exact` computes the exact
Shapley values (2^F evaluations, vectorized: one quadratic form per coalition); beyond that,
`shap.explainers.Permutation` with a fixed seed (antithetic permutations: efficiency still holds
exactly, each value is an unbiased estimate), and `method` says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .portfolio import TRADING_DAYS, is_cash
from .score import MAX_SCORE, MIN_SCORE, downside_1y

CONDITIONS = "market_conditions"
EXACT_MAX = 14
EFFICIENCY_TOL_PCT = 1e-8


@dataclass(frozen=True)
class ScoreAttribution:
    features: tuple[str, ...]
    kinds: tuple[str, ...]  # "exposure" or "condition"
    weights: tuple[float, ...]  # the exposure's weight (the condition: 1.0)
    contributions_pct: np.ndarray  # percentage points of downside, one per feature
    downside_pct: float
    score: int
    vol_annual: float
    #: the downside of the same portfolio under the baseline covariance (None without one)
    baseline_downside_pct: float | None
    method: str
    evaluations: int
    efficiency_error_pct: float


def _downside_pct(var_daily: np.ndarray) -> np.ndarray:
    return 100.0 * downside_1y(np.sqrt(np.maximum(var_daily, 0.0) * TRADING_DAYS))


def attribute_score(
    weights: Mapping[str, float],
    symbols: Sequence[str],
    cov_daily: np.ndarray,
    *,
    baseline_cov_daily: np.ndarray | None = None,
    exact_max: int = EXACT_MAX,
    seed: int = 0,
) -> ScoreAttribution:
    """Shapley values of the downside over the held exposures (and the conditions, if a baseline
    covariance of `symbols` is given). `cov_daily` is indexed by `symbols`; cash is no feature."""
    import shap  # lazy: heavy import

    index = {s: k for k, s in enumerate(symbols)}
    held = sorted(s for s, w in weights.items() if not is_cash(s) and float(w) != 0.0)
    missing = [s for s in held if s not in index]
    if missing:
        raise KeyError(f"no covariance for {missing}")
    cols = np.array([index[s] for s in held], dtype=np.intp)
    w = np.array([float(weights[s]) for s in held])
    cov = np.asarray(cov_daily, dtype=float)[np.ix_(cols, cols)]
    base_cov = None if baseline_cov_daily is None else np.asarray(baseline_cov_daily, float)[np.ix_(cols, cols)]
    n = len(held)
    features = tuple(held) + ((CONDITIONS,) if base_cov is not None else ())
    evaluations = 0

    def value(X: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        X = np.atleast_2d(np.asarray(X, dtype=float))
        evaluations += len(X)
        W = X[:, :n]
        var = np.einsum("bi,ij,bj->b", W, cov, W)
        if base_cov is not None:
            regime = X[:, n]
            var = regime * var + (1.0 - regime) * np.einsum("bi,ij,bj->b", W, base_cov, W)
        return _downside_pct(var)

    x = np.concatenate([w, [1.0] if base_cov is not None else []])[None, :]
    full = float(value(x)[0])
    evaluations = 0
    k = len(features)
    if k == 0:
        contributions, method = np.zeros(0), "none (all cash)"
    else:
        masker = shap.maskers.Independent(np.zeros((1, k)), max_samples=1)
        if k <= exact_max:
            explainer = shap.explainers.Exact(value, masker)
            result = explainer(x, silent=True)
            method = f"shapley-exact/shap-{shap.__version__}"
        else:
            explainer = shap.explainers.Permutation(value, masker, seed=seed)
            result = explainer(x, max_evals=max(2 * k + 1, 20 * k), silent=True)
            method = f"shapley-permutation(seed={seed})/shap-{shap.__version__}"
        contributions = np.asarray(result.values, dtype=float).reshape(k)
    error = abs(float(contributions.sum()) - full) if k else abs(full)
    if error > EFFICIENCY_TOL_PCT * max(1.0, full):
        raise ArithmeticError(f"efficiency violated: |sum - downside| = {error:.3e} pp")
    vol = float(np.sqrt(max(float(w @ cov @ w), 0.0) * TRADING_DAYS))
    baseline = None if base_cov is None else float(_downside_pct(np.array([w @ base_cov @ w]))[0])
    return ScoreAttribution(
        features=features, kinds=("exposure",) * n + (("condition",) if base_cov is not None else ()),
        weights=tuple(float(v) for v in w) + ((1.0,) if base_cov is not None else ()),
        contributions_pct=contributions,
        downside_pct=full, score=int(np.clip(np.rint(full), MIN_SCORE, MAX_SCORE)), vol_annual=vol,
        baseline_downside_pct=baseline, method=method, evaluations=evaluations,
        efficiency_error_pct=error,
    )


def sample_covariance(log_returns: np.ndarray) -> np.ndarray:
    """Daily sample covariance of a (T x n) return panel: the long-window baseline conditions."""
    r = np.asarray(log_returns, dtype=float)
    return np.atleast_2d(np.cov(r, rowvar=False, ddof=1))
