"""`propose`: one account snapshot in, one explained-ready proposal out.

The pipeline is: validate and convert (`inputs`), solve the continuous problem (`solve`), round
to whole shares and re-check (`rounding`), then report at the edge in Decimals: orders with lot
instructions, weights before and after, the objective by term (continuous and final), estimated
cost and tax, solver information and the snapshot's canonical hash. Same snapshot, same version,
same orders.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from trimtab.shared.canonical import canonical_hash
from trimtab.shared.events import (
    AccountSnapshot,
    LotInstruction,
    Order,
    RebalanceProposed,
    SecuritySnapshot,
    SolverInfo,
)
from trimtab.shared.money import decs, usd
from trimtab.shared.numeric import blas_core

from .context import EMPTY_CONTEXT, RebalanceContext
from .drivers import DEFAULT_TUNING, Tuning, proposal_weights
from .inputs import RebalanceInput, from_snapshot
from .objective import evaluate, trade_weight
from .rounding import RoundedTrades, round_trades
from .solve import solve_continuous
from .version import CVXPY_VERSION, OPTIMIZER_VERSION

#: Namespace of the default (deterministic) proposal ids.
PROPOSAL_NAMESPACE = uuid.UUID("6f1d6c9e-3b0a-5b7e-9a51-5d0c2b8f4a10")
WEIGHT_PLACES = 6
OBJECTIVE_PLACES = 10


@dataclass(frozen=True)
class Proposal:
    """A rebalance proposal; the fields of `RebalanceProposed` plus what produced it."""

    proposal_id: uuid.UUID
    account_id: str
    snapshot: AccountSnapshot
    snapshot_hash: str
    orders: tuple[Order, ...]
    pre_weights: Mapping[str, Decimal]
    post_weights: Mapping[str, Decimal]
    objective: Mapping[str, Decimal]
    est_cost_usd: Decimal
    est_tax_usd: Decimal
    solver: SolverInfo
    driver_weights: Mapping[str, float]
    #: Continuous optimum in shares per symbol (buy positive): what the explainer attributes.
    continuous_trade_shares: Mapping[str, float]
    #: Orders under the minimum notional that were dropped (their securities fixed at zero).
    dropped: tuple[str, ...] = field(default=())
    #: Decisions worth telling a reviewer (wash-sale resolutions, rounding repairs).
    notes: tuple[str, ...] = field(default=())
    #: Realized gains by term, harvested losses and the tax on each (see `tax_breakdown`).
    tax: Mapping[str, Decimal] = field(default_factory=dict)
    #: Estimated cost by kind: half spread, commission, market impact, total.
    costs: Mapping[str, Decimal] = field(default_factory=dict)
    #: Hash of the `RebalanceContext` (None when the snapshot alone was used): replay needs both.
    context_hash: str | None = None

    def to_event(self, *, drift_id: uuid.UUID | None = None) -> RebalanceProposed:
        return RebalanceProposed(
            proposal_id=self.proposal_id, account_id=self.account_id, drift_id=drift_id,
            snapshot=self.snapshot, snapshot_hash=self.snapshot_hash, orders=list(self.orders),
            pre_weights=dict(self.pre_weights), post_weights=dict(self.post_weights),
            objective=dict(self.objective), est_cost_usd=self.est_cost_usd,
            est_tax_usd=self.est_tax_usd, solver=self.solver,
            tax_breakdown=dict(self.tax) or None, cost_breakdown=dict(self.costs) or None,
            pre_drift=self.drift(self.pre_weights), post_drift=self.drift(self.post_weights),
            notes=list(self.notes),
        )

    def drift(self, weights: Mapping[str, Decimal]) -> dict[str, Decimal]:
        """Weight minus target per symbol (a symbol without a target has target 0)."""
        targets = self.snapshot.targets
        return {s: w - targets.get(s, Decimal(0)) for s, w in weights.items()}


def default_proposal_id(snapshot_hash: str, weights: Mapping[str, float],
                        context_hash: str | None = None) -> uuid.UUID:
    """Deterministic in (snapshot, context, optimizer version, driver weights): a replay gets
    the same id."""
    key = ",".join(f"{k}={weights[k]!r}" for k in sorted(weights))
    ctx = f"|{context_hash}" if context_hash else ""
    return uuid.uuid5(PROPOSAL_NAMESPACE, f"{snapshot_hash}|{OPTIMIZER_VERSION}|{key}{ctx}")


def _exact_lot_shares(snapshot: AccountSnapshot) -> dict[str, Decimal]:
    """Each lot's shares exactly as the snapshot says (whole-lot sales must not lose a fraction)."""
    out: dict[str, Decimal] = {}
    for pos in snapshot.positions:
        in_lots = Decimal(0)
        for lot in pos.lots:
            out[lot.lot_id] = lot.shares
            in_lots += lot.shares
        if pos.shares > in_lots:
            out[f"{pos.symbol}:untracked"] = pos.shares - in_lots
    return out


