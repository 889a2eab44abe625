"""Counterfactuals: what would have had to differ for an order not to happen.

For one order and one input parameter (the account's drift band, the security's price, the tax
rates), the snapshot is changed and re-proposed the way `propose` makes orders: the *same*
optimizer re-solves it (`from_snapshot` + `solve_continuous`, the proposal's driver weights and
context) and the *same* rounding step (`round_trades`: whole shares, orders under the minimum
notional dropped and re-solved, the cash reserve repaired) turns it into orders. "Happens" means
those orders contain one of the order's symbol and side, so every stated value is a statement
about the orders `propose` would make (an order the rounding step alone makes, a share sold to
keep the cash reserve, is not stopped by a value that only moves the continuous optimum). A
change `propose` refuses (infeasible) never counts as stopping the order. If re-proposing the
unchanged snapshot does not reproduce the order (another optimizer version, another tuning),
the order gets no counterfactuals.

The order's size need not be monotone in the parameter: a lower tax rate both weakens loss
harvesting and cheapens gain sales, so a sale can stop and come back further on; rounding and
the cash reserve make even the band and the price lumpy. So each search first evaluates a coarse
grid (between `GRID`/2 and `GRID` steps, each a power of two of the unit below, so that the
searches of several orders from the same current value share points) from the current value to
the far end of the meaningful range (a band as wide as the deviation plus 1 pp, a price that moves the security across its band to the other side of target,
the long-term rate scaled, short-term in proportion, until the higher one is 100 %, or to 0 %),
from the far end back toward the current value, then bisects one grid step:

- absent at the far end: bisection in the last step where the order goes from present to
  absent, beyond which it is absent at every grid point: a one-sided `threshold` ("at this value
  or beyond, up to `searched_to`");
- present at the far end but absent somewhere on the grid: the order stops and comes back, so no
  one-sided threshold is stated; the stretch nearest the current value where it is absent is
  bracketed at both ends: stopped from `threshold` to `until` (JSON `direction: "between"`);
- present at every grid point: `threshold=None`, no value of that parameter alone (on the grid
  up to `searched_to`) stops it.

Values are searched on the grid the narrative shows them in (0.1 % of band and of the long-term
rate, cents of price), so a stated number is a value that was re-proposed, not a rounding of one.
Between grid points a narrower window can be missed: the grid is the claim's resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .drivers import DEFAULT_TUNING, Tuning
from .errors import RebalanceError
from .inputs import RebalanceInput, from_snapshot
from .rounding import round_trades
from .solve import solve_continuous

if TYPE_CHECKING:
    from trimtab.shared.events import AccountSnapshot, Order

    from .context import RebalanceContext

Parameter = Literal["band", "price", "tax_rate"]
#: Bisection steps at most per (order, parameter), and the precision that stops it earlier.
MAX_STEPS = 12
TOL = {"band": 0.0005, "price": 0.0025, "tax_rate": 0.0025}
#: The grid every search checks first: at most this many steps between the current value and
#: the far end (at least half as many).
GRID = 8
#: The unit values are searched in (what the narrative shows): a tenth of a percentage point of
#: band and of the long-term rate, a cent of price.
UNIT = {"band": 0.001, "price": 0.01, "tax_rate": 0.001}


@dataclass(frozen=True)
class Counterfactual:
    """`parameter` at `threshold` (or beyond, in `direction`, up to `searched_to`) and the order
    would not happen; with `until`, only from `threshold` to `until` (it comes back beyond).

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
    #: the other end of a stretch where the order is stopped (None: stopped up to `searched_to`)
    until: float | None = None

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
            "searched_to": f"{self.searched_to:.6g}",
            "direction": self.direction if self.until is None else "between",
            "until": None if self.until is None else f"{self.until:.6g}",
            "resolves": self.resolves, "precision": f"{self.precision:.3g}",
        }


def _bisect(happens: Callable[[int], bool], lo: float, hi: int, tol: int) -> tuple[int, float]:
    """Between `lo` (it happens; the current value need not be on the unit grid) and `hi` (it
    does not), in units: (the value nearest `lo` found where it does not; the bracket's width)."""
    for _ in range(MAX_STEPS):
        if abs(hi - lo) <= tol:
            break
        mid = round(0.5 * (lo + hi))
        if mid == hi or mid == lo:
            break
        if happens(mid):
            lo = mid
        else:
            hi = mid
    return hi, abs(hi - lo)


