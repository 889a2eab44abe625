"""Household mode: one convex problem over every account of a household, with asset location.

`propose_household(snapshots, household_targets, context=...)` rebalances the household as one
portfolio: the drift is measured on the *aggregated* holdings against the household's target,
while each account keeps its own lots, cash, reserve, restrictions and tax treatment. Pure
computation (no I/O), built from the single-account pieces (`inputs`, `solve`, `rounding`,
`proposal`).

Variables (weights: fractions of the household value V_H, so the problem is well scaled
whatever the accounts' sizes): per account a, ``sell[a, slot] >= 0`` per lot slot and
``buy[a, i] >= 0`` per security; ``t_a = buy_a - S sell_a``, household trade ``T = sum_a t_a``,
household active weights ``x = w0_H + T - w_target_H``.

Minimize (every coefficient a DPP Parameter; compiled once per padded household shape)::

    g_risk ||L_model^T x||^2                                   risk: the factor model's part
  + g_drift (||L_groups^T x||^2 + ||sqrt(d) x||^2)             drift: specific and substitute-
      + g_drift * band_penalty * (sum_i (|x_i| - band)+          group variance (identity without
                                  + sum_G (|sum_G x| - band)+)   a model) and the band hinge
  + sum_a g_cost (cost_a . buy_a + lot_cost_a . sell_a)        linear costs, per account
  + sum_a g_cost impact_{a,i} |t_{a,i}|^(3/2)                  market impact (optional)
  + sum_a g_tax lot_tax_a . sell_a                             tax: taxable accounts only
  + g_location sum_a sum_i drag_{a,i} (w0_{a,i} + t_{a,i})     asset location (yearly drag)
  + g_cash (household cash above its target)+                  cash drag
  + eps sum_a sum_i t_{a,i}^2 / tau_i + tie-breaks             uniqueness, HIFO among lots

subject to, per account: ``sell <= lot weight * allowed``, ``buy <= buyable``, cash spent
(trades plus linear costs) within the account's cash above its reserve (no cash moves between
accounts), gross turnover within the account's policy; per household: tax budget and gain cap
(they are one tax return's), the band hinges and idle-cash definitions.

Asset location. ``drag_{a,i}`` is the yearly tax cost of holding a dollar of security i in
account a: the security's tax drag (`SecurityInfo.tax_drag`, else derived from its asset class:
`tax_drag_rate`) times the account type's multiplier (`LOCATION_MULTIPLIERS`: taxable 1,
tax-deferred 0, tax-exempt 0). The term is linear, so the optimizer places the least
tax-efficient securities in the tax-advantaged accounts first, as far as their room, the
accounts' lots (tax on the gains it would realize) and costs allow. ``g_location`` counts years
of drag against one-time costs and taxes: 1 (the default) relocates a position only if one
year of saved drag pays the tax and costs of moving it.

Wash sales (household-wide): a loss sold in a taxable account in wash group G forbids buys of G
in *every* account of the household (an IRA's buy would disallow the loss for good); the
household's last 30 days come in through the context as in `inputs._context_fields`, and a lot
acquired inside the window in any account bans the loss lots of its group in every taxable
account. The one disjunction inside the proposal (sell a loss in G, or buy G) is decided as in
`solve.py`: first solve with buys of every contested group banned ("harvest"); the groups that
then sold no loss switch to "keep" (their loss lots banned, buys allowed: the first solution
stays feasible, so no worse); the groups that harvested but end below the household target are
tried in "keep" all at once, and the better exact objective wins. One to three solves.

Rounding mirrors `rounding.py` account by account (its `_round_once` and `_repair_cash`):
whole shares, orders under the minimum notional dropped and the household re-solved without
them, cash repaired per account, then every constraint re-checked on the whole-share orders,
the household-wide ones included (wash groups across accounts, tax budget, gain cap). A
failure raises `InfeasibleProblem` naming the constraint.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from trimtab.shared.canonical import canonical_hash
from trimtab.shared.events import AccountSnapshot, Order, SecuritySnapshot, SolverInfo
from trimtab.shared.money import dec, usd
from trimtab.shared.numeric import blas_core

from .context import EMPTY_CONTEXT, MAX_CONTEXT_USD, WASH_WINDOW_DAYS, RebalanceContext
from .drivers import DEFAULT_TUNING, Tuning, proposal_weights, validate_weights
from .errors import InfeasibleProblem, InvalidSnapshot, RebalanceError, SolverFailed
from .inputs import RebalanceInput, from_snapshot, group_bands
from .objective import lot_tie_break, reg_tau
from .problem import (
    FACTOR_BUCKETS,
    GROUP_BUCKETS,
    LOTS_PER_SECURITY_BUCKETS,
    NO_BOUND,
    OBJECTIVE_SCALE,
    SECURITY_BUCKETS,
    SOLVER_OPTIONS,
    SOLVERS,
    ProblemInfeasible,
    ShapeCache,
    bucket,
)
from .proposal import (
    PROPOSAL_NAMESPACE,
    build_orders,
    cost_breakdown,
    estimated_tax_usd,
    tax_breakdown,
)
from .rounding import SHARE_TOL, RoundedTrades, _repair_cash, _round_once, cash_after_usd
from .solve import (
    ACTIVE_WEIGHT,
    DUST_USD,
    DUST_WEIGHT,
    Bans,
    ContinuousSolution,
    screened_from_buying,
)
from .version import CVXPY_VERSION, OPTIMIZER_VERSION

if TYPE_CHECKING:
    from .household_explain import HouseholdExplanation

log = logging.getLogger(__name__)

ACCOUNT_BUCKETS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16)

#: Driver names of household mode: the single-account drivers plus the location term.
HOUSEHOLD_DRIVERS: tuple[str, ...] = ("drift", "risk", "cost", "tax", "cash", "restrictions", "esg", "location")
#: Default weight of the location term: one year of tax drag against one-time taxes and costs.
DEFAULT_LOCATION_WEIGHT = 1.0

#: The location charge of each account type, as a multiple of the security's taxable tax drag.
#: Tax-deferred (traditional IRA, 401(k)) and tax-exempt (Roth) accounts both pay no yearly tax
#: on income: 0. Roth vs traditional is not told apart: in the after-tax view (a traditional
#: account's balance counted net of the tax due on withdrawal), both grow tax-free, so the
#: yearly drag is 0 in both; the tie between them is left to the other terms (costs, drift).
#: A caller that wants "bonds to the traditional IRA before the Roth" passes e.g.
#: ``{"tax_exempt": 0.1}`` (a tenth of the drag charged in the Roth).
LOCATION_MULTIPLIERS: Mapping[str, float] = {"taxable": 1.0, "tax_deferred": 0.0, "tax_exempt": 0.0}


@dataclass(frozen=True)
class IncomeProfile:
    """The income a security pays a year (fraction of value) and how much of it is ordinary
    income (taxed at the short-term rate), the rest qualified (long-term rate); `exempt`: no
    federal tax on it (municipal interest)."""

    yield_: float
    ordinary_share: float
    exempt: bool = False


#: Default income profiles by asset class keyword (first match in this order, on the lower-cased
#: `SecuritySnapshot.asset_class`); anything else is priced as equity. Approximate 2024 levels,
#: assumptions to override per security with `SecurityInfo.tax_drag`:
#: - bonds: the US aggregate bond market yielded about 4.5 % (Bloomberg US Aggregate yield to
#:   worst, 2024); interest is ordinary income (IRC section 61);
#: - REITs: about 3.8 % (FTSE Nareit All Equity REITs), mostly non-qualified dividends taxed as
#:   ordinary income (IRC section 857(c)); the section 199A deduction is ignored;
#: - municipal bonds: interest exempt from federal tax (IRC section 103): no drag;
#: - equity: about 1.5 % dividend yield (S&P 500, about 1.3-1.5 % in 2024), qualified dividends
#:   taxed at the long-term rate (IRC section 1(h)(11)). Capital-gain distributions and the
#:   foreign tax credit are ignored.
INCOME_PROFILES: tuple[tuple[tuple[str, ...], IncomeProfile], ...] = (
    (("muni", "municipal", "tax_exempt_bond"), IncomeProfile(0.030, 0.0, exempt=True)),
    (("reit", "real_estate"), IncomeProfile(0.038, 1.0)),
    (("bond", "fixed_income", "treasury", "credit", "aggregate", "tips", "money_market"),
     IncomeProfile(0.045, 1.0)),
)
EQUITY_PROFILE = IncomeProfile(0.015, 0.0)


def income_profile(asset_class: str) -> IncomeProfile:
    name = asset_class.lower()
    for keywords, profile in INCOME_PROFILES:
        if any(k in name for k in keywords):
            return profile
    return EQUITY_PROFILE


def tax_drag_rate(asset_class: str, ordinary_rate: float, qualified_rate: float) -> float:
    """Yearly tax cost of holding one dollar of the asset class in a taxable account."""
    p = income_profile(asset_class)
    if p.exempt:
        return 0.0
    return p.yield_ * (p.ordinary_share * ordinary_rate + (1.0 - p.ordinary_share) * qualified_rate)


# ---------------------------------------------------------------------------------- the input


@dataclass(frozen=True, eq=False)
class HouseholdInput:
    """Every account's `RebalanceInput` over one shared, sorted security universe, plus the
    household's target, band, risk model and location charges."""

    household_id: str | None
    accounts: tuple[RebalanceInput, ...]
    #: The accounts' snapshots rewritten onto the household universe (targets, securities).
    snapshots: tuple[AccountSnapshot, ...]
    symbols: tuple[str, ...]
    price_usd: np.ndarray
    target_weight: np.ndarray
    band_abs: float
    #: (A, n): yearly location charge per dollar held, per account and security.
    drag: np.ndarray
    #: Per account: loss lots banned by the household's recent buys (taxable accounts only).
    no_sell_lot: tuple[np.ndarray, ...]
    tax_budget_usd: float | None = None
    gain_cap_usd: float | None = None

    @property
    def n_accounts(self) -> int:
        return len(self.accounts)

    @property
    def n_securities(self) -> int:
        return len(self.symbols)

    @cached_property
    def value_usd(self) -> float:
        return float(sum(a.value_usd for a in self.accounts))

    @cached_property
    def scale(self) -> np.ndarray:
        """V_a / V_H: an account weight times this is a household weight."""
        return np.array([a.value_usd for a in self.accounts]) / self.value_usd

    @cached_property
    def account_pre_weight(self) -> np.ndarray:
        """(A, n) holdings of each account as fractions of V_H."""
        return np.array([a.holdings_usd for a in self.accounts]) / self.value_usd

    @cached_property
    def pre_weight(self) -> np.ndarray:
        return self.account_pre_weight.sum(axis=0)

    @property
    def taxable(self) -> np.ndarray:
        return np.array([a.account_type == "taxable" for a in self.accounts])

    @property
    def cash_weight(self) -> float:
        return float(sum(a.cash_usd for a in self.accounts)) / self.value_usd

    @property
    def cash_target_weight(self) -> float:
        reserve = sum(a.cash_reserve_usd for a in self.accounts) / self.value_usd
        return max(reserve, 1.0 - float(self.target_weight.sum()))

    @property
    def loadings(self) -> np.ndarray:
        return self.accounts[0].loadings

    @cached_property
    def band(self) -> np.ndarray:
        """Per security: the strictest of the accounts' bands."""
        return np.min(np.stack([inp.band for inp in self.accounts]), axis=0)

    @cached_property
    def group_band(self) -> np.ndarray:
        """Per substitute group: its members' narrowest household band."""
        return group_bands(self.band, self.band_membership)

    @property
    def specific(self) -> np.ndarray:
        return self.accounts[0].specific

    @property
    def band_membership(self) -> np.ndarray:
        return self.accounts[0].band_membership

    @property
    def groups(self) -> tuple[str, ...]:
        return self.accounts[0].groups

    @cached_property
    def impact(self) -> np.ndarray:
        """(A, n) impact coefficients in household weights: b sigma sqrt(V_H / ADV)."""
        return np.array([a.impact / np.sqrt(s) for a, s in zip(self.accounts, self.scale, strict=True)])


