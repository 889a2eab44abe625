"""The households' recent trades (the wash-sale rule's memory) and the context of each solve.

The wash-sale rule looks 30 days back across every account of a household: a loss sold in one
account and the same (or a substantially identical) security bought in another is a wash sale.
The optimizer sees every fill (`TradesExecuted`) and keeps them here by household, taking the
household from the snapshot of the proposal the fills belong to; each new proposal's context then
carries the household's trades of the window, next to whatever context its `DriftDetected` brought
and the tenant's reference data of the snapshot's symbols (reference.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from trimtab.shared.events import (
    EXECUTIONS_CHECK_DAYS,
    AccountSnapshot,
    Fill,
    HouseholdTrade,
    OptimizerContext,
)
from trimtab.shared.outbox import UnitOfWork

from . import reference
from .models import household_trades, proposals

#: The US wash-sale window, days before the trade date (as `trimtab.rebalance.context`).
WASH_WINDOW_DAYS = 30


def _realized_loss(fill: Fill, snapshot: AccountSnapshot | None) -> bool:
    """A sell realized a loss when a lot it sold (every lot of the security if it names none)
    was bought above the fill's price. Unknown basis (no snapshot, unknown lot): no loss known."""
    if fill.side != "sell" or snapshot is None:
        return False
    basis: dict[str, Decimal] = {}
    for pos in snapshot.positions:
        if pos.symbol == fill.symbol:
            basis.update({lot.lot_id: lot.cost_basis_usd_per_share for lot in pos.lots})
    sold = [li.lot_id for li in fill.lots] or list(basis)
    return any(lot in basis and basis[lot] > fill.price_usd for lot in sold)


async def record_fills(uow: UnitOfWork, tenant_id: str, account_id: str, execution_id: str,
                       fills: Sequence[Fill], *, snapshot: AccountSnapshot | None,
                       proposal_id: uuid.UUID | None) -> int:
    """Keep each fill in the household ledger; returns how many were new (redeliveries add none)."""
    if not fills:
        return 0
    household = snapshot.household_id if snapshot is not None else None
    rows = [dict(tenant_id=tenant_id, account_id=account_id, execution_id=execution_id, seq=i,
                 household_id=household, proposal_id=proposal_id, symbol=f.symbol, side=f.side,
                 executed_at=f.executed_at, trade_date=f.executed_at.astimezone(UTC).date(),
                 realized_loss=_realized_loss(f, snapshot))
            for i, f in enumerate(fills)]
    stmt = insert(household_trades).values(rows).on_conflict_do_nothing().returning(household_trades.c.seq)
    return len((await uow.session.execute(stmt)).all())


async def latest_snapshot(uow: UnitOfWork, tenant_id: str, account_id: str) -> AccountSnapshot | None:
    """The account's newest snapshot the optimizer has seen (for fills not from a proposal)."""
    row = (await uow.session.execute(
        select(proposals.c.snapshot).where(proposals.c.tenant_id == tenant_id,
                                           proposals.c.account_id == account_id)
        .order_by(proposals.c.created_at.desc()).limit(1))).first()
    return AccountSnapshot.model_validate(row.snapshot) if row is not None else None


async def recent_trades(session: Any, tenant_id: str, snapshot: AccountSnapshot) -> list[HouseholdTrade]:
    """The trades of the snapshot's household (or account, if it has none) in the 30 days up to
    the snapshot's date, each distinct trade once, in a stable order."""
    day = snapshot.as_of.date()  # the trade date the optimizer counts the window from
    who = [household_trades.c.account_id == snapshot.account_id]
    if snapshot.household_id:
        who.append(household_trades.c.household_id == snapshot.household_id)
    t = household_trades.c
    q = (select(t.account_id, t.symbol, t.side, t.trade_date, t.realized_loss).distinct()
         .where(t.tenant_id == tenant_id, or_(*who),
                t.trade_date >= day - timedelta(days=WASH_WINDOW_DAYS), t.trade_date <= day))
    rows: Sequence[Row[Any]] = (await session.execute(q)).all()
    return [HouseholdTrade(account_id=r.account_id, symbol=r.symbol, side=r.side, trade_date=r.trade_date,
                           realized_loss=r.realized_loss) for r in rows]


