"""Replay of a recorded decision: the audit service re-runs the optimizer and the explainer on
the snapshot it recorded and says whether the outputs are identical; a record whose outputs do
not follow from its snapshot is named as different."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.optimizer.snapshots import drifted
from tests.support import auth, running, wait_consumers_assigned
from tests.unit.rebalance.conftest import drifted_account
from trimtab.rebalance import (
    HouseholdTrade,
    RebalanceContext,
    explain,
    explanation_payload,
    propose,
)
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import OptimizerContext
from trimtab.shared.kafka import encode_headers, start_producer
from trimtab.shared.outbox import kafka_headers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def audit(database_url: str, kafka_bootstrap: str, tmp_path_factory, audit_keys):
    tmp = tmp_path_factory.mktemp("audit-replay")
    app = audit_keys.create(database_url, kafka_bootstrap, AUDIT_SIGNING_KEY_FILE=str(tmp / "key"),
                            AUDIT_CHECKPOINT_DIR=str(tmp / "ckpt"))
    async with running(app) as client:
        await wait_consumers_assigned(app)
        yield app, client


async def _publish(bootstrap: str, envs: list[tuple[str, Envelope]]) -> None:
    p = await start_producer(bootstrap, "replay-test")
    try:
        for topic, env in envs:
            await p.send_and_wait(topic, value=env.to_bytes(), key=b"ACC", headers=encode_headers(kafka_headers(env)))
    finally:
        await p.stop()


async def _replay(client: Any, tenant: str, pid: uuid.UUID, *, with_explanation: bool = False) -> dict[str, Any]:
    import asyncio

    for _ in range(200):
        r = await client.post(f"/v1/audit/decisions/{pid}/replay", headers=auth(tenant))
        if r.status_code != 404:
            assert r.status_code == 200, r.text
            if not with_explanation or r.json()["explanation_seq"] is not None:
                return r.json()
        await asyncio.sleep(0.1)
    raise AssertionError("proposal (and explanation) never recorded")


async def test_replay_of_a_recorded_decision_is_identical(audit, kafka_bootstrap):
    app, client = audit
    tenant = f"rp-{uuid.uuid4().hex[:6]}"
    snap = drifted_account(6, seed=11)
    proposal = propose(snap).to_event()
    explanation = explanation_payload(explain(proposal))
    first = Envelope.new(proposal, producer="optimizer", tenant_id=tenant)
    second = first.caused(explanation, producer="explainer")
    await _publish(kafka_bootstrap, [("rebalance.proposed.v1", first), ("explanation.created.v1", second)])
    rep = await _replay(client, tenant, proposal.proposal_id, with_explanation=True)
    assert rep["snapshot_hash_ok"] and rep["proposal_identical"], rep["differences"]
    assert rep["explanation_identical"] is True, rep["differences"]
    assert rep["identical"] is True
    assert rep["recorded_optimizer_version"] == rep["replay_optimizer_version"]
    # Another tenant cannot replay it.
    r = await client.post(f"/v1/audit/decisions/{proposal.proposal_id}/replay", headers=auth("someone-else"))
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


async def test_replay_names_outputs_that_do_not_follow_from_the_snapshot(audit, kafka_bootstrap):
    app, client = audit
    tenant = f"rp-{uuid.uuid4().hex[:6]}"
    snap = drifted_account(6, seed=12)
    honest = propose(snap).to_event()
    assert honest.orders, "the drifted account must trade"
    first_order = honest.orders[0]
    doctored = honest.model_copy(update={
        "proposal_id": uuid.uuid4(),
        "orders": [first_order.model_copy(update={"shares": first_order.shares + 7}), *honest.orders[1:]],
    })
    env = Envelope.new(doctored, producer="optimizer", tenant_id=tenant)
    await _publish(kafka_bootstrap, [("rebalance.proposed.v1", env)])
    rep = await _replay(client, tenant, doctored.proposal_id)
    assert rep["identical"] is False and rep["proposal_identical"] is False
    assert any(d.startswith("orders:") for d in rep["differences"])


async def test_replay_of_a_context_driven_proposal_uses_its_recorded_context(audit, kafka_bootstrap):
    """A proposal solved with a context (a household buy banning a loss sale, a withdrawal) and
    non-default driver weights replays identically from the record alone; the same orders recorded
    without their context do not follow from the snapshot and are named as different."""
    app, client = audit
    tenant = f"rp-{uuid.uuid4().hex[:6]}"
    snap = drifted("ACC").model_copy(update={"household_id": "hh-rp"})
    ctx = RebalanceContext(recent_trades=(HouseholdTrade("ACC-2", "VTI", "buy", date(2024, 4, 25)),),
                           withdrawal_usd=3000.0)
    weights = {"drift": 1.0, "cost": 1.0, "tax": 0.5, "cash": 1.0, "restrictions": 1.0}
    p = propose(snap, context=ctx, drivers=weights)
    assert "ACC-vti-2" not in {li.lot_id for o in p.orders for li in o.lots}  # the context mattered
    proposal = p.to_event().model_copy(update={
        "context": OptimizerContext.model_validate(ctx.to_json()),
        "driver_weights": {k: Decimal(repr(v)) for k, v in p.driver_weights.items()}})
    explanation = explanation_payload(explain(proposal, context=ctx, driver_weights=p.driver_weights))
    first = Envelope.new(proposal, producer="optimizer", tenant_id=tenant)
    second = first.caused(explanation, producer="explainer")
    await _publish(kafka_bootstrap, [("rebalance.proposed.v1", first), ("explanation.created.v1", second)])
    rep = await _replay(client, tenant, proposal.proposal_id, with_explanation=True)
    assert rep["proposal_identical"] and rep["explanation_identical"] is True, rep["differences"]
    assert rep["identical"] is True

    stripped = proposal.model_copy(update={"proposal_id": uuid.uuid4(), "context": None, "driver_weights": None})
    await _publish(kafka_bootstrap, [("rebalance.proposed.v1", Envelope.new(stripped, producer="optimizer",
                                                                            tenant_id=tenant))])
    rep = await _replay(client, tenant, stripped.proposal_id)
    assert rep["identical"] is False and any(d.startswith("orders:") for d in rep["differences"])


async def test_replay_names_every_forged_field_of_the_proposal_and_the_explanation(audit, kafka_bootstrap):
    """Orders and estimates left alone, everything else a reader relies on forged: the objective,
    the weights, the breakdowns, the notes and the client's narrative are each named; the replay
    compares whole payloads, not a few fields."""
    app, client = audit
    tenant = f"rp-{uuid.uuid4().hex[:6]}"
    honest = propose(drifted_account(6, seed=13)).to_event()
    explanation = explanation_payload(explain(honest))
    doctored = honest.model_copy(update={
        "proposal_id": uuid.uuid4(),
        "objective": {k: v * 10 + 1 for k, v in honest.objective.items()},
        "pre_weights": {k: Decimal("0") for k in honest.pre_weights},
        "tax_breakdown": {"tax_total_usd": Decimal("999999")},
        "cost_breakdown": {"total_usd": Decimal("123456")},
        "notes": ["forged note"],
    })
    told = explanation.model_copy(update={
        "proposal_id": doctored.proposal_id,
        "narrative_client": explanation.narrative_client + " Returns are guaranteed."})
    first = Envelope.new(doctored, producer="optimizer", tenant_id=tenant)
    second = first.caused(told, producer="explainer")
    await _publish(kafka_bootstrap, [("rebalance.proposed.v1", first), ("explanation.created.v1", second)])
    rep = await _replay(client, tenant, doctored.proposal_id, with_explanation=True)
    assert rep["identical"] is False and rep["proposal_identical"] is False
    assert rep["explanation_identical"] is False
    named = {d.split(":", 1)[0] for d in rep["differences"]}
    assert {"objective", "pre_weights", "tax_breakdown", "cost_breakdown", "notes",
            "explanation.narrative_client"} <= named, rep["differences"]
    assert not {"orders", "est_tax_usd", "est_cost_usd", "post_weights"} & named, rep["differences"]


async def test_replay_of_narratives_quoting_a_risk_assessment_uses_the_recorded_one(audit, kafka_bootstrap):
    """An explanation whose narratives quote the proposal's `RiskAssessed` (`risk_event_id`) is
    re-written with that recorded assessment: identical; the same explanation naming an
    assessment the record lacks differs, and says which."""
    from trimtab.shared.events import RiskAssessed, RiskModelInfo

    _, client = audit
    tenant = f"rp-{uuid.uuid4().hex[:6]}"
    proposal = propose(drifted_account(6, seed=21)).to_event()
    risk = RiskAssessed(proposal_id=proposal.proposal_id, account_id=proposal.account_id,
                        pre_vol_annual_pct=Decimal("15.00"), post_vol_annual_pct=Decimal("13.50"),
                        model=RiskModelInfo(name="ewma", version="2"), pre_score=40, post_score=36)
    first = Envelope.new(proposal, producer="optimizer", tenant_id=tenant)
    assessed = first.caused(risk, producer="risk")
    explanation = explanation_payload(explain(proposal, risk=risk)).model_copy(
        update={"risk_event_id": assessed.event_id})
    assert "risk score (1-99) 40 -> 36" in explanation.narrative_advisor
    await _publish(kafka_bootstrap, [("rebalance.proposed.v1", first), ("risk.assessed.v1", assessed),
                                     ("explanation.created.v1", first.caused(explanation, producer="explainer"))])
    rep = await _replay(client, tenant, proposal.proposal_id, with_explanation=True)
    assert rep["identical"] is True, rep["differences"]

    # The same, naming an assessment that was never recorded.
    tenant2 = f"rp-{uuid.uuid4().hex[:6]}"
    first2 = Envelope.new(proposal, producer="optimizer", tenant_id=tenant2)
    missing = uuid.uuid4()
    forged = explanation.model_copy(update={"risk_event_id": missing})
    await _publish(kafka_bootstrap, [("rebalance.proposed.v1", first2),
                                     ("explanation.created.v1", first2.caused(forged, producer="explainer"))])
    rep = await _replay(client, tenant2, proposal.proposal_id, with_explanation=True)
    assert rep["explanation_identical"] is False
    assert any(str(missing) in d and "not in the record" in d for d in rep["differences"]), rep["differences"]


async def test_replay_ignores_a_foreign_message_naming_the_proposal(audit, kafka_bootstrap):
    """A foreign producer's message (recorded as `foreign:<topic>`) that names the proposal, even
    recorded before the optimizer's own, is not what the optimizer published: the replay compares
    against the optimizer's record (review, ninth session: it took the first record by seq)."""
    import json

    app, client = audit
    tenant = f"rpf-{uuid.uuid4().hex[:6]}"
    snap = drifted_account(6, seed=12)
    proposal = propose(snap).to_event()
    real = Envelope.new(proposal, producer="optimizer", tenant_id=tenant)
    forged = json.loads(real.to_bytes())
    for k in ("event_id", "occurred_at", "correlation_id", "causation_id"):
        forged.pop(k, None)
    forged["producer"] = "someone-else"
    forged["payload"]["est_cost_usd"] = "0.01"
    p = await start_producer(kafka_bootstrap, "replay-foreign-test")
    try:
        await p.send_and_wait("rebalance.proposed.v1", value=json.dumps(forged).encode(), key=b"ACC")
    finally:
        await p.stop()
    await _publish(kafka_bootstrap, [("rebalance.proposed.v1", real)])
    rep = await _replay(client, tenant, proposal.proposal_id)
    assert rep["proposal_identical"] is True, rep["differences"]
    from sqlalchemy import select

    from trimtab.audit.models import records
    async with app.state.runtime.sessionmaker() as s:
        topics = [r.topic for r in (await s.execute(select(records.c.topic).where(
            records.c.tenant_id == tenant).order_by(records.c.seq))).all()]
    assert topics == ["foreign:rebalance.proposed.v1", "rebalance.proposed.v1"]