def _value_usd(snapshot: AccountSnapshot, prices: Mapping[str, Decimal]) -> Decimal:
    return snapshot.cash_usd + sum((p.shares * prices[p.symbol] for p in snapshot.positions), Decimal(0))


def household_input(
    snapshots: Sequence[AccountSnapshot],
    household_targets: Mapping[str, Decimal] | None = None,
    context: RebalanceContext | None = None,
    *,
    withdrawals_usd: Mapping[str, Decimal] | None = None,
    location_multipliers: Mapping[str, float] | None = None,
) -> HouseholdInput:
    """Validate the household and build its arrays; `InvalidSnapshot` if malformed.

    `household_targets` (fractions of the household's value): None takes the value-weighted
    average of the accounts' own targets. Securities must carry the same price in every
    snapshot (the household is valued at one price per security).
    """
    ctx = context or EMPTY_CONTEXT
    if not snapshots:
        raise InvalidSnapshot("a household needs at least one account")
    ids = [s.account_id for s in snapshots]
    if len(set(ids)) != len(ids):
        raise InvalidSnapshot("an account is listed twice in the household", accounts=ids)
    households = {s.household_id for s in snapshots} - {None}
    if len(households) > 1:
        raise InvalidSnapshot(f"accounts of different households: {sorted(households)}")
    if ctx.withdrawal_usd and withdrawals_usd is None:
        if len(snapshots) > 1:
            raise ValueError("household mode: give withdrawals per account (withdrawals_usd), "
                             "not one context withdrawal")
        withdrawals_usd = {ids[0]: Decimal(repr(ctx.withdrawal_usd))}
    withdrawals_usd = dict(withdrawals_usd or {})
    unknown = set(withdrawals_usd) - set(ids)
    if unknown:
        raise InvalidSnapshot(f"withdrawals for accounts outside the household: {sorted(unknown)}")
    for account, given in withdrawals_usd.items():
        amount = given if isinstance(given, Decimal) else Decimal(repr(float(given)))
        if not (amount.is_finite() and 0 <= amount <= Decimal(repr(MAX_CONTEXT_USD))):
            raise InvalidSnapshot(f"the withdrawal of {account} must be between 0 and {MAX_CONTEXT_USD:g} "
                                  f"USD, not {amount:.6g}", account_ids=[account])
    multipliers = dict(LOCATION_MULTIPLIERS)
    multipliers.update(location_multipliers or {})

    merged: dict[str, SecuritySnapshot] = {}
    for snap in snapshots:
        for sec in snap.securities:
            first = merged.setdefault(sec.symbol, sec)
            if first.price_usd != sec.price_usd:
                raise InvalidSnapshot(f"{sec.symbol} is priced {first.price_usd} and {sec.price_usd} in "
                                      "two accounts of the household", symbol=sec.symbol)
    prices = {s: sec.price_usd for s, sec in merged.items()}
    missing = sorted({p.symbol for s in snapshots for p in s.positions} - set(prices))
    if missing:
        raise InvalidSnapshot(f"no price for {missing}", symbols=missing)
    values = [_value_usd(s, prices) for s in snapshots]
    total = sum(values, Decimal(0))
    if not total > 0:
        raise InvalidSnapshot(f"household value {total} is not positive")

    if household_targets is None:
        acc: dict[str, Decimal] = {}
        for snap, v in zip(snapshots, values, strict=True):
            for sym, w in snap.targets.items():
                acc[sym] = acc.get(sym, Decimal(0)) + w * v
        targets = {s: w / total for s, w in acc.items()}
    else:
        targets = {s: Decimal(w) for s, w in household_targets.items()}
    for sym, w in targets.items():
        if w < 0:
            raise InvalidSnapshot(f"household target of {sym} is negative", symbol=sym)
        if sym not in prices:
            raise InvalidSnapshot(f"no price for the targeted {sym}", symbol=sym)
    if sum(targets.values(), Decimal(0)) > Decimal(1) + Decimal("1e-9"):
        raise InvalidSnapshot("household targets sum to more than 1")

    held = {p.symbol for s in snapshots for p in s.positions if p.shares > 0 or p.lots}
    universe = sorted(held | set(targets))
    # Every account sees every security of the household (its own spreads and commissions where
    # it has them), so every account's input has the same symbols, substitutes included.
    rewritten, inputs = [], []
    for snap in snapshots:
        own = {sec.symbol: sec for sec in snap.securities}
        securities = [own.get(s, merged[s]) for s in sorted(merged)]
        zero = Decimal(0)
        # The household's targets replace the account's; its own screens stay buy bans (the
        # targets before its ESG screen are an explainer's matter, not the household's).
        snap_h = snap.model_copy(update={
            "targets": {s: targets.get(s, zero) for s in universe}, "securities": securities,
            "targets_before_esg": None})
        ctx_a = replace(ctx, withdrawal_usd=float(withdrawals_usd.get(snap.account_id, 0)),
                        tax_budget_usd=None, gain_cap_usd=None)
        rewritten.append(snap_h)
        inputs.append(from_snapshot(snap_h, ctx_a, screened_targets_ok=True))
    symbols = inputs[0].symbols
    if any(inp.symbols != symbols for inp in inputs):  # pragma: no cover - same universe by construction
        raise InvalidSnapshot("accounts of the household resolved to different security universes")

    drag = np.zeros((len(inputs), len(symbols)))
    for a, (snap, inp) in enumerate(zip(snapshots, inputs, strict=True)):
        mult = multipliers.get(snap.account_type, 0.0)
        st, lt = float(snap.tax_rates.short_term), float(snap.tax_rates.long_term)
        if inp.account_type != "taxable":
            # The rates of the household's taxable accounts (the drag avoided by holding here).
            taxed = [s for s in snapshots if s.account_type == "taxable"]
            if taxed:
                st, lt = float(taxed[0].tax_rates.short_term), float(taxed[0].tax_rates.long_term)
        for i, sym in enumerate(symbols):
            info = ctx.info(sym)
            rate = info.tax_drag if info.tax_drag is not None else tax_drag_rate(merged[sym].asset_class, st, lt)
            drag[a, i] = mult * rate

    no_sell = _household_wash_no_sell(inputs, ctx)
    return HouseholdInput(
        household_id=next(iter(households), None), accounts=tuple(inputs), snapshots=tuple(rewritten),
        symbols=symbols, price_usd=inputs[0].price_usd, target_weight=inputs[0].target_weight,
        band_abs=min(inp.band_abs for inp in inputs), drag=drag, no_sell_lot=no_sell,
        tax_budget_usd=ctx.tax_budget_usd, gain_cap_usd=ctx.gain_cap_usd,
    )


