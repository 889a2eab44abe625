"""Price-move expiry: an open proposal whose prices moved too far since its snapshot expires.

A proposal's orders are priced at the snapshot (`est_price_usd`). Once the market has moved
more than `PROPOSAL_MAX_PRICE_MOVE` (a fraction, 0.02 = 2 %) in any ordered symbol, the trade
list answers a question nobody is asking any more: the proposal expires (the TTL expiry's path,
`RebalanceDecided` "expired"), and the drift monitor re-arms for the account.

The optimizer keeps the newest price per (tenant, symbol) from `PriceTicked` (`latest_prices`).
Three places check it:

- a tick batch expires every open proposal with an order in a symbol whose price it moved
  (`proposals_moved_beyond`: one indexed query per batch);
- a proposal is checked when it is stored and when it becomes ready, before any automatic
  decision (a tick that arrived while it was being solved would otherwise be missed);
- an approval (advisor or automatic) is refused, and the proposal expired, when the latest
  known price moved too far, even if the tick's handler has not run yet.

Only prices newer than the snapshot's `as_of` count: a tick delivered late (older than the
snapshot, or at its very time: the snapshot already priced that moment) expires nothing, and an
older tick never replaces a newer stored price. The move is computed in Decimal.
The pure part (`PriceMove`, `moves_beyond`, `expiry_decision`) has no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, cast, func, literal, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Text

from trimtab.shared.envelope import utcnow
from trimtab.shared.events import PriceTicked
from trimtab.shared.limits import FUTURE_PRICE_HORIZON_S

from .domain.lifecycle import Decision
from .models import OPEN_STATES, ORDER_SYMBOLS, SCHEMA, latest_prices, proposals

#: Who expires a proposal whose prices moved (RebalanceDecided.decided_by).
DECIDED_BY = "optimizer:price-move"
DEFAULT_MAX_MOVE = Decimal("0.02")
_HUNDRED = Decimal(100)
_CENT = Decimal("0.01")


# --------------------------------------------------------------------------- pure


@dataclass(frozen=True)
class Quote:
    """A known price of a symbol and the time it is of."""

    price_usd: Decimal
    as_of: datetime


@dataclass(frozen=True)
class PriceMove:
    symbol: str
    est_price_usd: Decimal
    price_usd: Decimal

    @property
    def move(self) -> Decimal:
        """Relative move since the snapshot: (new - estimated) / estimated (0.0312 = +3.12 %)."""
        return (self.price_usd - self.est_price_usd) / self.est_price_usd

    def beyond(self, limit: Decimal) -> bool:
        """Moved more than `limit` (a fraction) either way; a limit of 0 or less never trips."""
        return limit > 0 and abs(self.move) > limit

    def describe(self, limit: Decimal) -> str:
        """E.g. "VTI moved +3.12 % since the snapshot ($250.00 -> $257.80; limit 2.00 %)"."""
        return (f"{self.symbol} moved {_signed_pct(self.move)} since the snapshot "
                f"({_usd(self.est_price_usd)} -> {_usd(self.price_usd)}; limit {_pct(limit)})")

    def as_json(self) -> dict[str, str]:
        return {"symbol": self.symbol, "est_price_usd": str(self.est_price_usd),
                "price_usd": str(self.price_usd), "move_pct": str(_q(self.move * _HUNDRED))}


def _q(x: Decimal) -> Decimal:
    return x.quantize(_CENT)


def _signed_pct(fraction: Decimal) -> str:
    v = _q(fraction * _HUNDRED)
    return f"{'+' if v >= 0 else '-'}{abs(v)} %"


def _pct(fraction: Decimal) -> str:
    return f"{_q(fraction * _HUNDRED)} %"


def _usd(price: Decimal) -> str:
    """Dollars with cents; a price quoted finer than cents keeps its digits ($0.1234)."""
    exp = price.normalize().as_tuple().exponent
    shown = price if isinstance(exp, int) and exp < -2 else price.quantize(_CENT)
    return f"${shown:,}"


def moves_beyond(orders: Iterable[Mapping[str, Any]], quotes: Mapping[str, Quote],
                 snapshot_as_of: datetime, limit: Decimal,
                 priced_at: Mapping[str, datetime] | None = None) -> list[PriceMove]:
    """The ordered symbols whose known price moved more than `limit` since the snapshot,
    largest move first; empty when the limit is 0 (disabled).

    `orders` are the proposal's orders (JSON or `Order` dumps: `symbol`, `est_price_usd`);
    `quotes` the newest known price per symbol. A quote not newer than the snapshot's price of
    its symbol (`priced_at`, the snapshot's `price_as_of` per symbol; `snapshot_as_of` where it
    has none) says nothing new (a late tick): it is ignored.
    """
    if limit <= 0:
        return []
    priced_at = priced_at or {}
    out: dict[str, PriceMove] = {}
    for o in orders:
        symbol = str(o["symbol"])
        q = quotes.get(symbol)
        if symbol in out or q is None or q.as_of <= priced_at.get(symbol, snapshot_as_of):
            continue
        m = PriceMove(symbol, Decimal(str(o["est_price_usd"])), q.price_usd)
        if m.est_price_usd > 0 and m.beyond(limit):
            out[symbol] = m
    return sorted(out.values(), key=lambda m: (-abs(m.move), m.symbol))


def expiry_reason(moves: Sequence[PriceMove], limit: Decimal) -> str:
    return "; ".join(m.describe(limit) for m in moves)


def expiry_decision(moves: Sequence[PriceMove], limit: Decimal) -> Decision | None:
    """The automatic expiry for these moves, or None if no price moved too far."""
    if not moves:
        return None
    return Decision("expired", DECIDED_BY, automatic=True, reason=expiry_reason(moves, limit))


def newest_per_symbol(ticks: Iterable[tuple[str, PriceTicked]]) -> dict[tuple[str, str], Quote]:
    """(tenant, tick) pairs reduced to the newest quote per (tenant, symbol); at equal `as_of`
    the later tick in the batch wins (the order the market-data service published them)."""
    out: dict[tuple[str, str], Quote] = {}
    for tenant, t in ticks:
        k, as_of = (tenant, t.symbol), aware(t.as_of)
        if k not in out or as_of >= out[k].as_of:
            out[k] = Quote(t.price_usd, as_of)
    return out


def aware(t: datetime) -> datetime:
    """A timestamp without a zone is UTC (the contract's timestamps are UTC)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def snapshot_as_of(row: Row[Any]) -> datetime:
    return aware(row.snapshot_as_of)


def priced_at(row: Row[Any]) -> dict[str, datetime]:
    """When the proposal's snapshot priced each symbol (`SecuritySnapshot.price_as_of`), for the
    symbols it says so of."""
    out: dict[str, datetime] = {}
    for sec in (row.snapshot or {}).get("securities", []):
        if sec.get("price_as_of"):
            out[sec["symbol"]] = aware(datetime.fromisoformat(str(sec["price_as_of"]).replace("Z", "+00:00")))
    return out


# --------------------------------------------------------------------------- database


async def record_quotes(session: AsyncSession, quotes: Mapping[tuple[str, str], Quote]) -> dict[tuple[str, str], Quote]:
    """Upsert the newest quotes (one statement); returns those that became the latest known
    price (a quote older than the stored one changes nothing and is not returned)."""
    if not quotes:
        return {}
    now = utcnow()
    stmt = insert(latest_prices).values([
        {"tenant_id": t, "symbol": s, "price_usd": q.price_usd, "as_of": q.as_of, "updated_at": now}
        for (t, s), q in sorted(quotes.items())])
    stmt = stmt.on_conflict_do_update(
        index_elements=[latest_prices.c.tenant_id, latest_prices.c.symbol],
        set_={"price_usd": stmt.excluded.price_usd, "as_of": stmt.excluded.as_of,
              "updated_at": stmt.excluded.updated_at},
        # Out-of-order delivery: an older tick never replaces a newer price; but a stored price
        # dated beyond the future horizon (a far-future tick market-data once accepted) is not
        # newer, it is wrong, and would freeze the symbol forever.
        where=or_(latest_prices.c.as_of <= stmt.excluded.as_of,
                  latest_prices.c.as_of > func.now() + timedelta(seconds=FUTURE_PRICE_HORIZON_S)),
    ).returning(latest_prices.c.tenant_id, latest_prices.c.symbol)
    changed = {(r.tenant_id, r.symbol) for r in (await session.execute(stmt)).all()}
    return {k: q for k, q in quotes.items() if k in changed}


async def latest_quotes(session: AsyncSession, tenant_id: str, symbols: Iterable[str]) -> dict[str, Quote]:
    """The latest known price of each of `symbols` (primary-key lookups)."""
    wanted = sorted(set(symbols))
    if not wanted:
        return {}
    rows = (await session.execute(select(latest_prices).where(
        latest_prices.c.tenant_id == tenant_id, latest_prices.c.symbol.in_(wanted)))).all()
    return {r.symbol: Quote(r.price_usd, r.as_of) for r in rows}


async def moves_of(session: AsyncSession, row: Row[Any], limit: Decimal,
                   orders: Sequence[Mapping[str, Any]] | None = None) -> list[PriceMove]:
    """The moves beyond `limit` of `orders` (default: the proposal's own) against the latest
    known prices; no query when the limit is 0."""
    orders = list(row.orders if orders is None else orders)
    if limit <= 0 or not orders:
        return []
    quotes = await latest_quotes(session, row.tenant_id, (str(o["symbol"]) for o in orders))
    return moves_beyond(orders, quotes, snapshot_as_of(row), limit, priced_at(row))


#: The exact test in SQL (numeric, no division: |new - est| > limit x est), so that only the
#: proposals to expire are fetched and locked; Python recomputes the moves for the reason.
_MOVED_BEYOND = text(f"""EXISTS (
    SELECT 1
    FROM jsonb_array_elements({SCHEMA}.proposals.orders) AS o(v)
    JOIN unnest(CAST(:q_tenants AS text[]), CAST(:q_symbols AS text[]), CAST(:q_prices AS numeric[]),
                CAST(:q_as_of AS timestamptz[])) AS q(tenant_id, symbol, price, as_of)
      ON q.tenant_id = {SCHEMA}.proposals.tenant_id AND q.symbol = o.v->>'symbol'
    WHERE q.as_of > COALESCE((
        SELECT CAST(sec.v->>'price_as_of' AS timestamptz)
        FROM jsonb_array_elements({SCHEMA}.proposals.snapshot->'securities') AS sec(v)
        WHERE sec.v->>'symbol' = o.v->>'symbol' LIMIT 1), {SCHEMA}.proposals.snapshot_as_of)
      AND CAST(o.v->>'est_price_usd' AS numeric) > 0
      AND abs(q.price - CAST(o.v->>'est_price_usd' AS numeric))
          > CAST(:limit AS numeric) * CAST(o.v->>'est_price_usd' AS numeric))""")


async def proposals_moved_beyond(session: AsyncSession, quotes: Mapping[tuple[str, str], Quote],
                                 limit: Decimal) -> list[Row[Any]]:
    """Open proposals with an order in a symbol of `quotes` (newest price per (tenant, symbol))
    whose price, newer than the proposal's snapshot, moved more than `limit` from the order's
    estimate. One query: the partial GIN index on the open proposals' order symbols finds the
    candidates, the exact test keeps those to expire. They are locked, in primary-key order (two
    transactions lock shared proposals in one order); a proposal being decided right now is
    waited for and then seen in its new state (a decided proposal drops out)."""
    if limit <= 0 or not quotes:
        return []
    keys = sorted(quotes)
    q = (select(proposals)
         .where(proposals.c.state.in_([literal(s, literal_execute=True) for s in OPEN_STATES]),
                proposals.c.tenant_id.in_(sorted({t for t, _ in keys})),
                ORDER_SYMBOLS.op("?|")(cast(bindparam("symbols", sorted({s for _, s in keys}),
                                                      type_=ARRAY(Text)), ARRAY(Text))),
                _MOVED_BEYOND.bindparams(
                    q_tenants=[t for t, _ in keys], q_symbols=[s for _, s in keys],
                    q_prices=[quotes[k].price_usd for k in keys], q_as_of=[quotes[k].as_of for k in keys],
                    limit=limit))
         .order_by(proposals.c.tenant_id, proposals.c.proposal_id)
         .with_for_update(of=proposals))
    return list((await session.execute(q)).all())
