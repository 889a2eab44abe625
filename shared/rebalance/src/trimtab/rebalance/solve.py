"""Solving one account: assemble the Parameters, solve, resolve wash-sale conflicts, map back.

`solve_trades` is the function the explainer calls once per coalition of drivers; `propose`
(in `proposal.py`) calls `solve_continuous` and then rounds.

Wash sales (first version, no substitutes yet): selling a lot at a loss and buying the same
security in one proposal would disallow the loss, so it is not allowed. With the tax driver on,
the convex problem happily does exactly that (harvest and buy back), so after each solve every
security that is both bought and sold at a loss is resolved as OPTIMIZER.md describes: solve the
two convex cases (ban its buys; or ban its loss lots) and keep the better, one security at a
time, largest harvested loss first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from .drivers import DEFAULT_TUNING, Tuning, validate_weights
from .errors import InfeasibleProblem
from .inputs import RebalanceInput
from .objective import evaluate, lot_tie_break, reg_tau
from .problem import ProblemData, ProblemInfeasible, RawSolution, Shape, compiled

#: A weight below this (fraction of V0) counts as no trade when deciding wash-sale conflicts.
ACTIVE_WEIGHT = 1e-7
#: Continuous trades below this fraction of V0, or this many dollars, are solver noise: zero.
DUST_WEIGHT = 1e-6
DUST_USD = 0.005


@dataclass(frozen=True)
class Bans:
    """Trades fixed at zero on top of the snapshot's restrictions (wash sales, rounding fixes)."""

    no_buy: frozenset[int] = frozenset()
    no_sell_lots: frozenset[int] = frozenset()

    def __or__(self, other: Bans) -> Bans:
        return Bans(self.no_buy | other.no_buy, self.no_sell_lots | other.no_sell_lots)


@dataclass(frozen=True)
class ContinuousSolution:
    """The optimum before rounding, in shares, with what it took to get it."""

    sell_shares: np.ndarray
    buy_shares: np.ndarray
    trade_shares: np.ndarray
    objective: float
    terms: dict[str, float]
    status: str
    solver: str
    solve_ms: float
    solves: int
    bans: Bans
    notes: tuple[str, ...] = field(default=())


def shape_of(inp: RebalanceInput) -> Shape:
    return Shape.for_sizes(inp.n_securities, inp.max_lots_per_security)