def _household_wash_no_sell(inputs: Sequence[RebalanceInput], ctx: RebalanceContext) -> tuple[np.ndarray, ...]:
    """Loss lots no taxable account may sell: `inputs._context_fields`' bans (the household's recent
    buys, this account's recent lots), plus lots of the group acquired inside the window in any
    *other* account. Losses in tax-deferred and tax-exempt accounts are no tax losses: no ban."""
    recent_lots: dict[str, set[tuple[int, int]]] = {}
    for a, inp in enumerate(inputs):
        for lot in range(inp.n_lots):
            if 0 <= (inp.trade_date - inp.lot_acquired_on[lot]).days <= WASH_WINDOW_DAYS \
                    and inp.lot_ids[lot] not in inp.untracked_lots:
                recent_lots.setdefault(inp.groups[inp.lot_security[lot]], set()).add((a, lot))
    out = []
    for a, inp in enumerate(inputs):
        ban = np.zeros(inp.n_lots, dtype=bool)
        if inp.account_type == "taxable":
            ban |= inp.no_sell_lot
            for lot in np.flatnonzero(inp.lot_gain_usd_per_share < 0):
                if recent_lots.get(inp.groups[inp.lot_security[lot]], set()) - {(a, int(lot))}:
                    ban[lot] = True
        ban.setflags(write=False)
        out.append(ban)
    return tuple(out)


# ------------------------------------------------------------------------ the compiled problem


@dataclass(frozen=True, order=True)
class HouseholdShape:
    """A compiled household problem's padded size."""

    n_accounts: int
    n_securities: int
    lots_per_security: int
    n_factors: int = 0
    n_groups: int = 0
    impact: bool = False

    @property
    def n_slots(self) -> int:
        """Lot slots per account."""
        return self.n_securities * self.lots_per_security

    @classmethod
    def of(cls, hh: HouseholdInput) -> HouseholdShape:
        lots = max(a.max_lots_per_security for a in hh.accounts)
        return cls(bucket(hh.n_accounts, ACCOUNT_BUCKETS), bucket(max(hh.n_securities, 1), SECURITY_BUCKETS),
                   bucket(max(lots, 1), LOTS_PER_SECURITY_BUCKETS), bucket(hh.loadings.shape[1], FACTOR_BUCKETS),
                   bucket(hh.band_membership.shape[1], GROUP_BUCKETS), bool(hh.impact.any()))


@dataclass(frozen=True)
class HouseholdRaw:
    """The solver's answer at the padded shape (flattened account-major)."""

    sell: np.ndarray
    buy: np.ndarray
    status: str
    solver: str
    solve_ms: float


class CompiledHousehold:
    """One DPP problem per `HouseholdShape`; `solve` sets the Parameters and re-solves.

    Exposes the attributes `fastpath.ClarabelFastPath` reads (`p`, `problem`, `set_theta`,
    `shape.n_securities`, variables named ``sell`` and ``buy``), so the direct Clarabel call
    serves household problems too; cvxpy's own path is the fallback.
    """

    def __init__(self, shape: HouseholdShape) -> None:
        self.shape = shape
        self._lock = threading.Lock()
        A, n, k, f, g = (shape.n_accounts, shape.n_securities, shape.lots_per_security,
                         shape.n_factors, shape.n_groups)
        m = shape.n_slots
        P = cp.Parameter
        self.p: dict[str, cp.Parameter] = {
            "quad_diag": P(n, nonneg=True), "quad_lin": P(n), "reg_diag": P(A * n, nonneg=True),
            "band_lo": P(n), "band_hi": P(n), "band_weight": P(nonneg=True),
            "lin_sell": P(A * m), "lin_buy": P(A * n), "cash_weight": P(nonneg=True),
            "cost_buy": P(A * n, nonneg=True), "cost_sell": P(A * m, nonneg=True),
            "cash_drag_rhs": P(), "cash_floor_rhs": P(A),
            "sell_cap": P(A * m, nonneg=True), "buy_cap": P(A * n, nonneg=True),
            "turnover_cap": P(A, nonneg=True),
            "tax_row": P(A * m), "tax_cap": P(), "gain_row": P(A * m), "gain_cap": P(),
        }
        if f:
            self.p["factor_scale"] = P((n, f))
            self.p["factor_offset"] = P(f)
        if shape.impact:
            self.p["impact"] = P(A * n, nonneg=True)
        if g:
            self.p["group_member"] = P((n, g), nonneg=True)
            self.p["group_lo"] = P(g)
            self.p["group_hi"] = P(g)
        p = self.p
        self.sell = cp.Variable(A * m, nonneg=True, name="sell")
        self.buy = cp.Variable(A * n, nonneg=True, name="buy")
        excess = cp.Variable(n, nonneg=True, name="excess")
        idle = cp.Variable(nonneg=True, name="idle")
        slots_to_security = sp.kron(sp.eye(A * n), np.ones((1, k))).tocsr()
        per_account_n = sp.kron(sp.eye(A), np.ones((1, n))).tocsr()
        per_account_m = sp.kron(sp.eye(A), np.ones((1, m))).tocsr()
        to_household = sp.kron(np.ones((1, A)), sp.eye(n)).tocsr()
        # `trade` and `household_trade` are variables tied by equalities (as in `problem.py`,
        # formulation 6): every row below touches one entry per security instead of the
        # accounts' lots and buys behind it.
        trade = cp.Variable(A * n, name="trade")
        household_trade = cp.Variable(n, name="household_trade")
        spent = (per_account_n @ (trade + cp.multiply(p["cost_buy"], self.buy))
                 + per_account_m @ cp.multiply(p["cost_sell"], self.sell))
        objective = (
            cp.sum(cp.multiply(p["quad_diag"], cp.square(household_trade)))
            + p["quad_lin"] @ household_trade
            + cp.sum(cp.multiply(p["reg_diag"], cp.square(trade)))
            + p["band_weight"] * cp.sum(excess)
            + p["lin_sell"] @ self.sell + p["lin_buy"] @ self.buy
            + p["cash_weight"] * idle
        )
        constraints = [
            trade == self.buy - slots_to_security @ self.sell,
            household_trade == to_household @ trade,
            p["tax_row"] @ self.sell <= p["tax_cap"],
            p["gain_row"] @ self.sell <= p["gain_cap"],
            excess - household_trade >= p["band_lo"],
            excess + household_trade >= p["band_hi"],
            idle + cp.sum(household_trade) >= p["cash_drag_rhs"],
            spent <= p["cash_floor_rhs"],
            self.sell <= p["sell_cap"],
            self.buy <= p["buy_cap"],
            per_account_m @ self.sell + per_account_n @ self.buy <= p["turnover_cap"],
        ]
        if shape.impact:
            impact = cp.Variable(A * n, nonneg=True, name="impact")
            constraints.append(cp.PowCone3D(impact, np.ones(A * n), trade, 2.0 / 3.0))
            objective = objective + p["impact"] @ impact
        if f:
            objective = objective + cp.sum_squares(p["factor_scale"].T @ household_trade + p["factor_offset"])
        if g:
            group_excess = cp.Variable(g, nonneg=True, name="group_excess")
            group_trade = p["group_member"].T @ household_trade
            objective = objective + p["band_weight"] * cp.sum(group_excess)
            constraints += [group_excess - group_trade >= p["group_lo"],
                            group_excess + group_trade >= p["group_hi"]]
        self.problem = cp.Problem(cp.Minimize(OBJECTIVE_SCALE * objective), constraints)
        assert self.problem.is_dpp(), "the household problem must stay DPP"
        self.fast = None
        self.compile_ms = 0.0

    def neutral(self) -> dict[str, np.ndarray | float]:
        return _neutral(self.shape)

    def compile(self, *, fast_path: bool = True) -> None:
        from .fastpath import ClarabelFastPath, FastPathUnavailable

        t0 = time.perf_counter()
        with self._lock:
            self._set(self.neutral())
            self.problem.get_problem_data(SOLVERS[0])
            if fast_path:
                try:
                    self.fast = ClarabelFastPath(self)  # type: ignore[arg-type]
                except FastPathUnavailable as e:
                    log.warning("no fast path for %s (%s): solving through cvxpy", self.shape, e)
                    self.fast = None
            self._set(self.neutral())
        self.compile_ms = (time.perf_counter() - t0) * 1e3

    def theta(self, data: Mapping[str, np.ndarray | float]) -> np.ndarray:
        return np.concatenate([np.atleast_1d(np.asarray(data[name], dtype=float)).ravel() for name in self.p])

    def set_theta(self, theta: np.ndarray) -> None:
        at = 0
        for param in self.p.values():
            size = int(np.prod(param.shape)) if param.shape else 1
            chunk = theta[at:at + size]
            param.value = chunk.reshape(param.shape) if param.shape else float(chunk[0])
            at += size

    def _set(self, data: Mapping[str, np.ndarray | float]) -> None:
        for name, param in self.p.items():
            value = data[name]
            param.value = np.asarray(value, dtype=float) if np.ndim(value) else float(value)

    def solve(self, data: Mapping[str, np.ndarray | float]) -> HouseholdRaw:
        """Solve (fast path first, then cvxpy with its fallbacks); `ProblemInfeasible` or
        `SolverFailed` else."""
        if self.fast is not None:
            t0 = time.perf_counter()
            theta = self.theta(data)
            status, sell, buy, _ = self.fast.solve_first(theta)
            elapsed = (time.perf_counter() - t0) * 1e3
            if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
                raise ProblemInfeasible(status)
            if sell is not None and buy is not None:
                return HouseholdRaw(np.maximum(sell, 0.0), np.maximum(buy, 0.0), status, "CLARABEL", elapsed)
            log.warning("household fast path ended %s on %s; retrying through cvxpy", status, self.shape)
        last = ("none", "not run")
        with self._lock:
            self._set(data)
            for solver in SOLVERS:
                t0 = time.perf_counter()
                try:
                    self.problem.solve(solver=solver, **SOLVER_OPTIONS.get(solver, {}))
                except cp.error.SolverError as e:
                    last = (solver, f"error: {e}")
                    continue
                elapsed = (time.perf_counter() - t0) * 1e3
                status = self.problem.status
                if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
                    raise ProblemInfeasible(status)
                if status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and self.sell.value is not None:
                    return HouseholdRaw(np.maximum(np.array(self.sell.value), 0.0),
                                        np.maximum(np.array(self.buy.value), 0.0), status, solver, elapsed)
                last = (solver, str(status))
        raise SolverFailed(f"no solver solved the household problem (last: {last[0]}: {last[1]})",
                           solver=last[0], status_text=last[1])


