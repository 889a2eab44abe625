"""Order identities for the OMS, and whether fills and unfilled reports close an approved order
list.

`client_order_id` is the OMS's idempotency key. It is a UUIDv5 of (proposal, symbol, side) in a
fixed namespace, so the same approval published twice (a relay retry, a replay) carries the same
ids and the OMS drops the copy, while two different proposals never share an id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Literal

from trimtab.shared.events import Fill, Order, UnfilledOrder

#: Never change: every client order id ever issued is derived from it.
CLIENT_ORDER_NAMESPACE = uuid.UUID("5b0f8a51-6c1e-5e4e-9a53-7472696d7461")


def client_order_id(proposal_id: uuid.UUID, symbol: str, side: str) -> str:
    return str(uuid.uuid5(CLIENT_ORDER_NAMESPACE, f"{proposal_id}/{symbol}/{side}"))


def with_client_order_ids(proposal_id: uuid.UUID, orders: Iterable[Order]) -> list[Order]:
    """The orders as approved for the OMS, each carrying its deterministic client order id."""
    return [o.model_copy(update={"client_order_id": client_order_id(proposal_id, o.symbol, o.side)})
            for o in orders]


def filled_shares(orders: Sequence[Order], fills: Iterable[Fill]) -> dict[str, Decimal]:
    """Filled shares per client order id of `orders` (fills for other ids are not ours)."""
    ids = {o.client_order_id for o in orders}
    out: dict[str, Decimal] = {i: Decimal(0) for i in ids if i}
    for f in fills:
        if f.client_order_id in out:
            out[f.client_order_id] += f.shares
    return out


def fully_filled(orders: Sequence[Order], fills: Iterable[Fill]) -> bool:
    """Every order filled to its full size (an OMS may report an order in several fills)."""
    return execution_outcome(orders, fills) == "executed"


class UnfilledReportInvalid(ValueError):
    """An OMS report of unfilled orders that does not fit the approved orders."""


def unfilled_shares(orders: Sequence[Order], unfilled: Iterable[UnfilledOrder]) -> dict[str, Decimal]:
    """Shares the OMS reported it will never fill, per client order id of `orders`."""
    out: dict[str, Decimal] = {o.client_order_id: Decimal(0) for o in orders if o.client_order_id}
    for u in unfilled:
        if u.client_order_id in out:
            out[u.client_order_id] += u.unfilled_shares
    return out


def accept_unfilled(orders: Sequence[Order], known: Sequence[UnfilledOrder],
                    report: Sequence[UnfilledOrder], fills: Iterable[Fill] = ()) -> list[UnfilledOrder]:
    """The report's lines as they apply: each clipped to what the fills and the earlier reports
    known so far left of its order.

    Refused (`UnfilledReportInvalid`): a line naming an order the approval does not hold, or with
    another symbol or side, or more shares than the order has. A line that only overlaps earlier
    reports (an OMS's final report after a supervisor ended the approval, a corrected report
    under a new id) is clipped, not refused: those shares are ended already. Lines with nothing
    left are dropped. Fills refuse nothing: fills and reports travel on different topics, so a
    report may arrive before fills the OMS sent earlier (the approval then ends when both are in)."""
    by_id = {o.client_order_id: o for o in orders if o.client_order_id}
    for u in report:
        o = by_id.get(u.client_order_id)
        if o is None:
            raise UnfilledReportInvalid(f"client order id {u.client_order_id} is not an order of this approval")
        if (o.symbol, o.side) != (u.symbol, u.side):
            raise UnfilledReportInvalid(
                f"client order id {u.client_order_id} is a {o.side} of {o.symbol}, not a {u.side} of {u.symbol}")
        if u.unfilled_shares > o.shares:
            raise UnfilledReportInvalid(
                f"order {u.client_order_id} ({o.side} {o.shares} {o.symbol}) cannot leave "
                f"{u.unfilled_shares} shares unfilled")
    ended = unfilled_shares(orders, known)
    for cid, n in filled_shares(orders, fills).items():
        ended[cid] += n
    out = []
    for u in report:
        left = by_id[u.client_order_id].shares - ended[u.client_order_id]
        take = min(u.unfilled_shares, left)
        if take > 0:
            out.append(u if take == u.unfilled_shares else u.model_copy(update={"unfilled_shares": take}))
            ended[u.client_order_id] += take
    return out


def execution_outcome(orders: Sequence[Order], fills: Iterable[Fill],
                      unfilled: Iterable[UnfilledOrder] = ()) -> Literal["executed", "unfilled"] | None:
    """How an approved order list ended at the OMS: `executed` when every order filled in full,
    `unfilled` when every order is filled or reported unfilled and some shares never traded,
    None while some order is still working."""
    if not orders or any(o.client_order_id is None for o in orders):
        return None
    done = filled_shares(orders, fills)
    ended = unfilled_shares(orders, unfilled)
    if all(done[o.client_order_id] >= o.shares for o in orders):  # type: ignore[index]
        return "executed"
    if all(done[o.client_order_id] + ended[o.client_order_id] >= o.shares for o in orders):  # type: ignore[index]
        return "unfilled"
    return None
