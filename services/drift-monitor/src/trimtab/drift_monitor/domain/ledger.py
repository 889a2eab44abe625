"""The fill ledger: how OMS fills change an account's tax lots and cash.

- A sell consumes the lots its fill names, in the order named (a partial fill stops early); any
  shares the named lots do not cover (none named, a lot gone, or fewer shares than reported) come
  from the remaining lots of the symbol, highest cost basis first (HIFO: the least gain realized).
  Selling more shares than the account holds is an error: the book and the OMS disagree, and
  guessing would hide it.
- A buy opens a new lot dated on the fill's trade date at the fill price; its id is the
  client_order_id (suffixed `#2`, `#3`... when one order fills in several pieces).
- Cash moves by each fill's notional rounded to cents (what settles): sells add, buys subtract.

Shares are kept to 8 decimal places and cost bases to 8, the precision of the book's columns.

`limits` (optional) bounds what the fills may leave: the fill price (a new lot's cost basis),
the shares the account holds in all and the cash either way. The service passes the bounds its
API holds accounts to, so that no fill stores an account the API would refuse and whose value
no longer fits the drift record (the fill is refused whole, with the reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Literal

from trimtab.shared.money import usd

SHARES_Q = Decimal("0.00000001")
PRICE_Q = Decimal("0.00000001")


class LedgerError(ValueError):
    """Fills that cannot be applied to the book as it stands."""


@dataclass(frozen=True)
class Lot:
    lot_id: str
    symbol: str
    shares: Decimal
    cost_basis_usd_per_share: Decimal
    acquired_on: date


@dataclass(frozen=True)
class FillLine:
    client_order_id: str
    symbol: str
    side: Literal["buy", "sell"]
    shares: Decimal
    price_usd: Decimal
    trade_date: date
    #: (lot_id, shares) the OMS says it sold, in order; empty = let the ledger choose.
    lots: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True)
class LedgerLimits:
    max_price_usd: Decimal
    max_shares: Decimal
    max_abs_cash_usd: Decimal


def _hifo_key(lot: Lot) -> tuple[Decimal, date, str]:
    return (-lot.cost_basis_usd_per_share, lot.acquired_on, lot.lot_id)


def apply_fills(lots: Sequence[Lot], cash_usd: Decimal, fills: Sequence[FillLine],
                limits: LedgerLimits | None = None) -> tuple[list[Lot], Decimal]:
    """The lots and cash after `fills`, applied in order. Lots come back in their original order,
    new lots appended; fully sold lots are removed."""
    book: dict[str, Lot] = {lot.lot_id: lot for lot in lots}
    cash = cash_usd
    for f in fills:
        qty = f.shares.quantize(SHARES_Q)
        if qty <= 0:
            raise LedgerError(f"fill {f.client_order_id}: shares must be positive")
        if limits is not None and f.price_usd > limits.max_price_usd:
            raise LedgerError(f"fill {f.client_order_id}: price {f.price_usd} USD a share is above "
                              f"{limits.max_price_usd} USD, the most an account may hold a share at")
        notional = usd(qty * f.price_usd)
        if f.side == "buy":
            lot_id, k = f.client_order_id, 1
            while lot_id in book:
                k += 1
                lot_id = f"{f.client_order_id}#{k}"
            book[lot_id] = Lot(lot_id, f.symbol, qty, f.price_usd.quantize(PRICE_Q), f.trade_date)
            cash -= notional
            continue
        need = qty
        for lot_id, named_shares in f.lots:
            lot = book.get(lot_id)
            if need <= 0:
                break
            if lot is None or lot.symbol != f.symbol:
                continue  # not (or no longer) here: the HIFO pass below covers these shares
            take = min(named_shares.quantize(SHARES_Q), lot.shares, need)
            if take > 0:
                need -= take
                _reduce(book, lot, take)
        if need > 0:
            for lot in sorted((x for x in book.values() if x.symbol == f.symbol), key=_hifo_key):
                take = min(lot.shares, need)
                need -= take
                _reduce(book, lot, take)
                if need <= 0:
                    break
        if need > 0:
            raise LedgerError(f"fill {f.client_order_id}: sells {qty} {f.symbol} but the account "
                              f"holds {qty - need}")
        cash += notional
    if limits is not None:
        held = sum((lot.shares for lot in book.values()), Decimal(0))
        if held > limits.max_shares:
            raise LedgerError(f"the fills would leave {held} shares in the account, more than "
                              f"{limits.max_shares}")
        if abs(cash) > limits.max_abs_cash_usd:
            raise LedgerError(f"the fills would leave {cash} USD of cash, beyond "
                              f"{limits.max_abs_cash_usd} USD either way")
    return list(book.values()), cash


def _reduce(book: dict[str, Lot], lot: Lot, take: Decimal) -> None:
    left = lot.shares - take
    if left > 0:
        book[lot.lot_id] = replace(lot, shares=left)
    else:
        del book[lot.lot_id]