def _neutral(s: HouseholdShape) -> dict[str, np.ndarray | float]:
    """Parameter values of an empty household (compiling, and padding in `assemble`)."""
    A, n, m, f, g = s.n_accounts, s.n_securities, s.n_slots, s.n_factors, s.n_groups
    out: dict[str, np.ndarray | float] = {
        "quad_diag": np.ones(n), "quad_lin": np.zeros(n), "reg_diag": np.full(A * n, 1e-6),
        "band_lo": np.full(n, -0.05), "band_hi": np.full(n, -0.05), "band_weight": 1.0,
        "lin_sell": np.zeros(A * m), "lin_buy": np.zeros(A * n), "cash_weight": 0.0,
        "cost_buy": np.zeros(A * n), "cost_sell": np.zeros(A * m), "cash_drag_rhs": 0.0,
        "cash_floor_rhs": np.zeros(A), "sell_cap": np.zeros(A * m), "buy_cap": np.zeros(A * n),
        "turnover_cap": np.full(A, 4.0), "tax_row": np.zeros(A * m), "tax_cap": NO_BOUND,
        "gain_row": np.zeros(A * m), "gain_cap": NO_BOUND,
    }
    if f:
        out["factor_scale"], out["factor_offset"] = np.zeros((n, f)), np.zeros(f)
    if s.impact:
        out["impact"] = np.zeros(A * n)
    if g:
        out["group_member"], out["group_lo"], out["group_hi"] = (np.zeros((n, g)), np.full(g, -0.05),
                                                                 np.full(g, -0.05))
    return out


def _build(shape: HouseholdShape) -> CompiledHousehold:
    prob = CompiledHousehold(shape)
    prob.compile()
    return prob


_CACHE: ShapeCache[HouseholdShape, CompiledHousehold] = ShapeCache(_build, "household problem")


def compiled_household(shape: HouseholdShape) -> CompiledHousehold:
    """The compiled household problem of `shape`, built on first use, kept for the process's life."""
    return _CACHE.get(shape)


# ---------------------------------------------------------------------------- assembling


def household_weights(drivers: Mapping[str, float] | None, *, proposal: bool = True) -> dict[str, float]:
    """Driver weights of household mode: the single-account drivers plus ``location``."""
    given = dict(drivers or {})
    unknown = set(given) - set(HOUSEHOLD_DRIVERS)
    if unknown:
        raise ValueError(f"unknown drivers: {sorted(unknown)}; known: {list(HOUSEHOLD_DRIVERS)}")
    loc = float(given.pop("location", DEFAULT_LOCATION_WEIGHT if proposal else 0.0))
    if not loc >= 0.0:
        raise ValueError(f"driver weight location={loc} must be nonnegative")
    weights = proposal_weights(given) if proposal else validate_weights(given)
    weights["location"] = loc
    return weights


def _allowed(hh: HouseholdInput, a: int, weights: Mapping[str, float], bans: Bans,
             relax: frozenset[str] = frozenset()) -> tuple[np.ndarray, np.ndarray]:
    """(buyable per security, sellable per lot) of account a."""
    inp = hh.accounts[a]
    blocked = inp.restricted if weights["restrictions"] > 0 else np.zeros(inp.n_securities, dtype=bool)
    buyable = ~blocked & ~screened_from_buying(inp, weights)
    buyable[list(bans.no_buy)] = False
    allowed = ~blocked[inp.lot_security]
    allowed[list(bans.no_sell_lots)] = False
    if "wash_sale" not in relax:
        buyable &= ~inp.no_buy
        allowed &= ~hh.no_sell_lot[a]
    if "mode" not in relax:
        if inp.mode == "buy_only":
            allowed[:] = False
        elif inp.mode == "sell_only":
            buyable[:] = False
    return buyable, allowed


def _slots(inp: RebalanceInput, shape: HouseholdShape, a: int) -> np.ndarray:
    return a * shape.n_slots + inp.lot_security * shape.lots_per_security + inp.lot_rank


RELAXABLE: tuple[str, ...] = ("tax_budget", "gain_cap", "max_turnover", "mode", "wash_sale")


