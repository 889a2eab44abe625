"""Application services of the optimizer: proposals stored, advanced and decided in one unit of work.

Handlers (events), the API (advisors), the TTL sweep and price-move expiry (prices.py) all
change proposals through these functions, so the lifecycle rules (domain/lifecycle.py) and the
events a decision emits are the same whoever decides. Every function works inside a caller's
`UnitOfWork` and never commits: a handler's consumer commits, the API and the sweep commit
themselves. Before any automatic decision, and before an approval, the proposal's prices are
checked: a proposal whose latest known price moved more than `max_price_move` since its
snapshot expires instead (see prices.py).

Envelopes: an event caused by a consumed event is `env.caused(...)`; a decision taken later (an
advisor, the TTL) continues the proposal's chain: the stored correlation id, and causation = the
proposal's own `RebalanceProposed`, so the audit record shows one correlation id from tick to trade.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Row, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert

from trimtab.shared.envelope import Envelope, utcnow
from trimtab.shared.events import (  # noqa: F401  (proposal_id_for: the optimizer's name for it)
    AccountSnapshot,
    DriftDetected,
    Fill,
    Order,
    OrdersUnfilled,
    RebalanceDecided,
    RebalanceProposed,
    TradesApproved,
    UnfilledOrder,
    proposal_id_for,
)
from trimtab.shared.outbox import UnitOfWork

from . import metrics as opt_metrics
from . import prices
from .domain import lifecycle
from .domain.lifecycle import Decision, Lifecycle, State
from .domain.orders import (
    accept_unfilled,
    execution_outcome,
    filled_shares,
    unfilled_shares,
    with_client_order_ids,
)
from .engine import Failure
from .models import OPEN_STATES, proposals

log = logging.getLogger(__name__)
PRODUCER = "optimizer"

EnvelopeFactory = Callable[[BaseModel], Envelope]

#: `decided_by` of the expiries this module decides on its own: a proposal superseded by a newer
#: one of its account (the drift monitor ignores these: its pending drift is the newer one's),
#: and one whose sells the household's trades since the solve made wash sales.
SUPERSEDED = f"{PRODUCER}:superseded"
ACCOUNT_TRADED = f"{PRODUCER}:account-traded"
HOUSEHOLD_TRADES = f"{PRODUCER}:household-trades"
#: decided_by of the account's open proposals expired when Trimtab (a supervisor, or the orders'
#: time in force) ended an approval the OMS had not reported on (`declare_unfilled`).
EXECUTION_ENDED = f"{PRODUCER}:execution-ended"
#: The states in which a proposal's orders went to the OMS and are not all filled (or reported
#: unfilled) yet.
AWAITING_EXECUTION = ("approved", "overridden")


class UnfilledReportRefused(Exception):
    """An OMS unfilled report that cannot apply to the proposal it names (dead-lettered)."""


def caused_by(env: Envelope) -> EnvelopeFactory:
    return lambda payload: env.caused(payload, producer=PRODUCER)


def continuing(row: Row[Any]) -> EnvelopeFactory:
    """Envelopes for a decision taken outside any event: the proposal's chain continues."""

    def make(payload: BaseModel) -> Envelope:
        env = Envelope.new(payload, producer=PRODUCER, tenant_id=row.tenant_id,
                           correlation_id=row.correlation_id)
        return env.model_copy(update={"causation_id": row.proposed_event_id})

    return make


def lifecycle_of(row: Row[Any]) -> Lifecycle:
    return Lifecycle(State(row.state), has_risk=row.risk is not None,
                     has_explanation=row.explanation is not None)


def risk_flags_of(row: Row[Any]) -> list[str]:
    """The assessment's flags and its limit breaches (a producer that lists a breach only in
    `breaches` still stops an automatic approval), each once, flags first."""
    risk = row.risk or {}
    return list(dict.fromkeys([*(risk.get("flags") or []), *(risk.get("breaches") or [])]))


async def find_by_drift(uow: UnitOfWork, tenant_id: str, drift_id: uuid.UUID) -> Row[Any] | None:
    q = select(proposals).where(proposals.c.tenant_id == tenant_id, proposals.c.drift_id == drift_id)
    return (await uow.session.execute(q)).first()