_BPS = Decimal(10_000)
_UNTRACKED = ":untracked"


class _Book:
    """The snapshot's Decimals the report reads, indexed once for all of a proposal's parts."""

    def __init__(self, inp: RebalanceInput, snapshot: AccountSnapshot) -> None:
        self.snapshot = snapshot
        self.securities = {s.symbol: s for s in snapshot.securities}
        #: Lot by id (a later duplicate wins, as in `_exact_lot_shares`).
        self.lots = {lot.lot_id: lot for pos in snapshot.positions for lot in pos.lots}
        #: Long term? by the input's lot id.
        self.long_term = dict(zip(inp.lot_ids, inp.lot_long_term.tolist(), strict=True))
        self._exact: dict[str, Decimal] | None = None

    def exact_shares(self, lot_id: str) -> Decimal | None:
        """`_exact_lot_shares(snapshot).get(lot_id)`: a lot's shares; only an id ending in
        ":untracked" may be a position's shares outside its lots."""
        if lot_id.endswith(_UNTRACKED):
            if self._exact is None:
                self._exact = _exact_lot_shares(self.snapshot)
            return self._exact.get(lot_id)
        lot = self.lots.get(lot_id)
        return None if lot is None else lot.shares

    def basis(self, lot_id: str, price: Decimal) -> Decimal:
        """A lot's cost basis per share; `price` for a lot the snapshot does not list (untracked)."""
        lot = self.lots.get(lot_id)
        return price if lot is None else lot.cost_basis_usd_per_share


def _share_decimal(shares: float, whole_lot: bool, exact: Decimal | None) -> Decimal:
    if whole_lot and exact is not None:
        return exact
    return Decimal(int(round(shares)))


def build_orders(inp: RebalanceInput, snapshot: AccountSnapshot, r: RoundedTrades) -> list[Order]:
    """One order per traded security in symbol order; every sell names its lots."""
    return _build_orders(inp, _Book(inp, snapshot), r)


def _build_orders(inp: RebalanceInput, book: _Book, r: RoundedTrades) -> list[Order]:
    securities, lot_ids = book.securities, inp.lot_ids
    sell, whole, buy = r.sell_shares.tolist(), r.whole_lot.tolist(), r.buy_shares.tolist()
    # The lots sold, by security, in the input's order (`lots_of`'s).
    selling = r.sell_shares > 0
    sold: dict[int, list[int]] = {}
    for lot, i in zip(np.flatnonzero(selling).tolist(), inp.lot_security[selling].tolist(), strict=True):
        sold.setdefault(i, []).append(lot)
    orders: list[Order] = []
    for i, sym in enumerate(inp.symbols):
        # Money from the snapshot's Decimals, not the solver's floats.
        sec = securities[sym]
        lots = sold.get(i)
        if lots:
            instructions = [
                LotInstruction(lot_id=lot_ids[lot],
                               shares=_share_decimal(sell[lot], whole[lot],
                                                     book.exact_shares(lot_ids[lot]) if whole[lot] else None))
                for lot in lots
            ]
            shares = sum((x.shares for x in instructions), Decimal(0))
            side = "sell"
        elif buy[i] > 0:
            instructions, shares, side = [], Decimal(int(round(buy[i]))), "buy"
        else:
            continue
        price = sec.price_usd
        notional = shares * price
        orders.append(Order(
            symbol=sym, side=side, shares=shares, est_price_usd=price, est_notional_usd=usd(notional),
            est_cost_usd=usd(notional * (sec.half_spread_bps / _BPS) + shares * sec.commission_usd_per_share),
            lots=instructions,
        ))
    return orders


