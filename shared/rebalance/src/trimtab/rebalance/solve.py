"""Solving one account: assemble the Parameters, solve, resolve wash-sale conflicts, map back.

`solve_trades` is the function the explainer calls once per coalition of drivers; `propose`
(in `proposal.py`) calls `solve_continuous` and then rounds.

Wash sales. Bans that come from the household's last 30 days (a loss sold in a wash group: no
buys of the group; a recent buy in the group: no loss sales of it) are bounds set before
solving (`inputs._context_fields`). Inside one proposal, selling a loss in a wash group and buying
the group is the one disjunction the convex problem cannot express. For every group where both
are possible, the first solve bans the group's buys ("harvest"), except groups that start in
"keep" (`_initial_keeps`: one "carrier" per substitute group whose members all face the
choice, the one whose losses earn least, so that the others can harvest while it keeps the
exposure; and groups below target, with no substitute, whose deficit's drift costs more than
harvesting all their loss lots could earn); then, all other groups fixed:

- the groups that sold no loss and end below target switch to "keep" (ban their loss lots,
  allow buys), and the kept groups that bought nothing switch to "harvest", in one solve: the
  first solution stays feasible, so this can only improve the objective;
- the groups that harvested but end below target, and whose deficit costs more drift (the exact
  drift term with the group's deviation removed, less the cost of buying it back) than their
  loss sales earn, are tried in "keep" together, and the better solution (by the exact numpy
  objective) is kept. When both steps have groups, they go in one solve (kept if it beats the
  first solution, else the "sure" flips alone are solved): the trial nearly always wins.
  Without that estimate every such group was flipped at once, which lost to harvesting when
  only some should flip: on 37 small accounts enumerated over all 2^G assignments, the old
  rule found the best in 8, this one in all 37, with fewer solves.

So a solve costs one to three convex solves (four when a group started in "keep" makes the first
solve infeasible and it starts again from harvesting every group; the explainer pays it per
coalition), where trying both cases per group would cost two per group. The result never both
sells a loss and buys in one wash group. A harvested loss keeps its exposure through a substitute (another wash group of
the same substitute group, which shares the risk model's group factor: see `inputs._risk`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .drivers import DEFAULT_TUNING, Tuning, validate_weights
from .errors import InfeasibleProblem
from .inputs import RebalanceInput, cached_property
from .objective import evaluate, lot_tie_break, reg_tau, weighted_drift_rows
from .problem import NO_BOUND, ProblemData, ProblemInfeasible, RawSolution, Shape, compiled

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
    return Shape.for_sizes(inp.n_securities, inp.max_lots_per_security, inp.loadings.shape[1],
                           inp.band_membership.shape[1], bool(inp.impact.any()))


#: Impact coefficient of padded securities: they cannot trade (zero caps), so it changes no
#: optimum, but a zero coefficient leaves their impact variable free above the cone's apex, which
#: costs the interior point iterations (measured: 2.24 -> 1.96 ms a solve at 20 of 24 slots).
PADDED_IMPACT = 1e-3

#: A per-security band no trade can reach: members of substitute groups are banded as a group.
_NO_BAND = 4.0

#: Constraints `assemble` can relax when diagnosing infeasibility, in the order they are tried.
RELAXABLE: tuple[str, ...] = ("tax_budget", "gain_cap", "max_turnover", "mode", "wash_sale")


def assemble(inp: RebalanceInput, weights: Mapping[str, float], tuning: Tuning, shape: Shape,
             bans: Bans = Bans(), relax: frozenset[str] = frozenset(), *,
             lin_sell: np.ndarray | None = None) -> ProblemData:
    """Parameter values for `inp` under driver `weights` (validated), padded to `shape`.

    `lin_sell`: `lin_sell_per_lot(inp, weights, tuning)` where the caller has it already."""
    n, N, K = inp.n_securities, shape.n_securities, shape.lots_per_security
    slots = inp.lot_slots(K)
    V0 = inp.value_usd

    def pad_n(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        if N == n:
            return np.array(values, dtype=float)  # a new array, as below
        out = np.full(N, fill)
        out[:n] = values
        return out

    def pad_m(values: np.ndarray) -> np.ndarray:
        out = np.zeros(shape.n_slots)
        out[slots] = values
        return out

    g_drift, g_risk, g_cost, g_tax, g_cash = (weights[d] for d in ("drift", "risk", "cost", "tax", "cash"))
    restrictions_on = weights["restrictions"] > 0
    cash_on = g_cash > 0

    dev = inp.active_weight
    blocked = inp.restricted if restrictions_on else np.zeros(n, dtype=bool)
    buyable = ~blocked & ~screened_from_buying(inp, weights)
    buyable[list(bans.no_buy)] = False
    allowed = ~blocked[inp.lot_security]
    allowed[list(bans.no_sell_lots)] = False
    if "wash_sale" not in relax:
        buyable &= ~inp.no_buy
        allowed &= ~inp.no_sell_lot
    if "mode" not in relax:
        if inp.mode == "buy_only":
            allowed[:] = False
        elif inp.mode == "sell_only":
            buyable[:] = False

    lot_cost = inp.lot_cost_rate
    cw = inp.cash_weight
    floor = inp.reserve_weight + inp.withdrawal_weight if cash_on else min(cw, 0.0)
    turnover = inp.max_turnover if inp.max_turnover is not None and "max_turnover" not in relax \
        else max(4.0, 2.0 + 2.0 * abs(cw))
    # g d a^2 + r t^2 = (g d + r) t^2 + 2 g d dev t + const, a = dev + t: one diagonal entry per
    # security (the constant does not move the optimum; `evaluate` reports it).
    # d = 1 without a risk model; with one, d is the normalized specific variance and the
    # factor part g ||L^T a||^2 is its own square below.
    reg = tuning.regularization / reg_tau(inp, tuning)
    gd = g_drift * inp.specific
    quad = gd + reg
    L, M = inp.loadings, inp.band_membership
    grouped = inp.band_grouped
    band_lo = np.where(grouped, -_NO_BAND, dev - inp.band)
    band_hi = np.where(grouped, -_NO_BAND, -dev - inp.band)
    factor_scale = factor_offset = group_member = group_lo = group_hi = None
    if shape.n_factors:
        factor_scale = np.zeros((N, shape.n_factors))
        # The factor model's columns are the "risk" driver's; the substitute groups' are drift's.
        col_weight = np.where(np.arange(L.shape[1]) < inp.risk_model_factors, np.sqrt(g_risk), np.sqrt(g_drift))
        factor_scale[:n, :L.shape[1]] = L * col_weight
        factor_offset = np.zeros(shape.n_factors)
        factor_offset[:L.shape[1]] = col_weight * (L.T @ dev)
    if shape.n_groups:
        G = M.shape[1]
        group_member = np.zeros((N, shape.n_groups))
        group_member[:n, :G] = M
        gdev = M.T @ dev
        group_lo = np.full(shape.n_groups, -inp.band_abs)
        group_hi = np.full(shape.n_groups, -inp.band_abs)
        group_lo[:G], group_hi[:G] = gdev - inp.group_band, -gdev - inp.group_band
    tax_cap = NO_BOUND if inp.tax_budget_usd is None or "tax_budget" in relax else inp.tax_budget_usd / V0
    gain_cap = NO_BOUND if inp.gain_cap_usd is None or "gain_cap" in relax else inp.gain_cap_usd / V0
    return ProblemData(
        quad_diag=pad_n(quad, tuning.regularization),
        quad_lin=pad_n(2.0 * gd * dev),
        band_lo=pad_n(band_lo, -inp.band_abs),
        band_hi=pad_n(band_hi, -inp.band_abs),
        band_weight=g_drift * tuning.band_penalty,
        lin_sell=pad_m(lin_sell_per_lot(inp, weights, tuning) if lin_sell is None else lin_sell),
        lin_buy=pad_n(g_cost * inp.cost_rate + tuning.tie_break),
        cash_weight=g_cash,
        cost_buy=pad_n(inp.cost_rate),
        cost_sell=pad_m(lot_cost),
        cash_drag_rhs=cw - inp.cash_target_weight,
        cash_floor_rhs=cw - floor,
        sell_cap=pad_m(inp.lot_weight * allowed),
        buy_cap=pad_n(buyable.astype(float)),
        turnover_cap=turnover,
        impact=pad_n(g_cost * inp.impact, PADDED_IMPACT) if shape.impact else None,
        tax_row=pad_m(inp.lot_tax_per_weight), tax_cap=tax_cap,
        gain_row=pad_m(inp.lot_gain_per_weight), gain_cap=gain_cap,
        factor_scale=factor_scale, factor_offset=factor_offset,
        group_member=group_member, group_lo=group_lo, group_hi=group_hi,
    )


def screened_from_buying(inp: RebalanceInput, weights: Mapping[str, float]) -> np.ndarray:
    """Per security: kept from buying by a screen: "never buy" (the restrictions driver) or the
    ESG screen (the esg driver). Sells stay allowed: a screened holding may be sold."""
    out = inp.never_buy.copy() if weights["restrictions"] > 0 else np.zeros(inp.n_securities, bool)
    if weights["esg"] > 0:
        out |= inp.esg_excluded
    return out


def lin_sell_per_lot(inp: RebalanceInput, weights: Mapping[str, float], tuning: Tuning) -> np.ndarray:
    """The objective's linear coefficient of each lot's sale: cost, tax (or benefit), tie-break."""
    return (weights["cost"] * inp.lot_cost_rate + weights["tax"] * inp.lot_tax_objective
            + lot_tie_break(inp, tuning))


def _to_shares(inp: RebalanceInput, shape: Shape, raw: RawSolution) -> tuple[np.ndarray, np.ndarray]:
    V0 = inp.value_usd
    slots = inp.lot_slots(shape.lots_per_security)
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


def _sellable(inp: RebalanceInput, weights: Mapping[str, float], bans: Bans) -> np.ndarray:
    """Per lot: may the solver sell it (restrictions, bans, wash-sale bounds, mode)?"""
    ok = ~inp.no_sell_lot.copy()
    if weights["restrictions"] > 0:
        ok &= ~inp.restricted[inp.lot_security]
    ok[list(bans.no_sell_lots)] = False
    if inp.mode == "buy_only":
        ok[:] = False
    return ok


def canonical_lot_split(inp: RebalanceInput, sell: np.ndarray, sellable: np.ndarray) -> np.ndarray:
    """The same sales, with lots that are interchangeable in the problem filled in a fixed order.

    Lots of one security with the same basis, tax rate and harvest treatment have identical
    coefficients everywhere in the problem, so the optimum does not say how to split a sale
    among them: an interior-point solver returns some point of that optimal face, which moves
    with its settings. Here each such class's total is re-assigned to its lots in rank order
    (lowest index first, each up to its size): the objective, every constraint and the
    security's trade are unchanged, and the split no longer depends on the solver.
    """
    order = inp.lot_rank_order
    sec, basis = inp.lot_security[order], inp.lot_basis_usd_per_share[order]
    if not ((sec[1:] == sec[:-1]) & (basis[1:] == basis[:-1])).any():
        return sell  # no two lots of a security share a basis: nothing is interchangeable
    keys = np.stack([inp.lot_security.astype(float), sellable.astype(float), inp.lot_basis_usd_per_share,
                     inp.lot_tax_per_weight, inp.lot_tax_objective, inp.lot_gain_per_weight], axis=1)
    _, cls, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cls = cls.ravel()
    if (counts == 1).all():
        return sell
    out = sell.copy()
    for c in np.flatnonzero(counts > 1):
        lots = np.flatnonzero(cls == c)
        left = float(sell[lots].sum())
        for lot in lots:
            take = min(left, float(inp.lot_shares[lot]))
            out[lot] = take
            left -= take
    return out


@dataclass
class _Run:
    """Accumulates solver time and count over the solves of one `solve_continuous` call."""

    inp: RebalanceInput
    weights: dict[str, float]
    tuning: Tuning
    shape: Shape
    solve_ms: float = 0.0
    solves: int = 0
    _data: dict[frozenset[str], ProblemData] = field(default_factory=dict, repr=False)
    _packed: dict[frozenset[str], object] = field(default_factory=dict, repr=False)
    _objectives: dict[int, tuple[RawSolution, float]] = field(default_factory=dict, repr=False)

    @cached_property
    def lin(self) -> np.ndarray:
        """`lin_sell_per_lot` under this run's weights (computed once)."""
        return lin_sell_per_lot(self.inp, self.weights, self.tuning)

    @cached_property
    def slots(self) -> np.ndarray:
        """Each lot's slot in this run's padded problem."""
        return self.inp.lot_slots(self.shape.lots_per_security)

    @cached_property
    def restricted(self) -> np.ndarray:
        """Per security: restricted, where the restrictions driver is on (else all False)."""
        inp = self.inp
        return inp.restricted if self.weights["restrictions"] > 0 else np.zeros(inp.n_securities, bool)

    @cached_property
    def buyable(self) -> np.ndarray:
        """Per security: may it be bought before any `Bans` (restrictions, screens, the household's
        wash-sale bans)? Not to be written."""
        inp = self.inp
        return ~self.restricted & ~inp.no_buy & ~screened_from_buying(inp, self.weights)

    def data(self, bans: Bans, relax: frozenset[str] = frozenset()) -> ProblemData:
        """`assemble(..., bans, relax)`, from a per-run cache: bans only zero caps."""
        return self._data_and_packed(bans, relax, packed=False)[0]

    def _data_and_packed(self, bans: Bans, relax: frozenset[str], packed: bool):  # type: ignore[no-untyped-def]
        """(`data(bans, relax)`, the same prepared for the structured solver if `packed`): the
        problem without bans is assembled and prepared once per `relax`; bans zero its caps."""
        base = self._data.get(relax)
        if base is None:
            base = self._data[relax] = assemble(self.inp, self.weights, self.tuning, self.shape, Bans(), relax,
                                                lin_sell=self.lin)
        base_packed = None
        if packed:
            base_packed = self._packed.get(relax)
            if base_packed is None:
                base_packed = self._packed[relax] = compiled(self.shape).prepare(base)
        if not bans.no_buy and not bans.no_sell_lots:
            return base, base_packed
        sell_cap, buy_cap = base.sell_cap.copy(), base.buy_cap.copy()
        slots = np.zeros(0, dtype=np.int64)
        buys = np.fromiter(bans.no_buy, dtype=np.int64) if bans.no_buy else slots
        if bans.no_sell_lots:
            lots = np.fromiter(bans.no_sell_lots, dtype=np.int64)
            slots = self.slots[lots]
            sell_cap[slots] = 0.0
        if bans.no_buy:
            buy_cap[buys] = 0.0
        data = base.with_caps(sell_cap, buy_cap)
        return data, (base_packed.with_caps_zeroed(data, slots, buys) if base_packed is not None else None)

    def solve(self, bans: Bans, relax: frozenset[str] = frozenset()) -> RawSolution:
        prob = compiled(self.shape)
        data, packed = self._data_and_packed(bans, relax, packed=prob.structured())
        self.solves += 1
        raw = prob.solve(data, packed=packed)
        self.solve_ms += raw.solve_ms
        return raw

    def objective(self, raw: RawSolution) -> float:
        """The exact objective (`evaluate`'s total) of a solution of this run, computed once."""
        got = self._objectives.get(id(raw))
        if got is None or got[0] is not raw:
            sell, buy = _to_shares(self.inp, self.shape, raw)
            got = self._objectives[id(raw)] = (raw, evaluate(self.inp, self.weights, sell, buy, self.tuning)["total"])
        return got[1]

    def solve_or_diagnose(self, bans: Bans) -> RawSolution:
        """Solve; if infeasible, name the constraint: the first whose relaxation alone is feasible."""
        try:
            return self.solve(bans)
        except ProblemInfeasible:
            pass
        inp = self.inp
        active = {
            "tax_budget": inp.tax_budget_usd is not None,
            "gain_cap": inp.gain_cap_usd is not None,
            "max_turnover": inp.max_turnover is not None,
            "mode": inp.mode != "both",
            "wash_sale": bool(inp.no_buy.any() or inp.no_sell_lot.any() or bans.no_sell_lots),
        }
        need_usd = inp.cash_reserve_usd + inp.withdrawal_usd - inp.cash_usd
        what = "the withdrawal" if inp.withdrawal_usd > 0 else "the cash reserve"
        details = {
            "tax_budget": f"raising {what} (${need_usd:,.2f} short) realizes more tax than the "
                          f"budget of ${inp.tax_budget_usd or 0:,.2f}",
            "gain_cap": f"raising {what} realizes more net gains than the cap of "
                        f"${inp.gain_cap_usd or 0:,.2f}",
            "max_turnover": f"raising {what} (short ${need_usd:,.2f}) needs more turnover than "
                            f"the policy's {inp.max_turnover}",
            "mode": f"raising {what} needs sales, and the account is {inp.mode}",
            "wash_sale": f"raising {what} needs loss sales the wash-sale rule forbids",
        }
        for name in RELAXABLE:
            if not active[name]:
                continue
            try:
                self.solve(bans, frozenset({name}))
            except ProblemInfeasible:
                continue
            raise InfeasibleProblem(name, details[name], account_id=inp.account_id) from None
        if inp.withdrawal_usd > 0:
            raise InfeasibleProblem(
                "withdrawal", f"the withdrawal of ${inp.withdrawal_usd:,.2f} plus the reserve of "
                f"${inp.cash_reserve_usd:,.2f} cannot be raised from what may be sold "
                f"(cash ${inp.cash_usd:,.2f})", account_id=inp.account_id) from None
        raise InfeasibleProblem(
            "cash_reserve",
            f"the cash reserve of ${inp.cash_reserve_usd:,.2f} cannot be raised from what may be "
            f"sold (cash ${inp.cash_usd:,.2f})", account_id=inp.account_id) from None


