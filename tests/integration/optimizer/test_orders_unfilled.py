"""The OMS reports orders it will never fill (`trades.unfilled.v1`): the approval ends.

Before, an approval whose orders the OMS rejected blocked the account for good: every later
approval was refused (409 `awaiting_execution`) and an automatic one waited in `ready` until its
TTL. Now fills and unfilled reports together end the approval (`executed` or `unfilled`), the
account's next proposal may be approved, a ready automatic one is approved at once, and a report
that does not fit what was approved is dead-lettered with the reason, the proposal untouched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.integration.optimizer.snapshots import drifted
from tests.integration.optimizer.test_one_account_one_approval import approved_events, ready
from tests.integration.optimizer.test_optimizer_service import (
    drift_env,
    events_of,
    explanation_of,
    risk_of,
    send,
    wait_state,
)
from tests.support import auth
from trimtab.optimizer.domain.orders import client_order_id
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    DriftDetected,
    Fill,
    LotInstruction,
    OrdersUnfilled,
    UnfilledOrder,
    proposal_id_for,
)

pytestmark = pytest.mark.integration


def report(account: str, pid: uuid.UUID, orders: list[dict], *, shares: dict[str, Decimal] | None = None,
           report_id: str | None = None, status: str = "rejected") -> Envelope:
    lines = [UnfilledOrder(client_order_id=o["client_order_id"] or client_order_id(pid, o["symbol"], o["side"]),
                           symbol=o["symbol"], side=o["side"],
                           unfilled_shares=(shares or {}).get(o["symbol"], Decimal(o["shares"])),
                           status=status, reason="account restricted at the broker")  # type: ignore[arg-type]
             for o in orders if shares is None or o["symbol"] in shares]
    return Envelope.new(OrdersUnfilled(report_id=report_id or f"rep-{uuid.uuid4().hex[:8]}", proposal_id=pid,
                                       account_id=account, orders=lines, reported_at=datetime.now(UTC)),
                        producer="oms", tenant_id="t1")


async def orders_of(client, pid: uuid.UUID) -> list[dict]:  # type: ignore[no-untyped-def]
    return (await client.get(f"/v1/proposals/{pid}", headers=auth())).json()["orders"]


async def automatic_ready(producer, kafka_bootstrap, account: str) -> uuid.UUID:  # type: ignore[no-untyped-def]
    """A drift of an account under the `automatic` policy, its risk and explanation sent: the
    proposal's id (approved by policy once ready, unless something blocks it)."""
    drift = drift_env(drifted(account, automation="automatic"))
    await send(producer, drift, account)
    pid = proposal_id_for("t1", drift.parse(DriftDetected).drift_id)
    [proposed] = await events_of(kafka_bootstrap, "rebalance.proposed.v1", pid)
    await send(producer, explanation_of(proposed), account)
    await send(producer, risk_of(proposed), account)
    return pid


