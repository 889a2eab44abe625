"""An advisor's edited orders, re-validated against the proposal's snapshot before acceptance.

An override replaces the optimizer's orders with the advisor's; it must pass the same hard rules
the optimizer's own orders pass (`trimtab.rebalance.rounding.check` on the snapshot's arrays):
lots exist, belong to the security and are not oversold; restricted securities untouched; no wash
sale (a loss sold and the security bought, a loss lot sold next to a recent buy); cash after
trades and costs at least the reserve; maximum turnover. Prices, notionals and costs are
recomputed from the snapshot (the client's numbers are not trusted). The proposal's recorded context
applies too (household wash sales, mode, tax budget, gain cap, withdrawal). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from trimtab.shared.errors import Invalid
from trimtab.shared.events import AccountSnapshot, LotInstruction, Order
from trimtab.shared.money import usd


class OverrideRejected(Invalid):
    title = "Override rejected"


def validate_override(snapshot: AccountSnapshot, orders: Sequence[Order],
                      context: Mapping[str, Any] | None = None) -> list[Order]:
    """The edited orders, priced from the snapshot; `OverrideRejected` listing every violation.

    `context` is the JSON of the context the proposal was solved with (`RebalanceProposed.context`):
    the household's recent trades (wash sales), the mode, tax budget, gain cap and withdrawal
    apply to the advisor's orders as they did to the optimizer's.
    """
    from trimtab.rebalance import RebalanceContext, from_snapshot
    from trimtab.rebalance.rounding import check
    from trimtab.rebalance.solve import Bans

    inp = from_snapshot(snapshot, RebalanceContext.from_json(context) if context else None)
    index = {s: i for i, s in enumerate(inp.symbols)}
    lot_index = {lot_id: k for k, lot_id in enumerate(inp.lot_ids)}
    securities = {s.symbol: s for s in snapshot.securities}
    problems: list[str] = []
    sell = np.zeros(inp.n_lots)
    buy = np.zeros(inp.n_securities)
    seen: set[tuple[str, str]] = set()
    priced: list[Order] = []
    for o in orders:
        if (o.symbol, o.side) in seen:
            problems.append(f"{o.symbol}: more than one {o.side} order")
        seen.add((o.symbol, o.side))
        sec = securities.get(o.symbol)
        if sec is None or (o.side == "sell" and o.symbol not in index):
            problems.append(f"{o.symbol}: not in the proposal's snapshot")
            continue
        if o.side == "buy":
            if o.lots:
                problems.append(f"{o.symbol}: a buy names no lots")
            if o.shares != o.shares.to_integral_value():
                problems.append(f"{o.symbol}: buys are whole shares")
            if o.symbol not in index:  # a security the snapshot prices but the account neither
                problems.append(f"{o.symbol}: not held nor targeted by the account")  # holds nor targets
                continue
            buy[index[o.symbol]] += float(o.shares)
        else:
            if not o.lots or sum((li.shares for li in o.lots), Decimal(0)) != o.shares:
                problems.append(f"{o.symbol}: a sell names its lots, summing to its shares")
            for li in o.lots:
                k = lot_index.get(li.lot_id)
                if k is None or inp.symbols[inp.lot_security[k]] != o.symbol:
                    problems.append(f"{o.symbol}: lot {li.lot_id} is not a lot of {o.symbol}")
                    continue
                sell[k] += float(li.shares)
        notional = o.shares * sec.price_usd
        cost = notional * sec.half_spread_bps / Decimal(10_000) + o.shares * sec.commission_usd_per_share
        priced.append(Order(symbol=o.symbol, side=o.side, shares=o.shares, est_price_usd=sec.price_usd,
                            est_notional_usd=usd(notional), est_cost_usd=usd(cost),
                            lots=[LotInstruction(lot_id=li.lot_id, shares=li.shares) for li in o.lots]))
    if not problems:
        problems = check(inp, sell, buy, Bans())
    if problems:
        raise OverrideRejected("the edited orders break the account's rules: " + "; ".join(problems),
                               violations=problems)
    return sorted(priced, key=lambda o: o.symbol)
