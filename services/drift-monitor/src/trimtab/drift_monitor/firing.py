"""Deciding, exactly, whether an account fires now, and emitting `DriftDetected`.

Used by the tick handler (for the engine's candidates) and by API writes that can trigger a rule
on their own (cash flows, withdrawal requests). The caller holds the account rows locked
(`load_books(..., for_update=True)`), so the decision and the state change are atomic.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.envelope import Envelope
from trimtab.shared.events import EXECUTIONS_WINDOW_DAYS, MAX_APPLIED_EXECUTIONS
from trimtab.shared.outbox import UnitOfWork

from .book import Book, bump
from .domain.policy import PENDING, may_fire
from .domain.rules import firing_rules
from .models import accounts, drifts, executions
from .snapshots import Prices, drift_event, drift_for

log = logging.getLogger(__name__)
PRODUCER = "drift-monitor"


def interval_ok(book: Book, now: datetime) -> bool:
    last = book.account.last_rebalanced_at
    return last is None or now - last >= timedelta(days=book.policy.min_interval_days)


def decide(book: Book, price_rows: Prices, now: datetime, quiet_s: float) -> tuple[str | None, str | None]:
    """(rule that fires now, None) or (None, why nothing fires although a rule is breached)."""
    ev = drift_for(book, price_rows)
    if not ev.rules:
        return None, None
    a = book.account
    if a.drift_state != "armed":
        return None, f"drift_state {a.drift_state}"
    if not may_fire(a.drift_state, a.rearmed_at, now, quiet_s):
        return None, "quiet interval after a refusal"
    rules = firing_rules(ev, interval_ok(book, now))
    if not rules:
        return None, f"minimum interval of {book.policy.min_interval_days} day(s) since the last rebalance"
    return rules[0], None


async def applied_executions(s: AsyncSession, tenant: str, account_ids: list[str], now: datetime
                             ) -> dict[str, list[str]]:
    """The executions applied to each account's book in the last `EXECUTIONS_WINDOW_DAYS` days, by
    id: the snapshot states them, so the optimizer can refuse one that misses fills it already
    recorded (this service's trades.executed.v1 consumer behind the optimizer's)."""
    since = now - timedelta(days=EXECUTIONS_WINDOW_DAYS)
    out: dict[str, list[str]] = {}
    rows = await s.execute(select(executions.c.account_id, executions.c.execution_id).where(
        executions.c.tenant_id == tenant, executions.c.account_id.in_(account_ids),
        executions.c.applied_at >= since).order_by(executions.c.account_id, executions.c.execution_id))
    for account_id, execution_id in rows:
        out.setdefault(account_id, []).append(execution_id)
    return out


def stated_executions(ids: list[str]) -> list[str] | None:
    """What a snapshot states: the ids, or None (not stated, not checked) past the contract's
    bound (an account with thousands of executions in the window must still get its drift)."""
    return ids if len(ids) <= MAX_APPLIED_EXECUTIONS else None


async def fire_due(uow: UnitOfWork, tenant: str, books: Mapping[str, Book], price_rows: Prices, now: datetime,
                   as_of: datetime, quiet_s: float, cause: Envelope | None) -> list[str]:
    """Emit `DriftDetected` for every locked account in `books` that fires now; mark it pending."""
    s = uow.session
    due = [(account_id, book, rule) for account_id, book in sorted(books.items())
           if (rule := decide(book, price_rows, now, quiet_s)[0]) is not None]
    if not due:
        return []
    applied = await applied_executions(s, tenant, [a for a, _, _ in due], now)
    fired = []
    for account_id, book, rule in due:
        ev = drift_for(book, price_rows)
        drift_id = uuid.uuid4()
        event = drift_event(book, price_rows, ev, rule, as_of, drift_id,
                            stated_executions(applied.get(account_id, [])))
        env = (cause.caused(event, producer=PRODUCER) if cause is not None
               else Envelope.new(event, producer=PRODUCER, tenant_id=tenant))
        uow.publish(env, key=account_id)
        fired.append({
            "tenant_id": tenant, "drift_id": drift_id, "account_id": account_id, "as_of": as_of,
            "correlation_id": env.correlation_id, "total_value_usd": event.total_value_usd,
            "max_abs_deviation": event.max_abs_deviation, "rule": rule, "breached": event.breached,
        })
    if not fired:
        return []
    await s.execute(insert(drifts), fired)
    mark = update(accounts).where(
        accounts.c.tenant_id == tenant, accounts.c.account_id == bindparam("b_account"),
    ).values(drift_state=PENDING, pending_drift_id=bindparam("b_drift"), pending_proposal_id=None, **bump())
    await s.execute(mark, [{"b_account": f["account_id"], "b_drift": f["drift_id"]} for f in fired])
    return [f["account_id"] for f in fired]
