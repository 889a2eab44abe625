"""Portfolio volatility from the EWMA model, with a documented prior for what it does not know.

Volatility is `sqrt(252) * sqrt(w' S w)`: S the daily covariance, w the weights as fractions of
account value. Cash (a weight keyed `CASH`/`$CASH`, or the part of the account the weights leave
out) has zero variance and drops out.

Prior. A symbol the model does not know yet (fewer than `min_observations` daily returns) gets
`Prior.vol_annual` (20 %/yr by default, about a broad equity index's long-run volatility) and
`Prior.correlation` (0.3, about the long-run average pairwise correlation of US stocks) with every
other symbol; the assessment says so with a `prior_used:<SYM>` flag. A pair of known symbols that
was never observed together (or fewer than `min_observations` times) gets the prior correlation
with its estimated volatilities. The correlation matrix so assembled is projected onto the
positive semi-definite cone (eigenvalues clipped at zero, unit diagonal restored), since pairwise
estimates over different days and priors need not be jointly consistent; a non-PSD matrix could
report a negative variance for some portfolio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .ewma import EwmaCovariance

TRADING_DAYS = 252
CASH_KEYS = frozenset({"CASH", "$CASH"})


def is_cash(symbol: str) -> bool:
    return symbol.upper() in CASH_KEYS


@dataclass(frozen=True)
class Prior:
    vol_annual: float = 0.20
    correlation: float = 0.30

    def __post_init__(self) -> None:
        if not self.vol_annual > 0:
            raise ValueError("prior volatility must be positive")
        if not -1.0 < self.correlation < 1.0:
            raise ValueError("prior correlation must lie strictly between -1 and 1")

    @property
    def vol_daily(self) -> float:
        return self.vol_annual / math.sqrt(TRADING_DAYS)


@dataclass(frozen=True)
class RiskView:
    """The daily covariance of some symbols, made usable: priors filled in, PSD."""

    symbols: tuple[str, ...]
    cov_daily: np.ndarray
    prior_used: tuple[str, ...]

    def vol_annual(self, weights: Mapping[str, float]) -> float:
        """Annualized volatility (a fraction: 0.15 = 15 %/yr) of a weight vector; cash is zero."""
        index = {s: k for k, s in enumerate(self.symbols)}
        w = np.zeros(len(self.symbols))
        for s, x in weights.items():
            if is_cash(s):
                continue
            if s not in index:
                raise KeyError(f"{s} is not in this risk view")
            w[index[s]] += float(x)
        var = float(w @ self.cov_daily @ w)
        return math.sqrt(TRADING_DAYS) * math.sqrt(max(var, 0.0))

    def vol_annual_of(self, symbol: str) -> float:
        k = self.symbols.index(symbol)
        return math.sqrt(TRADING_DAYS * max(float(self.cov_daily[k, k]), 0.0))


def nearest_psd_correlation(corr: np.ndarray) -> np.ndarray:
    """Clip negative eigenvalues of a symmetric matrix and rescale it to a unit diagonal."""
    sym = (corr + corr.T) / 2.0
    vals, vecs = np.linalg.eigh(sym)
    if vals.min() >= 0:
        return sym
    fixed = (vecs * np.clip(vals, 0.0, None)) @ vecs.T
    d = np.sqrt(np.clip(np.diag(fixed), 1e-300, None))
    out = fixed / np.outer(d, d)
    np.fill_diagonal(out, 1.0)
    return out


def risk_view(
    model: EwmaCovariance, symbols: Sequence[str], prior: Prior = Prior(), min_observations: int = 1,
    shrinkage: float = 0.0,
) -> RiskView:
    """The covariance of `symbols` (cash left out), with the prior where the model is too young.

    `shrinkage` (0..1) pulls the estimated correlations towards their average (a constant-
    correlation target): EWMA with a short half-life estimates n(n-1)/2 correlations from a few
    dozen effective days, and the extreme ones are mostly noise. Volatilities are not shrunk."""
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError("shrinkage must lie in [0, 1]")
    names = tuple(sorted({s for s in symbols if not is_cash(s)}))
    n = len(names)
    if n == 0:
        return RiskView((), np.zeros((0, 0)), ())
    cov = model.covariance(names)
    pairs = model.co_observations(names)
    known = np.array([model.observations(s) >= min_observations for s in names], dtype=bool)
    diag = np.diag(cov)
    vol = np.where(known & (diag > 0), np.sqrt(np.where(diag > 0, diag, 0.0)), prior.vol_daily)
    vol = np.where(known & ~(diag > 0), 0.0, vol)  # a known constant price: zero, not the prior
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(vol, vol)
    trusted = np.outer(known, known) & (pairs >= min_observations) & np.isfinite(corr)
    corr = np.where(trusted, np.clip(corr, -1.0, 1.0), prior.correlation)
    off = trusted & ~np.eye(n, dtype=bool)
    if shrinkage > 0 and off.any():
        corr = np.where(off, (1.0 - shrinkage) * corr + shrinkage * corr[off].mean(), corr)
    np.fill_diagonal(corr, 1.0)
    corr = nearest_psd_correlation(corr)
    prior_used = tuple(s for s, k in zip(names, known, strict=True) if not k)
    return RiskView(names, corr * np.outer(vol, vol), prior_used)
