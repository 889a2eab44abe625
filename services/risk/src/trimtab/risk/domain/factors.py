"""Statistical factor model of the risk model's covariance, in the optimizer's factor form. Pure.

The covariance S (daily, PSD, priors filled in) is split by its eigen-decomposition
`S = V L V'` into k statistical factors and a diagonal rest:

    S ~= F' F + diag(d)      F = sqrt(L_k) V_k'   (k x n exposures, factor covariance = I)
                             d = diag(S) - diag(F' F) >= 0   (specific variances)

so every security's own variance is kept exactly, the k largest directions of co-movement are
kept exactly, and the rest of the correlation structure is dropped. This is the form a convex
optimizer wants (`||F w||^2 + sum d_i w_i^2` is cheap in n). `k` defaults to the number of
factors explaining `explained` of the variance, at most `max_factors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FactorModel:
    symbols: tuple[str, ...]
    exposures: np.ndarray  # (k x n)
    specific_var_daily: np.ndarray  # (n,)
    explained_fraction: float

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(f"pc{i + 1}" for i in range(self.exposures.shape[0]))

    def covariance(self) -> np.ndarray:
        return self.exposures.T @ self.exposures + np.diag(self.specific_var_daily)


def statistical_factors(
    symbols: Sequence[str], cov_daily: np.ndarray, max_factors: int = 5, explained: float = 0.8,
) -> FactorModel:
    n = len(symbols)
    if n == 0:
        return FactorModel((), np.zeros((0, 0)), np.zeros(0), 1.0)
    vals, vecs = np.linalg.eigh((cov_daily + cov_daily.T) / 2.0)
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0.0, None), vecs[:, order]
    total = vals.sum()
    share = np.cumsum(vals) / total if total > 0 else np.ones(n)
    k = int(min(max_factors, n, np.searchsorted(share, explained) + 1))
    exposures = np.sqrt(vals[:k])[:, None] * vecs[:, :k].T
    # eigenvectors are defined up to sign: fix it so the largest-magnitude exposure is positive
    exposures *= np.where(exposures[np.arange(k), np.abs(exposures).argmax(axis=1)] < 0, -1, 1)[:, None]
    d = np.clip(np.diag(cov_daily) - (exposures ** 2).sum(axis=0), 0.0, None)
    return FactorModel(tuple(symbols), exposures, d, float(share[k - 1]) if k else 1.0)