def assemble(hh: HouseholdInput, weights: Mapping[str, float], tuning: Tuning, shape: HouseholdShape,
             bans: Sequence[Bans], relax: frozenset[str] = frozenset()) -> dict[str, np.ndarray | float]:
    """Parameter values of the household problem, padded to `shape`."""
    n, N, M = hh.n_securities, shape.n_securities, shape.n_slots
    A = shape.n_accounts
    g_drift, g_risk, g_cost, g_tax, g_cash, g_loc = (
        weights[d] for d in ("drift", "risk", "cost", "tax", "cash", "location"))
    cash_on = g_cash > 0
    data = _neutral(shape)  # padded defaults
    data["reg_diag"] = np.full(A * N, tuning.regularization)
    data["band_lo"] = np.full(N, -hh.band_abs)
    data["band_hi"] = np.full(N, -hh.band_abs)
    data["turnover_cap"] = np.zeros(A)
    lin_sell, lin_buy = np.zeros(A * M), np.zeros(A * N)
    cost_buy, cost_sell = np.zeros(A * N), np.zeros(A * M)
    sell_cap, buy_cap = np.zeros(A * M), np.zeros(A * N)
    tax_row, gain_row = np.zeros(A * M), np.zeros(A * M)
    floor_rhs, turnover = np.zeros(A), np.zeros(A)
    reg_diag = np.full(A * N, tuning.regularization)
    impact = np.zeros(A * N)
    V = hh.value_usd
    for a, inp in enumerate(hh.accounts):
        s = float(hh.scale[a])
        sl = _slots(inp, shape, a)
        bi = a * N + np.arange(n)
        buyable, allowed = _allowed(hh, a, weights, bans[a], relax)
        lot_cost = inp.cost_rate[inp.lot_security]
        drag = hh.drag[a]
        lin_sell[sl] = (g_cost * lot_cost + g_tax * inp.lot_tax_objective + lot_tie_break(inp, tuning)
                        - g_loc * drag[inp.lot_security])
        lin_buy[bi] = g_cost * inp.cost_rate + tuning.tie_break + g_loc * drag
        cost_buy[bi], cost_sell[sl] = inp.cost_rate, lot_cost
        sell_cap[sl] = inp.lot_weight * s * allowed
        cw = inp.cash_weight
        buy_cap[bi] = buyable * s * (1.0 + abs(cw))
        tax_row[sl], gain_row[sl] = inp.lot_tax_per_weight, inp.lot_gain_per_weight
        floor = inp.reserve_weight + inp.withdrawal_weight if cash_on else min(cw, 0.0)
        floor_rhs[a] = (cw - floor) * s
        own_turnover = inp.max_turnover if inp.max_turnover is not None and "max_turnover" not in relax \
            else max(4.0, 2.0 + 2.0 * abs(cw))
        turnover[a] = own_turnover * s
        reg_diag[bi] = tuning.regularization / reg_tau(inp, tuning)
        impact[bi] = g_cost * hh.impact[a]
    dev = hh.pre_weight - hh.target_weight
    gd = g_drift * hh.specific
    L, Mb = hh.loadings, hh.band_membership
    grouped = Mb.sum(axis=1) > 0

    def pad_n(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full(N, fill)
        out[:n] = values
        return out

    data.update(
        # g d (dev + T)^2 = g d T^2 + 2 g d dev T + const
        quad_diag=pad_n(gd), quad_lin=pad_n(2.0 * gd * dev), reg_diag=reg_diag,
        band_lo=pad_n(np.where(grouped, -4.0, dev - hh.band), -hh.band_abs),
        band_hi=pad_n(np.where(grouped, -4.0, -dev - hh.band), -hh.band_abs),
        band_weight=g_drift * tuning.band_penalty, lin_sell=lin_sell, lin_buy=lin_buy, cash_weight=g_cash,
        cost_buy=cost_buy, cost_sell=cost_sell, cash_drag_rhs=hh.cash_weight - hh.cash_target_weight,
        cash_floor_rhs=floor_rhs, sell_cap=sell_cap, buy_cap=buy_cap, turnover_cap=turnover,
        tax_row=tax_row, gain_row=gain_row,
        tax_cap=NO_BOUND if hh.tax_budget_usd is None or "tax_budget" in relax else hh.tax_budget_usd / V,
        gain_cap=NO_BOUND if hh.gain_cap_usd is None or "gain_cap" in relax else hh.gain_cap_usd / V,
    )
    if shape.impact:
        data["impact"] = impact
    if shape.n_factors:
        fs = np.zeros((N, shape.n_factors))
        # The factor model's columns are the "risk" driver's; the substitute groups' are drift's.
        col_weight = np.where(np.arange(L.shape[1]) < hh.accounts[0].risk_model_factors,
                              np.sqrt(g_risk), np.sqrt(g_drift))
        fs[:n, :L.shape[1]] = L * col_weight
        fo = np.zeros(shape.n_factors)
        fo[:L.shape[1]] = col_weight * (L.T @ dev)
        data["factor_scale"], data["factor_offset"] = fs, fo
    if shape.n_groups:
        G = Mb.shape[1]
        gm = np.zeros((N, shape.n_groups))
        gm[:n, :G] = Mb
        gdev = Mb.T @ dev
        lo, hi = np.full(shape.n_groups, -hh.band_abs), np.full(shape.n_groups, -hh.band_abs)
        lo[:G], hi[:G] = gdev - hh.group_band, -gdev - hh.group_band
        data["group_member"], data["group_lo"], data["group_hi"] = gm, lo, hi
    return data


# ---------------------------------------------------------------------------- evaluating


HOUSEHOLD_TERMS: tuple[str, ...] = ("drift", "risk", "cost", "tax", "cash", "location", "regularization")


def account_trade_weight(hh: HouseholdInput, a: int, sell: np.ndarray, buy: np.ndarray) -> np.ndarray:
    """Account a's trade per security, as fractions of the household value."""
    inp = hh.accounts[a]
    sold = np.bincount(inp.lot_security, weights=sell, minlength=inp.n_securities)
    return (buy - sold) * inp.price_usd / hh.value_usd


def evaluate_household(hh: HouseholdInput, weights: Mapping[str, float], sells: Sequence[np.ndarray],
                       buys: Sequence[np.ndarray], tuning: Tuning = DEFAULT_TUNING) -> dict[str, float]:
    """Weighted value of every term and their `total`, in fractions of V_H (exact, numpy).

    The location term is the household's yearly tax drag after the trades (constant included).
    """
    V = hh.value_usd
    cost = tax = location = reg = 0.0
    T = np.zeros(hh.n_securities)
    for a, inp in enumerate(hh.accounts):
        t = account_trade_weight(hh, a, sells[a], buys[a])
        T += t
        sell_w = sells[a] * inp.lot_price_usd / V
        buy_w = buys[a] * inp.price_usd / V
        cost += float(inp.cost_rate @ buy_w + inp.cost_rate[inp.lot_security] @ sell_w)
        cost += float(hh.impact[a] @ np.abs(t) ** 1.5)
        tax += float(inp.lot_tax_objective @ sell_w)
        location += float(hh.drag[a] @ (hh.account_pre_weight[a] + t))
        reg += (tuning.regularization * float((t * t / reg_tau(inp, tuning)).sum())
                + float(lot_tie_break(inp, tuning) @ sell_w) + tuning.tie_break * float(buy_w.sum()))
    x = hh.pre_weight + T - hh.target_weight
    k_model = hh.accounts[0].risk_model_factors
    fx = hh.loadings[:, k_model:].T @ x
    fm = hh.loadings[:, :k_model].T @ x
    Mb = hh.band_membership
    grouped = Mb.sum(axis=1) > 0
    band = (np.maximum(np.abs(x[~grouped]) - hh.band[~grouped], 0.0).sum()
            + np.maximum(np.abs(Mb.T @ x) - hh.group_band, 0.0).sum())
    drift = float(fx @ fx + (hh.specific * x) @ x) + tuning.band_penalty * float(band)
    idle = max(hh.cash_weight - float(T.sum()) - hh.cash_target_weight, 0.0)
    terms = {
        "drift": weights.get("drift", 0.0) * drift,
        "risk": weights.get("risk", 0.0) * float(fm @ fm),
        "cost": weights.get("cost", 0.0) * cost,
        "tax": weights.get("tax", 0.0) * tax,
        "cash": weights.get("cash", 0.0) * idle,
        "location": weights.get("location", 0.0) * location,
        "regularization": reg,
    }
    terms["total"] = sum(terms.values())
    return terms


def location_drag_usd(hh: HouseholdInput, sells: Sequence[np.ndarray] | None = None,
                      buys: Sequence[np.ndarray] | None = None) -> float:
    """The household's yearly tax drag in dollars (before trades if none are given)."""
    total = 0.0
    for a in range(hh.n_accounts):
        w = hh.account_pre_weight[a]
        if sells is not None and buys is not None:
            w = w + account_trade_weight(hh, a, sells[a], buys[a])
        total += float(hh.drag[a] @ w) * hh.value_usd
    return total


# ---------------------------------------------------------------------------- solving


@dataclass(frozen=True)
class HouseholdSolution:
    """The continuous optimum in shares, per account."""

    sell_shares: tuple[np.ndarray, ...]
    buy_shares: tuple[np.ndarray, ...]
    objective: float
    terms: dict[str, float]
    status: str
    solver: str
    solve_ms: float
    solves: int
    bans: tuple[Bans, ...]
    notes: tuple[str, ...] = field(default=())

    def trade_shares(self, hh: HouseholdInput, a: int) -> np.ndarray:
        inp = hh.accounts[a]
        return self.buy_shares[a] - np.bincount(inp.lot_security, weights=self.sell_shares[a],
                                                minlength=inp.n_securities)


def _net_round_trips(inp: RebalanceInput, sell: np.ndarray, buy: np.ndarray) -> None:
    """Net a security both sold and bought in one account (in place): the trade is unchanged
    (drift, impact, location, household weights), costs fall, and the sales kept are the least
    taxed. The optimum never holds such a round trip (its costs are positive), but a stalled
    interior-point solve ("optimal_inaccurate", power cones) can leave one."""
    sold = np.bincount(inp.lot_security, weights=sell, minlength=inp.n_securities)
    for i in np.flatnonzero((sold > 0) & (buy > 0)):
        x = min(float(buy[i]), float(sold[i]))
        buy[i] -= x
        for lot in sorted(inp.lots_of(i), key=lambda lot: (-inp.lot_tax_objective[lot], lot)):
            if x <= 0:
                break
            cut = min(float(sell[lot]), x)
            sell[lot] -= cut
            x -= cut
    sell[sell < SHARE_TOL] = 0.0
    buy[buy < SHARE_TOL] = 0.0


@dataclass
class _Run:
    hh: HouseholdInput
    weights: dict[str, float]
    tuning: Tuning
    shape: HouseholdShape
    solve_ms: float = 0.0
    solves: int = 0

    def solve(self, bans: Sequence[Bans], relax: frozenset[str] = frozenset()) -> HouseholdRaw:
        data = assemble(self.hh, self.weights, self.tuning, self.shape, bans, relax)
        self.solves += 1
        raw = compiled_household(self.shape).solve(data)
        self.solve_ms += raw.solve_ms
        return raw

    def shares(self, raw: HouseholdRaw) -> tuple[list[np.ndarray], list[np.ndarray]]:
        hh, V = self.hh, self.hh.value_usd
        dust = max(DUST_WEIGHT, DUST_USD / V)
        sells, buys = [], []
        for a, inp in enumerate(hh.accounts):
            sell_w = raw.sell[_slots(inp, self.shape, a)]
            buy_w = raw.buy[a * self.shape.n_securities + np.arange(inp.n_securities)]
            sell_w = np.where(sell_w < dust, 0.0, sell_w)
            buy_w = np.where(buy_w < dust, 0.0, buy_w)
            sell = np.minimum(sell_w * V / inp.lot_price_usd, inp.lot_shares)
            buy = buy_w * V / inp.price_usd
            _net_round_trips(inp, sell, buy)
            sells.append(sell)
            buys.append(buy)
        return sells, buys

    def objective(self, raw: HouseholdRaw) -> float:
        sells, buys = self.shares(raw)
        return evaluate_household(self.hh, self.weights, sells, buys, self.tuning)["total"]

    def solve_or_diagnose(self, bans: Sequence[Bans]) -> HouseholdRaw:
        try:
            return self.solve(bans)
        except ProblemInfeasible:
            pass
        hh = self.hh
        active = {
            "tax_budget": hh.tax_budget_usd is not None,
            "gain_cap": hh.gain_cap_usd is not None,
            "max_turnover": any(a.max_turnover is not None for a in hh.accounts),
            "mode": hh.accounts[0].mode != "both",
            "wash_sale": any(a.no_buy.any() for a in hh.accounts) or any(x.any() for x in hh.no_sell_lot)
            or any(b.no_sell_lots for b in bans),
        }
        for name in RELAXABLE:
            if not active[name]:
                continue
            try:
                self.solve(bans, frozenset({name}))
            except ProblemInfeasible:
                continue
            raise InfeasibleProblem(name, f"the household's cash reserves cannot be met under the "
                                    f"{name.replace('_', ' ')}", household_id=hh.household_id) from None
        short = []
        for a, inp in enumerate(hh.accounts):
            _, allowed = _allowed(hh, a, self.weights, bans[a])
            raisable = inp.cash_usd + float(
                (inp.lot_shares * inp.lot_price_usd * (1 - inp.cost_rate[inp.lot_security]))[allowed].sum())
            if raisable < inp.cash_reserve_usd + inp.withdrawal_usd - 1e-6:
                short.append(inp.account_id)
        accounts = short or [a.account_id for a in hh.accounts]
        withdrawal = any(a.withdrawal_usd > 0 for a in hh.accounts if a.account_id in accounts)
        name = "withdrawal" if withdrawal else "cash_reserve"
        raise InfeasibleProblem(
            name, f"the {'withdrawal and ' if withdrawal else ''}cash reserve of account(s) "
            f"{', '.join(accounts)} cannot be raised from what they may sell (each account funds "
            "its own cash)", account_ids=accounts, household_id=hh.household_id) from None


_HARVESTED = "wash-sale rule (household): loss harvested, not bought back in any account"
_KEPT = "wash-sale rule (household): loss lots kept, bought instead"


@dataclass(frozen=True)
class _Groups:
    names: tuple[str, ...]
    #: group -> security indices
    members: dict[str, np.ndarray]
    #: group -> per account, loss lot indices (taxable accounts only)
    loss_lots: dict[str, tuple[np.ndarray, ...]]

    def bans(self, harvest: frozenset[str], n_accounts: int) -> tuple[Bans, ...]:
        no_buy = frozenset(int(i) for g in harvest for i in self.members[g])
        keep = [g for g in self.names if g not in harvest]
        return tuple(Bans(no_buy=no_buy,
                          no_sell_lots=frozenset(int(lot) for g in keep for lot in self.loss_lots[g][a]))
                     for a in range(n_accounts))


def _choice_groups(run: _Run, bans: Sequence[Bans]) -> _Groups:
    """Wash groups where a taxable account can sell a loss and some account can buy."""
    hh = run.hh
    groups = np.array(hh.groups, dtype=object)
    buyable_any = np.zeros(hh.n_securities, dtype=bool)
    loss_lots: dict[str, list[np.ndarray]] = {}
    loss_groups: set[str] = set()
    per_account = []
    for a, inp in enumerate(hh.accounts):
        buyable, allowed = _allowed(hh, a, run.weights, bans[a])
        buyable_any |= buyable
        loss = (inp.lot_gain_usd_per_share < 0) & allowed & (inp.account_type == "taxable")
        per_account.append(loss)
        loss_groups |= set(groups[inp.lot_security[loss]])
    names, members = [], {}
    for g in sorted(loss_groups):
        idx = np.flatnonzero(groups == g)
        if buyable_any[idx].any():
            names.append(g)
            members[g] = idx
            loss_lots[g] = [np.flatnonzero(per_account[a] & np.isin(inp.lot_security, idx))
                            for a, inp in enumerate(hh.accounts)]
    return _Groups(tuple(names), members, {g: tuple(v) for g, v in loss_lots.items()})


def _merge(a: Sequence[Bans], b: Sequence[Bans]) -> tuple[Bans, ...]:
    return tuple(x | y for x, y in zip(a, b, strict=True))


def _resolve_wash_sales(run: _Run, bans: Sequence[Bans], notes: list[str]) -> tuple[HouseholdRaw, tuple[Bans, ...]]:
    hh, A = run.hh, run.hh.n_accounts
    choice = _choice_groups(run, bans)
    harvest = frozenset(choice.names)
    first_bans = _merge(bans, choice.bans(harvest, A))
    raw = run.solve_or_diagnose(first_bans)
    if not choice.names:
        return raw, first_bans
    sells, buys = run.shares(raw)
    T = sum(account_trade_weight(hh, a, sells[a], buys[a]) for a in range(A))
    post_dev = hh.pre_weight + T - hh.target_weight
    V = hh.value_usd

    def harvested_in(sells: Sequence[np.ndarray], g: str) -> bool:
        return any(((sells[a][lots] * hh.accounts[a].lot_price_usd[lots] / V) > ACTIVE_WEIGHT).any()
                   for a, lots in enumerate(choice.loss_lots[g]))

    harvested = {g: harvested_in(sells, g) for g in choice.names}
    below = {g: float(post_dev[choice.members[g]].sum()) < -1e-4 for g in choice.names}
    # Groups that sold no loss: "keep" is no worse (the first solution stays feasible) and may be
    # better (buys allowed, in any account). solve.py switches only those below target; in a
    # household a buy can also serve asset location, so every such group switches.
    sure = frozenset(g for g in choice.names if not harvested[g])
    maybe = frozenset(g for g in choice.names if harvested[g] and below[g])
    best, best_harvest = raw, harvest
    if sure:
        try:
            best = run.solve(_merge(bans, choice.bans(harvest - sure, A)))
            best_harvest = harvest - sure
        except ProblemInfeasible:
            pass
    if maybe:
        try:
            cand = run.solve(_merge(bans, choice.bans(best_harvest - maybe, A)))
            if run.objective(cand) < run.objective(best):
                best, best_harvest = cand, best_harvest - maybe
        except ProblemInfeasible:
            pass
    sells, buys = run.shares(best)
    bought = np.zeros(hh.n_securities, dtype=bool)
    for b in buys:
        bought |= b > 0
    harvested_syms, kept_syms = set(), set()
    for g in choice.names:
        if g in best_harvest and harvested_in(sells, g):
            harvested_syms |= {hh.symbols[i] for i in choice.members[g]
                               if any((sells[a][np.isin(hh.accounts[a].lot_security, [i])
                                                & (hh.accounts[a].lot_gain_usd_per_share < 0)] > 0).any()
                                      for a in range(A))}
        elif g not in best_harvest:
            kept_syms |= {hh.symbols[i] for i in choice.members[g] if bought[i]}
    if harvested_syms:
        notes.append(f"{_HARVESTED}: {', '.join(sorted(harvested_syms))}")
    if kept_syms:
        notes.append(f"{_KEPT}: {', '.join(sorted(kept_syms))}")
    return best, _merge(bans, choice.bans(best_harvest, A))


def solve_household_continuous(hh: HouseholdInput, driver_weights: Mapping[str, float], *,
                               tuning: Tuning = DEFAULT_TUNING,
                               bans: Sequence[Bans] | None = None) -> HouseholdSolution:
    """The household's continuous optimum under `driver_weights` (all six drivers; missing = off).

    Raises `InfeasibleProblem` (naming the constraint) or `SolverFailed`.
    """
    weights = household_weights(driver_weights, proposal=False)
    run = _Run(hh, weights, tuning, HouseholdShape.of(hh))
    notes: list[str] = []
    raw, final_bans = _resolve_wash_sales(run, tuple(bans or [Bans()] * hh.n_accounts), notes)
    sells, buys = run.shares(raw)
    terms = evaluate_household(hh, weights, sells, buys, tuning)
    return HouseholdSolution(
        sell_shares=tuple(sells), buy_shares=tuple(buys), objective=terms["total"], terms=terms,
        status=raw.status, solver=raw.solver, solve_ms=run.solve_ms, solves=run.solves,
        bans=final_bans, notes=tuple(notes))


# ---------------------------------------------------------------------------- rounding


def _account_solution(hh: HouseholdInput, sol: HouseholdSolution, a: int) -> ContinuousSolution:
    """Account a's part of the household optimum in the single-account type `rounding` reads."""
    return ContinuousSolution(
        sell_shares=sol.sell_shares[a], buy_shares=sol.buy_shares[a], trade_shares=sol.trade_shares(hh, a),
        objective=sol.objective, terms=sol.terms, status=sol.status, solver=sol.solver,
        solve_ms=sol.solve_ms, solves=sol.solves, bans=sol.bans[a], notes=sol.notes)


def check_household(hh: HouseholdInput, sells: Sequence[np.ndarray], buys: Sequence[np.ndarray],
                    bans: Sequence[Bans], restrictions_on: bool = True) -> list[str]:
    """Every hard constraint on whole-share trades; the violations, each named with its account."""
    bad: list[str] = []
    loss_groups: set[str] = set()
    bought_groups: set[str] = set()
    tax_usd = gain_usd = 0.0
    for a, inp in enumerate(hh.accounts):
        sell, buy, who = sells[a], buys[a], inp.account_id
        if (sell < -SHARE_TOL).any() or (buy < -SHARE_TOL).any():
            bad.append(f"{who}: negative trade")
        if (sell > inp.lot_shares + SHARE_TOL).any():
            bad.append(f"{who}: lot oversold")
        sold = np.bincount(inp.lot_security, weights=sell, minlength=inp.n_securities)
        if restrictions_on and ((sold[inp.restricted] > 0).any() or (buy[inp.restricted] > 0).any()):
            bad.append(f"{who}: restricted security traded")
        if restrictions_on and (buy[inp.never_buy] > 0).any():
            bad.append(f"{who}: never-buy security bought")
        if (buy[inp.esg_excluded] > 0).any():
            bad.append(f"{who}: ESG-excluded security bought")
        if any(buy[i] > 0 for i in bans[a].no_buy) or any(sell[lot] > 0 for lot in bans[a].no_sell_lots):
            bad.append(f"{who}: banned trade")
        if (buy[inp.no_buy] > 0).any() or (sell[hh.no_sell_lot[a]] > 0).any():
            bad.append(f"{who}: wash sale against the household's last 30 days")
        if inp.mode == "buy_only" and (sell > 0).any():
            bad.append(f"{who}: sale in a buy-only account")
        if inp.mode == "sell_only" and (buy > 0).any():
            bad.append(f"{who}: buy in a sell-only account")
        if ((sold > 0) & (buy > 0)).any():
            bad.append(f"{who}: a security both bought and sold")
        if inp.max_turnover is not None:
            turnover = float(np.abs(account_trade_weight(hh, a, sell, buy)).sum()) / hh.scale[a]
            if turnover > inp.max_turnover + 1e-9:
                bad.append(f"{who}: turnover {turnover:.6f} above {inp.max_turnover}")
        cash = cash_after_usd(inp, sell, buy)
        need = inp.cash_reserve_usd + inp.withdrawal_usd
        if cash < need - 1e-6:
            bad.append(f"{who}: cash after trades ${cash:,.2f} below the reserve plus withdrawal ${need:,.2f}")
        groups = np.array(inp.groups, dtype=object)
        if inp.account_type == "taxable":
            loss_sold = np.bincount(inp.lot_security, weights=sell * (inp.lot_gain_usd_per_share < 0),
                                    minlength=inp.n_securities)
            loss_groups |= set(groups[loss_sold > 0])
            gain_usd += float(sell @ inp.lot_gain_usd_per_share)
        bought_groups |= set(groups[buy > 0])
        tax_usd += float(inp.lot_tax_rate @ (sell * inp.lot_gain_usd_per_share))
    washed = loss_groups & bought_groups
    if washed:
        bad.append(f"wash sale: loss sold in a taxable account and bought in the household in {sorted(washed)}")
    if hh.tax_budget_usd is not None and tax_usd > hh.tax_budget_usd + 0.01:
        bad.append(f"tax ${tax_usd:,.2f} above the budget ${hh.tax_budget_usd:,.2f}")
    if hh.gain_cap_usd is not None and gain_usd > hh.gain_cap_usd + 0.01:
        bad.append(f"net gain ${gain_usd:,.2f} above the cap ${hh.gain_cap_usd:,.2f}")
    return bad


@dataclass(frozen=True)
class HouseholdRounded:
    sell_shares: tuple[np.ndarray, ...]
    buy_shares: tuple[np.ndarray, ...]
    whole_lot: tuple[np.ndarray, ...]
    final_continuous: HouseholdSolution
    dropped: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()


BUDGET_RETRIES = 3


def _round_and_repair(hh: HouseholdInput, weights: Mapping[str, float], continuous: HouseholdSolution,
                      tuning: Tuning) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray],
                                               HouseholdSolution, list[tuple[str, str]], list[str]]:
    notes: list[str] = []
    dropped: list[tuple[str, str]] = []
    sol = continuous
    A = hh.n_accounts
    for _ in range(A * hh.n_securities + 1):
        rounded = [_round_once(inp, _account_solution(hh, sol, a), tuning) for a, inp in enumerate(hh.accounts)]
        small: list[list[int]] = []
        for a, inp in enumerate(hh.accounts):
            sell, buy, _ = rounded[a]
            sold = np.bincount(inp.lot_security, weights=sell, minlength=inp.n_securities)
            notional = (sold + buy) * inp.price_usd
            small.append([i for i in range(inp.n_securities) if 0 < notional[i] < tuning.min_trade_usd])
        if not any(small):
            break
        fix = tuple(Bans(no_buy=frozenset(small[a]),
                         no_sell_lots=frozenset(int(lot) for lot in
                                                np.flatnonzero(np.isin(inp.lot_security, small[a]))))
                    for a, inp in enumerate(hh.accounts))
        try:
            resolved = solve_household_continuous(hh, weights, tuning=tuning, bans=_merge(sol.bans, fix))
        except InfeasibleProblem:
            notes.append(f"kept orders under ${tuning.min_trade_usd:,.0f} needed for feasibility: "
                         + ", ".join(f"{hh.accounts[a].account_id}:{hh.symbols[i]}"
                                     for a in range(A) for i in small[a]))
            break
        dropped.extend((hh.accounts[a].account_id, hh.symbols[i]) for a in range(A) for i in small[a])
        sol = replace(resolved, bans=_merge(resolved.bans, fix))
    else:  # pragma: no cover - bans grow every round
        raise InfeasibleProblem("rounding", "minimum-notional rounding did not settle")
    sells, buys, wholes = [], [], []
    for a, inp in enumerate(hh.accounts):
        sell, buy, whole = rounded[a]
        acc_notes: list[str] = []
        _repair_cash(inp, _account_solution(hh, sol, a), sell, buy, whole, tuning.min_trade_usd, acc_notes,
                     sellable=_allowed(hh, a, weights, sol.bans[a])[1])
        notes.extend(f"{inp.account_id}: {x}" for x in acc_notes)
        sells.append(sell)
        buys.append(buy)
        wholes.append(whole)
    return sells, buys, wholes, sol, dropped, notes