def _search(happens: Callable[[int], bool], current: float, far: int, tol: int
            ) -> tuple[int | None, int | None, float]:
    """(threshold, until, precision) in units, for a parameter from `current` to `far` (units,
    the order happens at `current`): see the module docstring."""
    # The grid's step: a power of two of units, so that between GRID/2 and GRID steps cover the
    # range and searches of other orders from the same current value (the account's band, the
    # tax rates) land on the same points (re-proposals are shared).
    sign = 1 if far > current else -1
    step = 1 << max(0, math.ceil(math.log2(abs(far - current) / GRID))) if far != current else 1
    grid: list[int] = []
    g = round(current)
    while (far - g) * sign > 0:
        if (g - current) * sign > 0:
            grid.append(g)
        g += sign * step
    if (far - current) * sign > 0:
        grid.append(far)
    if not grid:
        return None, None, 0.0
    last = len(grid)
    while last > 0 and not happens(grid[last - 1]):
        last -= 1
    if last < len(grid):  # absent from grid[last] to the far end; present at the point before
        th, eps = _bisect(happens, current if last == 0 else grid[last - 1], grid[last], tol)
        return th, None, eps
    points: list[float] = [current, *grid]
    present = [True, *(happens(g) for g in grid[:-1]), True]
    if all(present):
        return None, None, 0.0
    a = present.index(False)
    b = a
    while not present[b + 1]:
        b += 1
    th, eps1 = _bisect(happens, points[a - 1], grid[a - 1], tol)
    until, eps2 = _bisect(happens, points[b + 1], grid[b - 1], tol)
    return th, until, max(eps1, eps2)


class _Solver:
    """Re-proposes modified snapshots of one proposal (solve and round, as `propose` does) and
    says whether an order still happens. A modification's orders are kept: another order's
    search that needs the same snapshot (the same tax rates, the same account band) reuses them.
    `resolves` counts the solves made; `used` the solves of the re-proposals the searches used
    (a shared one counted by each search that uses it)."""

    def __init__(self, snapshot: AccountSnapshot, weights: Mapping[str, float],
                 context: RebalanceContext | None, tuning: Tuning):
        self.snapshot, self.weights, self.context, self.tuning = snapshot, weights, context, tuning
        self.resolves = 0
        self.used = 0
        self._orders: dict[tuple[Any, ...], tuple[dict[str, str] | None, int]] = {}

    def orders(self, key: tuple[Any, ...], make: Callable[[], AccountSnapshot]) -> dict[str, str] | None:
        """Symbol -> side of the orders `propose` would make of `make()` (None: it would refuse)."""
        if key not in self._orders:
            solves = 0
            made: dict[str, str] | None = None
            try:
                inp = from_snapshot(make(), self.context)
                sol = solve_continuous(inp, self.weights, tuning=self.tuning)
                solves += sol.solves
                rounded = round_trades(inp, self.weights, sol, self.tuning)
                if rounded.final_continuous is not sol:
                    solves += rounded.final_continuous.solves
            except RebalanceError:
                pass
            else:
                sold = rounded.sold_per_security(inp)
                # As `build_orders`: a security with a lot sold is a sale, else a purchase if bought.
                made = {sym: "sell" if sold[i] > 0 else "buy" for i, sym in enumerate(inp.symbols)
                        if sold[i] > 0 or rounded.buy_shares[i] > 0}
            self.resolves += solves
            self._orders[key] = (made, solves)
        made, solves = self._orders[key]
        self.used += solves
        return made

    def happens(self, key: tuple[Any, ...], make: Callable[[], AccountSnapshot], order: Order) -> bool:
        """Whether re-proposing makes the order (its symbol and side); a refusal counts as making
        it (a refused proposal is no evidence that the order stops)."""
        orders = self.orders(key, make)
        return orders is None or orders.get(order.symbol) == order.side

    def reproduces(self, order: Order) -> bool:
        """Whether re-proposing the unchanged snapshot makes the order."""
        orders = self.orders(("proposal",), lambda: self.snapshot)
        return orders is not None and orders.get(order.symbol) == order.side


def _d(x: float, places: int = 8) -> Decimal:
    return Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-places))


def _v(u: float, unit: float) -> float:
    """A value in units as a plain float (59.62, not 59.620000000000005)."""
    return round(u * unit, 10)


def _toward_current(x: float, current: float) -> int:
    """`x` in units, rounded toward `current` (a far end stays inside its range)."""
    return math.floor(x + 1e-9) if x > current else math.ceil(x - 1e-9)