async def load_for_update(uow: UnitOfWork, tenant_id: str, proposal_id: uuid.UUID) -> Row[Any] | None:
    """The proposal row, locked until the transaction ends: its transitions are serialized."""
    q = (select(proposals)
         .where(proposals.c.tenant_id == tenant_id, proposals.c.proposal_id == proposal_id)
         .with_for_update())
    return (await uow.session.execute(q)).first()


async def _update(uow: UnitOfWork, row: Row[Any], **values: Any) -> Row[Any]:
    stmt = (update(proposals)
            .where(proposals.c.tenant_id == row.tenant_id, proposals.c.proposal_id == row.proposal_id)
            .values(**values, updated_at=utcnow())
            .returning(*proposals.c))
    return (await uow.session.execute(stmt)).one()


# --------------------------------------------------------------------------- creation


async def record_proposal(uow: UnitOfWork, env: Envelope, drift: DriftDetected,
                          proposal: RebalanceProposed, *,
                          max_price_move: Decimal = prices.DEFAULT_MAX_MOVE,
                          execution_window_s: float | None = None) -> Row[Any] | None:
    """Store a solved proposal, publish it, and reject it at once if it has nothing to trade
    (or expire it at once if a price moved too far while it was being solved).
    `execution_window_s`: the time in force its approval will give its orders (None: none).

    Returns None when the drift already has a proposal (a concurrent duplicate lost the race).
    """
    out = env.caused(proposal, producer=PRODUCER)
    stmt = insert(proposals).values(
        tenant_id=env.tenant_id, proposal_id=proposal.proposal_id, account_id=proposal.account_id,
        drift_id=drift.drift_id, advisor_id=drift.advisor_id, state=State.PROPOSED.value,
        automation=drift.snapshot.policy.automation,
        snapshot=drift.snapshot.model_dump(mode="json"), snapshot_hash=proposal.snapshot_hash,
        snapshot_as_of=prices.aware(drift.snapshot.as_of),
        orders=[o.model_dump(mode="json") for o in proposal.orders],
        order_count=len(proposal.orders), payload=proposal.model_dump(mode="json"),
        correlation_id=env.correlation_id, proposed_event_id=out.event_id,
        execution_window_s=execution_window_s or None,
    ).on_conflict_do_nothing().returning(*proposals.c)
    row = (await uow.session.execute(stmt)).first()
    if row is None:
        return None
    uow.publish(out, key=proposal.account_id)
    await supersede_older(uow, row)
    return await _maybe_decide_automatically(uow, row, caused_by(env), max_price_move)