def round_household(hh: HouseholdInput, weights: Mapping[str, float], continuous: HouseholdSolution,
                    tuning: Tuning = DEFAULT_TUNING) -> HouseholdRounded:
    """Whole-share orders per account from `continuous`, re-checked household-wide.

    A tax budget or gain cap overshot by rounding is re-solved with the bound tightened by 1.5x
    the overshoot (and a dollar), at most `BUDGET_RETRIES` times, as `rounding.round_trades`.
    """
    solve_hh, sol = hh, continuous
    for attempt in range(BUDGET_RETRIES + 1):
        sells, buys, wholes, final, dropped, notes = _round_and_repair(solve_hh, weights, sol, tuning)
        problems = check_household(hh, sells, buys, final.bans, weights["restrictions"] > 0)
        over = [p for p in problems if "above the budget" in p or "above the cap" in p]
        if not problems or len(over) != len(problems) or attempt == BUDGET_RETRIES:
            break
        tax_usd = sum(float(inp.lot_tax_rate @ (s * inp.lot_gain_usd_per_share))
                      for inp, s in zip(hh.accounts, sells, strict=True))
        gain_usd = sum(float(s @ inp.lot_gain_usd_per_share) for inp, s in zip(hh.accounts, sells, strict=True)
                       if inp.account_type == "taxable")
        changes = {}
        if hh.tax_budget_usd is not None and tax_usd > hh.tax_budget_usd:
            changes["tax_budget_usd"] = solve_hh.tax_budget_usd - 1.5 * (tax_usd - hh.tax_budget_usd) - 1.0
        if hh.gain_cap_usd is not None and gain_usd > hh.gain_cap_usd:
            changes["gain_cap_usd"] = solve_hh.gain_cap_usd - 1.5 * (gain_usd - hh.gain_cap_usd) - 1.0
        solve_hh = replace(solve_hh, **changes)
        try:
            sol = solve_household_continuous(solve_hh, weights, tuning=tuning, bans=continuous.bans)
        except InfeasibleProblem:
            break
    if problems:
        raise InfeasibleProblem("rounding", "whole-share orders fail the household re-check: "
                                + "; ".join(problems), household_id=hh.household_id, violations=problems)
    if solve_hh is not hh:
        notes.append("tax budget / gain cap tightened for rounding")
    if any(np.isnan(s).any() for s in sells) or any(np.isnan(b).any() for b in buys):  # pragma: no cover
        raise RebalanceError("rounding produced NaN shares")
    return HouseholdRounded(tuple(sells), tuple(buys), tuple(wholes), final, tuple(dropped), tuple(notes))


