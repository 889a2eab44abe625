"""Statistical tests of a VaR model's exceptions. Pure (scipy for the chi-square tail).

- Kupiec (1995) proportion-of-failures: with x exceptions in T days at nominal rate p,
  `LR_pof = -2 ln[(1-p)^(T-x) p^x] + 2 ln[(1-x/T)^(T-x) (x/T)^x]`, chi-square with 1 degree of
  freedom under the hypothesis that the true exception rate is p.
- Christoffersen (1998) independence: do exceptions cluster? Compares the probability of an
  exception after an exception with that after a quiet day; chi-square(1).
- EWMA variance path: the RiskMetrics recursion on one return series, one-step-ahead.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import chi2


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def kupiec_pof(exceptions: int, days: int, rate: float) -> tuple[float, float]:
    """(LR statistic, p-value) of the proportion-of-failures test."""
    if days <= 0 or not 0 < rate < 1 or not 0 <= exceptions <= days:
        raise ValueError("need 0 <= exceptions <= days, days > 0 and 0 < rate < 1")
    x, t = exceptions, days
    phat = x / t
    null = _xlogy(t - x, 1 - rate) + _xlogy(x, rate)
    alt = _xlogy(t - x, 1 - phat) + _xlogy(x, phat)
    lr = max(-2.0 * (null - alt), 0.0)
    return lr, float(chi2.sf(lr, 1))


def christoffersen_independence(hits: np.ndarray) -> tuple[float, float]:
    """(LR statistic, p-value) of the independence test on a 0/1 exception series."""
    h = np.asarray(hits, dtype=int)
    prev, cur = h[:-1], h[1:]
    n00 = int(((prev == 0) & (cur == 0)).sum())
    n01 = int(((prev == 0) & (cur == 1)).sum())
    n10 = int(((prev == 1) & (cur == 0)).sum())
    n11 = int(((prev == 1) & (cur == 1)).sum())
    if n01 + n11 == 0 or n00 + n10 == 0:
        return 0.0, 1.0
    p01 = n01 / max(n00 + n01, 1)
    p11 = n11 / max(n10 + n11, 1)
    p = (n01 + n11) / (n00 + n01 + n10 + n11)
    null = _xlogy(n00 + n10, 1 - p) + _xlogy(n01 + n11, p)
    alt = _xlogy(n00, 1 - p01) + _xlogy(n01, p01) + _xlogy(n10, 1 - p11) + _xlogy(n11, p11)
    lr = max(-2.0 * (null - alt), 0.0)
    return lr, float(chi2.sf(lr, 1))


def ewma_variance(returns: np.ndarray, decay: float, start_var: float) -> np.ndarray:
    """One-step-ahead EWMA variance: out[t] is the forecast for day t made after day t-1."""
    r2 = np.asarray(returns, dtype=float) ** 2
    out = np.empty(len(r2))
    v = start_var
    for t in range(len(r2)):
        out[t] = v
        v = decay * v + (1.0 - decay) * r2[t]
    return out
