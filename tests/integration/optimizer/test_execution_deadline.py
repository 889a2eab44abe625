"""The approved orders' time in force (`TradesApproved.execute_by`).

Before, an approval the OMS neither filled nor reported on blocked the account until a
supervisor ended it by hand (409 `awaiting_execution` for every later approval; only an alert
after a day). Now every approval tells the OMS until when it may work the orders
(PROPOSAL_EXECUTION_WINDOW_S after the approval), and the sweep declares what is left of an
approval expired once that time plus the grace (PROPOSAL_EXECUTION_GRACE_S) has passed with no
fills or report closing it: published on `trades.unfilled.v1` like an OMS report (so the drift
monitor re-arms the account), once, and the account's next approval goes through. An approval
the OMS closed in time is not touched.

This module runs its own optimizer with a 2 s window, a 1 s grace and a 0.3 s sweep.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.integration.optimizer.test_one_account_one_approval import (
    approved_events,
    outbox_events,
    ready,
)
from tests.integration.optimizer.test_optimizer_service import send, wait_state
from tests.integration.optimizer.test_orders_unfilled import automatic_ready
from tests.support import auth, running, settings, wait_consumers_assigned
from trimtab.optimizer.app import Settings, create
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import Fill, LotInstruction, TradesApproved, TradesExecuted

pytestmark = pytest.mark.integration
WINDOW_S, GRACE_S = 2.0, 1.0


@pytest.fixture(scope="module")
async def service(database_url, kafka_bootstrap):
    app = create(settings(Settings, database_url, kafka_bootstrap, PROPOSAL_EXECUTION_WINDOW_S=WINDOW_S,
                          PROPOSAL_EXECUTION_GRACE_S=GRACE_S, PROPOSAL_SWEEP_S=0.3))
    async with running(app) as client:
        await wait_consumers_assigned(app)
        yield app, client


async def unfilled_reports(app, account: str) -> list[Envelope]:  # type: ignore[no-untyped-def]
    return await outbox_events(app, "trades.unfilled.v1", account)


async def test_an_approval_nobody_reports_on_expires_after_its_time_in_force(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    app, client = service
    account = f"ttl-{uuid.uuid4().hex[:6]}"
    p1, _ = await ready(client, producer, kafka_bootstrap, account)
    r = await client.post(f"/v1/proposals/{p1}/approve", headers=auth())
    assert r.status_code == 200, r.text
    approved = r.json()
    decided_at = datetime.fromisoformat(approved["decision"]["decided_at"])
    execute_by = datetime.fromisoformat(approved["execute_by"])
    assert execute_by == decided_at + timedelta(seconds=WINDOW_S)
    # The OMS is told the deadline with the orders.
    [event] = await approved_events(app, account)
    assert event.parse(TradesApproved).execute_by == execute_by
    p2, _ = await ready(client, producer, kafka_bootstrap, account)
    assert (await client.post(f"/v1/proposals/{p2}/approve", headers=auth())).status_code == 409

    done = await wait_state(client, p1, "unfilled", timeout_s=20)
    assert datetime.now(UTC) >= execute_by + timedelta(seconds=GRACE_S)
    assert {u["status"] for u in done["unfilled"]} == {"expired"}
    assert {u["client_order_id"]: Decimal(u["unfilled_shares"]) for u in done["unfilled"]} == {
        o["client_order_id"]: Decimal(o["shares"]) for o in approved["orders"]}
    assert all("time in force" in u["reason"] for u in done["unfilled"])
    [report] = await unfilled_reports(app, account)  # published once, for the drift monitor and the record
    assert report.producer == "optimizer" and report.payload["report_id"] == f"deadline:{p1}"
    assert report.causation_id is not None and report.correlation_id == event.correlation_id
    # P2, solved while P1's orders were live, expired with it; the account is released: its next
    # proposal may be approved.
    assert (await client.get(f"/v1/proposals/{p2}", headers=auth())).json()["state"] == "expired"
    p3, _ = await ready(client, producer, kafka_bootstrap, account)
    assert (await client.post(f"/v1/proposals/{p3}/approve", headers=auth())).status_code == 200
    await asyncio.sleep(1.5)  # later sweeps change nothing
    assert len(await unfilled_reports(app, account)) == 1


async def test_an_approval_filled_in_time_is_not_touched(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    app, client = service
    account = f"ttf-{uuid.uuid4().hex[:6]}"
    p1, _ = await ready(client, producer, kafka_bootstrap, account)
    r = await client.post(f"/v1/proposals/{p1}/approve", headers=auth())
    assert r.status_code == 200, r.text
    fills = [Fill(client_order_id=o["client_order_id"], symbol=o["symbol"], side=o["side"],
                  shares=Decimal(o["shares"]), price_usd=Decimal(o["est_price_usd"]), executed_at=datetime.now(UTC),
                  lots=[LotInstruction(lot_id=li["lot_id"], shares=Decimal(li["shares"])) for li in o["lots"]])
             for o in r.json()["orders"]]
    await send(producer, Envelope.new(TradesExecuted(execution_id=f"ex-{account}", proposal_id=p1, account_id=account,
                                                     fills=fills), producer="oms", tenant_id="t1"), account)
    await wait_state(client, p1, "executed")
    await asyncio.sleep(WINDOW_S + GRACE_S + 1.0)
    after = (await client.get(f"/v1/proposals/{p1}", headers=auth())).json()
    assert after["state"] == "executed" and after["unfilled"] == [], after
    assert await unfilled_reports(app, account) == []


async def test_no_automatic_approval_follows_an_approval_ended_by_its_deadline(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    """Review: the sweep that ended an approval by its deadline went on to `release_stranded`,
    which approved the account's ready automatic proposal at once, though the OMS, silent, may
    still be working the old orders. The account's open proposals expire instead (solved while
    those orders were live); its next drift is proposed afresh."""
    app, client = service
    account = f"tta-{uuid.uuid4().hex[:6]}"
    p1 = await automatic_ready(producer, kafka_bootstrap, account)
    await wait_state(client, p1, "approved")
    p2 = await automatic_ready(producer, kafka_bootstrap, account)
    await wait_state(client, p2, "ready")  # held: P1's orders are at the OMS
    await wait_state(client, p1, "unfilled", timeout_s=20)
    gone = await wait_state(client, p2, "expired")
    assert gone["decision"]["decided_by"] == "optimizer:execution-ended", gone["decision"]
    await asyncio.sleep(1.0)  # more sweeps: still nothing approved after P1
    assert [e.payload["proposal_id"] for e in await approved_events(app, account)] == [str(p1)]
