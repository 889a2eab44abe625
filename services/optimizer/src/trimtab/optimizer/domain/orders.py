"""Order identities for the OMS, and whether fills complete an approved order list.

`client_order_id` is the OMS's idempotency key. It is a UUIDv5 of (proposal, symbol, side) in a
fixed namespace, so the same approval published twice (a relay retry, a replay) carries the same
ids and the OMS drops the copy, while two different proposals never share an id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal

from trimtab.shared.events import Fill, Order

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
    done = filled_shares(orders, fills)
    return bool(orders) and all(
        o.client_order_id is not None and done.get(o.client_order_id, Decimal(0)) >= o.shares
        for o in orders)