def assemble(inp: RebalanceInput, weights: Mapping[str, float], tuning: Tuning, shape: Shape,
             bans: Bans = Bans()) -> ProblemData:
    """Parameter values for `inp` under driver `weights` (validated), padded to `shape`."""
    n, N, K = inp.n_securities, shape.n_securities, shape.lots_per_security
    slots = inp.lot_security * K + inp.lot_rank

    def pad_n(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full(N, fill)
        out[:n] = values
        return out

    def pad_m(values: np.ndarray) -> np.ndarray:
        out = np.zeros(shape.n_slots)
        out[slots] = values
        return out

    g_drift, g_cost, g_tax, g_cash = (weights[d] for d in ("drift", "cost", "tax", "cash"))
    restrictions_on = weights["restrictions"] > 0
    cash_on = g_cash > 0

    dev = inp.pre_weight - inp.target_weight
    blocked = inp.restricted if restrictions_on else np.zeros(n, dtype=bool)
    buyable = ~blocked
    buyable[list(bans.no_buy)] = False
    allowed = ~blocked[inp.lot_security]
    allowed[list(bans.no_sell_lots)] = False

    lot_cost = inp.cost_rate[inp.lot_security]
    cw = inp.cash_weight
    floor = inp.reserve_weight if cash_on else min(cw, 0.0)
    turnover = inp.max_turnover if inp.max_turnover is not None else max(4.0, 2.0 + 2.0 * abs(cw))
    # g a^2 + r t^2 = (g + r) (t + g dev / (g + r))^2 + const, a = dev + t: one square per
    # security instead of two (the constant does not move the optimum; `evaluate` reports it).
    reg = tuning.regularization / reg_tau(inp, tuning)
    quad = g_drift + reg
    return ProblemData(
        quad_scale=pad_n(np.sqrt(quad), np.sqrt(tuning.regularization)),
        quad_offset=pad_n(g_drift * dev / np.sqrt(quad)),
        band_lo=pad_n(dev - inp.band_abs, -inp.band_abs),
        band_hi=pad_n(-dev - inp.band_abs, -inp.band_abs),
        band_weight=g_drift * tuning.band_penalty,
        lin_sell=pad_m(g_cost * lot_cost + g_tax * inp.lot_tax_per_weight + lot_tie_break(inp, tuning)),
        lin_buy=pad_n(g_cost * inp.cost_rate + tuning.tie_break),
        cash_weight=g_cash,
        cost_buy=pad_n(inp.cost_rate),
        cost_sell=pad_m(lot_cost),
        cash_drag_rhs=cw - inp.cash_target_weight,
        cash_floor_rhs=cw - floor,
        sell_cap=pad_m(inp.lot_weight * allowed),
        buy_cap=pad_n(buyable.astype(float)),
        turnover_cap=turnover,
        # Factor form of the drift term: compiled when the shape has factors; the risk service's
        # loadings are not wired in yet, so it contributes nothing (identity risk for now).
        factor_scale=np.zeros((N, shape.n_factors)) if shape.n_factors else None,
        factor_offset=np.zeros(shape.n_factors) if shape.n_factors else None,
    )


def _to_shares(inp: RebalanceInput, shape: Shape, raw: RawSolution) -> tuple[np.ndarray, np.ndarray]:
    V0 = inp.value_usd
    slots = inp.lot_security * shape.lots_per_security + inp.lot_rank
    sell_w, buy_w = raw.sell[slots], raw.buy[: inp.n_securities]
    # An interior-point solver leaves inactive trades near 1e-8..1e-7 of V0 (more next to a tight
    # constraint), not 0: that is noise, and zeroing it makes "no trade" exactly zero (the
    # explainer's base).
    dust = max(DUST_WEIGHT, DUST_USD / V0)
    sell_w = np.where(sell_w < dust, 0.0, sell_w)
    buy_w = np.where(buy_w < dust, 0.0, buy_w)
    sell = np.minimum(sell_w * V0 / inp.lot_price_usd, inp.lot_shares)
    buy = buy_w * V0 / inp.price_usd
    return sell, buy


@dataclass
class _Run:
    """Accumulates solver time and count over the solves of one `solve_continuous` call."""

    inp: RebalanceInput
    weights: dict[str, float]
    tuning: Tuning
    shape: Shape
    solve_ms: float = 0.0
    solves: int = 0

    def solve(self, bans: Bans, *, relax_turnover: bool = False) -> RawSolution:
        data = assemble(self.inp, self.weights, self.tuning, self.shape, bans)
        if relax_turnover:
            data = replace(data, turnover_cap=max(4.0, 2.0 + 2.0 * abs(self.inp.cash_weight)))
        self.solves += 1
        raw = compiled(self.shape).solve(data)
        self.solve_ms += raw.solve_ms
        return raw

    def solve_or_diagnose(self, bans: Bans) -> RawSolution:
        try:
            return self.solve(bans)
        except ProblemInfeasible:
            pass
        inp = self.inp
        short_usd = inp.cash_reserve_usd - inp.cash_usd
        if inp.max_turnover is not None:
            try:
                self.solve(bans, relax_turnover=True)
            except ProblemInfeasible:
                pass
            else:
                raise InfeasibleProblem(
                    "max_turnover",
                    f"raising the cash reserve (short ${short_usd:,.2f}) needs more turnover than "
                    f"the policy's {inp.max_turnover}", account_id=inp.account_id) from None
        raise InfeasibleProblem(
            "cash_reserve",
            f"the cash reserve of ${inp.cash_reserve_usd:,.2f} cannot be raised from what may be "
            f"sold (cash ${inp.cash_usd:,.2f})", account_id=inp.account_id) from None


def _wash_conflicts(inp: RebalanceInput, raw: RawSolution, shape: Shape) -> list[tuple[float, int]]:
    """(harvested loss in weight, security) for each security both bought and sold at a loss."""
    slots = inp.lot_security * shape.lots_per_security + inp.lot_rank
    sold_w = raw.sell[slots]
    harvesting = (sold_w > ACTIVE_WEIGHT) & (inp.lot_tax_per_weight < 0)
    out = []
    for i in np.flatnonzero(raw.buy[: inp.n_securities] > ACTIVE_WEIGHT):
        lots = harvesting & (inp.lot_security == i)
        if lots.any():
            loss = float(-(sold_w[lots] * (1 - inp.lot_basis_usd_per_share[lots] / inp.lot_price_usd[lots])).sum())
            out.append((loss, int(i)))
    out.sort(key=lambda c: (-c[0], c[1]))
    return out


_HARVESTED = "wash-sale rule: loss harvested, not bought back"
_KEPT = "wash-sale rule: loss lots kept, bought instead"


def _wash_notes(notes: list[tuple[str, str]]) -> tuple[str, ...]:
    out = []
    for verb in (_HARVESTED, _KEPT):
        symbols = sorted({s for v, s in notes if v == verb})
        if symbols:
            out.append(f"{verb}: {', '.join(symbols)}")
    return tuple(out)


def _resolve_wash_sales(
    run: _Run, raw: RawSolution, bans: Bans, conflicts: list[tuple[float, int]],
    notes: list[tuple[str, str]],
) -> tuple[RawSolution, Bans]:
    """One round of wash-sale resolution over all conflicting securities at once.

    A net seller of a security harvests and does not buy (selling its loss lots first is what it
    would do anyway). For net buyers the two cases are solved for all of them together: harvest
    and skip the buy, or keep the loss lots and buy; the better objective wins. A round can expose
    new conflicts, so the caller repeats until none is left. Deciding per security instead would
    cost two solves per security, which the explainer pays for every coalition of drivers.
    """
    inp = run.inp
    slots = inp.lot_security * run.shape.lots_per_security + inp.lot_rank
    trade_w = raw.buy[: inp.n_securities] - np.bincount(
        inp.lot_security, weights=raw.sell[slots], minlength=inp.n_securities)
    sellers = frozenset(i for _, i in conflicts if trade_w[i] <= 0)
    buyers = [i for _, i in conflicts if trade_w[i] > 0]
    base = bans | Bans(no_buy=sellers)
    notes.extend((_HARVESTED, inp.symbols[i]) for i in sorted(sellers))
    if not buyers:
        return run.solve(base), base
    loss_lots = frozenset(int(lot) for lot in np.flatnonzero(
        np.isin(inp.lot_security, buyers) & (inp.lot_tax_per_weight < 0)))
    options: list[tuple[float, int, Bans, RawSolution, str]] = []
    for rank, (extra, verb) in enumerate((
        (Bans(no_sell_lots=loss_lots), _KEPT),
        (Bans(no_buy=frozenset(buyers)), _HARVESTED),
    )):
        try:
            cand = run.solve(base | extra)
        except ProblemInfeasible:
            continue
        sell, buy = _to_shares(inp, run.shape, cand)
        options.append((evaluate(inp, run.weights, sell, buy, run.tuning)["total"], rank,
                        base | extra, cand, verb))
    if not options:
        raise InfeasibleProblem("wash_sale", "no feasible wash-sale resolution for "
                                f"{[inp.symbols[i] for i in buyers]}", account_id=inp.account_id)
    _, _, chosen, best, verb = min(options, key=lambda o: (o[0], o[1]))
    notes.extend((verb, inp.symbols[i]) for i in sorted(buyers))
    return best, chosen


def solve_continuous(
    inp: RebalanceInput,
    driver_weights: Mapping[str, float],
    *,
    tuning: Tuning = DEFAULT_TUNING,
    bans: Bans = Bans(),
) -> ContinuousSolution:
    """The continuous optimum under `driver_weights` (missing drivers are off) and `bans`.

    Raises `InfeasibleProblem` (naming the constraint) or `SolverFailed`; never returns a
    solution the solver did not certify.
    """
    weights = validate_weights(driver_weights)
    run = _Run(inp, weights, tuning, shape_of(inp))
    raw = run.solve_or_diagnose(bans)
    notes: list[tuple[str, str]] = []
    for _ in range(inp.n_securities):
        conflicts = _wash_conflicts(inp, raw, run.shape)
        if not conflicts:
            break
        raw, bans = _resolve_wash_sales(run, raw, bans, conflicts, notes)
    sell, buy = _to_shares(inp, run.shape, raw)
    trade = buy - np.bincount(inp.lot_security, weights=sell, minlength=inp.n_securities)
    terms = evaluate(inp, weights, sell, buy, tuning)
    return ContinuousSolution(
        sell_shares=sell, buy_shares=buy, trade_shares=trade, objective=terms["total"],
        terms=terms, status=raw.status, solver=raw.solver,
        solve_ms=run.solve_ms, solves=run.solves, bans=bans, notes=_wash_notes(notes),
    )


def solve_trades(
    inp: RebalanceInput, driver_weights: Mapping[str, float], *, tuning: Tuning = DEFAULT_TUNING
) -> np.ndarray:
    """The continuous trade in shares per security (buy positive) under `driver_weights`.

    A driver missing from the mapping, or weighted 0, is off; see `drivers.py` for what "off"
    means for the constraint drivers (cash reserve, restrictions).
    """
    return solve_continuous(inp, driver_weights, tuning=tuning).trade_shares