def _band(s: _Solver, inp: RebalanceInput, order: Order) -> Counterfactual:
    i = inp.symbols.index(order.symbol)
    b0 = float(inp.band[i])
    unit = UNIT["band"]
    # Beyond the security's deviation the band no longer binds: no wider band changes more.
    far = min(1.0, max(b0, abs(float(inp.pre_weight[i] - inp.target_weight[i]))) + 0.01)
    far_u = _toward_current(far / unit, b0 / unit)
    before = s.used
    policy = s.snapshot.policy
    own = policy.band_by_symbol is not None and order.symbol in policy.band_by_symbol

    def happens(u: int) -> bool:
        def make() -> AccountSnapshot:
            # The account's band, or this security's own where the policy gives bands per symbol.
            b = _d(u * unit)
            update = ({"band_by_symbol": {**(policy.band_by_symbol or {}), order.symbol: b}} if own
                      else {"band_abs": b})
            return s.snapshot.model_copy(update={"policy": policy.model_copy(update=update)})
        return s.happens(("band", order.symbol if own else None, u), make, order)

    th, until, eps = _search(happens, b0 / unit, far_u, max(1, int(TOL["band"] / unit)))
    return Counterfactual(order.symbol, order.side, "band", b0, None if th is None else _v(th, unit),
                          _v(far_u, unit), "above", s.used - before, _v(eps, unit),
                          None if until is None else _v(until, unit))


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
    unit = UNIT["price"]
    far_u = max(1, _toward_current(p0 * m_far / unit, p0 / unit))
    before = s.used

    def happens(u: int) -> bool:
        def make() -> AccountSnapshot:
            secs = [sec.model_copy(update={"price_usd": _d(u * unit, 2)}) if sec.symbol == order.symbol
                    else sec for sec in s.snapshot.securities]
            return s.snapshot.model_copy(update={"securities": secs})
        return s.happens(("price", order.symbol, u), make, order)

    th, until, eps = _search(happens, p0 / unit, far_u, max(1, int(TOL["price"] * p0 / unit)))
    return Counterfactual(order.symbol, order.side, "price", p0, None if th is None else _v(th, unit),
                          _v(far_u, unit), "below" if far_u * unit < p0 else "above", s.used - before,
                          _v(eps, unit), None if until is None else _v(until, unit))


def _tax_rate(s: _Solver, inp: RebalanceInput, order: Order) -> Counterfactual | None:
    if inp.account_type != "taxable" or order.side != "sell" or not order.lots:
        return None
    index = {lot_id: k for k, lot_id in enumerate(inp.lot_ids)}
    gain = sum(float(li.shares) * float(inp.lot_gain_usd_per_share[index[li.lot_id]])
               for li in order.lots if li.lot_id in index)
    rates = s.snapshot.tax_rates
    st, lt = float(rates.short_term), float(rates.long_term)
    top = max(st, lt)
    if top <= 0 or gain == 0 or lt <= 0:
        return None
    unit = UNIT["tax_rate"]
    # A gain is held back by a higher rate (up to the higher one at 100%), a harvested loss by a
    # lower one (to 0). Searched in the long-term rate, the short-term one scaled in proportion.
    far_u = _toward_current(lt / top / unit, lt / unit) if gain > 0 else 0
    before = s.used

    def happens(u: int) -> bool:
        def make() -> AccountSnapshot:
            scale = u * unit / lt
            return s.snapshot.model_copy(update={"tax_rates": rates.model_copy(
                update={"short_term": _d(st * scale, 6), "long_term": _d(u * unit, 6)})})
        return s.happens(("tax_rate", u), make, order)

    th, until, eps = _search(happens, lt / unit, far_u, max(1, int(TOL["tax_rate"] / unit)))
    return Counterfactual(order.symbol, order.side, "tax_rate", lt, None if th is None else _v(th, unit),
                          _v(far_u, unit), "above" if gain > 0 else "below", s.used - before,
                          _v(eps, unit), None if until is None else _v(until, unit))


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
    symbol), and the number of solves they took (each counterfactual's `resolves` counts the
    solves of the re-proposals its search used, shared ones included). An order that re-proposing the unchanged
    snapshot does not make gets none (nothing true could be said of stopping it)."""
    s = _Solver(proposal.snapshot, weights, context, tuning)
    orders = sorted(proposal.orders, key=lambda o: (-o.est_notional_usd, o.symbol))
    if max_orders is not None:
        orders = orders[:max_orders]
    out: dict[str, tuple[Counterfactual, ...]] = {}
    for o in sorted(orders, key=lambda o: o.symbol):
        if not s.reproduces(o):
            out[o.symbol] = ()
            continue
        found = [_band(s, inp, o), _price(s, inp, o), _tax_rate(s, inp, o)]
        out[o.symbol] = tuple(c for c in found if c is not None)
    return out, s.resolves