def _realized(inp: RebalanceInput, book: _Book, orders: list[Order]
              ) -> list[tuple[bool, Decimal, Decimal | None]]:
    """Per sold lot, in order: (long term?, gain = shares * (price - basis), tax = gain * rate;
    None outside a taxable account), in the snapshot's Decimals."""
    taxable = book.snapshot.account_type == "taxable"
    rates = book.snapshot.tax_rates
    out: list[tuple[bool, Decimal, Decimal | None]] = []
    for o in orders:
        for li in o.lots:
            long_term = book.long_term[li.lot_id]
            price = book.securities[o.symbol].price_usd
            # An untracked lot has no known basis: it is priced at the snapshot (no gain).
            gain = li.shares * (price - book.basis(li.lot_id, price))
            tax = gain * (rates.long_term if long_term else rates.short_term) if taxable else None
            out.append((long_term, gain, tax))
    return out


def estimated_tax_usd(inp: RebalanceInput, snapshot: AccountSnapshot, orders: list[Order]) -> Decimal:
    """Tax of the realized gains and losses, sum over sold lots of shares * (price - basis) * rate,
    in the snapshot's Decimals (negative when losses are harvested)."""
    if snapshot.account_type != "taxable":
        return Decimal(0)
    return _tax_total(_realized(inp, _Book(inp, snapshot), orders))


def _tax_total(realized: list[tuple[bool, Decimal, Decimal | None]]) -> Decimal:
    """The realized lots' tax (0 outside a taxable account, where it is None)."""
    total = Decimal(0)
    for _, _, tax in realized:
        if tax is not None:
            total += tax
    return total


def tax_breakdown(inp: RebalanceInput, snapshot: AccountSnapshot, orders: list[Order]) -> dict[str, Decimal]:
    """Lot arithmetic in the snapshot's Decimals: gains (net, by term), losses harvested (a
    positive number), and the tax of each term; `tax_total_usd` equals `estimated_tax_usd`."""
    return _tax_breakdown(_realized(inp, _Book(inp, snapshot), orders))


#: (gain key, tax key) of `tax_breakdown` by long term?
_TERM_KEYS = {False: ("short_term_gain_usd", "short_term_tax_usd"),
              True: ("long_term_gain_usd", "long_term_tax_usd")}


def _tax_breakdown(realized: list[tuple[bool, Decimal, Decimal | None]]) -> dict[str, Decimal]:
    out = dict.fromkeys(("short_term_gain_usd", "long_term_gain_usd", "harvested_loss_usd",
                         "short_term_tax_usd", "long_term_tax_usd"), Decimal(0))
    for long_term, gain, tax in realized:
        gain_key, tax_key = _TERM_KEYS[long_term]
        out[gain_key] += gain
        if gain < 0:
            out["harvested_loss_usd"] -= gain
        if tax is not None:
            out[tax_key] += tax
    # The total from the unrounded terms: it must equal `estimated_tax_usd` to the cent.
    total = out["short_term_tax_usd"] + out["long_term_tax_usd"]
    rounded = {k: usd(v) for k, v in out.items()}
    rounded["tax_total_usd"] = usd(total)
    return rounded


def cost_breakdown(inp: RebalanceInput, snapshot: AccountSnapshot, orders: list[Order],
                   sell: object, buy: object) -> dict[str, Decimal]:
    """Half spread and commission from the snapshot's Decimals; impact from the model (float)."""
    return _cost_breakdown(inp, {s.symbol: s for s in snapshot.securities}, orders, sell, buy)


