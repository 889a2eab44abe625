"""Event handlers of drift-monitor, one per consumed event, each inside the consumer's unit of work.

- `PriceTicked`: store the price, sync the engine (changed rows only), let the engine update and
  screen the holders of the symbol, decide each candidate exactly from the locked database rows
  (firing.py), emit `DriftDetected` and mark the account pending.
- `RebalanceDecided`: refusals re-arm a pending account (after a quiet interval); approvals wait
  for fills.
- `TradesExecuted`: apply the fills to lots and cash once, then re-arm; the fill time starts the
  policy's minimum interval between rebalances.

The shared consumer records each event id with the handler's effects, so a redelivered event is
dropped before it gets here; `executions` also refuses the same execution under a new event id.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.events import PriceTicked, RebalanceDecided, TradesExecuted
from trimtab.shared.outbox import UnitOfWork

from .book import bump, load_books, load_prices, write_lots
from .cache import BookCache
from .domain.ledger import FillLine, LedgerError, apply_fills
from .domain.policy import ARMED, PENDING, after_decision
from .firing import fire_due
from .models import CURRENT_XID, accounts, drifts, executions, prices

log = logging.getLogger(__name__)
#: `RebalanceDecided.decided_by` of a proposal the optimizer expired because its prices moved.
PRICE_MOVE = "optimizer:price-move"


def _now() -> datetime:
    return datetime.now(UTC)


class DriftHandlers:
    def __init__(self, cache: BookCache, min_interval_s: float) -> None:
        self.cache = cache
        self.min_interval_s = min_interval_s

    async def on_price_ticked(self, env: Envelope, uow: UnitOfWork) -> None:
        tick = env.parse(PriceTicked)
        tenant, s = env.tenant_id, uow.session
        stmt = pg_insert(prices).values(tenant_id=tenant, symbol=tick.symbol, price_usd=tick.price_usd,
                                        as_of=tick.as_of)
        stored = (await s.execute(stmt.on_conflict_do_update(
            index_elements=["tenant_id", "symbol"],
            set_={"price_usd": stmt.excluded.price_usd, "as_of": stmt.excluded.as_of, "updated_at": _now(),
                  "changed_xid": CURRENT_XID},
            # Ticks can arrive out of order: an older price must not replace a newer one.
            where=prices.c.as_of <= stmt.excluded.as_of,
        ).returning(prices.c.symbol))).first()
        if stored is None:
            return
        engine = await self.cache.sync(s, tenant)
        self.cache.touch_symbol(tenant, tick.symbol)  # applied before this transaction commits
        now = _now()
        candidates = engine.tick(tick.symbol, float(tick.price_usd), now.timestamp(), self.min_interval_s)
        if not candidates:
            return
        books = await load_books(s, tenant, candidates, for_update=True)
        price_rows = await load_prices(s, tenant)
        fired = await fire_due(uow, tenant, books, price_rows, now, tick.as_of, self.min_interval_s, env)
        log.info("tenant %s: %s on %s -> %d drift(s) of %d candidate(s)", tenant, tick.symbol,
                 tick.price_usd, len(fired), len(candidates))

    async def on_rebalance_decided(self, env: Envelope, uow: UnitOfWork) -> None:
        d = env.parse(RebalanceDecided)
        tenant, s = env.tenant_id, uow.session
        a = (await s.execute(select(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == d.account_id).with_for_update())).first()
        if a is None:
            log.warning("decision %s for unknown account %s/%s ignored", d.proposal_id, tenant, d.account_id)
            return
        t = after_decision(a.drift_state, d.decision)
        if a.drift_state == PENDING and a.pending_drift_id is not None:
            await s.execute(update(drifts).where(
                drifts.c.tenant_id == tenant, drifts.c.drift_id == a.pending_drift_id,
            ).values(status=d.decision, proposal_id=d.proposal_id, decided_at=d.decided_at))
        if d.decision in ("approved", "overridden") and (await s.execute(select(executions.c.execution_id).where(
                executions.c.tenant_id == tenant, executions.c.proposal_id == d.proposal_id).limit(1))).first():
            # rebalance.decided.v1 and trades.executed.v1 are different topics, so nothing orders
            # them: a fast OMS's fills can arrive before the approval. The fills already re-armed
            # the account; moving it to "executing" now would wait forever for fills that came.
            return
        if t.state == a.drift_state and not t.rearmed:
            return
        # A proposal expired because its prices moved was nobody's refusal: its snapshot priced a
        # security at a price the market had already left (a tick of the same batch that had
        # not reached this service yet). The account is re-armed without the quiet interval and
        # checked at once with the prices known now, so a fresh proposal follows without
        # waiting for another tick.
        moved = d.decision == "expired" and d.decided_by == PRICE_MOVE
        values = {"drift_state": t.state, **bump()}
        if t.rearmed:
            # Wall time, not the decision's timestamp: the quiet interval is about this process
            # not asking again too soon, whatever clock the decider had.
            values |= {"rearmed_at": None if moved else _now(), "pending_drift_id": None,
                       "pending_proposal_id": None}
        else:
            values["pending_proposal_id"] = d.proposal_id
        await s.execute(update(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == d.account_id).values(**values))
        if moved and t.rearmed:
            books = await load_books(s, tenant, [d.account_id], for_update=True)
            price_rows = await load_prices(s, tenant)
            if books and price_rows:
                as_of = max(p.as_of for p in price_rows.values())
                fired = await fire_due(uow, tenant, books, price_rows, _now(), as_of, self.min_interval_s, env)
                if fired:
                    log.info("tenant %s: %s re-checked after a price-move expiry: drift again",
                             tenant, d.account_id)

    async def on_trades_executed(self, env: Envelope, uow: UnitOfWork) -> None:
        te = env.parse(TradesExecuted)
        tenant, s = env.tenant_id, uow.session
        books = await load_books(s, tenant, [te.account_id], for_update=True)
        book = books.get(te.account_id)
        if book is None:
            raise PermanentEventError(f"fills for unknown account {tenant}/{te.account_id}")
        seen = (await s.execute(select(executions.c.event_id).where(
            executions.c.tenant_id == tenant, executions.c.execution_id == te.execution_id))).first()
        if seen is not None:
            log.warning("execution %s already applied (event %s); event %s ignored",
                        te.execution_id, seen.event_id, env.event_id)
            return
        fills = [FillLine(
            client_order_id=f.client_order_id, symbol=f.symbol, side=f.side, shares=f.shares,
            price_usd=f.price_usd, trade_date=f.executed_at.astimezone(UTC).date(),
            lots=tuple((li.lot_id, li.shares) for li in f.lots),
        ) for f in te.fills]
        cash = book.account.cash_usd
        try:
            new_lots, new_cash = apply_fills(book.lots, cash, fills)
        except LedgerError as e:
            raise PermanentEventError(str(e)) from e
        await write_lots(s, tenant, te.account_id, new_lots)
        pending = book.account.pending_drift_id
        await s.execute(update(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == te.account_id,
        ).values(cash_usd=new_cash, drift_state=ARMED, rearmed_at=None, pending_drift_id=None,
                 pending_proposal_id=None, last_rebalanced_at=_now(), **bump()))
        await s.execute(insert(executions).values(
            tenant_id=tenant, execution_id=te.execution_id, account_id=te.account_id,
            proposal_id=te.proposal_id, event_id=env.event_id, fills=len(fills),
            cash_delta_usd=new_cash - cash))
        if pending is not None:
            await s.execute(update(drifts).where(drifts.c.tenant_id == tenant, drifts.c.drift_id == pending)
                            .values(status="executed"))