async def test_a_rejected_approval_ends_unfilled_and_releases_the_account(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    app, client = service
    account = f"unf-{uuid.uuid4().hex[:6]}"
    p1, _ = await ready(client, producer, kafka_bootstrap, account)
    assert (await client.post(f"/v1/proposals/{p1}/approve", headers=auth())).status_code == 200
    p2, _ = await ready(client, producer, kafka_bootstrap, account)
    assert (await client.post(f"/v1/proposals/{p2}/approve", headers=auth())).status_code == 409
    orders = await orders_of(client, p1)
    assert len(orders) >= 2, orders
    # Part of it: the first order is rejected; the rest still works at the OMS.
    first = orders[0]["symbol"]
    await send(producer, report(account, p1, orders, shares={first: Decimal(orders[0]["shares"])}), account)
    await _until(lambda b: len(b["unfilled"]) == 1, client, p1)
    assert (await client.get(f"/v1/proposals/{p1}", headers=auth())).json()["state"] == "approved"
    assert (await client.post(f"/v1/proposals/{p2}/approve", headers=auth())).status_code == 409
    # The rest: one order fills, the others are canceled; a redelivered report counts once.
    rest = orders[1:]
    fill = Fill(client_order_id=rest[0]["client_order_id"], symbol=rest[0]["symbol"], side=rest[0]["side"],
                shares=Decimal(rest[0]["shares"]), price_usd=Decimal(rest[0]["est_price_usd"]),
                executed_at=datetime.now(UTC),
                lots=[LotInstruction(lot_id=li["lot_id"], shares=Decimal(li["shares"])) for li in rest[0]["lots"]])
    from trimtab.shared.events import TradesExecuted
    if rest[1:]:
        canceled = report(account, p1, rest[1:], status="canceled", report_id=f"rest-{account}")
        await send(producer, canceled, account)
        await send(producer, canceled.model_copy(update={"event_id": uuid.uuid4()}), account)
    await send(producer, Envelope.new(TradesExecuted(execution_id=f"ex-{account}", proposal_id=p1, account_id=account,
                                                     fills=[fill]), producer="oms", tenant_id="t1"), account)
    done = await wait_state(client, p1, "unfilled")
    assert len(done["unfilled"]) == len(orders) - 1 and len(done["fills"]) == 1, done
    assert {u["status"] for u in done["unfilled"]} <= {"rejected", "canceled"}
    # P2 was solved before P1's fill: it expired with the fills. The account's next proposal is
    # approvable again.
    assert (await client.get(f"/v1/proposals/{p2}", headers=auth())).json()["state"] == "expired"
    p3, _ = await ready(client, producer, kafka_bootstrap, account)
    assert (await client.post(f"/v1/proposals/{p3}/approve", headers=auth())).status_code == 200
    assert [e.payload["proposal_id"] for e in await approved_events(app, account)] == [str(p1), str(p3)]


async def test_an_automatic_approval_waiting_on_the_oms_goes_out_when_the_oms_rejects(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    app, client = service
    account = f"unfa-{uuid.uuid4().hex[:6]}"

    p1 = await automatic_ready(producer, kafka_bootstrap, account)
    await wait_state(client, p1, "approved")
    p2 = await automatic_ready(producer, kafka_bootstrap, account)
    await wait_state(client, p2, "ready")  # blocked: P1's orders are at the OMS
    await asyncio.sleep(1.0)
    assert (await client.get(f"/v1/proposals/{p2}", headers=auth())).json()["state"] == "ready"
    await send(producer, report(account, p1, await orders_of(client, p1)), account)
    await wait_state(client, p1, "unfilled")
    approved = await wait_state(client, p2, "approved")
    assert approved["decision"]["decided_by"] == "policy:automatic", approved
    assert [e.payload["proposal_id"] for e in await approved_events(app, account)] == [str(p1), str(p2)]


async def test_a_report_that_does_not_fit_is_dead_lettered_and_changes_nothing(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    """Dead-lettered with the reason, the proposal untouched, and the account's key not parked:
    each report is about its own orders, so the next valid one still applies (found by review:
    parking blocked every later report of the account, so its next approval never ended)."""
    _, client = service
    account = f"unfb-{uuid.uuid4().hex[:6]}"
    p1, _ = await ready(client, producer, kafka_bootstrap, account)
    orders = await orders_of(client, p1)
    # Not approved yet: its orders never went to the OMS.
    early = report(account, p1, orders)
    await send(producer, early, account)
    ops = auth("t1", scopes=["ops:read", "ops:write"], subject="sre")
    dead = await _dead_letter(client, ops, early.event_id)
    assert "never went to the OMS" in dead["error"], dead
    assert (await client.post(f"/v1/proposals/{p1}/approve", headers=auth())).status_code == 200
    # More shares than the order has.
    o = orders[0]
    too_many = report(account, p1, orders, shares={o["symbol"]: Decimal(o["shares"]) + 1})
    await send(producer, too_many, account)
    dead = await _dead_letter(client, ops, too_many.event_id)
    assert "cannot leave" in dead["error"], dead
    body = (await client.get(f"/v1/proposals/{p1}", headers=auth())).json()
    assert body["state"] == "approved" and body["unfilled"] == [], body
    # Nothing parked: the OMS's valid report ends the approval without an operator.
    await send(producer, report(account, p1, orders), account)
    await wait_state(client, p1, "unfilled")


async def _dead_letter(client, ops, event_id: uuid.UUID, timeout_s: float = 30) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = await client.get("/v1/ops/dead-letters", headers=ops)
        mine = [d for d in r.json() if d["event_id"] == str(event_id)]
        if mine:
            return mine[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"event {event_id} not dead-lettered in {timeout_s}s")


async def _until(pred, client, pid: uuid.UUID, timeout_s: float = 30) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        body = (await client.get(f"/v1/proposals/{pid}", headers=auth())).json()
        if pred(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"proposal {pid}: condition not met in {timeout_s}s; last {body}")


async def test_a_supervisor_ends_an_approval_the_oms_never_reports_on(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    """An approval partly filled, the rest never reported: a supervisor ends it. What is left of
    each order is declared unfilled (canceled, with who and why), published on trades.unfilled.v1
    like an OMS report, and the account's next proposal may be approved."""
    app, client = service
    account = f"unfe-{uuid.uuid4().hex[:6]}"
    p1, _ = await ready(client, producer, kafka_bootstrap, account)
    assert (await client.post(f"/v1/proposals/{p1}/approve", headers=auth())).status_code == 200
    orders = await orders_of(client, p1)
    o = orders[0]
    half = Decimal(o["shares"]) // 2 or Decimal(o["shares"])
    from trimtab.shared.events import TradesExecuted
    fill = Fill(client_order_id=o["client_order_id"], symbol=o["symbol"], side=o["side"], shares=half,
                price_usd=Decimal(o["est_price_usd"]), executed_at=datetime.now(UTC))
    await send(producer, Envelope.new(TradesExecuted(execution_id=f"ex-{account}", proposal_id=p1, account_id=account,
                                                     fills=[fill]), producer="oms", tenant_id="t1"), account)
    await _until(lambda b: len(b["fills"]) == 1, client, p1)
    # The SRE's view: one approval of the tenant awaits execution, since its decision.
    import re

    from trimtab.optimizer.app import refresh_queue
    await refresh_queue(app.state.runtime, app.state.queue)
    text = (await client.get("/metrics")).text
    waiting = re.search(r'trimtab_optimizer_approvals_awaiting_execution\{[^}]*tenant="t1"[^}]*\} ([0-9.]+)', text)
    assert waiting and float(waiting.group(1)) >= 1, text[:2000]
    assert re.search(r'trimtab_optimizer_oldest_approval_awaiting_execution_age_seconds\{[^}]*tenant="t1"', text)
    url = f"/v1/proposals/{p1}/end-execution"
    advisor = auth(scopes=["proposals:read", "proposals:decide"], subject="advisor@t1")
    assert (await client.post(url, headers=advisor, json={"reason": "OMS lost them"})).status_code == 403
    supervisor = {**auth(subject="desk@t1"), "Idempotency-Key": f"end-{account}"}
    assert (await client.post(url, headers=supervisor, json={"reason": ""})).status_code == 422
    r = await client.post(url, headers=supervisor, json={"reason": "the OMS desk confirms the orders are dead"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "unfilled", body
    left = {u["client_order_id"]: Decimal(u["unfilled_shares"]) for u in body["unfilled"]}
    want = {x["client_order_id"]: Decimal(x["shares"]) for x in orders}
    want[o["client_order_id"]] -= half
    assert left == {k: v for k, v in want.items() if v > 0}, (left, want)
    assert {u["status"] for u in body["unfilled"]} == {"canceled"}
    assert all(u["reason"].startswith("ended by desk@t1: the OMS desk confirms") for u in body["unfilled"])
    # A retry with the key replays; without it the approval is already over.
    again = await client.post(url, headers=supervisor, json={"reason": "the OMS desk confirms the orders are dead"})
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
    assert (await client.post(url, headers=auth(), json={"reason": "twice"})).status_code == 409
    # Published like an OMS report, and the optimizer's own copy of it changes nothing.
    ob = app.state.runtime.infra.outbox
    from sqlalchemy import select
    async with app.state.runtime.sessionmaker() as s:
        sent = [Envelope.from_bytes(x.envelope) for x in (await s.execute(
            select(ob.c.envelope).where(ob.c.topic == "trades.unfilled.v1", ob.c.key == account))).all()]
    assert [e.payload["proposal_id"] for e in sent] == [str(p1)] and sent[0].producer == "optimizer"
    await asyncio.sleep(1.0)
    after = (await client.get(f"/v1/proposals/{p1}", headers=auth())).json()
    assert after["state"] == "unfilled" and len(after["unfilled"]) == len(left)
    # The OMS's own final report comes later under its id (the orders expired at the close): it
    # overlaps what the supervisor ended, counts for nothing more and is not refused.
    final = report(account, p1, orders, status="expired")
    await send(producer, final, account)
    await _until(lambda b: True, client, p1)
    await asyncio.sleep(1.0)
    after = (await client.get(f"/v1/proposals/{p1}", headers=auth())).json()
    assert after["state"] == "unfilled" and len(after["unfilled"]) == len(left), after
    ops = auth("t1", scopes=["ops:read"], subject="sre")
    assert not [d for d in (await client.get("/v1/ops/dead-letters", headers=ops)).json()
                if d["event_id"] == str(final.event_id)]
    p2, _ = await ready(client, producer, kafka_bootstrap, account)
    assert (await client.post(f"/v1/proposals/{p2}/approve", headers=auth())).status_code == 200
    # Orders declared dead trade after all: the fills are kept, and counted for the alert.
    late = orders[-1]
    late_fill = Fill(client_order_id=late["client_order_id"], symbol=late["symbol"], side=late["side"],
                     shares=Decimal(1), price_usd=Decimal(late["est_price_usd"]), executed_at=datetime.now(UTC))
    await send(producer, Envelope.new(TradesExecuted(execution_id=f"late-{account}", proposal_id=p1,
                                                     account_id=account, fills=[late_fill]),
                                      producer="oms", tenant_id="t1"), account)
    body = await _until(lambda b: len(b["fills"]) == 2, client, p1)
    assert body["state"] == "unfilled"
    counted = re.search(r"trimtab_optimizer_fills_after_unfilled_total(?:\{[^}]*\})? ([0-9.]+)",
                        (await client.get("/metrics")).text)
    assert counted and float(counted.group(1)) >= 1


async def test_the_sweep_approves_an_automatic_proposal_a_concurrent_release_missed(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    """P2 became ready while P1's approval was ending in another transaction: the release looked
    before P2 was ready, P2 looked before the end committed. The sweep's pass approves it."""
    from sqlalchemy import update

    from trimtab.optimizer.app import release_once
    from trimtab.optimizer.models import proposals as table

    app, client = service
    account = f"unfs-{uuid.uuid4().hex[:6]}"

    p1 = await automatic_ready(producer, kafka_bootstrap, account)
    await wait_state(client, p1, "approved")
    p2 = await automatic_ready(producer, kafka_bootstrap, account)
    await wait_state(client, p2, "ready")
    move = app.state.runtime.settings.proposal_max_price_move
    assert await release_once(app.state.runtime, move) == 0  # P1 still awaits execution
    # P1 ended without its release seeing P2 (the race, forced).
    async with app.state.runtime.sessionmaker() as s, s.begin():
        await s.execute(update(table).where(table.c.tenant_id == "t1", table.c.proposal_id == p1)
                        .values(state="unfilled"))
    assert await release_once(app.state.runtime, move) >= 1
    approved = await wait_state(client, p2, "approved")
    assert approved["decision"]["decided_by"] == "policy:automatic"
    assert [e.payload["proposal_id"] for e in await approved_events(app, account)] == [str(p1), str(p2)]


async def test_a_snapshot_missing_recorded_executions_is_not_solved(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    """A manual trade of the account reached this service but not yet the drift monitor's book when
    it built the drift's snapshot: the snapshot's `applied_executions` lacks it. Solving it would
    trade on holdings the trade changed; the drift is refused with a typed reason instead
    (StaleSnapshot), and the drift monitor re-arms. A snapshot naming the execution, or one that
    states nothing (a what-if, an older producer), is solved."""
    from trimtab.shared.events import TradesExecuted

    _, client = service
    account = f"stale-{uuid.uuid4().hex[:6]}"
    execution = f"manual-{account}"
    manual = TradesExecuted(execution_id=execution, account_id=account, fills=[Fill(
        client_order_id=f"{account}-m1", symbol="BND", side="buy", shares=Decimal(2), price_usd=Decimal(80),
        executed_at=datetime.now(UTC))])
    await send(producer, Envelope.new(manual, producer="oms", tenant_id="t1"), account)
    from trimtab.optimizer.models import household_trades

    async def recorded() -> bool:
        async with service[0].state.runtime.sessionmaker() as s:
            return bool((await s.execute(household_trades.select().where(
                household_trades.c.tenant_id == "t1", household_trades.c.account_id == account))).first())

    deadline = time.monotonic() + 30
    while not await recorded():
        assert time.monotonic() < deadline, "the manual trade never reached the ledger"
        await asyncio.sleep(0.2)

    async def propose_with(applied: list[str] | None) -> dict:
        snap = drifted(account).model_copy(update={"applied_executions": applied})
        drift = drift_env(snap)
        await send(producer, drift, account)
        pid = proposal_id_for("t1", drift.parse(DriftDetected).drift_id)
        return await _until(lambda b: "state" in b, client, pid)

    stale = await propose_with([])
    assert stale["state"] == "failed", stale
    assert stale["failure"] == {"kind": "StaleSnapshot", "constraint": "applied_executions"}, stale
    assert execution in stale["decision"]["reason"], stale
    # The next drift is not refused for the same execution: one the drift monitor never applies
    # (a fill it refused) costs one refusal, not every drift of the account.
    again = await propose_with([])
    assert again["state"] != "failed", again
    fresh = await propose_with([execution])
    assert fresh["state"] != "failed", fresh
    unstated = await propose_with(None)
    assert unstated["state"] != "failed", unstated
    # A new manual trade after those proposals: the next snapshot must hold it.
    second = manual.model_copy(update={"execution_id": f"{execution}-2"})
    await send(producer, Envelope.new(second, producer="oms", tenant_id="t1"), account)
    deadline = time.monotonic() + 30
    while True:
        refused = await propose_with([execution])
        if refused["state"] == "failed":
            break
        assert time.monotonic() < deadline, "the second manual trade never made a snapshot stale"
    assert f"{execution}-2" in refused["decision"]["reason"] and f"{execution}," not in refused["decision"]["reason"]
