"""Pre- and post-trade risk of a proposal, and the flags a reviewer should see. Pure.

Both portfolios are measured in one vectorized pass (`profile.measure`): volatility, score,
parametric and historical VaR/CVaR, drawdown, beta and tracking error against the target,
concentration. Flags, in this order:
- `prior_used:<SYM>`: the model does not know SYM yet; its risk is the prior's (`portfolio.py`).
  A note on data quality, not a breach: it does not raise an alert on its own.
- `stale_model`: the model's last return day is more than `stale_model_days` trading days
  (weekdays) before the snapshot's date, or (with `stale_model_if_empty`) the model has no
  returns at all (`model_is_stale`): the measures are of another market than the proposal's.
  Not a breach (no alert), but the proposal must not be approved automatically.
- `vol_increase`: post-trade volatility exceeds pre-trade by more than `vol_increase_pct`
  percentage points (annualized).
- `concentration`: some post-trade weight (cash excluded) exceeds `concentration_limit`.
- `sector_concentration`: some post-trade sector weight exceeds `sector_limit`.
- `above_tolerance`: the post-trade risk score exceeds the client's tolerance *and* the
  proposal raises it (a proposal that lowers the risk of a book already above tolerance is an
  improvement: it gets the note `still_above_tolerance` instead).
- `no_auto_approve`: last, present whenever one of the *breaches* above is, or `stale_model`:
  the proposal must not be approved automatically.
Breaches (`BREACH_FLAGS`) raise one `RiskAlerted` per proposal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

from .ewma import EwmaCovariance
from .portfolio import Prior, RiskView, is_cash, risk_view
from .profile import RiskInputs, RiskProfile, measure, weight_matrix

PCT_PLACES = Decimal("0.0001")
BREACH_FLAGS = ("vol_increase", "concentration", "sector_concentration", "above_tolerance")
NO_AUTO_APPROVE = "no_auto_approve"
STALE_MODEL = "stale_model"
#: (symbols, T x symbols daily log returns): the window historical measures replay
History = tuple[tuple[str, ...], np.ndarray]


def to_pct(vol_fraction: float) -> Decimal:
    """A volatility fraction (0.153) as percent with 4 places (15.3000)."""
    return (Decimal(repr(float(vol_fraction))) * 100).quantize(PCT_PLACES, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Limits:
    vol_increase_pct: Decimal = Decimal("2")
    concentration_limit: Decimal = Decimal("0.35")
    min_observations: int = 10
    prior: Prior = Prior()
    #: correlation shrinkage towards the average correlation (`portfolio.risk_view`)
    shrinkage: float = 0.0
    sector_limit: Decimal = Decimal("0.5")
    #: return days replayed by historical VaR and drawdown
    history_days: int = 500
    #: `stale_model` when the model's window ends more than this many trading days before the
    #: snapshot's date ...
    stale_model_days: int = 10
    #: ... or, if set, when the model has no returns yet (every symbol on the prior)
    stale_model_if_empty: bool = False


@dataclass(frozen=True)
class Assessment:
    pre_vol_annual_pct: Decimal
    post_vol_annual_pct: Decimal
    flags: tuple[str, ...]
    max_post_weight: Decimal
    max_post_symbol: str | None
    pre: RiskProfile | None = None
    post: RiskProfile | None = None
    tolerance_score: int | None = None

    @property
    def breaches(self) -> tuple[str, ...]:
        return tuple(f for f in self.flags if f in BREACH_FLAGS)


def model_is_stale(window_end: date | None, as_of: date, limits: Limits) -> bool:
    """Whether a model whose last return day is `window_end` (None: no returns) is too old to
    measure a portfolio as of `as_of`: more than `limits.stale_model_days` weekdays after
    `window_end` up to `as_of` (holidays count as trading days, so a holiday week ends a day
    early). A snapshot older than the model is not stale."""
    if window_end is None:
        return limits.stale_model_if_empty
    gap = int(np.busday_count(window_end + timedelta(days=1), as_of + timedelta(days=1)))
    return gap > limits.stale_model_days


def risk_inputs(
    model: EwmaCovariance, symbols: Sequence[str], limits: Limits,
    history: History | None = None, sectors: Mapping[str, str] | None = None,
) -> tuple[RiskView, RiskInputs]:
    view = risk_view(model, symbols, limits.prior, limits.min_observations, limits.shrinkage)
    hsyms, hret = history if history is not None else ((), np.zeros((0, 0)))
    keep = [i for i, s in enumerate(hsyms) if s in set(view.symbols)]
    inputs = RiskInputs(view.symbols, view.cov_daily, hret[:, keep] if len(keep) else np.zeros((0, 0)),
                        tuple(hsyms[i] for i in keep), dict(sectors or {}), view.prior_used)
    return view, inputs


def vol_pct(model: EwmaCovariance, weights: Mapping[str, Decimal], limits: Limits) -> tuple[Decimal, RiskView]:
    view = risk_view(model, [s for s, w in weights.items() if w != 0], limits.prior,
                     limits.min_observations, limits.shrinkage)
    return to_pct(view.vol_annual({s: float(w) for s, w in weights.items() if w != 0})), view


def _floats(weights: Mapping[str, Decimal]) -> dict[str, float]:
    return {s: float(w) for s, w in weights.items() if w != 0 and not is_cash(s)}


def assess(
    model: EwmaCovariance, pre_weights: Mapping[str, Decimal], post_weights: Mapping[str, Decimal],
    limits: Limits, *, history: History | None = None, target: Mapping[str, Decimal] | None = None,
    sectors: Mapping[str, str] | None = None, tolerance: int | None = None,
    stale_model: bool = False,
) -> Assessment:
    pre_f, post_f = _floats(pre_weights), _floats(post_weights)
    tgt_f = _floats(target or {})
    view, inputs = risk_inputs(model, [*pre_f, *post_f, *tgt_f], limits, history, sectors)
    W = weight_matrix([pre_f, post_f], view.symbols)
    t = weight_matrix([tgt_f], view.symbols)[0] if tgt_f else None
    pre_p, post_p = measure(W, inputs, target=t)
    pre, post = to_pct(pre_p.vol_annual), to_pct(post_p.vol_annual)
    flags = [f"prior_used:{s}" for s in view.prior_used]
    if stale_model:
        flags.append(STALE_MODEL)
    if post - pre > limits.vol_increase_pct:
        flags.append("vol_increase")
    risky = {s: w for s, w in post_weights.items() if not is_cash(s)}
    top = max(risky, key=lambda s: (risky[s], s), default=None)
    top_weight = risky[top] if top is not None else Decimal(0)
    if top_weight > limits.concentration_limit:
        flags.append("concentration")
    if post_p.largest_sector_weight > float(limits.sector_limit):
        flags.append("sector_concentration")
    if tolerance is not None and post_p.score > tolerance:
        flags.append("above_tolerance" if post_p.score > pre_p.score else "still_above_tolerance")
    if stale_model or any(f in BREACH_FLAGS for f in flags):
        flags.append(NO_AUTO_APPROVE)
    return Assessment(pre, post, tuple(flags), top_weight, top, pre_p, post_p, tolerance)
