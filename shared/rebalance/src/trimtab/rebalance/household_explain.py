"""Why each trade of a household proposal: exact Shapley values over the drivers, location included.

The game is `explain.py`'s, played on the household problem: a coalition S of drivers is on, the
others are off (weight 0 for the objective drivers; the reserve relaxed to "no worse than today"
with `cash` off, the restrictions lifted with `restrictions` off), and the value of S is the
vector of every account's continuous trade in shares, ``solve_household_continuous(hh, weights
restricted to S)``, accounts in the household's order, securities in its universe's order. The
players are `HOUSEHOLD_EXPLAIN_DRIVERS`: the single-account drivers (tax whole) plus
``location``, the yearly tax drag of where each security is held. ``esg`` is not a player: in
household mode the targets are the household's, so lifting an account's screen has no targets
"before the screen" to return to; it stays on in every coalition (part of the base).

Drivers that cannot change any Parameter of the household's problem (no factor model: risk;
nothing restricted or screened: restrictions; no taxable account with a tax coefficient: tax;
no trading cost: cost; no drag charged anywhere: location; and any driver at weight 0) are not players: they would be null players (Shapley value 0, by the
null-player property), and leaving them out halves the solves for each. Coalitions with no
motive to trade (drift, risk, cash, tax, location all off) are valued as "no trade" without a
solve, exactly: what is left (costs, the regularizer) is nonnegative and zero only there, unless
a negative tax budget forces losses to be realized (then every coalition is solved). The empty
coalition is always solved: it is the base, and its "no trade" checks the premise of the
unsolved ones.

The base is then no trade (or, with a negative tax budget, what the budget forces), and each
trade is the base plus its drivers' contributions (efficiency).

The values are computed from their definition (`shapley_from_coalitions`: every coalition's
value, weighted |S|! (k - |S| - 1)! / k!), not through `shap`: this runs in the optimizer's
what-if, whose service does not carry `shap` and its dependencies (numba, pandas, scikit-learn);
a test checks it equals `shap`'s exact explainer (`explain.exact_shapley`) to 1e-12.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .drivers import DEFAULT_TUNING, Tuning
from .errors import ExplanationFailed
from .explain import EFFICIENCY_RTOL, EXPLAIN_MIN_SHARES, TradeExplanation
from .household import (
    HouseholdInput,
    HouseholdSolution,
    household_weights,
    solve_household_continuous,
)

#: The players of the household game, in the order they are reported.
HOUSEHOLD_EXPLAIN_DRIVERS: tuple[str, ...] = ("drift", "risk", "cost", "tax", "cash", "restrictions",
                                              "location")
#: Drivers that can make the household trade at all (see the module docstring).
_MOTIVES = frozenset({"drift", "risk", "cash", "tax", "location"})
#: A driver is named in a trade's reason when it moves at least this share of the trade.
REASON_SHARE = 0.10

_PHRASE = {
    "drift": "brings the household's mix back to its target",
    "risk": "keeps the household's factor risk close to the target's",
    "cost": "limits trading costs",
    "tax": "limits taxes (gains realized, losses harvested)",
    "cash": "keeps each account's cash reserve and puts idle cash to work",
    "restrictions": "follows the account's restrictions",
    "location": "holds the security where its yearly tax drag is lowest (asset location)",
}


@dataclass(frozen=True)
class HouseholdTradeExplanation(TradeExplanation):
    """One account's continuous trade of one security and its drivers' contributions (shares);
    `base_shares` is the trade with every player off: 0 unless a motive to trade is not a player."""

    account_id: str
    account_type: str

    def drivers_toward(self) -> list[tuple[str, float]]:
        """Drivers moving at least `REASON_SHARE` of the trade (in dollars) toward it, largest
        first, with their contribution in dollars (signed like the trade)."""
        return self._named(toward=True)

    def drivers_against(self) -> list[tuple[str, float]]:
        """Drivers holding at least `REASON_SHARE` of the trade (in dollars) back, largest first."""
        return self._named(toward=False)

    def _named(self, *, toward: bool) -> list[tuple[str, float]]:
        net = (self.trade_shares - self.base_shares) * self.price_usd
        if net == 0:
            return []
        floor = REASON_SHARE * abs(net)
        out = [(d, v) for d, v in self.contributions_usd.items()
               if abs(v) >= floor and ((v * net > 0) == toward)]
        return sorted(out, key=lambda x: (-abs(x[1]), x[0]))

    @property
    def reason(self) -> str:
        """The trade and its main reasons in one sentence, in dollars (deterministic text)."""
        verb = "Buy" if self.trade_shares > 0 else "Sell"
        head = (f"{verb} {abs(self.trade_shares):,.2f} shares of {self.symbol} "
                f"(${abs(self.trade_usd):,.2f}) in {self.account_id} ({self.account_type})")
        parts = [f"{_PHRASE[d]}: ${abs(v):,.2f} toward it" for d, v in self.drivers_toward()]
        parts += [f"{_PHRASE[d]}: ${abs(v):,.2f} against it" for d, v in self.drivers_against()]
        if not parts:
            return f"{head}: no single driver moves 10 % of it; the drivers' joint effect does."
        return f"{head}: " + "; ".join(parts) + "."


@dataclass(frozen=True)
class HouseholdExplanation:
    drivers: tuple[str, ...]
    #: drivers that are not players because they cannot change this household's problem
    null_drivers: tuple[str, ...]
    trades: tuple[HouseholdTradeExplanation, ...]
    resolves: int
    coalitions: int
    skipped_coalitions: int
    efficiency_error_shares: float
    elapsed_ms: float

    def of(self, account_id: str) -> tuple[HouseholdTradeExplanation, ...]:
        return tuple(t for t in self.trades if t.account_id == account_id)


def shapley_from_coalitions(value: Callable[[tuple[bool, ...]], np.ndarray], k: int, n: int) -> np.ndarray:
    """Exact Shapley values (k, n) of the vector game `value` over k players, by definition:
    phi_i = sum over S not holding i of |S|! (k - |S| - 1)! / k! (v(S + i) - v(S)). Asks for
    each of the 2^k coalitions once (in a fixed order, so a memoizing `value` solves each once)."""
    out = np.zeros((k, n))
    if k == 0:
        return out
    v = {on: value(on) for on in itertools.product((False, True), repeat=k)}
    weight = [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)]
    for on, without in v.items():
        size = sum(on)
        for i in range(k):
            if not on[i]:
                with_i = on[:i] + (True,) + on[i + 1:]
                out[i] += weight[size] * (v[with_i] - without)
    return out


def null_household_drivers(hh: HouseholdInput, weights: Mapping[str, float],
                           drivers: Sequence[str] = HOUSEHOLD_EXPLAIN_DRIVERS) -> frozenset[str]:
    """Drivers whose switch changes no Parameter of the household's problem (see the module
    docstring); they keep their weight in every coalition and get no Shapley value."""
    acc = hh.accounts
    null = {
        "risk": not acc[0].model_loadings.any(),
        "restrictions": not any(a.restricted.any() or a.never_buy.any() for a in acc),
        "tax": not any(a.lot_tax_objective.any() for a in acc),
        "cost": not any(a.cost_rate.any() or a.impact.any() for a in acc),
        "location": not hh.drag.any(),
    }
    return frozenset(d for d in drivers if null.get(d, False) or weights.get(d, 0.0) == 0.0)


def explain_household(hh: HouseholdInput, driver_weights: Mapping[str, float], *,
                      drivers: Sequence[str] = HOUSEHOLD_EXPLAIN_DRIVERS, tuning: Tuning = DEFAULT_TUNING,
                      full: HouseholdSolution | None = None) -> HouseholdExplanation:
    """Exact Shapley values of every account's continuous trade over `drivers`.

    `driver_weights` are the proposal's (`household.household_weights`). `full`, when given, is
    the all-drivers-on solution already computed (`propose_household`'s continuous optimum under
    the same weights and tuning): it saves one solve. Raises `ExplanationFailed` if the
    contributions do not add up to the trades, and the solver's errors as they come.
    """
    t0 = time.perf_counter()
    weights = household_weights(driver_weights, proposal=False)
    unknown = set(drivers) - set(HOUSEHOLD_EXPLAIN_DRIVERS)
    if unknown:
        raise ValueError(f"unknown drivers {sorted(unknown)}; known: {list(HOUSEHOLD_EXPLAIN_DRIVERS)}")
    null = null_household_drivers(hh, weights, drivers)
    players = tuple(d for d in drivers if d not in null)
    # A motive outside the players (not explained, or null but still on) may make any coalition
    # trade: only a game whose every live motive is a player has provably idle coalitions.
    fixed_motive = any(m not in players and m not in null and weights.get(m, 0.0) > 0 for m in _MOTIVES)
    # A negative tax budget (losses must be realized) makes "no trade" infeasible: then no
    # coalition is provably idle, as in the account explainer.
    fixed_motive |= hh.tax_budget_usd is not None and hh.tax_budget_usd < 0
    motive_idx = [i for i, d in enumerate(players) if d in _MOTIVES]
    sizes = [a.n_securities for a in hh.accounts]
    n = int(sum(sizes))

    def vector(sol: HouseholdSolution) -> np.ndarray:
        return np.concatenate([sol.trade_shares(hh, a) for a in range(hh.n_accounts)])

    memo: dict[tuple[bool, ...], np.ndarray] = {}
    counts = {"resolves": 0, "skipped": 0}
    if full is not None:
        memo[(True,) * len(players)] = vector(full)

    def solved(on: tuple[bool, ...]) -> np.ndarray:
        w = dict(weights)
        for d, flag in zip(players, on, strict=True):
            if not flag:
                w[d] = 0.0
        counts["resolves"] += 1
        return vector(solve_household_continuous(hh, w, tuning=tuning))

    def trade(on: tuple[bool, ...]) -> np.ndarray:
        if on not in memo:
            if not fixed_motive and not any(on[i] for i in motive_idx):
                counts["skipped"] += 1
                memo[on] = np.zeros(n)
            else:
                memo[on] = solved(on)
        return memo[on]

    k = len(players)
    full_trade = trade((True,) * k)
    # The empty coalition is always solved: it is the base of every contribution, and where
    # coalitions without a motive were valued "no trade" unsolved, it checks that premise.
    base = memo[(False,) * k] = solved((False,) * k)
    scale = max(1.0, float(np.max(np.abs(full_trade))) if n else 1.0)
    if not fixed_motive and n and float(np.max(np.abs(base))) > EFFICIENCY_RTOL * scale + 1e-6:
        raise ExplanationFailed("the household trades with every motive off: the coalitions "
                                "valued as 'no trade' without a solve would be wrong")
    values = shapley_from_coalitions(trade, k, n)
    # Efficiency holds by construction (the values of one memo sum to full - base); what this
    # catches is float trouble in the weighting.
    error = float(np.max(np.abs(base + values.sum(axis=0) - full_trade))) if n else 0.0
    if error > EFFICIENCY_RTOL * scale + 1e-9:
        raise ExplanationFailed(f"household contributions miss the trades by {error:.3g} shares")

    trades = []
    at = 0
    for inp in hh.accounts:
        for i, sym in enumerate(inp.symbols):
            j = at + i
            if abs(full_trade[j]) < EXPLAIN_MIN_SHARES:
                continue
            trades.append(HouseholdTradeExplanation(
                account_id=inp.account_id, account_type=inp.account_type, symbol=sym,
                price_usd=float(inp.price_usd[i]), trade_shares=float(full_trade[j]),
                base_shares=float(base[j]),
                contributions_shares={d: float(values[p, j]) for p, d in enumerate(players)}))
        at += inp.n_securities
    return HouseholdExplanation(
        drivers=players, null_drivers=tuple(d for d in drivers if d in null), trades=tuple(trades),
        resolves=counts["resolves"], coalitions=2 ** k, skipped_coalitions=counts["skipped"],
        efficiency_error_shares=error, elapsed_ms=(time.perf_counter() - t0) * 1e3)
