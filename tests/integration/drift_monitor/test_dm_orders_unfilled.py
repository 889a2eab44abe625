"""drift-monitor and the OMS's reports of orders that will never fill (trades.unfilled.v1), against
real PostgreSQL and Kafka: the executing account re-arms (nothing in the book moves), a report
that overtakes its approval keeps the account from waiting in "executing" for good, a report id
counts once, and a report for an unknown account is dead-lettered with the reason."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from tests.integration.drift_monitor.test_drift_monitor import (
    T0,
    dead_letter,
    drifting_account,
    drifts_in_outbox,
    processed,
    send,
    svc,  # noqa: F401  (module fixture)
    tenant,
    tick,
    wait_for,
)
from tests.support import auth
from trimtab.drift_monitor.models import accounts, drifts, unfilled_reports
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import OrdersUnfilled, RebalanceDecided, UnfilledOrder, proposal_id_for

pytestmark = pytest.mark.integration
D = Decimal

#: What the account's book is (the API's view without the drift state and the row's bookkeeping):
#: a report must leave it as it was.
BOOK_KEYS = ("cash_usd", "cash_reserve_usd", "lots", "positions", "last_rebalanced_at")


def unfilled(account_id: str, proposal_id: uuid.UUID, report_id: str | None = None) -> OrdersUnfilled:
    return OrdersUnfilled(
        report_id=report_id or f"R-{uuid.uuid4().hex[:8]}", proposal_id=proposal_id, account_id=account_id,
        orders=[UnfilledOrder(client_order_id=f"{proposal_id}/AAA/sell", symbol="AAA", side="sell",
                              unfilled_shares=D(10), status="rejected", reason="account restricted at the broker")],
        reported_at=datetime(2024, 1, 3, 15, tzinfo=UTC))


async def decide(app, producer, t: str, account_id: str, proposal_id: uuid.UUID,  # type: ignore[no-untyped-def]
                 decision: str = "approved") -> Envelope:
    env = Envelope.new(RebalanceDecided(proposal_id=proposal_id, account_id=account_id, decision=decision,
                                        decided_by="advisor@t", automatic=False, decided_at=T0),
                       producer="test", tenant_id=t)
    await send(producer, env, account_id)
    await processed(app, env)
    return env


async def report(app, producer, t: str, r: OrdersUnfilled) -> Envelope:  # type: ignore[no-untyped-def]
    env = Envelope.new(r, producer="oms", tenant_id=t)
    await send(producer, env, r.account_id)
    await processed(app, env)
    return env


async def account_row(app, t: str, account_id: str):  # type: ignore[no-untyped-def]
    async with app.state.runtime.sessionmaker() as s:
        return (await s.execute(select(accounts).where(
            accounts.c.tenant_id == t, accounts.c.account_id == account_id))).one()


async def drift_status(app, t: str, drift_id: str) -> str:  # type: ignore[no-untyped-def]
    async with app.state.runtime.sessionmaker() as s:
        return (await s.execute(select(drifts.c.status).where(  # type: ignore[no-any-return]
            drifts.c.tenant_id == t, drifts.c.drift_id == uuid.UUID(drift_id)))).scalar_one()


async def reports_of(app, t: str):  # type: ignore[no-untyped-def]
    async with app.state.runtime.sessionmaker() as s:
        return (await s.execute(select(unfilled_reports).where(unfilled_reports.c.tenant_id == t)
                                .order_by(unfilled_reports.c.recorded_at))).all()


async def test_an_unfilled_report_of_the_executing_proposal_rearms_the_account(svc):  # noqa: F811
    app, client, producer = svc
    t = tenant()
    pending, proposal = await drifting_account(app, client, producer, t, "U1")
    drift_id = pending["pending_drift_id"]
    await decide(app, producer, t, "U1", proposal)
    row = await account_row(app, t, "U1")
    assert (row.drift_state, row.pending_proposal_id) == ("executing", proposal)
    executing = (await client.get("/v1/accounts/U1", headers=auth(t))).json()

    # A report of another proposal (an older approval's, say) releases nothing; it is recorded.
    other = await report(app, producer, t, unfilled("U1", uuid.uuid4()))
    assert (await account_row(app, t, "U1")).drift_state == "executing"
    assert [r.event_id for r in await reports_of(app, t)] == [other.event_id]

    # The OMS rejects the executing proposal's orders: the account re-arms, nothing is traded.
    before = datetime.now(UTC)
    env = await report(app, producer, t, unfilled("U1", proposal, "R-U1-1"))
    row = await account_row(app, t, "U1")
    assert row.drift_state == "armed"
    assert row.pending_drift_id is None and row.pending_proposal_id is None
    assert row.rearmed_at is not None and row.rearmed_at >= before  # the quiet interval starts now
    after = (await client.get("/v1/accounts/U1", headers=auth(t))).json()
    assert {k: after[k] for k in BOOK_KEYS} == {k: executing[k] for k in BOOK_KEYS}
    assert after["revision"] > executing["revision"]  # the engine's sync sees the new state
    assert await drift_status(app, t, drift_id) == "unfilled"
    recorded = await reports_of(app, t)
    assert [(r.report_id, r.proposal_id, r.event_id, r.orders) for r in recorded][1:] == [
        ("R-U1-1", proposal, env.event_id, 1)]

    # Still out of band (quiet interval 0 in these tests): the next tick raises the next drift.
    await tick(app, producer, t, "AAA", "14.5", 2)
    assert await drifts_in_outbox(app, t, "U1") == 2
    again = (await client.get("/v1/accounts/U1", headers=auth(t))).json()
    assert again["drift_state"] == "pending" and again["pending_drift_id"] != drift_id


async def test_an_unfilled_report_before_its_approval_does_not_leave_the_account_executing(svc):  # noqa: F811
    """rebalance.decided.v1 and trades.unfilled.v1 are different topics: a fast OMS's refusal can
    overtake the approval it answers. The late approval must not park the account in
    "executing" waiting for fills that will never come."""
    app, client, producer = svc
    t = tenant()
    pending, proposal = await drifting_account(app, client, producer, t, "U2")
    drift_id = pending["pending_drift_id"]

    await report(app, producer, t, unfilled("U2", proposal))
    # Recorded; the account waits for the approval (its drift is still being decided).
    row = await account_row(app, t, "U2")
    assert row.drift_state == "pending" and str(row.pending_drift_id) == drift_id
    assert len(await reports_of(app, t)) == 1

    before = datetime.now(UTC)
    await decide(app, producer, t, "U2", proposal)
    row = await account_row(app, t, "U2")
    assert row.drift_state == "armed", row.drift_state
    assert row.pending_drift_id is None and row.pending_proposal_id is None
    assert row.rearmed_at is not None and row.rearmed_at >= before
    assert await drift_status(app, t, drift_id) == "unfilled"
    after = (await client.get("/v1/accounts/U2", headers=auth(t))).json()
    assert {k: after[k] for k in BOOK_KEYS} == {k: pending[k] for k in BOOK_KEYS}

    await tick(app, producer, t, "AAA", "14.5", 2)
    assert await drifts_in_outbox(app, t, "U2") == 2


async def test_a_report_id_counts_once(svc):  # noqa: F811
    app, client, producer = svc
    t = tenant()
    _, first = await drifting_account(app, client, producer, t, "U3")
    await decide(app, producer, t, "U3", first)
    r = unfilled("U3", first, "R-U3")
    env = await report(app, producer, t, r)
    assert (await account_row(app, t, "U3")).drift_state == "armed"

    # The next drift's proposal is approved and executing ...
    await tick(app, producer, t, "AAA", "14.5", 2)
    drift_id = (await account_row(app, t, "U3")).pending_drift_id
    second = proposal_id_for(t, drift_id)
    await decide(app, producer, t, "U3", second)
    assert (await account_row(app, t, "U3")).drift_state == "executing"

    # ... when the report comes again: the same event (dropped by the consumer) ...
    consumer = app.state.runtime.consumers[0]
    dups = consumer.stats.duplicates
    await send(producer, env, "U3")

    async def redelivery_absorbed() -> bool:
        return consumer.stats.duplicates > dups

    await wait_for(redelivery_absorbed)
    # ... and the same report again under a new event id (a producer retry): counted already,
    # nothing changes.
    again = await report(app, producer, t, r)
    row = await account_row(app, t, "U3")
    assert (row.drift_state, row.pending_drift_id, row.pending_proposal_id) == ("executing", drift_id, second)
    assert await drift_status(app, t, str(drift_id)) == "approved"
    assert [(x.report_id, x.proposal_id, x.event_id) for x in await reports_of(app, t)] == [
        ("R-U3", first, env.event_id)]
    assert again.event_id != env.event_id
    # A report id is unique per proposal only (an OMS numbering reports per account or per day
    # reuses them; found by review: the account stayed executing for good): the same id about
    # the executing proposal is a new report, and re-arms it.
    await report(app, producer, t, r.model_copy(update={"proposal_id": second}))
    row = await account_row(app, t, "U3")
    assert (row.drift_state, row.pending_drift_id, row.pending_proposal_id) == ("armed", None, None)
    assert await drift_status(app, t, str(drift_id)) == "unfilled"


async def test_an_unfilled_report_for_an_unknown_account_is_dead_lettered(svc):  # noqa: F811
    app, _, producer = svc
    t = tenant()
    env = Envelope.new(unfilled("GHOST", uuid.uuid4()), producer="oms", tenant_id=t)
    await send(producer, env, "GHOST")
    row = await dead_letter(app, env.event_id)
    assert row is not None, "the report was not dead-lettered"
    assert f"unknown account {t}/GHOST" in row.error and row.topic == "trades.unfilled.v1", row
    assert row.tenant_id == t
    assert await reports_of(app, t) == []
