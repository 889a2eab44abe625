"""An advisor's edited orders, re-validated against the proposal's snapshot before acceptance.

An override replaces the optimizer's orders with the advisor's; it must pass the same hard rules
the optimizer's own orders pass (`trimtab.rebalance.rounding.check` on the snapshot's arrays):
lots exist, belong to the security and are not oversold; restricted securities untouched; no wash
sale (a loss sold and the security bought, a loss lot sold next to a recent buy); cash after
trades and costs at least the reserve; maximum turnover. Prices, notionals and costs are
recomputed from the snapshot (the client's numbers are not trusted). The proposal's recorded context
applies too (household wash sales, mode, tax budget, gain cap, withdrawal). Pure: no I/O.

Share counts follow the optimizer's own rounding (`trimtab.rebalance.rounding`, `proposal.
build_orders`): at least one order (an override that trades nothing is a rejection); every
order's shares positive and at most `MAX_SHARES`; buys in whole shares; a sell's shares, lot by
lot, whole, except that a lot may be sold entirely even if it holds a fraction of a share; a
sell's shares the sum of its lots'. Share counts are checked before anything is priced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, DecimalException
from typing import Any

import numpy as np

from trimtab.shared.errors import Invalid
from trimtab.shared.events import AccountSnapshot, LotInstruction, Order
from trimtab.shared.money import usd

#: The most shares one order (or one lot instruction) may name: far more than any account holds,
#: and few enough that shares times a price stays within Decimal's precision when priced.
MAX_SHARES = Decimal(10) ** 12

EMPTY_OVERRIDE = "no orders: an override trades the orders it names; to trade nothing, reject the proposal"


class OverrideRejected(Invalid):
    title = "Override rejected"


def _shares_in_range(shares: Decimal) -> bool:
    return shares.is_finite() and Decimal(0) < shares <= MAX_SHARES


def _shares_out_of_range(what: str) -> str:
    return f"{what}: shares must be more than 0 and at most {MAX_SHARES:,}"


def _is_whole(shares: Decimal) -> bool:
    return shares == shares.to_integral_value()


def validate_override(snapshot: AccountSnapshot, orders: Sequence[Order],
                      context: Mapping[str, Any] | None = None) -> list[Order]:
    """The edited orders, priced from the snapshot; `OverrideRejected` listing every violation.

    `context` is the JSON of the context the proposal was solved with (`RebalanceProposed.context`):
    the household's recent trades (wash sales), the mode, tax budget, gain cap and withdrawal
    apply to the advisor's orders as they did to the optimizer's.
    """
    if not orders:
        # The drift monitor reads "overridden" as "trades are coming": an override without
        # orders would publish none and leave the account waiting for good.
        raise OverrideRejected("an override needs at least one order: to trade nothing, reject the "
                               "proposal instead", violations=[EMPTY_OVERRIDE])

    from trimtab.rebalance import RebalanceContext, from_snapshot
    from trimtab.rebalance.proposal import (
        _exact_lot_shares,  # untracked shares as the optimizer names them
    )
    from trimtab.rebalance.rounding import check
    from trimtab.rebalance.solve import Bans

    inp = from_snapshot(snapshot, RebalanceContext.from_json(context) if context else None)
    index = {s: i for i, s in enumerate(inp.symbols)}
    lot_index = {lot_id: k for k, lot_id in enumerate(inp.lot_ids)}
    exact = _exact_lot_shares(snapshot)
    securities = {s.symbol: s for s in snapshot.securities}
    problems: list[str] = []
    sell = np.zeros(inp.n_lots)
    buy = np.zeros(inp.n_securities)
    seen: set[tuple[str, str]] = set()
    for o in orders:
        if (o.symbol, o.side) in seen:
            problems.append(f"{o.symbol}: more than one {o.side} order")
        seen.add((o.symbol, o.side))
        sec = securities.get(o.symbol)
        if sec is None or (o.side == "sell" and o.symbol not in index):
            problems.append(f"{o.symbol}: not in the proposal's snapshot")
            continue
        if not _shares_in_range(o.shares):
            problems.append(_shares_out_of_range(f"{o.symbol} {o.side}"))
            continue
        if o.side == "buy":
            if o.lots:
                problems.append(f"{o.symbol}: a buy names no lots")
            if not _is_whole(o.shares):
                problems.append(f"{o.symbol}: buys are whole shares")
            if o.symbol not in index:  # a security the snapshot prices but the account neither
                problems.append(f"{o.symbol}: not held nor targeted by the account")  # holds nor targets
                continue
            buy[index[o.symbol]] += float(o.shares)
        else:
            in_range = [li for li in o.lots if _shares_in_range(li.shares)]
            if not o.lots or (len(in_range) == len(o.lots)
                              and sum((li.shares for li in o.lots), Decimal(0)) != o.shares):
                problems.append(f"{o.symbol}: a sell names its lots, summing to its shares")
            for li in o.lots:
                if not _shares_in_range(li.shares):
                    problems.append(_shares_out_of_range(f"{o.symbol}: lot {li.lot_id}"))
                    continue
                k = lot_index.get(li.lot_id)
                if k is None or inp.symbols[inp.lot_security[k]] != o.symbol:
                    problems.append(f"{o.symbol}: lot {li.lot_id} is not a lot of {o.symbol}")
                    continue
                whole_lot = exact.get(li.lot_id)
                if not _is_whole(li.shares) and li.shares != whole_lot:
                    problems.append(f"{o.symbol}: lot {li.lot_id}: sells are whole shares, or the whole "
                                    f"lot ({whole_lot} shares)")
                sell[k] += float(li.shares)
    if not problems:
        problems = check(inp, sell, buy, Bans())
    if problems:
        raise OverrideRejected("the edited orders break the account's rules: " + "; ".join(problems),
                               violations=problems)
    priced = [_priced(o, securities[o.symbol]) for o in orders]
    return sorted(priced, key=lambda o: o.symbol)


def _priced(o: Order, sec: Any) -> Order:
    """`o` priced from the snapshot's security `sec` (after validation: its shares are bounded)."""
    try:
        notional = o.shares * sec.price_usd
        cost = notional * sec.half_spread_bps / Decimal(10_000) + o.shares * sec.commission_usd_per_share
        est_notional, est_cost = usd(notional), usd(cost)
    except DecimalException:
        problem = f"{o.symbol}: {o.shares} shares at ${sec.price_usd} cannot be priced"
        raise OverrideRejected("the edited orders break the account's rules: " + problem,
                               violations=[problem]) from None
    return Order(symbol=o.symbol, side=o.side, shares=o.shares, est_price_usd=sec.price_usd,
                 est_notional_usd=est_notional, est_cost_usd=est_cost,
                 lots=[LotInstruction(lot_id=li.lot_id, shares=li.shares) for li in o.lots])