async def executions_missing(session: Any, tenant_id: str, snapshot: AccountSnapshot) -> list[str]:
    """Executions of the snapshot's account recorded here since the account's latest proposal (of
    any outcome; at most `EXECUTIONS_CHECK_DAYS` back) that the snapshot says its book does not
    hold (`applied_executions`): solving it would trade on holdings and cash those fills changed.

    Only those since the latest proposal: an execution the drift monitor never applies (fills of
    an account it did not know yet, a fill it refused) makes one drift fail and is not held
    against the next, so the two books' disagreement costs one refusal, not every drift of the
    account (review, ninth session). Empty when the snapshot does not state its executions (a
    what-if, an older producer, an account with too many to list)."""
    if snapshot.applied_executions is None:
        return []
    latest = (await session.execute(select(func.max(proposals.c.created_at)).where(
        proposals.c.tenant_id == tenant_id, proposals.c.account_id == snapshot.account_id))).scalar()
    since = datetime.now(UTC) - timedelta(days=EXECUTIONS_CHECK_DAYS)
    if latest is not None and latest > since:
        since = latest
    t = household_trades.c
    rows = await session.execute(select(t.execution_id).distinct().where(
        t.tenant_id == tenant_id, t.account_id == snapshot.account_id, t.created_at >= since))
    held = set(snapshot.applied_executions)
    return sorted(r.execution_id for r in rows if r.execution_id not in held)


def _trade_key(t: HouseholdTrade) -> tuple[Any, ...]:
    return (t.trade_date, t.account_id, t.symbol, t.side, t.realized_loss)


def merge_context(base: OptimizerContext | None, trades: Sequence[HouseholdTrade]) -> OptimizerContext | None:
    """`base` (from the drift, or an API caller) with the ledger's trades added (each distinct
    trade once, ordered); None when both are empty (the snapshot alone is solved)."""
    if base is None and not trades:
        return None
    base = base or OptimizerContext()
    if not trades:
        return base
    merged = {_trade_key(t): t for t in [*base.recent_trades, *trades]}
    return base.model_copy(update={"recent_trades": [merged[k] for k in sorted(merged)]})


async def context_for(session: Any, tenant_id: str, snapshot: AccountSnapshot,
                      base: OptimizerContext | None) -> OptimizerContext | None:
    """The context to solve `snapshot` with: `base` plus the tenant's reference data of the
    snapshot's symbols (`reference.merge_reference`) and the household's recent trades."""
    base = await reference.with_reference(session, tenant_id, [snapshot], base)
    return merge_context(base, await recent_trades(session, tenant_id, snapshot))


async def household_recent_trades(session: Any, tenant_id: str, household_id: str,
                                  snapshots: Sequence[AccountSnapshot]) -> list[HouseholdTrade]:
    """The trades of a household (any of `snapshots`' accounts, or recorded under
    `household_id`) in the 30 days up to the latest snapshot's date, each distinct trade once.
    The window runs from the earliest snapshot's date, so every account's own window is covered
    (the library keeps, per account, the trades of its own window)."""
    days = [s.as_of.date() for s in snapshots]
    ids = sorted({s.account_id for s in snapshots})
    t = household_trades.c
    q = (select(t.account_id, t.symbol, t.side, t.trade_date, t.realized_loss).distinct()
         .where(t.tenant_id == tenant_id, or_(t.household_id == household_id, t.account_id.in_(ids)),
                t.trade_date >= min(days) - timedelta(days=WASH_WINDOW_DAYS), t.trade_date <= max(days)))
    rows: Sequence[Row[Any]] = (await session.execute(q)).all()
    return [HouseholdTrade(account_id=r.account_id, symbol=r.symbol, side=r.side, trade_date=r.trade_date,
                           realized_loss=r.realized_loss) for r in rows]


async def household_context_for(session: Any, tenant_id: str, household_id: str,
                                snapshots: Sequence[AccountSnapshot],
                                base: OptimizerContext | None) -> OptimizerContext | None:
    """The context to solve a household with: `base` plus the tenant's reference data of every
    snapshot's symbols and every account's recent trades."""
    base = await reference.with_reference(session, tenant_id, snapshots, base)
    return merge_context(base, await household_recent_trades(session, tenant_id, household_id, snapshots))
