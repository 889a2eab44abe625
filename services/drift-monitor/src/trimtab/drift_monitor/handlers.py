"""Event handlers of drift-monitor, one per consumed event, each inside the consumer's unit of work.

- `PriceTicked`: store the price, screen the tenant's accounts that hold or target the symbol in
  the engine, confirm each candidate exactly from the locked database rows, emit `DriftDetected`
  and mark the account pending.
- `RebalanceDecided`: refusals re-arm a pending account (after a quiet interval); approvals wait
  for fills.
- `TradesExecuted`: apply the fills to lots and cash once, then re-arm.

The shared consumer records each event id with the handler's effects, so a redelivered event is
dropped before it gets here; `executions` also refuses the same execution under a new event id.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.events import PriceTicked, RebalanceDecided, TradesExecuted
from trimtab.shared.outbox import UnitOfWork

from .book import bump, load_books, write_lots
from .cache import BookCache
from .domain.ledger import FillLine, LedgerError, apply_fills
from .domain.policy import ARMED, PENDING, after_decision, may_fire
from .models import accounts, drifts, executions, prices
from .snapshots import drift_event, drift_for

log = logging.getLogger(__name__)
PRODUCER = "drift-monitor"


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
            set_={"price_usd": stmt.excluded.price_usd, "as_of": stmt.excluded.as_of, "updated_at": _now()},
            # Ticks can arrive out of order: an older price must not replace a newer one.
            where=prices.c.as_of <= stmt.excluded.as_of,
        ).returning(prices.c.symbol))).first()
        if stored is None:
            return
        engine, price_rows = await self.cache.sync(s, tenant)
        now = _now()
        candidates = engine.candidates(tick.symbol, now.timestamp(), self.min_interval_s)
        if not candidates:
            return
        books = await load_books(s, tenant, candidates, for_update=True)
        fired = []
        for account_id, book in sorted(books.items()):
            a = book.account
            if not may_fire(a.drift_state, a.rearmed_at, now, self.min_interval_s):
                continue  # changed since the engine loaded it
            result = drift_for(book, price_rows)
            if not result.fires:
                continue
            drift_id = uuid.uuid4()
            event = drift_event(book, price_rows, result, tick.as_of, drift_id)
            uow.publish(env.caused(event, producer=PRODUCER), key=account_id)
            fired.append({
                "tenant_id": tenant, "drift_id": drift_id, "account_id": account_id, "as_of": tick.as_of,
                "correlation_id": env.correlation_id, "total_value_usd": event.total_value_usd,
                "max_abs_deviation": event.max_abs_deviation, "breached": event.breached,
            })
        if not fired:
            return
        await s.execute(insert(drifts), fired)
        mark = update(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == bindparam("b_account"),
        ).values(drift_state=PENDING, pending_drift_id=bindparam("b_drift"), pending_proposal_id=None, **bump())
        await s.execute(mark, [{"b_account": f["account_id"], "b_drift": f["drift_id"]} for f in fired])
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
        if t.state == a.drift_state and not t.rearmed:
            return
        values = {"drift_state": t.state, **bump()}
        if t.rearmed:
            # Wall time, not the decision's timestamp: the quiet interval is about this process
            # not asking again too soon, whatever clock the decider had.
            values |= {"rearmed_at": _now(), "pending_drift_id": None, "pending_proposal_id": None}
        else:
            values["pending_proposal_id"] = d.proposal_id
        await s.execute(update(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == d.account_id).values(**values))

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
                 pending_proposal_id=None, **bump()))
        await s.execute(insert(executions).values(
            tenant_id=tenant, execution_id=te.execution_id, account_id=te.account_id,
            proposal_id=te.proposal_id, event_id=env.event_id, fills=len(fills),
            cash_delta_usd=new_cash - cash))
        if pending is not None:
            await s.execute(update(drifts).where(drifts.c.tenant_id == tenant, drifts.c.drift_id == pending)
                            .values(status="executed"))
