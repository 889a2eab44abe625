"""Pre- and post-trade risk of a proposal, and the flags a reviewer should see. Pure.

Flags, in this order:
- `prior_used:<SYM>`: the model does not know SYM yet; its risk is the prior's (`portfolio.py`).
  A note on data quality, not a breach: it does not raise an alert on its own.
- `vol_increase`: post-trade volatility exceeds pre-trade by more than `vol_increase_pct`
  percentage points (annualized).
- `concentration`: some post-trade weight (cash excluded) exceeds `concentration_limit`.
The last two are *breaches*: a proposal with one raises one `RiskAlerted`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from .ewma import EwmaCovariance
from .portfolio import Prior, RiskView, is_cash, risk_view

PCT_PLACES = Decimal("0.0001")
BREACH_FLAGS = ("vol_increase", "concentration")


def to_pct(vol_fraction: float) -> Decimal:
    """A volatility fraction (0.153) as percent with 4 places (15.3000)."""
    return (Decimal(repr(float(vol_fraction))) * 100).quantize(PCT_PLACES, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Limits:
    vol_increase_pct: Decimal = Decimal("2")
    concentration_limit: Decimal = Decimal("0.35")
    min_observations: int = 10
    prior: Prior = Prior()


@dataclass(frozen=True)
class Assessment:
    pre_vol_annual_pct: Decimal
    post_vol_annual_pct: Decimal
    flags: tuple[str, ...]
    max_post_weight: Decimal
    max_post_symbol: str | None

    @property
    def breaches(self) -> tuple[str, ...]:
        return tuple(f for f in self.flags if f in BREACH_FLAGS)


def vol_pct(model: EwmaCovariance, weights: Mapping[str, Decimal], limits: Limits) -> tuple[Decimal, RiskView]:
    view = risk_view(model, [s for s, w in weights.items() if w != 0], limits.prior, limits.min_observations)
    return to_pct(view.vol_annual({s: float(w) for s, w in weights.items() if w != 0})), view


def assess(
    model: EwmaCovariance, pre_weights: Mapping[str, Decimal], post_weights: Mapping[str, Decimal],
    limits: Limits,
) -> Assessment:
    held = [s for s, w in (*pre_weights.items(), *post_weights.items()) if w != 0]
    view = risk_view(model, held, limits.prior, limits.min_observations)
    pre = to_pct(view.vol_annual({s: float(w) for s, w in pre_weights.items() if w != 0}))
    post = to_pct(view.vol_annual({s: float(w) for s, w in post_weights.items() if w != 0}))
    flags = [f"prior_used:{s}" for s in view.prior_used]
    if post - pre > limits.vol_increase_pct:
        flags.append("vol_increase")
    risky = {s: w for s, w in post_weights.items() if not is_cash(s)}
    top = max(risky, key=lambda s: (risky[s], s), default=None)
    top_weight = risky[top] if top is not None else Decimal(0)
    if top_weight > limits.concentration_limit:
        flags.append("concentration")
    return Assessment(pre, post, tuple(flags), top_weight, top)
