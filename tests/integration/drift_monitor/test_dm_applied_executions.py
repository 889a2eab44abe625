"""A drift's snapshot states the executions applied to its book lately (`applied_executions`), so
the optimizer can refuse a snapshot that misses fills it already recorded (review, ninth session:
a drift monitor whose fills consumer lagged could send a book without them)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from tests.integration.drift_monitor.test_drift_monitor import (
    T0,
    drifting_account,
    processed,
    send,
    svc,  # noqa: F401  (module fixture)
    tenant,
    tick,
)
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    DriftDetected,
    Fill,
    LotInstruction,
    RebalanceDecided,
    TradesExecuted,
    proposal_id_for,
)

pytestmark = pytest.mark.integration
D = Decimal


async def drift_events(app, t: str, account_id: str) -> list[DriftDetected]:  # type: ignore[no-untyped-def]
    o = app.state.runtime.infra.outbox
    async with app.state.runtime.sessionmaker() as s:
        rows = (await s.execute(select(o.c.envelope).where(
            o.c.topic == "portfolio.drift.v1", o.c.tenant_id == t, o.c.key == account_id).order_by(o.c.id))).all()
    return [Envelope.from_bytes(r.envelope).parse(DriftDetected) for r in rows]


async def test_a_drift_snapshot_lists_the_executions_applied_to_its_book(svc):  # noqa: F811
    app, client, producer = svc
    t = tenant()
    await drifting_account(app, client, producer, t, "AX1")
    [first] = await drift_events(app, t, "AX1")
    assert first.snapshot.applied_executions == []  # stated: none yet
    proposal = proposal_id_for(t, first.drift_id)
    ok = Envelope.new(RebalanceDecided(proposal_id=proposal, account_id="AX1", decision="approved",
                                       decided_by="advisor@t", automatic=False, decided_at=T0),
                      producer="test", tenant_id=t)
    await send(producer, ok, "AX1")
    await processed(app, ok)
    execution = f"EX-{uuid.uuid4().hex[:6]}"
    fills = TradesExecuted(execution_id=execution, proposal_id=proposal, account_id="AX1", fills=[
        Fill(client_order_id="AX1-AAA-sell", symbol="AAA", side="sell", shares=D(5), price_usd=D(14),
             executed_at=T0 + timedelta(days=1), lots=[LotInstruction(lot_id="L2", shares=D(5))])])
    fx = Envelope.new(fills, producer="oms", tenant_id=t)
    await send(producer, fx, "AX1")
    await processed(app, fx)
    # Still out of band: the next tick raises the next drift, whose book holds the fill.
    await tick(app, producer, t, "AAA", "16", 2)
    drifts = await drift_events(app, t, "AX1")
    assert len(drifts) == 2, drifts
    assert drifts[1].snapshot.applied_executions == [execution]
    assert "applied_executions" in drifts[1].snapshot.model_dump(mode="json")