def _cost_breakdown(inp: RebalanceInput, securities: Mapping[str, SecuritySnapshot], orders: list[Order],
                    sell: object, buy: object) -> dict[str, Decimal]:
    spread = commission = Decimal(0)
    for o in orders:
        sec = securities[o.symbol]
        spread += o.shares * o.est_price_usd * sec.half_spread_bps / _BPS
        commission += o.shares * sec.commission_usd_per_share
    t = trade_weight(inp, sell, buy)  # type: ignore[arg-type]
    impact = float(inp.impact @ abs(t) ** 1.5) * inp.value_usd
    out = {"half_spread_usd": usd(spread), "commission_usd": usd(commission),
           "impact_usd": usd(Decimal(repr(impact)))}
    out["total_usd"] = out["half_spread_usd"] + out["commission_usd"] + out["impact_usd"]
    return out


def propose(
    snapshot: AccountSnapshot,
    *,
    drivers: Mapping[str, float] | None = None,
    proposal_id: uuid.UUID | None = None,
    tuning: Tuning = DEFAULT_TUNING,
    context: RebalanceContext | None = None,
) -> Proposal:
    """Optimize, round and report one account.

    `drivers` overrides the default driver weights (cash and restrictions must stay on).
    Raises `InvalidSnapshot`, `InfeasibleProblem` or `SolverFailed`; never returns orders that
    break a constraint.
    """
    weights = proposal_weights(drivers)
    context = context or EMPTY_CONTEXT
    inp = from_snapshot(snapshot, context)
    context_hash = None if context == EMPTY_CONTEXT else canonical_hash(context.to_json())
    continuous = solve_continuous(inp, weights, tuning=tuning)
    rounded = round_trades(inp, weights, continuous, tuning)
    book = _Book(inp, snapshot)
    orders = _build_orders(inp, book, rounded)

    final_terms = evaluate(inp, weights, rounded.sell_shares, rounded.buy_shares, tuning)
    objective = dict(zip(final_terms, decs(final_terms.values(), OBJECTIVE_PLACES), strict=True))
    objective.update(zip([f"{k}_continuous" for k in continuous.terms],
                         decs(continuous.terms.values(), OBJECTIVE_PLACES), strict=True))

    sold = rounded.sold_per_security(inp)
    post_shares = inp.shares - sold + rounded.buy_shares
    order_cost = sum((o.est_cost_usd for o in orders), Decimal(0))
    post_value = inp.value_usd - float(order_cost)
    h = canonical_hash(snapshot)
    solve_ms = continuous.solve_ms + (
        rounded.final_continuous.solve_ms if rounded.final_continuous is not continuous else 0.0)
    status = continuous.status
    realized = _realized(inp, book, orders)
    return Proposal(
        proposal_id=proposal_id or default_proposal_id(h, weights, context_hash),
        account_id=snapshot.account_id,
        snapshot=snapshot,
        snapshot_hash=h,
        orders=tuple(orders),
        pre_weights=dict(zip(inp.symbols, decs(inp.pre_weight.tolist(), WEIGHT_PLACES), strict=True)),
        post_weights=dict(zip(inp.symbols, decs((post_shares * inp.price_usd / post_value).tolist(), WEIGHT_PLACES),
                              strict=True)),
        objective=objective,
        est_cost_usd=usd(order_cost),
        est_tax_usd=usd(_tax_total(realized)),
        solver=SolverInfo(
            solver=continuous.solver, status=status, solve_ms=Decimal(f"{solve_ms:.3f}"),
            cvxpy_version=CVXPY_VERSION, optimizer_version=OPTIMIZER_VERSION, blas_core=blas_core(),
        ),
        driver_weights=dict(weights),
        continuous_trade_shares=dict(zip(inp.symbols, np.asarray(continuous.trade_shares, dtype=float).tolist(),
                                         strict=True)),
        dropped=rounded.dropped,
        notes=continuous.notes + rounded.notes
        + tuple(f"dropped order under ${tuning.min_trade_usd:,.0f}: {s}" for s in rounded.dropped),
        tax=_tax_breakdown(realized),
        costs=_cost_breakdown(inp, book.securities, orders, rounded.sell_shares, rounded.buy_shares),
        context_hash=context_hash,
    )