# ---------------------------------------------------------------------------- the proposal


WEIGHT_PLACES = 6
OBJECTIVE_PLACES = 10


@dataclass(frozen=True)
class AccountOrders:
    """One account's part of a household proposal."""

    account_id: str
    account_type: str
    orders: tuple[Order, ...]
    est_tax_usd: Decimal
    est_cost_usd: Decimal
    #: Realized gains by term, harvested losses and their tax (`proposal.tax_breakdown`).
    tax: Mapping[str, Decimal]
    costs: Mapping[str, Decimal]
    #: The account's own weights (fractions of its value) before and after.
    pre_weights: Mapping[str, Decimal]
    post_weights: Mapping[str, Decimal]
    cash_before_usd: Decimal
    cash_after_usd: Decimal
    #: Yearly location drag of the account's holdings, before and after (dollars a year).
    location_drag_before_usd: Decimal
    location_drag_after_usd: Decimal
    #: Continuous optimum, shares per symbol (buy positive).
    continuous_trade_shares: Mapping[str, float]


@dataclass(frozen=True)
class HouseholdProposal:
    proposal_id: uuid.UUID
    household_id: str | None
    accounts: tuple[AccountOrders, ...]
    #: Household weights (fractions of the household's value) before and after, and the target.
    pre_weights: Mapping[str, Decimal]
    post_weights: Mapping[str, Decimal]
    target_weights: Mapping[str, Decimal]
    #: Objective by term (drift, cost, tax, cash, location, regularization, total) on the final
    #: orders, and the same with `_continuous` on the continuous optimum (fractions of V_H).
    objective: Mapping[str, Decimal]
    est_tax_usd: Decimal
    est_cost_usd: Decimal
    #: The household's yearly tax drag from asset location, before and after (dollars a year).
    location_drag_before_usd: Decimal
    location_drag_after_usd: Decimal
    solver: SolverInfo
    driver_weights: Mapping[str, float]
    snapshot_hashes: Mapping[str, str]
    context_hash: str | None
    dropped: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    #: Why each continuous trade (`household_explain.explain_household`), when asked for.
    explanation: HouseholdExplanation | None = None

    def account(self, account_id: str) -> AccountOrders:
        for a in self.accounts:
            if a.account_id == account_id:
                return a
        raise KeyError(account_id)


