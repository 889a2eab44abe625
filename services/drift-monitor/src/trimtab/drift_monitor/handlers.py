"""Event handlers of drift-monitor, one per consumed event, each inside the consumer's unit of work.

- `PriceTicked`: store the price, sync the engine (changed rows only), let the engine update and
  screen the holders of the symbol. The candidates are stored (`drift_candidates`, in the tick's
  transaction) and wait for the tick batch to settle (`DRIFT_TICK_SETTLE_MS` after the tenant's
  last tick, at most `DRIFT_TICK_SETTLE_MAX_MS` after the window's first): the ticks of one batch
  reach this service one by one, in partitions of their own, and an account decided on the first
  of them would be priced with the others' old prices (the optimizer then expires that proposal
  on the next tick of the batch: the solve, the risk assessment and the explanation wasted).
  After the window, each stored candidate is decided exactly from the locked database rows
  (firing.py), `DriftDetected` is emitted and the account marked pending. A sweep decides the
  candidates a lost window left stored; the start-up screens every account. A window of 0
  decides inside the tick's transaction (docs/drift-monitor.md).
- `RebalanceDecided`: refusals re-arm a pending account (after a quiet interval); approvals wait
  for fills (or for the OMS's report that the orders will never fill).
- `TradesExecuted`: apply the fills to lots and cash once, then re-arm; the fill time starts the
  policy's minimum interval between rebalances.
- `OrdersUnfilled`: the OMS will never fill (some of) the orders of an approval. Recorded once
  per `report_id` (`unfilled_reports`); a report of the proposal the account is executing re-arms
  it after the quiet interval, nothing in the book moves. A report that overtakes its approval
  (another topic) is found by that approval, which then re-arms instead of waiting for fills.

The shared consumer records each event id with the handler's effects, so a redelivered event is
dropped before it gets here; `executions` also refuses the same execution under a new event id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from sqlalchemy import Table, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from trimtab.shared.consumer import is_transient
from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.events import (
    OrdersUnfilled,
    PriceTicked,
    RebalanceDecided,
    TradesExecuted,
    proposal_id_for,
    topic_of,
)
from trimtab.shared.limits import FUTURE_PRICE_HORIZON_S
from trimtab.shared.outbox import UnitOfWork

from .book import bump, load_books, load_prices, write_lots
from .cache import BookCache
from .domain.ledger import FillLine, LedgerError, LedgerLimits, apply_fills
from .domain.policy import ARMED, EXECUTING, PENDING, Transition, after_decision, after_unfilled
from .firing import fire_due
from .models import (
    CURRENT_XID,
    accounts,
    drift_candidates,
    drifts,
    executions,
    prices,
    unfilled_reports,
)
from .schemas import MAX_PRICE, MAX_SHARES, MAX_USD

log = logging.getLogger(__name__)
tracer = trace.get_tracer("trimtab.drift_monitor")

#: Fills may leave an account only where the API could have put it (schemas.py): a fill past
#: these is dead-lettered with the reason and the book stays as it was.
FILL_LIMITS = LedgerLimits(max_price_usd=MAX_PRICE, max_shares=MAX_SHARES, max_abs_cash_usd=MAX_USD)
_meter = metrics.get_meter("trimtab.drift_monitor")
_candidate_failures = _meter.create_counter(
    "trimtab_drift_candidate_failures", unit="{decision}",
    description="stored drift candidates whose decision failed (each is tried again by the sweep)")
_candidates_abandoned = _meter.create_counter(
    "trimtab_drift_candidates_abandoned", unit="{candidate}",
    description="stored drift candidates given up after DRIFT_CANDIDATE_MAX_ATTEMPTS failed "
                "decisions (recorded as dead letters)")
_unfilled_reports = _meter.create_counter(
    "trimtab_drift_unfilled_reports", unit="{report}",
    description="OMS reports of orders that will never fill (trades.unfilled.v1), by outcome: rearmed "
                "(the account was executing that proposal), early (before its approval: the approval "
                "re-arms), not_pending (another proposal: recorded only), duplicate (report_id seen)")
#: `dead_letters.consumer` of an abandoned drift candidate (not a Kafka consumer: nothing parks).
SETTLE_DEAD_LETTER_CONSUMER = "drift-monitor.settle"
#: `RebalanceDecided.decided_by` of a proposal the optimizer expired because its prices moved.
PRICE_MOVE = "optimizer:price-move"
#: The optimizer expires an account's older open proposals when a newer drift's proposal is
#: stored, and its open proposals when fills of the account come in: decisions about proposals
#: this service no longer waits for (the fills re-armed the account themselves).
NOT_PENDING_EXPIRIES = frozenset({"optimizer:superseded", "optimizer:account-traded"})


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Due:
    """A tenant's window: accounts waiting for its tick batch to settle (their causes and tick
    times are in `drift_candidates`, written with the tick)."""

    accounts: set[str] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0
    task: asyncio.Task[None] | None = None


class DriftHandlers:
    def __init__(self, cache: BookCache, min_interval_s: float, *, settle_s: float = 0.0,
                 settle_max_s: float = 2.0, uow: Callable[[], UnitOfWork] | None = None,
                 max_attempts: int = 5, dead_letters: Table | None = None) -> None:
        self.cache = cache
        #: Failed decisions of one stored candidate before it is given up (`_failed`).
        self.max_attempts = max(1, max_attempts)
        self._dead_letters = dead_letters
        self.min_interval_s = min_interval_s
        self.settle_s = settle_s if uow is not None else 0.0
        self.settle_max_s = max(settle_max_s, self.settle_s)
        self._uow = uow
        self._due: dict[str, _Due] = {}
        self._deciding = 0
        self._sweeper: asyncio.Task[None] | None = None
        #: accounts whose drift was decided after a settle window (tests, metrics)
        self.settled_fired = 0

    async def on_price_ticked(self, env: Envelope, uow: UnitOfWork) -> None:
        tick = env.parse(PriceTicked)
        if tick.price_usd > MAX_PRICE:
            # market-data refuses such a tick (422); one from another producer would overflow the
            # drift totals of the symbol's largest accounts and fail every decision of theirs.
            # Nothing of it is stored; the symbol's later ticks are not held back (park=False).
            raise PermanentEventError(f"price tick {tick.symbol} at {tick.price_usd} USD a share is above "
                                      f"{MAX_PRICE} USD a share, the largest price accepted", park=False)
        tenant, s = env.tenant_id, uow.session
        stmt = pg_insert(prices).values(tenant_id=tenant, symbol=tick.symbol, price_usd=tick.price_usd,
                                        as_of=tick.as_of)
        stored = (await s.execute(stmt.on_conflict_do_update(
            index_elements=["tenant_id", "symbol"],
            set_={"price_usd": stmt.excluded.price_usd, "as_of": stmt.excluded.as_of, "updated_at": _now(),
                  "changed_xid": CURRENT_XID},
            # Ticks can arrive out of order: an older price must not replace a newer one.
            # ... but a stored price dated beyond the future horizon (a far-future tick
            # market-data once accepted) is wrong, not newer: it would freeze the symbol.
            where=or_(prices.c.as_of <= stmt.excluded.as_of,
                      prices.c.as_of > func.now() + timedelta(seconds=FUTURE_PRICE_HORIZON_S)),
        ).returning(prices.c.symbol))).first()
        if stored is None:
            return
        engine = await self.cache.sync(s, tenant)
        self.cache.touch_symbol(tenant, tick.symbol)  # applied before this transaction commits
        now = _now()
        candidates = engine.tick(tick.symbol, float(tick.price_usd), now.timestamp(), self.min_interval_s)
        if self.settle_s > 0:
            if candidates:
                # Durable with the tick: a window lost with this process is found by the sweep.
                stmt = pg_insert(drift_candidates).values([
                    {"tenant_id": tenant, "account_id": a, "tick_as_of": tick.as_of, "cause": env.to_bytes()}
                    for a in sorted(candidates)])
                await s.execute(stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "account_id"],
                    set_={"cause": stmt.excluded.cause,
                          "tick_as_of": func.greatest(drift_candidates.c.tick_as_of, stmt.excluded.tick_as_of)}))
            # Every stored tick, candidates or not, keeps an open window open: another of the
            # batch's symbols is still arriving. Scheduled once the tick has committed.
            uow.after_commit(lambda: self._defer(tenant, candidates))
            return
        if not candidates:
            return
        fired = await self._decide(uow, tenant, dict.fromkeys(candidates, env), tick.as_of)
        log.info("tenant %s: %s on %s -> %d drift(s) of %d candidate(s)", tenant, tick.symbol,
                 tick.price_usd, len(fired), len(candidates))

    # ------------------------------------------------------------------ settle window

    def _defer(self, tenant: str, candidates: list[str]) -> None:
        """After a tick committed: add its candidates to the tenant's window (opening one if
        there are any) and move the window's end."""
        now = time.monotonic()
        due = self._due.get(tenant)
        if due is None:
            if not candidates:
                return
            due = self._due[tenant] = _Due(first=now)
        due.accounts.update(candidates)
        due.last = now
        if due.task is None:
            due.task = asyncio.get_running_loop().create_task(self._settle(tenant), name=f"drift-settle-{tenant}")

    async def _settle(self, tenant: str) -> None:
        """Wait until no tick of `tenant` came for `settle_s` (at most `settle_max_s` from the
        window's first), then decide its candidates. What fails stays in `drift_candidates`
        for the sweep."""
        while True:
            due = self._due[tenant]
            wait = min(due.last + self.settle_s, due.first + self.settle_max_s) - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        del self._due[tenant]
        self._deciding += 1
        try:
            await self.decide_stored(tenant, due.accounts)
        finally:
            self._deciding -= 1

    async def decide_stored(self, tenant: str, account_ids: set[str] | list[str]) -> list[str]:
        """Decide the stored candidates among `account_ids`, all in one transaction; if that
        fails, each in a transaction of its own, so that one account that cannot be decided
        holds back no other (it stays stored, and the sweep tries it again). Returns the
        accounts that fired. Never raises (but on cancellation)."""
        ids = sorted(account_ids)
        try:
            return await self._decide_stored_once(tenant, ids)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("tenant %s: deciding %d drift candidate(s) together failed (%r): one by one",
                        tenant, len(ids), e)
        fired: list[str] = []
        for account_id in ids:
            try:
                fired += await self._decide_stored_once(tenant, [account_id])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await self._failed(tenant, account_id, e)
        return fired

    async def _failed(self, tenant: str, account_id: str, error: Exception) -> None:
        """Count a failed decision on the stored candidate. It stays for the sweep until it has
        failed `max_attempts` times; then it is deleted and recorded in `dead_letters` (GET
        /v1/ops/dead-letters, consumer `drift-monitor.settle`, key `tenant:account`) instead of
        being retried every sweep forever. Nothing is lost with it: the account's book and the
        prices are untouched, and its next tick (or the start-up screen) makes it a candidate
        again. A transient error (`is_transient`: the database away, a deadlock lost) is not
        counted. Never raises (but on cancellation)."""
        assert self._uow is not None
        text = f"{type(error).__name__}: {error}"[:2000]
        _candidate_failures.add(1)
        if is_transient(error):  # the database away, a deadlock lost: not the candidate's fault
            log.warning("tenant %s: drift candidate %s left for the sweep: %s", tenant, account_id, text)
            return
        try:
            async with self._uow() as uow:
                s, c = uow.session, drift_candidates.c
                row = (await s.execute(
                    update(drift_candidates).where(c.tenant_id == tenant, c.account_id == account_id)
                    .values(attempts=c.attempts + 1, last_error=text)
                    .returning(c.attempts, c.cause))).first()
                if row is None:  # decided meanwhile (another replica)
                    return
                if row.attempts < self.max_attempts or self._dead_letters is None:
                    await uow.commit()
                    log.warning("tenant %s: drift candidate %s failed (%d of %d), left for the sweep: %s",
                                tenant, account_id, row.attempts, self.max_attempts, text)
                    return
                await s.execute(delete(drift_candidates).where(c.tenant_id == tenant, c.account_id == account_id))
                try:
                    event_id = Envelope.from_bytes(bytes(row.cause)).event_id
                except Exception:  # noqa: BLE001 - an unreadable cause is a reason to be here
                    event_id = None
                await s.execute(insert(self._dead_letters).values(
                    consumer=SETTLE_DEAD_LETTER_CONSUMER, topic=topic_of("PriceTicked"), partition=-1,
                    offset=-1, key=f"{tenant}:{account_id}", tenant_id=tenant, event_id=event_id,
                    error=f"tenant {tenant}: drift candidate {account_id} abandoned after {row.attempts} "
                          f"failed decisions; last: {text}"))
                await uow.commit()
            _candidates_abandoned.add(1)
            log.error("tenant %s: drift candidate %s abandoned after %d failed decisions (dead letter): %s",
                      tenant, account_id, row.attempts, text)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - counted next time
            log.warning("tenant %s: drift candidate %s failed (%s); counting it failed too: %r",
                        tenant, account_id, text, e)

    async def _decide_stored_once(self, tenant: str, ids: list[str]) -> list[str]:
        assert self._uow is not None
        async with self._uow() as uow:
            rows = (await uow.session.execute(
                delete(drift_candidates).where(drift_candidates.c.tenant_id == tenant,
                                               drift_candidates.c.account_id.in_(ids))
                .returning(drift_candidates.c.account_id, drift_candidates.c.cause,
                           drift_candidates.c.tick_as_of))).all()
            if not rows:  # decided already (another replica, the sweep)
                return []
            causes = {r.account_id: Envelope.from_bytes(bytes(r.cause)) for r in rows}
            fired = await self._decide(uow, tenant, causes, max(r.tick_as_of for r in rows))
            await uow.commit()
        self.settled_fired += len(fired)
        log.info("tenant %s: tick batch settled -> %d drift(s) of %d candidate(s)", tenant, len(fired), len(rows))
        return fired

    async def _decide(self, uow: UnitOfWork, tenant: str, candidates: dict[str, Envelope | None],
                      as_of: datetime | None) -> list[str]:
        """Decide `candidates` (account -> causing event, None for none) from the locked
        database rows, inside `uow`; returns the accounts that fired. `as_of`: the snapshots'
        time (None: the newest stored price's; nothing fires without prices)."""
        s = uow.session
        price_rows = await load_prices(s, tenant)
        if not price_rows:
            return []
        if as_of is None:
            as_of = max(p.as_of for p in price_rows.values())
        books = await load_books(s, tenant, sorted(candidates), for_update=True)
        now = _now()
        by_cause: dict[object, tuple[Envelope | None, dict[str, Any]]] = {}
        for account_id, book in books.items():
            cause = candidates[account_id]
            by_cause.setdefault(cause.event_id if cause else None, (cause, {}))[1][account_id] = book
        fired: list[str] = []
        for cause, group in by_cause.values():
            # In the causing event's trace (a settle window runs outside the tick's span): one
            # trace per tick.
            with tracer.start_as_current_span(
                    "drift-monitor decide", context=extract(cause.trace) if cause else Context(),
                    attributes={"trimtab.tenant_id": tenant, "trimtab.accounts": len(group)}):
                fired += await fire_due(uow, tenant, group, price_rows, now, as_of, self.min_interval_s, cause)
        return fired

    async def sweep_once(self, older_than_s: float) -> int:
        """Decide the stored candidates older than `older_than_s` that no window of this process
        holds: those of a window lost with a process (a crash, a commit whose reply was lost)."""
        assert self._uow is not None
        async with self._uow() as uow:
            rows = (await uow.session.execute(select(drift_candidates.c.tenant_id, drift_candidates.c.account_id)
                    .where(drift_candidates.c.created_at < func.now() - timedelta(seconds=older_than_s))
                    .order_by(drift_candidates.c.tenant_id, drift_candidates.c.account_id).limit(10_000))).all()
        by_tenant: dict[str, list[str]] = {}
        for r in rows:
            due = self._due.get(r.tenant_id)
            if due is None or r.account_id not in due.accounts:
                by_tenant.setdefault(r.tenant_id, []).append(r.account_id)
        fired = 0
        for tenant, ids in by_tenant.items():
            fired += len(await self.decide_stored(tenant, ids))
        if by_tenant:
            log.info("sweep: %d left-over drift candidate(s) decided, %d fired",
                     sum(map(len, by_tenant.values())), fired)
        return fired

    async def _sweep_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sweep_once(older_than_s=self.settle_max_s + every_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next pass tries again
                log.exception("sweeping left-over drift candidates failed")

    def start_sweeper(self, every_s: float = 5.0) -> None:
        if self._uow is not None and self.settle_s > 0 and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(every_s),
                                                                   name="drift-settle-sweep")

    async def screen_all(self) -> int:
        """Start-up: decide every account the engine finds in breach (a breach of a time this
        service was down), and the stored candidates any process left. A tenant that fails is
        logged and skipped: it must not stop the service from starting."""
        if self._uow is None:
            return 0
        fired = 0
        for tenant in self.cache.tenants():
            try:
                due = self.cache.engine(tenant).due_all(time.time(), self.min_interval_s)
                if not due:
                    continue
                async with self._uow() as uow:
                    fired += len(await self._decide(uow, tenant, dict.fromkeys(due), None))
                    await uow.commit()
            except Exception:  # noqa: BLE001
                log.exception("tenant %s: the start-up screen failed; its ticks and the sweep will catch up",
                              tenant)
        if self.settle_s > 0:
            try:
                fired += await self.sweep_once(older_than_s=0)
            except Exception:  # noqa: BLE001
                log.exception("deciding left-over drift candidates at start-up failed")
        return fired

    async def settled(self, timeout_s: float = 30.0) -> None:
        """Wait until no candidates wait for a window and none are being decided (tests)."""
        deadline = time.monotonic() + timeout_s
        while self._due or self._deciding:
            if time.monotonic() > deadline:
                raise TimeoutError(f"drift candidates still waiting: {sorted(self._due)}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Cancel the windows and the sweep and wait for them: what they had not decided stays
        in `drift_candidates` (the next start, or another replica's sweep, decides it)."""
        tasks = [d.task for d in self._due.values() if d.task is not None]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        self._due.clear()
        self._sweeper = None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def on_rebalance_decided(self, env: Envelope, uow: UnitOfWork) -> None:
        d = env.parse(RebalanceDecided)
        tenant, s = env.tenant_id, uow.session
        a = (await s.execute(select(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == d.account_id).with_for_update())).first()
        if a is None:
            log.warning("decision %s for unknown account %s/%s ignored", d.proposal_id, tenant, d.account_id)
            return
        if d.decision == "expired" and d.decided_by in NOT_PENDING_EXPIRIES and not (
                a.drift_state == PENDING and a.pending_drift_id is not None
                and d.proposal_id == proposal_id_for(tenant, a.pending_drift_id)):
            # Not the pending drift's answer (that is a newer proposal): applying it would re-arm
            # the account under the newer proposal, and the next drift would supersede that one
            # in turn. The pending drift's own proposal expired this way (fills that raced its
            # drift) is applied: the account re-arms rather than wait for good.
            log.info("tenant %s: proposal %s of %s expired (%s); nothing to do", tenant, d.proposal_id,
                     d.account_id, d.decided_by)
            return
        t = after_decision(a.drift_state, d.decision)
        approval = d.decision in ("approved", "overridden")
        unfilled = approval and (await s.execute(select(unfilled_reports.c.report_id).where(
            unfilled_reports.c.tenant_id == tenant, unfilled_reports.c.proposal_id == d.proposal_id,
        ).limit(1))).first() is not None
        if a.drift_state == PENDING and a.pending_drift_id is not None:
            await s.execute(update(drifts).where(
                drifts.c.tenant_id == tenant, drifts.c.drift_id == a.pending_drift_id,
            ).values(status="unfilled" if unfilled else d.decision, proposal_id=d.proposal_id,
                     decided_at=d.decided_at))
        if approval and (await s.execute(select(executions.c.execution_id).where(
                executions.c.tenant_id == tenant, executions.c.proposal_id == d.proposal_id).limit(1))).first():
            # rebalance.decided.v1 and trades.executed.v1 are different topics, so nothing orders
            # them: a fast OMS's fills can arrive before the approval. The fills already re-armed
            # the account; moving it to "executing" now would wait forever for fills that came.
            return
        if unfilled:
            # Likewise trades.unfilled.v1: the OMS's report that these orders will never fill
            # came first and was recorded while the account was still pending. "executing" would
            # wait for fills that will not come: a pending account re-arms as the report would
            # have re-armed it (quiet interval, nothing traded); any other state stays.
            if a.drift_state != PENDING or a.pending_drift_id is None or (
                    d.proposal_id != proposal_id_for(tenant, a.pending_drift_id)):
                return  # not the pending drift's proposal (a late approval of an older one)
            t = Transition(ARMED, True)
            log.info("tenant %s: approval of %s for %s came after the OMS reported its orders unfilled: "
                     "re-armed", tenant, d.proposal_id, d.account_id)
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
        if moved and t.rearmed and await self._decide(uow, tenant, {d.account_id: env}, None):
            log.info("tenant %s: %s re-checked after a price-move expiry: drift again", tenant, d.account_id)

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
            new_lots, new_cash = apply_fills(book.lots, cash, fills, FILL_LIMITS)
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

    async def on_orders_unfilled(self, env: Envelope, uow: UnitOfWork) -> None:
        r = env.parse(OrdersUnfilled)
        tenant, s = env.tenant_id, uow.session
        a = (await s.execute(select(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == r.account_id).with_for_update())).first()
        if a is None:
            raise PermanentEventError(f"unfilled report {r.report_id} for unknown account {tenant}/{r.account_id}")
        stored = (await s.execute(pg_insert(unfilled_reports).values(
            tenant_id=tenant, report_id=r.report_id, account_id=r.account_id, proposal_id=r.proposal_id,
            event_id=env.event_id, orders=len(r.orders),
        ).on_conflict_do_nothing(index_elements=["tenant_id", "proposal_id", "report_id"])
            .returning(unfilled_reports.c.report_id))).first()
        if stored is None:
            seen = (await s.execute(select(unfilled_reports.c.event_id).where(
                unfilled_reports.c.tenant_id == tenant, unfilled_reports.c.proposal_id == r.proposal_id,
                unfilled_reports.c.report_id == r.report_id))).first()
            _unfilled_reports.add(1, {"outcome": "duplicate"})
            log.warning("unfilled report %s already recorded (event %s); event %s ignored",
                        r.report_id, seen.event_id if seen else None, env.event_id)
            return
        what = ", ".join(f"{o.side} {o.unfilled_shares} {o.symbol} {o.status}" for o in r.orders)
        t = after_unfilled(a.drift_state, a.pending_proposal_id == r.proposal_id)
        if not t.rearmed:
            early = a.drift_state == PENDING and a.pending_drift_id is not None and (
                r.proposal_id == proposal_id_for(tenant, a.pending_drift_id))
            _unfilled_reports.add(1, {"outcome": "early" if early else "not_pending"})
            if early:  # its approval (rebalance.decided.v1) has not arrived yet: it finds the report
                log.info("tenant %s: OMS report %s on proposal %s of %s (%s) came before its approval; "
                         "recorded for it", tenant, r.report_id, r.proposal_id, r.account_id, what)
            else:
                log.info("tenant %s: OMS report %s on proposal %s of %s (%s) recorded; the account is %s "
                         "(pending proposal %s): nothing to do", tenant, r.report_id, r.proposal_id,
                         r.account_id, what, a.drift_state, a.pending_proposal_id)
            return
        assert a.drift_state == EXECUTING
        # Nothing traded: no lot or cash moves, and `last_rebalanced_at` stays. Wall time, as for a
        # refusal: the quiet interval keeps the same drift from being proposed again at once.
        await s.execute(update(accounts).where(
            accounts.c.tenant_id == tenant, accounts.c.account_id == r.account_id,
        ).values(drift_state=t.state, rearmed_at=_now(), pending_drift_id=None, pending_proposal_id=None,
                 **bump()))
        if a.pending_drift_id is not None:
            await s.execute(update(drifts).where(
                drifts.c.tenant_id == tenant, drifts.c.drift_id == a.pending_drift_id).values(status="unfilled"))
        _unfilled_reports.add(1, {"outcome": "rearmed"})
        log.info("tenant %s: %s re-armed: the OMS will not fill %d order(s) of proposal %s (report %s: %s)",
                 tenant, r.account_id, len(r.orders), r.proposal_id, r.report_id, what)
