"""The 1-99 risk score and what it means. Pure.

Meaning (published in docs/risk.md): a portfolio with score S is expected to lose about S % of
its value or more in one year out of twenty. Precisely, S is the 95 % one-year expected downside
in percent, rounded, clamped to 1..99:

    downside = 1 - exp(-z95 * sigma_annual)        (zero-drift lognormal, z95 = 1.645)
    score    = clamp(round(100 * downside), 1, 99)

with sigma_annual the portfolio's annualized volatility under the risk model. Cash scores 1;
a 15 %-volatility balanced-growth book about 22; a 20 %-volatility equity index about 28; a
single 60 %-volatility stock about 63. A client's tolerance is a score on the same scale: the
downside in one year out of twenty the client accepts.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.6448536269514722
MIN_SCORE, MAX_SCORE = 1, 99


def downside_1y(vol_annual: np.ndarray | float) -> np.ndarray:
    """95 % one-year expected downside as a fraction of value."""
    return -np.expm1(-Z95 * np.asarray(vol_annual, dtype=float))


def score(vol_annual: np.ndarray | float) -> np.ndarray:
    s = np.rint(100.0 * downside_1y(vol_annual))
    return np.clip(s, MIN_SCORE, MAX_SCORE).astype(int)


def downside_of_score(s: int) -> float:
    """The 95 % one-year downside (fraction) a score stands for."""
    if not MIN_SCORE <= s <= MAX_SCORE:
        raise ValueError(f"a risk score lies in {MIN_SCORE}..{MAX_SCORE}, got {s}")
    return s / 100.0


def vol_of_score(s: int) -> float:
    """The annualized volatility at which a portfolio reaches score `s` (for profiles and docs)."""
    return -math.log(1.0 - downside_of_score(s)) / Z95