async def _expire_open(uow: UnitOfWork, tenant_id: str, account_id: str, decided_by: str, reason: str,
                       *, keep: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Expire the account's open proposals (but `keep`), locked in id order."""
    q = (select(proposals)
         .where(proposals.c.tenant_id == tenant_id, proposals.c.account_id == account_id,
                proposals.c.state.in_([literal(s, literal_execute=True) for s in OPEN_STATES]))
         .order_by(proposals.c.proposal_id)
         .with_for_update())
    if keep is not None:
        q = q.where(proposals.c.proposal_id != keep)
    gone = []
    for old in (await uow.session.execute(q)).all():
        await apply_decision(uow, old, Decision("expired", decided_by, automatic=True, reason=reason), continuing(old))
        log.info("proposal %s expired (%s): %s", old.proposal_id, decided_by, reason)
        gone.append(old.proposal_id)
    return gone


async def supersede_older(uow: UnitOfWork, row: Row[Any]) -> list[uuid.UUID]:
    """Expire the account's other open proposals: `row` answers a newer drift of the account, so
    they were solved on a book that no longer holds (a manual trade, a partial fill, a cash flow
    re-armed the account). Otherwise both could be approved and the account traded twice."""
    return await _expire_open(uow, row.tenant_id, row.account_id, SUPERSEDED,
                              f"superseded by proposal {row.proposal_id}, made for a newer drift of the account",
                              keep=row.proposal_id)


async def expire_after_trades(uow: UnitOfWork, tenant_id: str, account_id: str, execution_id: str
                              ) -> list[uuid.UUID]:
    """Expire the account's open proposals stored before fills of it came in (a manual trade, or
    another proposal's): they were solved on holdings and cash the fills changed, so approving
    one would trade on a book that is gone (sell lots already sold, buy twice)."""
    return await _expire_open(uow, tenant_id, account_id, ACCOUNT_TRADED,
                              f"the account traded after its snapshot (execution {execution_id})")


async def lock_account(uow: UnitOfWork, row: Row[Any]) -> None:
    """Serialize approvals of one account (manual and automatic) until the transaction ends.
    Taken after the proposal's row lock, never before one, so the two cannot deadlock."""
    key = func.hashtextextended(f"optimizer:approve:{row.tenant_id}:{row.account_id}", 0)
    await uow.session.execute(select(func.pg_advisory_xact_lock(key)))


async def awaiting_execution(uow: UnitOfWork, row: Row[Any]) -> Row[Any] | None:
    """Another proposal of the account approved (or overridden) whose orders are not all filled
    yet: approving `row` too would send the OMS a second set of orders for the same book."""
    q = (select(proposals.c.proposal_id, proposals.c.state, proposals.c.decided_at)
         .where(proposals.c.tenant_id == row.tenant_id, proposals.c.account_id == row.account_id,
                proposals.c.proposal_id != row.proposal_id, proposals.c.state.in_(AWAITING_EXECUTION))
         .order_by(proposals.c.decided_at).limit(1))
    return (await uow.session.execute(q)).first()


async def household_context(uow: UnitOfWork, row: Row[Any]) -> tuple[AccountSnapshot, Any, Any]:
    """The proposal's snapshot, the context it was solved with (None: none recorded), and that
    context plus the household's trades recorded since (what an override or an approval is
    checked against; None when both are empty)."""
    from trimtab.shared.events import OptimizerContext

    from . import household

    snapshot = AccountSnapshot.model_validate(row.snapshot)
    recorded = (row.payload or {}).get("context")
    base = OptimizerContext.model_validate(recorded) if recorded else None
    return snapshot, base, household.merge_context(
        base, await household.recent_trades(uow.session, row.tenant_id, snapshot))


async def expire_if_household_traded(uow: UnitOfWork, row: Row[Any], make_env: EnvelopeFactory
                                     ) -> tuple[Row[Any] | None, list[str]]:
    """Expire an open proposal whose own orders the household's trades recorded since its solve
    break (a buy of a security elsewhere in the household makes its loss sale a wash sale): the
    check an override passes, run on the proposal's orders before any approval. Returns (the
    expired row or None, the violations). Nothing is checked when no trade is new."""
    from .domain.override import OverrideRejected, validate_override

    if not lifecycle_of(row).is_open or not row.orders:
        return None, []
    snapshot, base, merged = await household_context(uow, row)
    if merged is None or (base is not None and merged.recent_trades == base.recent_trades):
        return None, []
    try:
        validate_override(snapshot, [Order.model_validate(o) for o in row.orders],
                          context=merged.model_dump(mode="json"))
    except OverrideRejected as e:
        problems = list(getattr(e, "extra", {}).get("violations") or [str(e)])
        decision = Decision("expired", HOUSEHOLD_TRADES, automatic=True,
                            reason="the household's trades since the solve break its orders: " + "; ".join(problems))
        log.info("proposal %s expired: %s", row.proposal_id, decision.reason)
        return await apply_decision(uow, row, decision, make_env), problems
    return None, []


async def record_failure(uow: UnitOfWork, env: Envelope, drift: DriftDetected,
                         proposal_id: uuid.UUID, failure: Failure) -> Row[Any] | None:
    """Store a proposal that could not be made as `failed`, and tell the drift monitor.

    No `RebalanceProposed` is published (there is nothing to assess or explain); the
    `RebalanceDecided` "rejected" carries the typed reason, so the record shows why and the
    drift monitor re-arms for the account.
    """
    now = utcnow()
    stmt = insert(proposals).values(
        tenant_id=env.tenant_id, proposal_id=proposal_id, account_id=drift.account_id,
        drift_id=drift.drift_id, advisor_id=drift.advisor_id, state=State.FAILED.value,
        automation=drift.snapshot.policy.automation,
        snapshot=drift.snapshot.model_dump(mode="json"), snapshot_hash=None,
        snapshot_as_of=prices.aware(drift.snapshot.as_of), orders=[],
        order_count=0, payload=None, failure_kind=failure.kind,
        failure_constraint=failure.constraint, decision="rejected", decided_by=PRODUCER,
        decision_automatic=True, decision_reason=failure.reason, decided_at=now,
        correlation_id=env.correlation_id, proposed_event_id=env.event_id,
    ).on_conflict_do_nothing().returning(*proposals.c)
    row = (await uow.session.execute(stmt)).first()
    if row is None:
        return None
    await supersede_older(uow, row)
    opt_metrics.decisions.add(1, {"decision": "rejected", "automatic": "true"})
    uow.publish(env.caused(RebalanceDecided(
        proposal_id=proposal_id, account_id=drift.account_id, decision="rejected",
        decided_by=PRODUCER, automatic=True, reason=failure.reason, decided_at=now,
    ), producer=PRODUCER), key=drift.account_id)
    return row


# --------------------------------------------------------------------------- readiness


async def attach_part(uow: UnitOfWork, env: Envelope, row: Row[Any], part: lifecycle.Part,
                      payload: dict[str, Any], *,
                      max_price_move: Decimal = prices.DEFAULT_MAX_MOVE) -> Row[Any]:
    """Attach a risk assessment or explanation; decide automatically if that made it ready."""
    result = lifecycle.attach(lifecycle_of(row), part)
    if result.duplicate:
        log.info("proposal %s: %s already attached; keeping the first", row.proposal_id, part)
        return row
    row = await _update(uow, row, state=result.lifecycle.state.value, **{part: payload})
    if result.became_ready:
        row = await _maybe_decide_automatically(uow, row, caused_by(env), max_price_move)
    return row


async def _maybe_decide_automatically(uow: UnitOfWork, row: Row[Any], make_env: EnvelopeFactory,
                                      max_price_move: Decimal) -> Row[Any]:
    """The policy's decision, if it takes one; first of all, a proposal whose prices moved too
    far since its snapshot expires (checked when it is stored and when it becomes ready, so an
    advisor never sees a stale proposal as ready and the policy never approves one)."""
    if row.order_count > 0:
        expired, _ = await expire_if_prices_moved(uow, row, max_price_move, make_env)
        if expired is not None:
            return expired
    decision = lifecycle.automatic_decision(
        lifecycle_of(row), order_count=row.order_count, automation=row.automation,
        risk_flags=risk_flags_of(row))
    if decision is None:
        return row
    if decision.kind == "approved":
        await lock_account(uow, row)
        blocking = await awaiting_execution(uow, row)
        if blocking is not None:
            log.warning("proposal %s not approved automatically: proposal %s of the account (%s) awaits "
                        "execution; left to the advisor", row.proposal_id, blocking.proposal_id, blocking.state)
            return row
        expired, _ = await expire_if_household_traded(uow, row, make_env)
        if expired is not None:
            return expired
    return await apply_decision(uow, row, decision, make_env)


# --------------------------------------------------------------------------- decisions


async def apply_decision(uow: UnitOfWork, row: Row[Any], decision: Decision,
                         make_env: EnvelopeFactory, now: datetime | None = None,
                         orders: Sequence[Order] | None = None) -> Row[Any]:
    """Move the proposal to the decision's state and publish RebalanceDecided (+ TradesApproved).

    An override carries the advisor's `orders` (validated by the caller): they replace the
    proposal's and are the ones approved for trading.
    Raises `lifecycle.TransitionError` if the proposal cannot take this decision now.
    """
    new = lifecycle.decide(lifecycle_of(row), decision)
    now = now or utcnow()
    values: dict[str, Any] = dict(
        state=new.state.value, decision=decision.kind, decided_by=decision.decided_by,
        decision_automatic=decision.automatic, decision_reason=decision.reason, decided_at=now)
    approved: list[Order] = []
    execute_by = None
    if decision.kind in ("approved", "overridden") and row.execution_window_s:
        execute_by = now + timedelta(seconds=row.execution_window_s)
        values["execute_by"] = execute_by
    if decision.kind == "approved":
        approved = with_client_order_ids(row.proposal_id, [Order.model_validate(o) for o in row.orders])
        values["orders"] = [o.model_dump(mode="json") for o in approved]
    elif decision.kind == "overridden":
        if not orders:  # none would be published: the drift monitor would wait for trades for good
            raise ValueError("an override carries its orders")
        approved = with_client_order_ids(row.proposal_id, orders)
        values["orders"] = [o.model_dump(mode="json") for o in approved]
    row = await _update(uow, row, **values)
    opt_metrics.decisions.add(1, {"decision": decision.kind, "automatic": str(bool(decision.automatic)).lower()})
    uow.publish(make_env(RebalanceDecided(
        proposal_id=row.proposal_id, account_id=row.account_id, decision=decision.kind,
        decided_by=decision.decided_by, automatic=decision.automatic, reason=decision.reason,
        decided_at=now)), key=row.account_id)
    if decision.kind in ("approved", "overridden") and approved:
        uow.publish(make_env(TradesApproved(
            proposal_id=row.proposal_id, account_id=row.account_id,
            approved_by=decision.decided_by, orders=approved,
            priced_as_of=(row.snapshot or {}).get("as_of"), execute_by=execute_by)), key=row.account_id)
    return row


async def expire_stale(uow: UnitOfWork, *, ttl_s: float, now: datetime | None = None,
                       limit: int = 100) -> list[uuid.UUID]:
    """Expire open proposals created more than `ttl_s` ago (all tenants); returns their ids.

    SKIP LOCKED: a proposal being decided right now is left to that decision, and two replicas
    sweeping at once split the work instead of waiting on each other.
    """
    now = now or utcnow()
    q = (select(proposals)
         .where(proposals.c.state.in_([s.value for s in lifecycle.OPEN]),
                proposals.c.created_at < now - timedelta(seconds=ttl_s))
         .order_by(proposals.c.created_at).limit(limit)
         .with_for_update(skip_locked=True))
    expired = []
    for row in (await uow.session.execute(q)).all():
        decision = Decision("expired", f"{PRODUCER}:ttl", automatic=True,
                            reason=f"not decided within {ttl_s:g} s")
        await apply_decision(uow, row, decision, continuing(row), now)
        expired.append(row.proposal_id)
    return expired


async def open_queue(uow: UnitOfWork) -> list[tuple[str, str, int, datetime]]:
    """(tenant, state, how many, the oldest's creation time) of the open proposals, all tenants:
    what the queue gauges export (`metrics.QueueStats`). One scan of the open-proposals index."""
    q = (select(proposals.c.tenant_id, proposals.c.state, func.count(), func.min(proposals.c.created_at))
         .where(proposals.c.state.in_([literal(s, literal_execute=True) for s in OPEN_STATES]))
         .group_by(proposals.c.tenant_id, proposals.c.state))
    return [(r[0], r[1], int(r[2]), r[3]) for r in (await uow.session.execute(q)).all()]


async def awaiting_queue(uow: UnitOfWork) -> list[tuple[str, int, datetime]]:
    """(tenant, how many, the oldest's decision time) of the approvals whose orders the OMS has not
    all filled or reported unfilled, all tenants (`metrics.QueueStats.awaiting`). One scan of the
    partial index of those approvals."""
    q = (select(proposals.c.tenant_id, func.count(), func.min(proposals.c.decided_at))
         .where(proposals.c.state.in_([literal(s, literal_execute=True) for s in AWAITING_EXECUTION]))
         .group_by(proposals.c.tenant_id))
    return [(r[0], int(r[1]), r[2]) for r in (await uow.session.execute(q)).all()]


async def expire_if_prices_moved(
    uow: UnitOfWork, row: Row[Any], max_price_move: Decimal, make_env: EnvelopeFactory,
    orders: Sequence[Order] | None = None,
) -> tuple[Row[Any] | None, list[prices.PriceMove]]:
    """Expire an open proposal if the latest known price of one of its ordered symbols moved
    more than `max_price_move` since the snapshot; returns (the expired row or None, the moves).

    `orders`: the orders about to be approved, if not the proposal's own (an override). The
    caller holds the proposal's row lock; a limit of 0 checks nothing.
    """
    if not lifecycle_of(row).is_open or max_price_move <= 0:
        return None, []
    dumped = None if orders is None else [o.model_dump(mode="json") for o in orders]
    moves = await prices.moves_of(uow.session, row, max_price_move, dumped)
    decision = prices.expiry_decision(moves, max_price_move)
    if decision is None:
        return None, []
    log.info("proposal %s expired: %s", row.proposal_id, decision.reason)
    return await apply_decision(uow, row, decision, make_env), moves


async def expire_for_ticks(uow: UnitOfWork, row: Row[Any], quotes: dict[str, prices.Quote],
                           max_price_move: Decimal, causes: dict[str, Envelope]) -> Row[Any] | None:
    """Expire an open proposal (locked by the caller) if one of `quotes` (this tenant's newest
    prices of a tick batch, by symbol) moved beyond the limit since its snapshot. The decision
    continues the proposal's chain; its causation is the tick of the largest move."""
    moves = prices.moves_beyond(row.orders, quotes, prices.snapshot_as_of(row), max_price_move,
                                prices.priced_at(row))
    decision = prices.expiry_decision(moves, max_price_move)
    if decision is None or not lifecycle_of(row).is_open:
        return None
    tick = causes[moves[0].symbol]

    def make(payload: BaseModel) -> Envelope:
        env = continuing(row)(payload)
        # Caused by the tick, in the tick's trace: ticks are handled in runs under a span that
        # only links them, so the current span's trace would start a new one (one trace per tick).
        return env.model_copy(update={"causation_id": tick.event_id, "trace": dict(tick.trace)})

    log.info("proposal %s expired: %s", row.proposal_id, decision.reason)
    return await apply_decision(uow, row, decision, make)


# --------------------------------------------------------------------------- execution


def _unfilled_of(row: Row[Any]) -> list[UnfilledOrder]:
    return _unfilled_of_dicts(list(row.unfilled or []))


def _ended_state(row: Row[Any], fills: list[Fill], unfilled: list[UnfilledOrder]) -> str | None:
    """The state the approval ends in with these fills and unfilled reports (None: still open)."""
    current = lifecycle_of(row)
    if not current.is_executable:
        return None
    outcome = execution_outcome([Order.model_validate(o) for o in row.orders], fills, unfilled)
    return None if outcome is None else lifecycle.execute(current, outcome).state.value


def _fills_of(known: list[dict[str, Any]]) -> list[Fill]:
    return [Fill.model_validate({k: v for k, v in f.items() if k != "execution_id"}) for f in known]


async def record_fills(uow: UnitOfWork, row: Row[Any], execution_id: str,
                       fills: Sequence[Fill]) -> Row[Any]:
    """Keep the OMS's fills; an approved (or overridden) proposal whose orders are all filled is
    executed (or `unfilled`, when the OMS reported the rest of them as never to be filled).

    An execution report seen before (same execution id) is not counted twice.
    """
    known = list(row.fills or [])
    if any(f.get("execution_id") == execution_id for f in known):
        return row
    known += [{"execution_id": execution_id, **f.model_dump(mode="json")} for f in fills]
    values: dict[str, Any] = {"fills": known}
    if row.state == State.UNFILLED.value:
        # Orders declared dead (by the OMS, or by a supervisor who ended the approval) traded
        # after all: the account may have a second approval's orders at the OMS by now. The fills
        # are kept (and reach the book and the wash-sale ledger); a person must look.
        opt_metrics.fills_after_unfilled.add(len(fills))
        log.error("proposal %s ended unfilled, yet execution %s fills %d order(s) of it: check the account's "
                  "orders at the OMS", row.proposal_id, execution_id, len(fills))
    ended = _ended_state(row, _fills_of(known), _unfilled_of(row))
    if ended is not None:
        values["state"] = ended
    return await _update(uow, row, **values)


async def record_unfilled(uow: UnitOfWork, row: Row[Any], report: OrdersUnfilled) -> Row[Any]:
    """Keep the OMS's report of orders it will never fill; once every order of the approval is
    filled or reported so, the proposal is `unfilled` (or `executed`, if fills cover it all) and
    the account's next proposal may be approved.

    A report seen before (same report id) changes nothing. Raises `UnfilledReportRefused` for a
    report about a proposal never approved, an order the approval does not hold, or more shares
    than the order has."""
    known = list(row.unfilled or [])
    if any(u.get("report_id") == report.report_id for u in known):
        return row
    if row.state not in (*AWAITING_EXECUTION, State.EXECUTED.value, State.UNFILLED.value):
        raise UnfilledReportRefused(
            f"proposal {row.proposal_id} is {row.state}: its orders never went to the OMS")
    try:
        lines = accept_unfilled([Order.model_validate(o) for o in row.orders], _unfilled_of(row), report.orders,
                                _fills_of(list(row.fills or [])))
    except ValueError as e:
        raise UnfilledReportRefused(f"unfilled report {report.report_id}: {e}") from None
    if len(lines) < len(report.orders) or any(a.unfilled_shares != b.unfilled_shares
                                              for a, b in zip(lines, report.orders, strict=False)):
        log.warning("proposal %s: unfilled report %s overlaps earlier reports; only what they left counts "
                    "(%d of %d lines)", row.proposal_id, report.report_id, len(lines), len(report.orders))
    known += [{"report_id": report.report_id, "reported_at": report.reported_at.isoformat(),
               **u.model_dump(mode="json")} for u in lines]
    values: dict[str, Any] = {"unfilled": known}
    ended = _ended_state(row, _fills_of(list(row.fills or [])), _unfilled_of_dicts(known))
    if ended is not None:
        values["state"] = ended
    opt_metrics.unfilled_orders.add(len(lines))
    return await _update(uow, row, **values)


async def declare_unfilled(uow: UnitOfWork, row: Row[Any], *, report_id: str, status: str,
                           reason: str, now: datetime | None = None) -> Row[Any]:
    """End an approval on Trimtab's side: what is left of each order (its shares less fills and
    earlier reports) is declared unfilled with `status` and `reason`, recorded as a report and
    published on `trades.unfilled.v1` as an OMS report would be (producer `optimizer`), so the
    drift monitor re-arms the account and the audit record holds who ended it and why. The caller
    has locked the row and checked it awaits execution with something left."""
    report = OrdersUnfilled(
        report_id=report_id, proposal_id=row.proposal_id, account_id=row.account_id,
        reported_at=now or utcnow(), orders=[UnfilledOrder(
            client_order_id=o.client_order_id or "", symbol=o.symbol, side=o.side, unfilled_shares=shares,
            status=status, reason=reason[:500]) for o, shares in left_to_execute(row)])
    make = continuing(row)
    row = await record_unfilled(uow, row, report)
    uow.publish(make(report), key=row.account_id)
    # No automatic approval follows on Trimtab's word (review: the sweep's `release_stranded`
    # approved a ready automatic proposal right after): the account's open proposals were solved
    # while these orders may still have been live, and they expire. The drift monitor re-arms
    # the account, and its next drift is proposed (and decided) afresh.
    await _expire_open(uow, row.tenant_id, row.account_id, EXECUTION_ENDED,
                       f"solved while proposal {row.proposal_id}'s orders were at the OMS, whose approval Trimtab "
                       f"ended ({status}) without the OMS's word")
    return row


async def end_overdue(uow: UnitOfWork, *, grace_s: float, now: datetime | None = None,
                      limit: int = 100) -> list[uuid.UUID]:
    """End the approvals still awaiting execution past their time in force (`execute_by`) plus
    `grace_s` (all tenants): a compliant OMS cancelled their orders at execute_by and would have
    reported them; without fills or a report by then, Trimtab declares the rest `expired` and
    the account moves on. The report id is the proposal's own (`deadline:<id>`), so two replicas
    sweeping at once record it once; SKIP LOCKED leaves a row being filled to that transaction.
    Like a supervisor's end, it approves nothing automatically after it (`declare_unfilled`): an
    OMS that ignored the deadline may still be working the orders (its late fills count, and
    alert). An approval partly filled by then is ended the same way, for what is left."""
    now = now or utcnow()
    q = (select(proposals)
         .where(proposals.c.state.in_(AWAITING_EXECUTION), proposals.c.execute_by.isnot(None),
                proposals.c.execute_by < now - timedelta(seconds=grace_s))
         .order_by(proposals.c.execute_by).limit(limit).with_for_update(skip_locked=True))
    ended = []
    for row in (await uow.session.execute(q)).all():
        if not left_to_execute(row):
            continue
        await declare_unfilled(
            uow, row, report_id=f"deadline:{row.proposal_id}", status="expired", now=now,
            reason=(f"neither filled nor reported by the OMS by the orders' time in force "
                    f"{row.execute_by.isoformat()} plus {grace_s:g} s: declared expired by Trimtab"))
        log.warning("proposal %s of %s: approval ended, its orders past their time in force %s",
                    row.proposal_id, row.account_id, row.execute_by.isoformat())
        opt_metrics.approvals_overdue.add(1)
        ended.append(row.proposal_id)
    return ended


def _unfilled_of_dicts(known: list[dict[str, Any]]) -> list[UnfilledOrder]:
    return [UnfilledOrder.model_validate({k: v for k, v in u.items() if k not in ("report_id", "reported_at")})
            for u in known]


async def release_stranded(uow: UnitOfWork, max_price_move: Decimal = prices.DEFAULT_MAX_MOVE,
                           limit: int = 500) -> list[Row[Any]]:
    """Ready automatic proposals the policy would approve whose account has no approval awaiting
    execution any more: one that became ready while the blocking approval was ending in another
    transaction (the release, `release_waiting`, looked before it was ready; it looked at the
    approval before the release committed). The sweep runs this every pass. Rows another
    transaction holds are skipped (the next pass sees them)."""
    other = proposals.alias("awaiting")
    q = (select(proposals)
         .where(proposals.c.state == State.READY.value, proposals.c.automation == "automatic",
                ~select(other.c.proposal_id).where(
                    other.c.tenant_id == proposals.c.tenant_id, other.c.account_id == proposals.c.account_id,
                    other.c.state.in_(AWAITING_EXECUTION)).exists())
         .order_by(proposals.c.created_at).limit(limit).with_for_update(skip_locked=True))
    return await _decide_ready(uow, q, max_price_move, "by the sweep (its account's approval had ended)",
                               skip_flagged=True)


async def _decide_ready(uow: UnitOfWork, q: Any, max_price_move: Decimal, why: str, *,
                        skip_flagged: bool = False) -> list[Row[Any]]:
    """Let the policy decide each ready row `q` selects (locked); the rows it decided. With
    `skip_flagged`, rows whose risk flags leave them to an advisor are not touched at all (the
    sweep's scan would otherwise re-check their prices every pass)."""
    out = []
    for row in (await uow.session.execute(q)).all():
        if skip_flagged and lifecycle.blocking_flags(risk_flags_of(row)):
            continue  # left to an advisor on purpose
        decided = await _maybe_decide_automatically(uow, row, continuing(row), max_price_move)
        if decided.state != row.state:
            log.info("proposal %s of %s: decided %s %s", row.proposal_id, row.account_id, decided.state, why)
            out.append(decided)
    return out


def left_to_execute(row: Row[Any]) -> list[tuple[Order, Decimal]]:
    """Each approved order with shares neither filled nor reported unfilled, and those shares."""
    orders = [Order.model_validate(o) for o in row.orders]
    done = filled_shares(orders, _fills_of(list(row.fills or [])))
    ended = unfilled_shares(orders, _unfilled_of(row))
    out = []
    for o in orders:
        cid = o.client_order_id or ""
        left = o.shares - done.get(cid, Decimal(0)) - ended.get(cid, Decimal(0))
        if left > 0:
            out.append((o, left))
    return out


async def release_waiting(uow: UnitOfWork, tenant_id: str, account_id: str,
                          max_price_move: Decimal = prices.DEFAULT_MAX_MOVE) -> list[Row[Any]]:
    """The account's approval ended (executed or unfilled): a ready proposal the policy would
    have approved but for it (409 `awaiting_execution`) is decided now, instead of waiting for
    its TTL. Returns the rows decided."""
    q = (select(proposals)
         .where(proposals.c.tenant_id == tenant_id, proposals.c.account_id == account_id,
                proposals.c.state == State.READY.value, proposals.c.automation == "automatic")
         .order_by(proposals.c.created_at).with_for_update())
    return await _decide_ready(uow, q, max_price_move, "once its account's approval ended")