def propose_household(
    snapshots: Sequence[AccountSnapshot],
    household_targets: Mapping[str, Decimal] | None = None,
    *,
    context: RebalanceContext | None = None,
    drivers: Mapping[str, float] | None = None,
    tuning: Tuning = DEFAULT_TUNING,
    withdrawals_usd: Mapping[str, Decimal] | None = None,
    location_multipliers: Mapping[str, float] | None = None,
    proposal_id: uuid.UUID | None = None,
    explain: bool = False,
) -> HouseholdProposal:
    """Optimize, round and report a household (see the module docstring).

    `explain=True` adds the Shapley values of every continuous trade over the drivers, location
    included (`household_explain.explain_household`: up to 2^7 household solves, fewer where a
    driver cannot act on this household).

    `drivers` overrides the default weights (``location`` included, default 1: one year of
    drag); cash and restrictions must stay on. Raises `InvalidSnapshot`, `InfeasibleProblem` or
    `SolverFailed`; never returns orders that break a constraint.
    """
    weights = household_weights(drivers)
    context = context or EMPTY_CONTEXT
    hh = household_input(snapshots, household_targets, context, withdrawals_usd=withdrawals_usd,
                         location_multipliers=location_multipliers)
    continuous = solve_household_continuous(hh, weights, tuning=tuning)
    rounded = round_household(hh, weights, continuous, tuning)
    final_terms = evaluate_household(hh, weights, rounded.sell_shares, rounded.buy_shares, tuning)
    objective = {k: dec(v, OBJECTIVE_PLACES) for k, v in final_terms.items()}
    objective.update({f"{k}_continuous": dec(v, OBJECTIVE_PLACES) for k, v in continuous.terms.items()})

    accounts = []
    post_value = {s: Decimal(0) for s in hh.symbols}
    total_cost = total_tax = Decimal(0)
    for a, (inp, snap) in enumerate(zip(hh.accounts, hh.snapshots, strict=True)):
        r = RoundedTrades(sell_shares=rounded.sell_shares[a], buy_shares=rounded.buy_shares[a],
                          whole_lot=rounded.whole_lot[a], continuous=_account_solution(hh, continuous, a),
                          final_continuous=_account_solution(hh, rounded.final_continuous, a))
        orders = build_orders(inp, snap, r)
        tax = usd(estimated_tax_usd(inp, snap, orders))
        cost = sum((o.est_cost_usd for o in orders), Decimal(0))
        sold = r.sold_per_security(inp)
        post_shares = inp.shares - sold + r.buy_shares
        value_after = inp.value_usd - float(cost)
        for s, q, p in zip(inp.symbols, post_shares, inp.price_usd, strict=True):
            post_value[s] += Decimal(repr(float(q * p)))
        one = [np.zeros(x.n_lots) if b != a else rounded.sell_shares[a] for b, x in enumerate(hh.accounts)]
        one_buy = [np.zeros(x.n_securities) if b != a else rounded.buy_shares[a] for b, x in enumerate(hh.accounts)]
        drag_before = float(hh.drag[a] @ hh.account_pre_weight[a]) * hh.value_usd
        drag_after = drag_before + float(hh.drag[a] @ account_trade_weight(hh, a, one[a], one_buy[a])) * hh.value_usd
        accounts.append(AccountOrders(
            account_id=inp.account_id, account_type=inp.account_type, orders=tuple(orders),
            est_tax_usd=tax, est_cost_usd=usd(cost), tax=tax_breakdown(inp, snap, orders),
            costs=cost_breakdown(inp, snap, orders, r.sell_shares, r.buy_shares),
            pre_weights={s: dec(w, WEIGHT_PLACES) for s, w in zip(inp.symbols, inp.pre_weight, strict=True)},
            post_weights={s: dec(float(q * p / value_after), WEIGHT_PLACES)
                          for s, q, p in zip(inp.symbols, post_shares, inp.price_usd, strict=True)},
            cash_before_usd=usd(snap.cash_usd),
            cash_after_usd=usd(cash_after_usd(inp, r.sell_shares, r.buy_shares)),
            location_drag_before_usd=usd(drag_before), location_drag_after_usd=usd(drag_after),
            continuous_trade_shares={s: float(x) for s, x in
                                     zip(inp.symbols, continuous.trade_shares(hh, a), strict=True)},
        ))
        total_cost += cost
        total_tax += tax
    household_after = hh.value_usd - float(total_cost)
    hashes = {s.account_id: canonical_hash(s) for s in snapshots}
    context_hash = None if context == EMPTY_CONTEXT else canonical_hash(context.to_json())
    targets = {s: dec(w, WEIGHT_PLACES) for s, w in zip(hh.symbols, hh.target_weight, strict=True)}
    if proposal_id is None:
        key = ",".join(f"{k}={weights[k]!r}" for k in sorted(weights))
        tkey = ",".join(f"{s}={w}" for s, w in sorted(targets.items()))
        ids = "|".join(f"{k}:{hashes[k]}" for k in sorted(hashes))
        proposal_id = uuid.uuid5(PROPOSAL_NAMESPACE, f"household|{ids}|{tkey}|{OPTIMIZER_VERSION}|{key}|"
                                 f"{context_hash or ''}")
    solve_ms = continuous.solve_ms + (rounded.final_continuous.solve_ms
                                      if rounded.final_continuous is not continuous else 0.0)
    drag_before = location_drag_usd(hh)
    drag_after = location_drag_usd(hh, rounded.sell_shares, rounded.buy_shares)
    explanation = None
    explain_notes: tuple[str, ...] = ()
    if explain:
        from .household_explain import explain_household

        try:
            explanation = explain_household(hh, weights, tuning=tuning, full=continuous)
        except RebalanceError as e:
            # The proposal stands (it was solved and checked); only its explanation is missing.
            explain_notes = (f"no explanation: {type(e).__name__}: {e}",)
    return HouseholdProposal(
        proposal_id=proposal_id, household_id=hh.household_id, accounts=tuple(accounts),
        pre_weights={s: dec(w, WEIGHT_PLACES) for s, w in zip(hh.symbols, hh.pre_weight, strict=True)},
        post_weights={s: dec(float(v) / household_after, WEIGHT_PLACES) for s, v in post_value.items()},
        target_weights=targets, objective=objective, est_tax_usd=usd(total_tax), est_cost_usd=usd(total_cost),
        location_drag_before_usd=usd(drag_before), location_drag_after_usd=usd(drag_after),
        solver=SolverInfo(solver=continuous.solver, status=continuous.status,
                          solve_ms=Decimal(f"{solve_ms:.3f}"), cvxpy_version=CVXPY_VERSION,
                          optimizer_version=OPTIMIZER_VERSION, blas_core=blas_core()),
        driver_weights=dict(weights), snapshot_hashes=hashes, context_hash=context_hash,
        dropped=rounded.dropped,
        notes=continuous.notes + rounded.notes + tuple(
            f"{acct}: dropped order under ${tuning.min_trade_usd:,.0f}: {s}" for acct, s in rounded.dropped)
        + explain_notes,
        explanation=explanation,
    )


def warm_up_household(shapes: Sequence[HouseholdShape] | None = None) -> dict[HouseholdShape, float]:
    """Compile household shapes (two to four accounts of up to 16 securities by default)."""
    shapes = shapes or [HouseholdShape(a, n, k) for a in (2, 4) for n in (8, 16) for k in (1, 2)]
    return {s: compiled_household(s).compile_ms for s in shapes}


__all__ = [
    "DEFAULT_LOCATION_WEIGHT", "HOUSEHOLD_DRIVERS", "INCOME_PROFILES", "LOCATION_MULTIPLIERS",
    "AccountOrders", "CompiledHousehold", "HouseholdInput", "HouseholdProposal", "HouseholdShape",
    "HouseholdSolution", "check_household", "compiled_household", "evaluate_household",
    "household_input", "household_weights", "income_profile", "location_drag_usd", "propose_household",
    "round_household", "solve_household_continuous", "tax_drag_rate", "warm_up_household",
]
