"""Counterfactuals: what would have had to differ for an order not to happen.

For one order and one input parameter (the account's drift band, the security's price, the tax
rates), the snapshot is changed, the *same* optimizer re-solves it (`from_snapshot` +
`solve_continuous`, the proposal's driver weights and context), and bisection finds the value
where the order stops. "Stops" means the continuous optimum no longer trades the order's side for
at least the minimum order notional (`Tuning.min_trade_usd`): below it rounding drops the order.

The search first solves at the far end of the meaningful range (a band as wide as the
deviation, a price that moves the security across its band to the other side of target, the
tax rates scaled until the higher one is 100%, or to 0%): if the order
still happens there, no value of that parameter alone stops it, and that is the answer
(`threshold=None`), not a number made up. Otherwise bisection keeps the bracket
[still trades, does not trade] and reports its outer end, to `tol` of the parameter.
Bisection assumes the order's size is monotone in the parameter over the range, which holds for
the band (a wider band only weakens the penalty), the price (the weight moves monotonically) and
the tax rates (a larger rate only raises the cost of gains or the benefit of losses).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .drivers import DEFAULT_TUNING, Tuning
from .inputs import RebalanceInput, from_snapshot
from .solve import solve_continuous

if TYPE_CHECKING:
    from trimtab.shared.events import AccountSnapshot, Order

    from .context import RebalanceContext

Parameter = Literal["band", "price", "tax_rate"]
#: Bisection steps at most per (order, parameter), and the precision that stops it earlier.
MAX_STEPS = 12
TOL = {"band": 0.0005, "price": 0.0025, "tax_rate": 0.0025}


@dataclass(frozen=True)
class Counterfactual:
    """`parameter` at `threshold` (or beyond, in `direction`) and the order would not happen.

    band: the security's band (fraction of value: the account's, or its own where the policy
    gives bands per symbol); price: the security's price in dollars (lot
    bases unchanged); tax_rate: the long-term rate, short-term scaled in proportion (fractions).
    `threshold is None`: nothing up to `searched_to` stops it.
    """

    symbol: str
    side: str
    parameter: Parameter
    current: float
    threshold: float | None
    searched_to: float
    direction: Literal["above", "below"]
    resolves: int
    #: one `precision` nearer the current value, the order still happens
    precision: float = 0.0

    @property
    def change_pct(self) -> float | None:
        """The threshold as a relative change of the current value, in percent."""
        if self.threshold is None or self.current == 0:
            return None
        return 100.0 * (self.threshold / self.current - 1.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "parameter": self.parameter, "side": self.side, "current": f"{self.current:.6g}",
            "threshold": None if self.threshold is None else f"{self.threshold:.6g}",
            "change_pct": None if self.change_pct is None else f"{self.change_pct:.2f}",
            "searched_to": f"{self.searched_to:.6g}", "direction": self.direction,
            "resolves": self.resolves, "precision": f"{self.precision:.3g}",
        }


def _bisect(happens: Callable[[float], bool], current: float, far: float, tol: float
            ) -> tuple[float | None, float]:
    """(the value nearest `current` from which on, toward `far`, it no longer happens; the width
    of the final bracket: it still happens one width nearer `current`)."""
    if happens(far):
        return None, 0.0
    lo, hi = current, far  # happens(lo) (the proposal itself), not happens(hi)
    for _ in range(MAX_STEPS):
        if abs(hi - lo) <= tol:
            break
        mid = 0.5 * (lo + hi)
        if happens(mid):
            lo = mid
        else:
            hi = mid
    return hi, abs(hi - lo)


class _Solver:
    """Re-solves modified snapshots of one proposal and says whether an order still happens."""

    def __init__(self, snapshot: AccountSnapshot, weights: Mapping[str, float],
                 context: RebalanceContext | None, tuning: Tuning):
        self.snapshot, self.weights, self.context, self.tuning = snapshot, weights, context, tuning
        self.resolves = 0

    def happens(self, snapshot: AccountSnapshot, symbol: str, side: str) -> bool:
        inp = from_snapshot(snapshot, self.context)
        sol = solve_continuous(inp, self.weights, tuning=self.tuning)
        self.resolves += sol.solves
        i = inp.symbols.index(symbol)
        usd = float(sol.trade_shares[i] * inp.price_usd[i])
        return usd <= -self.tuning.min_trade_usd if side == "sell" else usd >= self.tuning.min_trade_usd


def _d(x: float, places: int = 8) -> Decimal:
    return Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-places))


def _band(s: _Solver, inp: RebalanceInput, order: Order) -> Counterfactual:
    i = inp.symbols.index(order.symbol)
    b0 = float(inp.band[i])
    # Beyond the security's deviation the band no longer binds: no wider band changes more.
    far = min(1.0, max(b0, abs(float(inp.pre_weight[i] - inp.target_weight[i]))) + 0.01)
    before = s.resolves
    policy = s.snapshot.policy
    own = policy.band_by_symbol is not None and order.symbol in policy.band_by_symbol

    def happens(b: float) -> bool:
        # The account's band, or this security's own where the policy gives bands per symbol.
        update = ({"band_by_symbol": {**(policy.band_by_symbol or {}), order.symbol: _d(b)}} if own
                  else {"band_abs": _d(b)})
        snap = s.snapshot.model_copy(update={"policy": policy.model_copy(update=update)})
        return s.happens(snap, order.symbol, order.side)

    th, eps = _bisect(happens, b0, far, TOL["band"])
    return Counterfactual(order.symbol, order.side, "band", b0, th, far, "above", s.resolves - before, eps)


def _price(s: _Solver, inp: RebalanceInput, order: Order) -> Counterfactual | None:
    i = inp.symbols.index(order.symbol)
    p0, h = float(inp.price_usd[i]), float(inp.holdings_usd[i])
    if h <= 0:
        return None  # not held: its price does not move the account's weights
    rest, target = inp.value_usd - h, float(inp.target_weight[i])
    # The price multiple at which the holding alone crosses its band to the other side of target
    # (a sale: the price falls until it is underweight beyond the band; a purchase: it rises):
    # there drift itself wants the opposite trade. A sale of a security without target has no
    # such price (the search ends at a 95 % fall).
    band = float(inp.band[i])
    goal = target - band if order.side == "sell" else target + band
    if goal <= 0:
        m_far = 0.05
    elif goal >= 1:
        m_far = 20.0
    else:
        m_far = goal * rest / (h * (1.0 - goal))
    m_far = float(np.clip(m_far, 0.05, 20.0))
    before = s.resolves

    def happens(price: float) -> bool:
        secs = [sec.model_copy(update={"price_usd": _d(price, 4)}) if sec.symbol == order.symbol else sec
                for sec in s.snapshot.securities]
        return s.happens(s.snapshot.model_copy(update={"securities": secs}), order.symbol, order.side)

    th, eps = _bisect(happens, p0, p0 * m_far, TOL["price"] * p0)
    return Counterfactual(order.symbol, order.side, "price", p0, th, p0 * m_far,
                          "below" if m_far < 1 else "above", s.resolves - before, eps)


def _tax_rate(s: _Solver, inp: RebalanceInput, order: Order) -> Counterfactual | None:
    if inp.account_type != "taxable" or order.side != "sell" or not order.lots:
        return None
    index = {lot_id: k for k, lot_id in enumerate(inp.lot_ids)}
    gain = sum(float(li.shares) * float(inp.lot_gain_usd_per_share[index[li.lot_id]])
               for li in order.lots if li.lot_id in index)
    rates = s.snapshot.tax_rates
    st, lt = float(rates.short_term), float(rates.long_term)
    top = max(st, lt)
    if top <= 0 or gain == 0:
        return None
    # A gain is held back by a higher rate (up to 100%), a harvested loss by a lower one (to 0).
    far = 1.0 / top if gain > 0 else 0.0
    before = s.resolves

    def happens(scale: float) -> bool:
        snap = s.snapshot.model_copy(update={"tax_rates": rates.model_copy(
            update={"short_term": _d(st * scale, 6), "long_term": _d(lt * scale, 6)})})
        return s.happens(snap, order.symbol, order.side)

    th, eps = _bisect(happens, 1.0, far, TOL["tax_rate"] / top)
    return Counterfactual(order.symbol, order.side, "tax_rate", lt, None if th is None else lt * th,
                          lt * far, "above" if gain > 0 else "below", s.resolves - before, lt * eps)


def counterfactuals_for(
    proposal: Any,
    inp: RebalanceInput,
    weights: Mapping[str, float],
    *,
    context: RebalanceContext | None = None,
    tuning: Tuning = DEFAULT_TUNING,
    max_orders: int | None = None,
) -> tuple[dict[str, tuple[Counterfactual, ...]], int]:
    """Counterfactuals of the proposal's orders (the `max_orders` largest by notional, ties by
    symbol), and the number of solves they took."""
    s = _Solver(proposal.snapshot, weights, context, tuning)
    orders = sorted(proposal.orders, key=lambda o: (-o.est_notional_usd, o.symbol))
    if max_orders is not None:
        orders = orders[:max_orders]
    out: dict[str, tuple[Counterfactual, ...]] = {}
    for o in sorted(orders, key=lambda o: o.symbol):
        found = [_band(s, inp, o), _price(s, inp, o), _tax_rate(s, inp, o)]
        out[o.symbol] = tuple(c for c in found if c is not None)
    return out, s.resolves
