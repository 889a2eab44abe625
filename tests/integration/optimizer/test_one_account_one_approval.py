"""One account, one set of orders at the OMS at a time (found by review, eighth session).

A newer drift's proposal supersedes the account's older open one; fills of the account expire the
proposals solved before them; no proposal is approved (by an advisor or by policy) while an
earlier approval's orders are not all filled; and an approval re-checks the household's trades
recorded since the solve, as an override does. Before, two proposals of one account could both be
approved (two `trades.approved.v1` for one book), and an approval could sell a loss that a
household buy since the solve made a wash sale.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from tests.integration.optimizer.snapshots import drifted
from tests.integration.optimizer.test_optimizer_service import (
    drift_env,
    events_of,
    explanation_of,
    risk_of,
    send,
    wait_state,
)
from tests.support import auth
from trimtab.optimizer import household
from trimtab.optimizer.proposals import proposal_id_for
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    DriftDetected,
    Fill,
    LotInstruction,
    RebalanceProposed,
    TradesExecuted,
)

pytestmark = pytest.mark.integration


async def ready(client, producer, kafka_bootstrap, account: str, tenant: str = "t1"):  # type: ignore[no-untyped-def]
    drift = drift_env(drifted(account), tenant=tenant)
    await send(producer, drift, account)
    pid = proposal_id_for(tenant, drift.parse(DriftDetected).drift_id)
    [proposed] = await events_of(kafka_bootstrap, "rebalance.proposed.v1", pid)
    await send(producer, explanation_of(proposed), account)
    await send(producer, risk_of(proposed), account)
    await wait_state(client, pid, "ready", tenant=tenant)
    return pid, proposed


async def outbox_events(app, topic: str, account: str) -> list[Envelope]:  # type: ignore[no-untyped-def]
    """What the service published on `topic` for `account`, in order (its outbox)."""
    ob = app.state.runtime.infra.outbox
    async with app.state.runtime.sessionmaker() as s:
        rows = (await s.execute(select(ob.c.envelope).where(ob.c.topic == topic,
                                                            ob.c.key == account).order_by(ob.c.id))).all()
    return [Envelope.from_bytes(r.envelope) for r in rows]


async def approved_events(app, account: str) -> list[Envelope]:  # type: ignore[no-untyped-def]
    return await outbox_events(app, "trades.approved.v1", account)


async def test_a_newer_proposal_supersedes_the_older_one(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    app, client = service
    account = f"once-{uuid.uuid4().hex[:6]}"
    p1, _ = await ready(client, producer, kafka_bootstrap, account)
    p2, _ = await ready(client, producer, kafka_bootstrap, account)
    old = (await client.get(f"/v1/proposals/{p1}", headers=auth())).json()
    assert old["state"] == "expired" and old["decision"]["decided_by"] == "optimizer:superseded", old
    assert str(p2) in old["decision"]["reason"]
    assert (await client.post(f"/v1/proposals/{p1}/approve", headers=auth())).status_code == 409
    assert (await client.post(f"/v1/proposals/{p2}/approve", headers=auth())).status_code == 200
    assert [e.payload["proposal_id"] for e in await approved_events(app, account)] == [str(p2)]


async def test_no_second_approval_while_the_first_awaits_its_fills(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    app, client = service
    account = f"await-{uuid.uuid4().hex[:6]}"
    p1, _ = await ready(client, producer, kafka_bootstrap, account)
    assert (await client.post(f"/v1/proposals/{p1}/approve", headers=auth())).status_code == 200
    p2, _ = await ready(client, producer, kafka_bootstrap, account)  # a manual trade re-armed the account
    r = await client.post(f"/v1/proposals/{p2}/approve", headers=auth())
    assert r.status_code == 409 and r.json()["awaiting_execution"] == str(p1), r.text
    assert [e.payload["proposal_id"] for e in await approved_events(app, account)] == [str(p1)]
    # P1's fills come in: P2 was solved on the book before them, so it expires.
    orders = (await client.get(f"/v1/proposals/{p1}", headers=auth())).json()["orders"]
    fills = [Fill(client_order_id=o["client_order_id"], symbol=o["symbol"], side=o["side"],
                  shares=Decimal(o["shares"]), price_usd=Decimal(o["est_price_usd"]),
                  executed_at=datetime.now(UTC),
                  lots=[LotInstruction(lot_id=li["lot_id"], shares=Decimal(li["shares"])) for li in o["lots"]])
             for o in orders]
    done = Envelope.new(TradesExecuted(execution_id=f"ex-{account}", proposal_id=p1, account_id=account,
                                       fills=fills), producer="oms", tenant_id="t1")
    await send(producer, done, account)
    await wait_state(client, p1, "executed")
    stale = await wait_state(client, p2, "expired")
    assert stale["decision"]["decided_by"] == "optimizer:account-traded", stale


async def test_an_approval_rechecks_the_households_trades_since_the_solve(service, producer, kafka_bootstrap):  # type: ignore[no-untyped-def]
    """The proposal harvests a VTI loss; a buy of VTI in the household's other account fills
    after the solve. Approving would sell the loss into a wash sale: the proposal expires."""
    app, client = service
    account = f"wash-{uuid.uuid4().hex[:6]}"
    pid, proposed = await ready(client, producer, kafka_bootstrap, account)
    p = proposed.parse(RebalanceProposed)
    sold = {li.lot_id for o in p.orders if o.side == "sell" for li in o.lots}
    assert f"{account}-vti-2" in sold, sold  # the loss lot (basis 270 > 250) is harvested
    fill = Fill(client_order_id=f"{account}-ira-1", symbol="VTI", side="buy", shares=Decimal(3),
                price_usd=Decimal(250), executed_at=datetime(2024, 5, 1, 15, 0, tzinfo=UTC))
    spouse_ira = drifted(f"{account}-ira").model_copy(update={"household_id": f"hh-{account}"})
    async with app.state.runtime.uow() as uow:
        await household.record_fills(uow, "t1", spouse_ira.account_id, f"ex-{account}", [fill],
                                     snapshot=spouse_ira, proposal_id=None)
        await uow.commit()
    r = await client.post(f"/v1/proposals/{pid}/approve", headers=auth())
    assert r.status_code == 409 and "wash" in r.text, r.text
    assert r.json()["state"] == "expired"
    after = (await client.get(f"/v1/proposals/{pid}", headers=auth())).json()
    assert after["state"] == "expired" and after["decision"]["decided_by"] == "optimizer:household-trades", after
    assert await approved_events(app, account) == []
