"""Drift of one account against its model, exactly (Decimal) and for many accounts at once (numpy).

weight_i = shares_i * price_i / (cash + sum_j shares_j * price_j); deviation_i = weight_i - target_i
over every symbol the account holds or targets. The rule "absolute_band" fires when
max_i |deviation_i| > band_abs. An account lacking a price for any held or targeted symbol has no
defined weights and never fires (a guess could send a wrong snapshot downstream).

`drift_of` is the authority: its Decimal result decides and goes into events. `vector_drift` is the
same arithmetic in float64 over an accounts x securities matrix, used to screen hundreds of
accounts per tick; screening uses a small tolerance so that rounding can only add candidates,
which `drift_of` then confirms or drops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

RULE = "absolute_band"
ZERO = Decimal(0)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class DriftResult:
    """Exact drift of one account. Empty weights when prices are missing or value is not positive."""

    total_value_usd: Decimal
    weights: dict[str, Decimal]
    targets: dict[str, Decimal]
    deviations: dict[str, Decimal]
    max_abs_deviation: Decimal
    band_abs: Decimal
    breached: tuple[str, ...]
    missing_prices: tuple[str, ...]

    @property
    def measurable(self) -> bool:
        return not self.missing_prices and self.total_value_usd > 0

    @property
    def fires(self) -> bool:
        return self.measurable and bool(self.breached)

    @property
    def rule(self) -> str | None:
        return RULE if self.fires else None


def relevant_symbols(shares: Mapping[str, Decimal], targets: Mapping[str, Decimal]) -> list[str]:
    """Symbols that take part in the drift: held (non-zero shares) or targeted (weight > 0)."""
    return sorted({s for s, q in shares.items() if q != 0} | {s for s, w in targets.items() if w > 0})


def drift_of(
    cash_usd: Decimal,
    shares: Mapping[str, Decimal],
    targets: Mapping[str, Decimal],
    prices: Mapping[str, Decimal],
    band_abs: Decimal,
) -> DriftResult:
    symbols = relevant_symbols(shares, targets)
    tgt = {s: targets.get(s, ZERO) for s in symbols}
    missing = tuple(s for s in symbols if s not in prices)
    mv = {s: shares.get(s, ZERO) * prices[s] for s in symbols if s in prices}
    total = cash_usd + sum(mv.values(), ZERO)
    if missing or total <= 0:
        return DriftResult(total, {}, tgt, {}, ZERO, band_abs, (), missing)
    weights = {s: mv[s] / total for s in symbols}
    deviations = {s: weights[s] - tgt[s] for s in symbols}
    max_abs = max((abs(d) for d in deviations.values()), default=ZERO)
    breached = tuple(s for s in symbols if abs(deviations[s]) > band_abs)
    return DriftResult(total, weights, tgt, deviations, max_abs, band_abs, breached, ())


@dataclass(frozen=True)
class VectorDrift:
    """Drift of A accounts over S securities. Rows that are not measurable hold NaN weights."""

    weights: FloatArray  # (A, S)
    deviations: FloatArray  # (A, S), 0 where a symbol is not relevant to the account
    max_abs_deviation: FloatArray  # (A,), NaN where not measurable
    total_value_usd: FloatArray  # (A,)
    measurable: BoolArray  # (A,)
    breach: BoolArray  # (A,)


def vector_drift(
    shares: FloatArray,
    targets: FloatArray,
    cash_usd: FloatArray,
    prices: FloatArray,
    band_abs: FloatArray,
    tolerance: float = 0.0,
) -> VectorDrift:
    """`drift_of` for every row at once. `prices` holds NaN for a symbol without a price."""
    relevant = (shares != 0) | (targets > 0)
    no_price = np.isnan(prices)
    complete = ~(relevant & no_price[None, :]).any(axis=1)
    px = np.where(no_price, 0.0, prices)
    mv = np.where(relevant, shares * px[None, :], 0.0)
    total = cash_usd + mv.sum(axis=1)
    ok = complete & (total > 0)
    safe_total = np.where(ok, total, 1.0)
    weights = np.where(ok[:, None], mv / safe_total[:, None], np.nan)
    deviations = np.where(ok[:, None] & relevant, weights - targets, 0.0)
    max_abs = np.where(ok, np.abs(deviations).max(axis=1, initial=0.0), np.nan)
    breach = ok & (np.nan_to_num(max_abs, nan=-1.0) > band_abs - tolerance)
    return VectorDrift(weights, deviations, max_abs, total, ok, breach)