_HARVESTED = "wash-sale rule: loss harvested, not bought back"
_KEPT = "wash-sale rule: loss lots kept, bought instead"


def _wash_notes(notes: list[tuple[str, str]]) -> tuple[str, ...]:
    out = []
    for verb in (_HARVESTED, _KEPT):
        symbols = sorted({s for v, s in notes if v == verb})
        if symbols:
            out.append(f"{verb}: {', '.join(symbols)}")
    return tuple(out)


@dataclass(frozen=True)
class _Groups:
    """The wash groups that face the harvest-or-buy choice, with their members and loss lots.

    As flat arrays, so that per-group sums and tests are one numpy call each (a position is a
    group's index in `names`), and as per-group dicts (`members`, `loss_lots`)."""

    names: tuple[str, ...]
    #: Position of each security's group in `names` (-1: its group faces no choice).
    sec_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: The loss lots of every group, grouped by position, and each one's position.
    lots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lot_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @cached_property
    def members(self) -> dict[str, np.ndarray]:
        """Per group: its securities, ascending."""
        return {g: np.flatnonzero(self.sec_pos == p) for p, g in enumerate(self.names)}

    @cached_property
    def loss_lots(self) -> dict[str, np.ndarray]:
        """Per group: its loss lots that pose the choice, ascending."""
        return {g: self.lots[self.lot_pos == p] for p, g in enumerate(self.names)}

    @cached_property
    def position(self) -> dict[str, int]:
        return {g: p for p, g in enumerate(self.names)}

    @cached_property
    def _bans(self) -> dict[frozenset[str], Bans]:
        return {}

    @cached_property
    def securities(self) -> np.ndarray:
        """The securities of the groups, ascending (so within a group, as in `members`)."""
        return np.flatnonzero(self.sec_pos >= 0)

    def mask(self, groups: frozenset[str]) -> np.ndarray:
        """Per position: is the group in `groups`?"""
        out = np.zeros(len(self.names), dtype=bool)
        out[[self.position[g] for g in groups if g in self.position]] = True
        return out

    def names_of(self, mask: np.ndarray) -> frozenset[str]:
        return frozenset(self.names[p] for p in np.flatnonzero(mask))

    @cached_property
    def _multi_members(self) -> tuple[tuple[int, np.ndarray], ...]:
        """(position, members) of the groups of two or more securities."""
        counts = np.bincount(self.sec_pos[self.securities], minlength=len(self.names))
        return tuple((int(p), np.flatnonzero(self.sec_pos == p)) for p in np.flatnonzero(counts > 1))

    @cached_property
    def _multi_lots(self) -> tuple[tuple[int, np.ndarray], ...]:
        """(position, loss lots) of the groups of two or more loss lots."""
        counts = np.bincount(self.lot_pos, minlength=len(self.names))
        return tuple((int(p), self.lots[self.lot_pos == p]) for p in np.flatnonzero(counts > 1))

    # The sums and dot products below are bit for bit what `values[members].sum()` and
    # `x[lots] @ y[lots]` give group by group: they decide ties (the carrier of a substitute
    # group whose members mirror each other, a group's keep-or-harvest estimate), and a replay
    # under the same optimizer version must decide them alike. A group of one term is that term
    # (one addition to 0.0, in one numpy call for all of them); a group of several goes through
    # numpy's own sum or BLAS's dot, whose order of operations differs from a running sum.

    def member_sum(self, values: np.ndarray) -> np.ndarray:
        """Per position: `values[members].sum()` (per security) over the group's members."""
        secs = self.securities
        out = np.bincount(self.sec_pos[secs], weights=values[secs], minlength=len(self.names))
        for p, members in self._multi_members:
            out[p] = values[members].sum()
        return out

    def member_dot(self, x: np.ndarray, y: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """For the groups at `positions`: `x[members] @ y[members]` (per security)."""
        secs = self.securities
        full = np.bincount(self.sec_pos[secs], weights=x[secs] * y[secs], minlength=len(self.names))
        for p, members in self._multi_members:
            full[p] = x[members] @ y[members]
        return full[positions]

    def member_any(self, flags: np.ndarray) -> np.ndarray:
        """Per position: is `flags` (per security) true for a member?"""
        secs = self.securities
        return np.bincount(self.sec_pos[secs][flags[secs]], minlength=len(self.names)) > 0

    def lot_dot(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per position: `x[lots] @ y[lots]` (per lot) over the group's loss lots."""
        lots = self.lots
        out = np.bincount(self.lot_pos, weights=x[lots] * y[lots], minlength=len(self.names))
        for p, group_lots in self._multi_lots:
            out[p] = x[group_lots] @ y[group_lots]
        return out

    def lot_any(self, flags: np.ndarray) -> np.ndarray:
        """Per position: is `flags` (per lot) true for one of the group's loss lots?"""
        return np.bincount(self.lot_pos[flags[self.lots]], minlength=len(self.names)) > 0

    def bans(self, harvest: frozenset[str]) -> Bans:
        """Harvested groups: no buys of their members; kept groups: no sales of their loss lots
        (computed once per `harvest`)."""
        if not self.names:
            return Bans()
        got = self._bans.get(harvest)
        if got is None:
            in_harvest = np.append(self.mask(harvest), False)  # position -1 (no choice): neither
            no_buy = np.flatnonzero(in_harvest[self.sec_pos]).tolist()
            no_sell = self.lots[~in_harvest[self.lot_pos]].tolist()
            got = self._bans[harvest] = Bans(no_buy=frozenset(no_buy), no_sell_lots=frozenset(no_sell))
        return got


def _choice_groups(run: _Run, bans: Bans) -> _Groups:
    inp = run.inp
    code = inp.group_code
    buyable = run.buyable
    if bans.no_buy or inp.mode == "sell_only":
        buyable = buyable.copy()
        buyable[list(bans.no_buy)] = False
        if inp.mode == "sell_only":
            buyable[:] = False
    sellable = ~run.restricted[inp.lot_security] & ~inp.no_sell_lot
    sellable[list(bans.no_sell_lots)] = False
    if inp.mode == "buy_only":
        sellable[:] = False
    loss = inp.lot_is_loss & sellable
    if not loss.any() or not buyable.any():
        return _Groups(())
    if inp.tax_budget_usd is None and inp.gain_cap_usd is None:
        # A loss lot whose sale earns nothing net (its linear coefficient >= 0: no harvest
        # benefit in this objective, e.g. the explainer's coalitions without `tax_losses`) is
        # never sold *and* its own security bought at the optimum: shrinking both legs of that
        # round trip leaves the trade, and so every other term, unchanged, costs no more, and
        # frees cash and turnover. (A tax budget or gain cap could make the loss's offset worth
        # a round trip, hence the condition.) In a one-security wash group such a lot poses no
        # choice.
        loss &= ~inp.lot_alone_in_group | (run.lin < 0)
    lot_code = inp.lot_group_code
    # Loss lots grouped by wash group (ascending within a group), one sort for all groups.
    lots = np.flatnonzero(loss)
    lots = lots[np.argsort(lot_code[lots], kind="stable")]
    n_codes = len(inp.group_names)
    starts = np.searchsorted(lot_code[lots], np.arange(n_codes + 1))
    has_loss = np.diff(starts) > 0
    has_buy = np.zeros(n_codes, dtype=bool)
    has_buy[code[buyable]] = True
    # Codes follow the sorted group names, so the candidates come out in name order.
    candidates = np.flatnonzero(has_loss & has_buy)
    group_names = inp.group_names
    names = tuple([group_names[c] for c in candidates.tolist()])
    pos_of_code = np.full(n_codes, -1, dtype=np.int64)
    pos_of_code[candidates] = np.arange(len(candidates))
    lot_pos = pos_of_code[lot_code[lots]]
    chosen = lot_pos >= 0
    return _Groups(names, sec_pos=pos_of_code[code], lots=lots[chosen], lot_pos=lot_pos[chosen])


def _harvest_benefit(run: _Run, choice: _Groups) -> np.ndarray:
    """Per position: what selling every loss lot of the group whole would earn in the objective
    (>= 0)."""
    inp = run.inp
    return -choice.lot_dot(np.minimum(run.lin, 0.0), inp.lot_weight)


def _carriers(run: _Run, choice: _Groups, benefit: np.ndarray) -> list[str]:
    """One wash group per substitute group whose every buyable member faces the choice: the
    one whose loss lots earn the least (`benefit`, per position; among those with a buyable
    member in the substitute group), started in "keep" so that it can carry the substitute
    group's exposure while the others harvest. (Harvesting them all bans every buy of the
    substitute group: the exposure is lost unless a later step flips one.) With the symmetric
    "sure" step this cut the solves per account on the 200 accounts of
    `bench/solver_anatomy.py` from 1.88 to 1.67 and lowered the objective by 3.5 bps of the
    account on average (docs/optimizer.md, "Wash sales")."""
    M = run.inp.band_membership
    if not M.shape[1] or not choice.names:
        return []
    in_choice = choice.sec_pos >= 0
    buyable = run.buyable
    # Per substitute group (column): a buyable member outside the choice can carry the exposure
    # (all may harvest); else the choice's groups with a buyable member there ("facing" it), in
    # position order, which is name order.
    carried = (buyable & ~in_choice) @ M > 0
    secs = choice.securities[buyable[choice.securities]]
    onehot = np.zeros((len(choice.names), len(buyable)))
    onehot[choice.sec_pos[secs], secs] = 1.0
    facing = (onehot @ M) > 0
    out = []
    for col in np.flatnonzero(~carried & (facing.sum(axis=0) >= 2)).tolist():
        names = [choice.names[p] for p in np.flatnonzero(facing[:, col]).tolist()]
        out.append(min(names, key=lambda g: (float(benefit[choice.position[g]]), g)))
    return out


def _initial_keeps(run: _Run, choice: _Groups) -> frozenset[str]:
    """Groups that start in "keep": the carriers of substitute groups (`_carriers`), and groups
    below target before trading, with no substitute, whose deficit's drift (the exact drift
    term with the group's deviation removed, less the cost of buying it back) costs more than
    harvesting every loss lot of the group could earn. Only the first solve's assignment: the
    steps after it still correct it in both directions."""
    inp = run.inp
    a = inp.active_weight
    M = inp.band_membership
    benefit = _harvest_benefit(run, choice)
    out = _carriers(run, choice, benefit)
    # A substitute (another wash group sharing a substitute group) can carry the exposure a
    # harvest gives up: the drift estimate below cannot see that, so such groups start in
    # "harvest" unless they are their substitute group's carrier: those where the securities
    # sharing a substitute group with a member (itself included), counted once, outnumber
    # the members.
    candidate = ~choice.mask(frozenset(out)) & (choice.member_sum(a) < 0)
    if M.shape[1] and candidate.any():
        peers = inp.band_peers
        secs = choice.securities
        onehot = np.zeros((len(choice.names), inp.n_securities))
        onehot[choice.sec_pos[secs], secs] = 1.0
        reach = ((onehot @ peers) > 0).sum(axis=1)
        candidate &= ~(reach > np.bincount(choice.sec_pos[secs], minlength=len(choice.names)))
    positions = np.flatnonzero(candidate)
    saved = _drift_saved(run, choice, a, positions)
    out += [choice.names[p] for p in positions[saved > benefit[positions]]]
    return frozenset(out)


def _drift_saved(run: _Run, choice: _Groups, a: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Per group at `positions`: the drift saved by bringing its members to target, everything
    else held (the exact drift term), less the linear cost of the trade that does it."""
    if not len(positions):
        return np.zeros(0)
    inp, w = run.inp, run.weights
    row_of = np.zeros(len(choice.names) + 1, dtype=np.int64)  # row 0: nothing zeroed
    row_of[positions] = np.arange(1, len(positions) + 1)
    secs = choice.securities
    row = row_of[choice.sec_pos[secs]]
    secs, row = secs[row > 0], row[row > 0]
    rows = np.repeat(a[None, :], len(positions) + 1, axis=0)
    rows[row, secs] = 0.0
    drift = weighted_drift_rows(inp, rows, w, run.tuning)
    cost = choice.member_dot(inp.cost_rate, np.abs(a), positions)
    return (drift[0] - drift[1:]) - w["cost"] * cost


def _promising_keeps(run: _Run, choice: _Groups, maybe: frozenset[str], sold_w: np.ndarray,
                     trade_w: np.ndarray) -> frozenset[str]:
    """The harvested groups below target for which "keep" looks better: the drift its deficit
    costs (the exact drift term with the group's deviation removed, everything else held; less
    the linear cost of buying it back) exceeds the net benefit its loss sales earn. An estimate
    that picks which groups the "keep" trial flips: the trial's solve still decides."""
    inp = run.inp
    a = inp.pre_weight + trade_w - inp.target_weight
    positions = np.flatnonzero(choice.mask(maybe))
    saved = _drift_saved(run, choice, a, positions)
    earned = -choice.lot_dot(run.lin, sold_w)[positions]
    return frozenset(choice.names[p] for p in positions[saved > earned])


def _resolve_wash_sales(run: _Run, bans: Bans, notes: list[tuple[str, str]]) -> tuple[RawSolution, Bans]:
    """Solve with the wash-sale disjunction decided per group (see the module docstring)."""
    inp = run.inp
    choice = _choice_groups(run, bans)
    keeps = _initial_keeps(run, choice)
    harvest = frozenset(choice.names) - keeps
    first_bans = bans | choice.bans(harvest)
    try:
        raw = run.solve(first_bans) if keeps else run.solve_or_diagnose(first_bans)
    except ProblemInfeasible:
        # A group started in "keep" may hold the only loss lots that can raise the reserve:
        # start from harvesting every group, as without the estimate.
        harvest = frozenset(choice.names)
        first_bans = bans | choice.bans(harvest)
        raw = run.solve_or_diagnose(first_bans)
    if not choice.names:
        return raw, first_bans
    n = inp.n_securities
    slots = run.slots

    def traded(raw: RawSolution) -> tuple[np.ndarray, np.ndarray]:
        sold_w = raw.sell[slots]
        trade_w = raw.buy[:n] - np.bincount(inp.lot_security, weights=sold_w, minlength=n)
        return sold_w, trade_w

    sold_w, trade_w = traded(raw)
    post_dev = inp.pre_weight + trade_w - inp.target_weight
    below = choice.member_sum(post_dev) < -1e-4
    harvested = choice.lot_any(sold_w > ACTIVE_WEIGHT)
    in_harvest = choice.mask(harvest)
    sure = choice.names_of(in_harvest & ~harvested & below)
    maybe = choice.names_of(in_harvest & harvested & below)
    # The mirror image: kept groups that bought nothing lose nothing by harvesting instead.
    sure_harvest = choice.names_of(~in_harvest & ~choice.member_any(raw.buy[:n] > ACTIVE_WEIGHT)
                                   & choice.lot_any(run.lin < 0))
    best, best_harvest = raw, harvest
    if (sure or sure_harvest) and maybe:
        promising = _promising_keeps(run, choice, maybe, sold_w, trade_w)
        if promising:
            # Both steps in one solve: the "keep" trial almost always wins (34 of 34 trials in the
            # explainer's coalitions, 17 of 18 on the benchmark), so try it with the sure flips
            # and fall back to the sure flips alone only if the combination loses to the first
            # solution.
            combined = ((harvest - sure) | sure_harvest) - promising
            try:
                cand = run.solve(bans | choice.bans(combined))
                if run.objective(cand) < run.objective(raw):
                    best, best_harvest, maybe = cand, combined, frozenset()
            except ProblemInfeasible:
                pass
    if (sure or sure_harvest) and best is raw:
        try:
            best = run.solve(bans | choice.bans((harvest - sure) | sure_harvest))
            best_harvest = (harvest - sure) | sure_harvest
        except ProblemInfeasible:
            pass
    if maybe:
        maybe = _promising_keeps(run, choice, maybe, *traded(best))
    if maybe:
        try:
            cand = run.solve(bans | choice.bans(best_harvest - maybe))
            if run.objective(cand) < run.objective(best):
                best, best_harvest = cand, best_harvest - maybe
        except ProblemInfeasible:
            pass
    sold_w, _ = traded(best)
    sold_loss = np.zeros(n, dtype=bool)
    sold_loss[inp.lot_security[inp.lot_is_loss & (sold_w > ACTIVE_WEIGHT)]] = True
    best_mask = choice.mask(best_harvest)
    kept = np.append(~best_mask, False)[choice.sec_pos]  # False outside the choice
    harvested_here = np.append(best_mask, False)[choice.sec_pos]
    for i in np.flatnonzero(harvested_here & sold_loss):
        notes.append((_HARVESTED, inp.symbols[i]))
    for i in np.flatnonzero(kept & (best.buy[:n] > ACTIVE_WEIGHT)):
        notes.append((_KEPT, inp.symbols[i]))
    return best, bans | choice.bans(best_harvest)


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
    notes: list[tuple[str, str]] = []
    raw, bans = _resolve_wash_sales(run, bans, notes)
    sell, buy = _to_shares(inp, run.shape, raw)
    sell = canonical_lot_split(inp, sell, _sellable(inp, weights, bans))
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
