"""The optimizer against real PostgreSQL and Kafka: drift in, proposal out; risk and explanation
in (either order), decision and approved trades out; advisor decisions through the API."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tests.integration.optimizer.snapshots import drifted, on_target, unraisable_reserve
from tests.support import auth, read_events
from trimtab.optimizer import household
from trimtab.optimizer.app import sweep_once
from trimtab.optimizer.domain.orders import client_order_id
from trimtab.optimizer.proposals import proposal_id_for
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    AccountSnapshot,
    DriftDetected,
    ExplanationCreated,
    Fill,
    HouseholdTrade,
    OptimizerContext,
    RebalanceDecided,
    RebalanceProposed,
    RiskAssessed,
    RiskModelInfo,
    TradesApproved,
    TradesExecuted,
)
from trimtab.shared.kafka import encode_headers
from trimtab.shared.outbox import kafka_headers

pytestmark = pytest.mark.integration
TENANT = "t1"


async def send(producer, env: Envelope, key: str) -> None:
    from trimtab.shared.events import topic_of

    await producer.send_and_wait(topic_of(env.event_type), env.to_bytes(), key=key.encode(),
                                 headers=encode_headers(kafka_headers(env)))


def drift_env(snapshot: AccountSnapshot, tenant: str = TENANT, advisor_id: str | None = None) -> Envelope:
    payload = DriftDetected(
        drift_id=uuid.uuid4(), account_id=snapshot.account_id, snapshot=snapshot,
        total_value_usd=Decimal("100000"), weights={}, deviations={},
        max_abs_deviation=Decimal("0.3"), rule="band_abs", breached=["VTI"], advisor_id=advisor_id)
    return Envelope.new(payload, producer="drift-monitor", tenant_id=tenant)


def risk_of(proposed: Envelope, flags: list[str] | None = None) -> Envelope:
    p = proposed.parse(RebalanceProposed)
    return proposed.caused(RiskAssessed(
        proposal_id=p.proposal_id, account_id=p.account_id, pre_vol_annual_pct=Decimal("14.2"),
        post_vol_annual_pct=Decimal("11.9"), model=RiskModelInfo(name="ewma", version="1"),
        flags=flags or []), producer="risk")


def explanation_of(proposed: Envelope) -> Envelope:
    p = proposed.parse(RebalanceProposed)
    return proposed.caused(ExplanationCreated(
        explanation_id=uuid.uuid4(), proposal_id=p.proposal_id, account_id=p.account_id,
        snapshot_hash=p.snapshot_hash, optimizer_version=p.solver.optimizer_version,
        method="shapley-exact", drivers=["drift", "tax"], trades=[], resolves=4,
        narrative_advisor="Trims US equity back to its band.", narrative_client="Back on plan."),
        producer="explainer")


async def events_of(bootstrap: str, topic: str, proposal_id: uuid.UUID, *, n: int = 1,
                    where: Callable[[Envelope], bool] = lambda e: True, timeout_s: float = 30) -> list[Envelope]:
    """The events on `topic` about `proposal_id`, once at least `n` of them are there."""
    def mine(evs: list[Envelope]) -> list[Envelope]:
        return [e for e in evs if e.payload.get("proposal_id") == str(proposal_id) and where(e)]

    return mine(await read_events(bootstrap, topic, until=lambda evs: len(mine(evs)) >= n,
                                  timeout_s=timeout_s))


async def wait_state(client, proposal_id: uuid.UUID, state: str, tenant: str = TENANT,
                     timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        r = await client.get(f"/v1/proposals/{proposal_id}", headers=auth(tenant))
        if r.status_code == 200:
            body = r.json()
            if body["state"] == state:
                return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"proposal {proposal_id} not {state} in {timeout_s}s; last: {body.get('state')}")


async def propose(producer, kafka_bootstrap, snapshot: AccountSnapshot) -> tuple[Envelope, Envelope]:
    """Send a drift; return (the drift, the RebalanceProposed it caused)."""
    drift = drift_env(snapshot)
    await send(producer, drift, snapshot.account_id)
    pid = proposal_id_for(TENANT, drift.parse(DriftDetected).drift_id)
    [proposed] = await events_of(kafka_bootstrap, "rebalance.proposed.v1", pid)
    return drift, proposed


@pytest.mark.parametrize("first", ["risk", "explanation"])
async def test_automatic_policy_drift_to_approved_trades_in_either_order(
        service, producer, kafka_bootstrap, first):
    app, client = service
    account = f"acc-auto-{first}"
    drift, proposed = await propose(producer, kafka_bootstrap, drifted(account, automation="automatic"))
    p = proposed.parse(RebalanceProposed)
    assert proposed.correlation_id == drift.correlation_id and proposed.causation_id == drift.event_id
    assert p.drift_id == drift.parse(DriftDetected).drift_id and p.account_id == account
    assert {(o.symbol, o.side) for o in p.orders} >= {("VTI", "sell"), ("VNQ", "buy")}
    assert all(o.client_order_id is None for o in p.orders)
    assert (await wait_state(client, p.proposal_id, "proposed"))["snapshot_hash"] == p.snapshot_hash

    risk, explanation = risk_of(proposed), explanation_of(proposed)
    parts = [risk, explanation] if first == "risk" else [explanation, risk]
    await send(producer, parts[0], account)
    await wait_state(client, p.proposal_id, "assessed" if first == "risk" else "explained")
    await send(producer, parts[1], account)

    [decided] = await events_of(kafka_bootstrap, "rebalance.decided.v1", p.proposal_id)
    [approved] = await events_of(kafka_bootstrap, "trades.approved.v1", p.proposal_id)
    d, t = decided.parse(RebalanceDecided), approved.parse(TradesApproved)
    assert (d.decision, d.decided_by, d.automatic) == ("approved", "policy:automatic", True)
    # One chain from the drift to the trades; the decision was caused by what made it ready.
    for env in (decided, approved):
        assert env.correlation_id == drift.correlation_id and env.causation_id == parts[1].event_id
    assert t.approved_by == "policy:automatic"
    assert [(o.symbol, o.side, o.shares) for o in t.orders] == [(o.symbol, o.side, o.shares) for o in p.orders]
    assert [o.client_order_id for o in t.orders] == [
        client_order_id(p.proposal_id, o.symbol, o.side) for o in p.orders]
    body = await wait_state(client, p.proposal_id, "approved")
    assert body["has_risk"] and body["has_explanation"] and body["risk"]["post_vol_annual_pct"] == "11.9"

    # The OMS reports fills in two executions: executed only once every order is filled.
    half = TradesExecuted(execution_id=f"ex-{account}-1", proposal_id=p.proposal_id, account_id=account,
                          fills=[_fill(t.orders[0])])
    rest = TradesExecuted(execution_id=f"ex-{account}-2", proposal_id=p.proposal_id, account_id=account,
                          fills=[_fill(o) for o in t.orders[1:]])
    await send(producer, Envelope.new(half, producer="oms", tenant_id=TENANT), account)
    await send(producer, Envelope.new(rest, producer="oms", tenant_id=TENANT), account)
    body = await wait_state(client, p.proposal_id, "executed")
    assert len(body["fills"]) == len(t.orders)


def _fill(order) -> Fill:  # type: ignore[no-untyped-def]
    return Fill(client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
                shares=order.shares, price_usd=order.est_price_usd, executed_at="2024-05-02T15:00:00Z")


async def test_risk_flag_keeps_an_automatic_account_for_the_advisor(service, producer, kafka_bootstrap):
    _, client = service
    _, proposed = await propose(producer, kafka_bootstrap, drifted("acc-flagged", automation="automatic"))
    pid = proposed.parse(RebalanceProposed).proposal_id
    await send(producer, risk_of(proposed, flags=["concentration"]), "acc-flagged")
    await send(producer, explanation_of(proposed), "acc-flagged")
    body = await wait_state(client, pid, "ready")
    assert body["decision"] is None
    r = await client.get("/v1/proposals", headers=auth(), params={"state": "ready", "account_id": "acc-flagged"})
    assert [x["proposal_id"] for x in r.json()] == [str(pid)]


async def test_advisor_decides_through_the_api_once_per_idempotency_key(service, producer, kafka_bootstrap):
    _, client = service
    account = "acc-advisor"
    drift, proposed = await propose(producer, kafka_bootstrap, drifted(account))
    pid = proposed.parse(RebalanceProposed).proposal_id
    url = f"/v1/proposals/{pid}"
    advisor = auth(subject="jane@firm")

    # Not ready yet: no decision possible.
    early = await client.post(f"{url}/approve", headers=advisor)
    assert early.status_code == 409 and early.headers["content-type"].startswith("application/problem+json")

    await send(producer, explanation_of(proposed), account)
    await send(producer, risk_of(proposed), account)
    await wait_state(client, pid, "ready")

    no_reason = await client.post(f"{url}/reject", headers=advisor)
    assert no_reason.status_code == 422 and no_reason.headers["content-type"].startswith("application/problem+json")
    blank = await client.post(f"{url}/reject", headers=advisor, json={"reason": "  "})
    assert blank.status_code == 422
    assert (await client.get(url, headers=auth("t2"))).status_code == 404
    assert (await client.post(f"{url}/approve", headers=auth("t2"))).status_code == 404
    assert (await client.post(f"{url}/approve", headers=auth(scopes=["proposals:read"]))).status_code == 403
    assert (await client.get("/v1/proposals", headers=auth("t2"), params={"account_id": account})).json() == []

    key = {"Idempotency-Key": f"approve-{pid}"}
    body = {"reason": "reviewed with client"}
    first = await client.post(f"{url}/approve", headers=advisor | key, json=body)
    second = await client.post(f"{url}/approve", headers=advisor | key, json=body)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json() == second.json() and second.headers.get("Idempotent-Replayed") == "true"
    assert first.json()["state"] == "approved"
    assert first.json()["decision"]["decided_by"] == "jane@firm"
    # The same key for another request is refused; a new request without it is a conflict.
    reused = await client.post(f"{url}/reject", headers=advisor | key, json={"reason": "changed my mind"})
    assert reused.status_code == 422
    again = await client.post(f"{url}/approve", headers=advisor)
    assert again.status_code == 409 and again.json()["state"] == "approved"

    decided = await events_of(kafka_bootstrap, "rebalance.decided.v1", pid)
    approved = await events_of(kafka_bootstrap, "trades.approved.v1", pid)
    await asyncio.sleep(0.5)  # give a (wrong) second decision time to reach the topic
    decided = await events_of(kafka_bootstrap, "rebalance.decided.v1", pid)
    assert len(decided) == 1 and len(approved) == 1
    d = decided[0].parse(RebalanceDecided)
    assert (d.decision, d.decided_by, d.automatic, d.reason) == ("approved", "jane@firm", False,
                                                                 "reviewed with client")
    for env in (decided[0], approved[0]):
        assert env.correlation_id == drift.correlation_id and env.causation_id == proposed.event_id
    assert {o.client_order_id for o in approved[0].parse(TradesApproved).orders} == {
        client_order_id(pid, o["symbol"], o["side"]) for o in first.json()["orders"]}


async def test_advisor_rejects_with_reason(service, producer, kafka_bootstrap):
    _, client = service
    _, proposed = await propose(producer, kafka_bootstrap, drifted("acc-reject"))
    pid = proposed.parse(RebalanceProposed).proposal_id
    await send(producer, risk_of(proposed), "acc-reject")
    await send(producer, explanation_of(proposed), "acc-reject")
    await wait_state(client, pid, "ready")
    r = await client.post(f"/v1/proposals/{pid}/reject", headers=auth(subject="joe@firm"),
                          json={"reason": "client wants to wait for year end"})
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    [decided] = await events_of(kafka_bootstrap, "rebalance.decided.v1", pid)
    d = decided.parse(RebalanceDecided)
    assert (d.decision, d.decided_by, d.reason) == ("rejected", "joe@firm", "client wants to wait for year end")


async def test_infeasible_drift_is_stored_failed_and_rejected_without_trades(
        service, producer, kafka_bootstrap):
    _, client = service
    drift = drift_env(unraisable_reserve("acc-infeasible"))
    await send(producer, drift, "acc-infeasible")
    pid = proposal_id_for(TENANT, drift.parse(DriftDetected).drift_id)
    [decided] = await events_of(kafka_bootstrap, "rebalance.decided.v1", pid)
    d = decided.parse(RebalanceDecided)
    assert (d.decision, d.decided_by, d.automatic) == ("rejected", "optimizer", True)
    assert "cash_reserve" in (d.reason or "")
    assert decided.correlation_id == drift.correlation_id and decided.causation_id == drift.event_id
    body = await wait_state(client, pid, "failed")
    assert body["failure"] == {"kind": "infeasible", "constraint": "cash_reserve"} and body["orders"] == []
    proposed = await read_events(kafka_bootstrap, "rebalance.proposed.v1", until=lambda evs: True)
    assert not [e for e in proposed if e.payload.get("proposal_id") == str(pid)]
    # The SRE sees it: a failed solve by its typed reason, and the optimizer's rejection.
    text = (await client.get("/metrics")).text
    assert re.search(r'trimtab_optimizer_proposals_total\{[^}]*outcome="failed"[^}]*'
                     r'reason="infeasible:cash_reserve"[^}]*\} [1-9]', text), text[:2000]
    assert re.search(r'trimtab_optimizer_decisions_total\{[^}]*automatic="true"[^}]*decision="rejected"'
                     r'[^}]*\} [1-9]', text)
    assert "trimtab_optimizer_solve_duration_milliseconds_bucket" in text


async def test_nothing_to_trade_is_rejected_automatically(service, producer, kafka_bootstrap):
    _, client = service
    _, proposed = await propose(producer, kafka_bootstrap, on_target("acc-on-target"))
    p = proposed.parse(RebalanceProposed)
    assert p.orders == []
    [decided] = await events_of(kafka_bootstrap, "rebalance.decided.v1", p.proposal_id)
    d = decided.parse(RebalanceDecided)
    assert (d.decision, d.reason, d.automatic) == ("rejected", "no trades needed after rounding", True)
    await wait_state(client, p.proposal_id, "rejected")


async def test_redelivered_drift_creates_no_second_proposal(service, producer, kafka_bootstrap):
    app, client = service
    consumer = app.state.runtime.consumers[0]
    account = "acc-redelivered"
    drift, proposed = await propose(producer, kafka_bootstrap, drifted(account))
    await wait_state(client, proposed.parse(RebalanceProposed).proposal_id, "proposed")
    duplicates, handled = consumer.stats.duplicates, consumer.stats.handled
    await send(producer, drift, account)  # the very same event again
    # The same drift re-sent under a new event id: a different event, the same drift.
    resent = Envelope.new(drift.parse(DriftDetected), producer="drift-monitor", tenant_id=TENANT)
    await send(producer, resent, account)
    for _ in range(200):
        if consumer.stats.duplicates > duplicates and consumer.stats.handled > handled:
            break
        await asyncio.sleep(0.1)
    # The redelivery stopped at the consumer's marker; the resent drift reached the handler.
    assert consumer.stats.duplicates == duplicates + 1 and consumer.stats.handled >= handled + 1
    r = await client.get("/v1/proposals", headers=auth(), params={"account_id": account})
    assert len(r.json()) == 1
    pid = proposed.parse(RebalanceProposed).proposal_id
    evs = await events_of(kafka_bootstrap, "rebalance.proposed.v1", pid)
    assert len(evs) == 1


async def test_what_if_returns_a_proposal_and_stores_nothing(client):
    snap = drifted("acc-what-if")
    r = await client.post("/v1/rebalance/what-if", headers=auth(scopes=["proposals:read"]),
                          json=snap.model_dump(mode="json"))
    assert r.status_code == 200, r.text
    out = RebalanceProposed.model_validate(r.json())
    assert out.account_id == "acc-what-if" and out.orders and out.solver.status == "optimal"
    assert (await client.get("/v1/proposals", headers=auth(), params={"account_id": "acc-what-if"})).json() == []
    bad = await client.post("/v1/rebalance/what-if", headers=auth(),
                            json=unraisable_reserve("acc-what-if").model_dump(mode="json"))
    assert bad.status_code == 422 and bad.json()["constraint"] == "cash_reserve"
    assert (await client.post("/v1/rebalance/what-if", headers=auth(), json={"cash_usd": "1"})).status_code == 422


async def test_stale_open_proposal_expires(service, producer, kafka_bootstrap):
    app, client = service
    drift, proposed = await propose(producer, kafka_bootstrap, drifted("acc-stale"))
    pid = proposed.parse(RebalanceProposed).proposal_id
    await wait_state(client, pid, "proposed")
    await sweep_once(app.state.runtime, ttl_s=3600)  # younger than the TTL: left alone
    assert (await client.get(f"/v1/proposals/{pid}", headers=auth())).json()["state"] == "proposed"
    await asyncio.sleep(0.2)
    await sweep_once(app.state.runtime, ttl_s=0.1)
    body = await wait_state(client, pid, "expired")
    assert body["decision"]["decided_by"] == "optimizer:ttl"
    [decided] = await events_of(kafka_bootstrap, "rebalance.decided.v1", pid)
    assert decided.parse(RebalanceDecided).decision == "expired"
    assert decided.correlation_id == drift.correlation_id and decided.causation_id == proposed.event_id


async def ready_proposal(client, producer, kafka_bootstrap, account: str):  # type: ignore[no-untyped-def]
    """A proposal of a drifted `account`, assessed and explained: ready for a decision."""
    _, proposed = await propose(producer, kafka_bootstrap, drifted(account))
    pid = proposed.parse(RebalanceProposed).proposal_id
    await send(producer, explanation_of(proposed), account)
    await send(producer, risk_of(proposed), account)
    await wait_state(client, pid, "ready")
    return pid


async def test_advisor_override_is_revalidated_then_approved_once(service, producer, kafka_bootstrap):
    _, client = service
    account = "acc-override"
    pid = await ready_proposal(client, producer, kafka_bootstrap, account)
    url = f"/v1/proposals/{pid}/override"
    advisor = auth(subject="ana@firm")

    def sell(lot: str, shares: int) -> dict:
        return {"symbol": "VTI", "side": "sell", "shares": str(shares), "est_price_usd": "0",
                "est_notional_usd": "0", "lots": [{"lot_id": f"{account}-{lot}", "shares": str(shares)}]}

    def buy(symbol: str, shares: int) -> dict:
        return {"symbol": symbol, "side": "buy", "shares": str(shares), "est_price_usd": "0",
                "est_notional_usd": "0"}

    # Each edit breaks one rule and is refused with the rule named; nothing is decided.
    bad = {
        "wash sale": [sell("vti-2", 60), buy("VTI", 5)],  # vti-2 is at a loss (basis 270 > 250)
        "lot oversold": [sell("vti-1", 181)],
        "not a lot of": [{**sell("vti-1", 10), "symbol": "BND"}],
        "below the reserve": [buy("VNQ", 1000)],  # $85,000 of buys against $1,000 of cash
    }
    for rule, orders in bad.items():
        r = await client.post(url, headers=advisor, json={"reason": "client call", "orders": orders})
        assert r.status_code == 422 and rule in r.text, (rule, r.text)
    no_reason = await client.post(url, headers=advisor, json={"orders": [buy("VNQ", 1)]})
    assert no_reason.status_code == 422
    assert (await client.get(f"/v1/proposals/{pid}", headers=auth())).json()["state"] == "ready"

    edited = [sell("vti-2", 60), buy("VNQ", 20), buy("BND", 30)]
    key = {"Idempotency-Key": f"override-{pid}"}
    body = {"reason": "client prefers a smaller trade", "orders": edited}
    first = await client.post(url, headers=advisor | key, json=body)
    second = await client.post(url, headers=advisor | key, json=body)
    assert first.status_code == second.status_code == 200, first.text
    assert second.headers.get("Idempotent-Replayed") == "true" and first.json() == second.json()
    out = first.json()
    assert out["state"] == "overridden" and out["decision"]["reason"] == "client prefers a smaller trade"
    # Priced from the snapshot, not from the request's zeros.
    by_symbol = {o["symbol"]: o for o in out["orders"]}
    assert Decimal(by_symbol["VTI"]["est_notional_usd"]) == Decimal("15000.00")
    assert Decimal(by_symbol["VNQ"]["est_notional_usd"]) == Decimal("1700.00")
    [approved] = await events_of(kafka_bootstrap, "trades.approved.v1", pid)
    orders = approved.parse(TradesApproved).orders
    assert {(o.symbol, o.side, o.shares) for o in orders} == {
        ("VTI", "sell", Decimal(60)), ("VNQ", "buy", Decimal(20)), ("BND", "buy", Decimal(30))}
    assert all(o.client_order_id == client_order_id(pid, o.symbol, o.side) for o in orders)
    [decided] = await events_of(kafka_bootstrap, "rebalance.decided.v1", pid)
    assert decided.parse(RebalanceDecided).decision == "overridden"


async def test_an_override_sees_the_households_fills_since_the_proposal(service, producer, kafka_bootstrap):
    """A buy of VTI in another account of the household, filled after the proposal was solved,
    makes an edited sale of the VTI lot at a loss a wash sale: the override is refused, although
    the proposal's recorded context did not hold that buy."""
    app, client = service
    account = "acc-override-wash"
    pid = await ready_proposal(client, producer, kafka_bootstrap, account)
    loss_sale = [{"symbol": "VTI", "side": "sell", "shares": "60", "est_price_usd": "0", "est_notional_usd": "0",
                  "lots": [{"lot_id": f"{account}-vti-2", "shares": "60"}]}]  # basis 270 > price 250
    fill = Fill(client_order_id=f"{account}-ira-1", symbol="VTI", side="buy", shares=Decimal(3),
                price_usd=Decimal(250), executed_at=datetime(2024, 5, 1, 15, 0, tzinfo=UTC))
    spouse_ira = drifted(f"{account}-ira").model_copy(update={"household_id": f"hh-{account}"})
    async with app.state.runtime.uow() as uow:
        await household.record_fills(uow, TENANT, spouse_ira.account_id, f"ex-{account}", [fill],
                                     snapshot=spouse_ira, proposal_id=None)
        await uow.commit()
    r = await client.post(f"/v1/proposals/{pid}/override", headers=auth(subject="ana@firm"),
                          json={"reason": "harvest the loss", "orders": loss_sale})
    assert r.status_code == 422 and "wash" in r.text, r.text
    assert (await client.get(f"/v1/proposals/{pid}", headers=auth())).json()["state"] == "ready"


async def test_an_override_trades_whole_shares_and_its_fills_execute_it(service, producer, kafka_bootstrap):
    """An override must trade something (an empty one is a rejection: refused, saying so), in
    whole shares of a lot, within bounds (422s, never a 500); once its orders fill, it is executed
    like an approved proposal."""
    _, client = service
    account = "acc-override-fill"
    pid = await ready_proposal(client, producer, kafka_bootstrap, account)
    url = f"/v1/proposals/{pid}/override"
    advisor = auth(subject="ana@firm")

    def sell(shares: str) -> dict:
        return {"symbol": "VTI", "side": "sell", "shares": shares, "est_price_usd": "0",
                "est_notional_usd": "0", "lots": [{"lot_id": f"{account}-vti-1", "shares": shares}]}

    empty = await client.post(url, headers=advisor, json={"reason": "hold for now", "orders": []})
    assert empty.status_code == 422, empty.text
    assert empty.headers["content-type"].startswith("application/problem+json")
    assert empty.json()["title"] == "Override rejected" and "reject" in empty.json()["detail"]
    for shares, rule in (("10.37", "whole shares"), ("1E-30", "whole shares"),
                         ("1000000000000000000000000000", "at most")):
        r = await client.post(url, headers=advisor, json={"reason": "trim", "orders": [sell(shares)]})
        assert r.status_code == 422 and rule in r.text, (shares, r.status_code, r.text)
    assert (await client.get(f"/v1/proposals/{pid}", headers=auth())).json()["state"] == "ready"

    r = await client.post(url, headers=advisor, json={"reason": "trim", "orders": [sell("10")]})
    assert r.status_code == 200 and r.json()["state"] == "overridden", r.text
    [approved] = await events_of(kafka_bootstrap, "trades.approved.v1", pid)
    orders = approved.parse(TradesApproved).orders
    executed = TradesExecuted(execution_id=f"ex-{account}", proposal_id=pid, account_id=account,
                              fills=[_fill(o) for o in orders])
    await send(producer, Envelope.new(executed, producer="oms", tenant_id=TENANT), account)
    body = await wait_state(client, pid, "executed")
    assert len(body["fills"]) == len(orders) == 1
    assert body["decision"]["decision"] == "overridden"
    # The refused overrides decided nothing: one decision, the accepted override's.
    decided = await events_of(kafka_bootstrap, "rebalance.decided.v1", pid)
    assert [d.parse(RebalanceDecided).decision for d in decided] == ["overridden"]


async def test_fills_of_an_unknown_proposal_still_reach_the_wash_sale_ledger(service, producer):
    """The OMS reports fills under a proposal id the optimizer does not know (another replica's
    lost row, an OMS bug): the trade happened, so it joins the household ledger as a manual trade
    would (before, the whole execution was dropped and a later proposal could wash-sell)."""
    app, _ = service
    account = f"acc-unknown-{uuid.uuid4().hex[:6]}"
    executed = TradesExecuted(execution_id=f"ex-{account}", proposal_id=uuid.uuid4(), account_id=account,
                              fills=[Fill(client_order_id=f"{account}-1", symbol="VTI", side="buy",
                                          shares=Decimal(5), price_usd=Decimal(250),
                                          executed_at="2024-04-25T15:00:00Z")])
    await send(producer, Envelope.new(executed, producer="oms", tenant_id=TENANT), account)
    from trimtab.optimizer.models import household_trades

    deadline = time.monotonic() + 30
    while True:
        async with app.state.runtime.sessionmaker() as s:
            rows = (await s.execute(household_trades.select().where(
                household_trades.c.tenant_id == TENANT, household_trades.c.account_id == account))).all()
        if rows:
            break
        assert time.monotonic() < deadline, "the fill never reached the ledger"
        await asyncio.sleep(0.2)
    assert [(r.symbol, r.side, str(r.trade_date)) for r in rows] == [("VTI", "buy", "2024-04-25")]


async def test_drift_context_and_household_trades_shape_the_proposal(service, producer, kafka_bootstrap):
    """A fill in one account of a household reaches the optimizer's ledger; the next drift of
    another account of the household is solved with those trades (the wash-sale rule: no loss
    sale of a security the household just bought) and with its own context (a withdrawal), and
    the proposal carries the exact context and the driver weights; what-if takes a context too;
    overrides are re-validated under the recorded context."""
    _, client = service
    hh = f"hh-{uuid.uuid4().hex[:8]}"
    other = drifted(f"{hh}-b").model_copy(update={"household_id": hh})
    _, proposed_b = await propose(producer, kafka_bootstrap, other)
    pb = proposed_b.parse(RebalanceProposed)
    assert pb.context is None and pb.driver_weights  # nothing known yet beyond the snapshot
    buy = HouseholdTrade(account_id=other.account_id, symbol="VTI", side="buy", trade_date=date(2024, 4, 25))
    executed = TradesExecuted(execution_id=f"ex-{hh}", proposal_id=pb.proposal_id, account_id=other.account_id,
                              fills=[Fill(client_order_id="manual-1", symbol="VTI", side="buy", shares=Decimal(5),
                                          price_usd=Decimal(250), executed_at="2024-04-25T15:00:00Z")])
    await send(producer, Envelope.new(executed, producer="oms", tenant_id=TENANT), other.account_id)

    account = drifted(f"{hh}-a").model_copy(update={"household_id": hh})
    given = OptimizerContext(withdrawal_usd=Decimal("3000"))
    # what-if with a context: polled until the fill has reached the ledger.
    body = {"snapshot": account.model_dump(mode="json"), "context": given.model_dump(mode="json")}
    deadline = time.monotonic() + 30
    while True:
        r = await client.post("/v1/rebalance/what-if", headers=auth(scopes=["proposals:read"]), json=body)
        assert r.status_code == 200, r.text
        what_if = RebalanceProposed.model_validate(r.json())
        if what_if.context is not None and what_if.context.recent_trades:
            break
        assert time.monotonic() < deadline, "the household's fill never reached the optimizer's ledger"
        await asyncio.sleep(0.2)
    assert (await client.get("/v1/proposals", headers=auth(), params={"account_id": account.account_id})).json() == []

    drift = drift_env(account)
    payload = drift.parse(DriftDetected).model_copy(update={"context": given})
    drift = Envelope.new(payload, producer="drift-monitor", tenant_id=TENANT)
    await send(producer, drift, account.account_id)
    [proposed] = await events_of(kafka_bootstrap, "rebalance.proposed.v1",
                                 proposal_id_for(TENANT, payload.drift_id))
    p = proposed.parse(RebalanceProposed)
    assert p.context is not None and p.context.recent_trades == [buy]
    assert p.context.withdrawal_usd == Decimal("3000") and p.driver_weights == pb.driver_weights
    sold_lots = {li.lot_id for o in p.orders if o.side == "sell" for li in o.lots}
    # VTI lot 2 is at a loss (basis 270 > 250): without the household's buy it is harvested.
    assert f"{account.account_id}-vti-2" not in sold_lots and f"{account.account_id}-vti-1" in sold_lots
    assert f"{other.account_id}-vti-2" in {li.lot_id for o in pb.orders for li in o.lots}
    net = sum(((o.est_notional_usd if o.side == "sell" else -o.est_notional_usd) - o.est_cost_usd
               for o in p.orders), Decimal(0))
    assert account.cash_usd + net >= Decimal("3000")  # the withdrawal is raised
    assert [(o.symbol, o.side, o.shares) for o in what_if.orders] == [(o.symbol, o.side, o.shares) for o in p.orders]
    stored = await wait_state(client, p.proposal_id, "proposed")
    assert stored["context"] == p.context.model_dump(mode="json")

    # An advisor's override selling the loss lot is a wash sale against the household's buy.
    r = await client.post(f"/v1/proposals/{p.proposal_id}/override", headers=auth(subject="ana@firm"), json={
        "reason": "harvest", "orders": [{
            "symbol": "VTI", "side": "sell", "shares": "40", "est_price_usd": "0", "est_notional_usd": "0",
            "lots": [{"lot_id": f"{account.account_id}-vti-2", "shares": "40"}]}]})
    assert r.status_code == 422 and "household" in r.text, r.text

    # A malformed context is refused with a 422 (problem+json), nothing solved.
    bad = {"snapshot": account.model_dump(mode="json"),
           "context": {"factor_model": {"symbols": ["VTI"], "loadings": [[1.0]], "specific_var": [1.0, 2.0]}}}
    assert (await client.post("/v1/rebalance/what-if", headers=auth(), json=bad)).status_code == 422


async def test_an_advisor_lists_their_queue(service, producer, kafka_bootstrap):
    _, client = service
    mine, other = drifted("acc-queue-1"), drifted("acc-queue-2")
    pids = []
    for snap, advisor in ((mine, "adv-ann"), (other, "adv-bob")):
        drift = drift_env(snap, advisor_id=advisor)
        await send(producer, drift, snap.account_id)
        pids.append(proposal_id_for(TENANT, drift.parse(DriftDetected).drift_id))
    for pid in pids:
        await wait_state(client, pid, "proposed")
    r = await client.get("/v1/proposals", params={"advisor_id": "adv-ann"}, headers=auth(TENANT))
    assert r.status_code == 200
    assert [(p["proposal_id"], p["advisor_id"]) for p in r.json()] == [(str(pids[0]), "adv-ann")]
    r = await client.get("/v1/proposals", params={"advisor_id": "adv-ann", "state": "executed"},
                         headers=auth(TENANT))
    assert r.json() == []
    # Only the account's advisor decides it, or a supervisor (proposals:decide-any).
    url = f"/v1/proposals/{pids[0]}/reject"
    bob = auth(TENANT, scopes=["proposals:decide"], subject="adv-bob")
    r = await client.post(url, json={"reason": "not mine"}, headers=bob)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert "adv-ann" in r.json()["detail"]
    assert (await wait_state(client, pids[0], "proposed"))["decision"] is None  # nothing changed
    # Ann and the desk are let through to the lifecycle, which refuses a decision before the
    # proposal is ready (409), not the caller (403).
    ann = auth(TENANT, scopes=["proposals:decide"], subject="adv-ann")
    r = await client.post(url, json={"reason": "client asked to wait"}, headers=ann)
    assert r.status_code == 409 and r.json()["state"] == "proposed", r.text
    supervisor = auth(TENANT, scopes=["proposals:decide", "proposals:decide-any"], subject="desk")
    r = await client.post(f"/v1/proposals/{pids[1]}/reject", json={"reason": "desk review"}, headers=supervisor)
    assert r.status_code == 409, r.text


async def test_an_operator_resolves_a_parked_key_without_a_restart(service, producer, kafka_bootstrap):
    _, client = service
    account = "acc-parked"
    good = drifted(account)
    # A drift whose snapshot is of another account is invalid: dead-lettered, its key parked...
    bad = drift_env(good).parse(DriftDetected).model_copy(update={"account_id": "someone-else"})
    await send(producer, Envelope.new(bad, producer="drift-monitor", tenant_id=TENANT), account)
    # ... so the next, valid, drift of the key is dead-lettered too, not solved past the gap.
    parked = drift_env(good)
    await send(producer, parked, account)
    ops = auth(TENANT, scopes=["ops:read", "ops:write"], subject="sre")
    deadline = time.monotonic() + 30
    mine: list[dict] = []
    while time.monotonic() < deadline and len(mine) < 2:
        r = await client.get("/v1/ops/dead-letters", headers=ops)
        assert r.status_code == 200
        mine = [d for d in r.json() if d["key"] == account or d["event_id"] == str(parked.event_id)]
        await asyncio.sleep(0.2)
    assert len(mine) == 2 and {d["consumer"] for d in mine} == {"optimizer"}, mine
    assert any(d["error"].startswith("parked") for d in mine)
    assert {d["tenant_id"] for d in mine} == {TENANT}
    # The same account id in another tenant is another account: its drift is solved.
    elsewhere = drift_env(drifted(account), tenant="t-elsewhere")
    await send(producer, elsewhere, account)
    await wait_state(client, proposal_id_for("t-elsewhere", elsewhere.parse(DriftDetected).drift_id), "proposed",
                     tenant="t-elsewhere")
    # Not an operator: 403; a key with nothing to resolve: 404; an unknown field: 422.
    body = {"consumer": "optimizer", "topic": "portfolio.drift.v1", "key": account}
    r = await client.post("/v1/ops/dead-letters/resolve", json=body, headers=auth(TENANT, scopes=["ops:read"]))
    assert r.status_code == 403
    r = await client.post("/v1/ops/dead-letters/resolve", json={**body, "key": "nobody"}, headers=ops)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = await client.post("/v1/ops/dead-letters/resolve", json={**body, "tenant_id": "t-elsewhere"}, headers=ops)
    assert r.status_code == 404, r.text  # nothing of that tenant is parked under the key
    body["tenant_id"] = TENANT
    assert (await client.post("/v1/ops/dead-letters/resolve", json={**body, "x": 1}, headers=ops)).status_code == 422
    r = await client.post("/v1/ops/dead-letters/resolve", json=body, headers=ops)
    assert r.status_code == 200 and r.json()["unparked"] is True and r.json()["resolved"] >= 1, r.text
    assert r.json()["tenant_id"] == TENANT and r.json()["untenanted_left"] == 0
    assert not [d for d in (await client.get("/v1/ops/dead-letters", headers=ops)).json() if d["key"] == account]
    # The key's next drift is solved again (the operator replays the dead letters if they matter).
    again = drift_env(good)
    await send(producer, again, account)
    await wait_state(client, proposal_id_for(TENANT, again.parse(DriftDetected).drift_id), "proposed")
    # A dead letter recorded before dead letters carried their tenant parks its key for every
    # tenant: resolving one tenant's key says so (404 with the reason), resolving the key does it.
    app = service[0]
    d = app.state.runtime.infra.dead_letters
    async with app.state.runtime.sessionmaker() as s, s.begin():
        await s.execute(d.insert().values(consumer="optimizer", topic="portfolio.drift.v1", partition=0, offset=1,
                                          key="acc-legacy", error="before the tenant column"))
    legacy = {"consumer": "optimizer", "topic": "portfolio.drift.v1", "key": "acc-legacy"}
    r = await client.post("/v1/ops/dead-letters/resolve", json={**legacy, "tenant_id": TENANT}, headers=ops)
    assert r.status_code == 404 and "without a tenant" in r.json()["detail"], r.text
    r = await client.post("/v1/ops/dead-letters/resolve", json=legacy, headers=ops)
    assert r.status_code == 200 and r.json()["resolved"] == 1, r.text


async def test_the_queue_gauges_count_open_proposals_by_tenant_and_state(service, producer, kafka_bootstrap):
    # An SRE's "are advisors keeping up" panel: proposals awaiting risk, explanation or a
    # decision, by tenant and state, and the oldest one's age; a decided proposal leaves them.
    from trimtab.optimizer.app import refresh_queue

    app, client = service
    tenant = "t-queue"
    drift = drift_env(drifted("acc-queue-gauge"), tenant=tenant)
    await send(producer, drift, "acc-queue-gauge")
    pid = proposal_id_for(tenant, drift.parse(DriftDetected).drift_id)
    await wait_state(client, pid, "proposed", tenant=tenant)
    await asyncio.sleep(0.05)
    await refresh_queue(app.state.runtime, app.state.queue)
    text = (await client.get("/metrics")).text
    assert re.search(r'trimtab_optimizer_open_proposals\{[^}]*state="proposed"[^}]*tenant="t-queue"[^}]*\} 1\.0',
                     text), text[:3000]
    age = re.search(r'trimtab_optimizer_oldest_open_proposal_age_seconds\{[^}]*tenant="t-queue"[^}]*\} ([0-9.e+-]+)',
                    text)
    assert age and 0.05 <= float(age.group(1)) < 60
    [proposed] = await events_of(kafka_bootstrap, "rebalance.proposed.v1", pid)
    await send(producer, risk_of(proposed), "acc-queue-gauge")
    await send(producer, explanation_of(proposed), "acc-queue-gauge")
    await wait_state(client, pid, "ready", tenant=tenant)
    r = await client.post(f"/v1/proposals/{pid}/reject", headers=auth(tenant, subject="joe@firm"),
                          json={"reason": "client wants to wait"})
    assert r.status_code == 200, r.text
    await refresh_queue(app.state.runtime, app.state.queue)
    text = (await client.get("/metrics")).text
    assert not re.search(r'trimtab_optimizer_(open_proposals|oldest_open_proposal_age_seconds)\{[^}]*tenant="t-queue"',
                         text)


async def test_proposal_lists_page_with_a_keyset_cursor(service, producer, kafka_bootstrap):
    _, client = service
    pids = []
    for k in range(3):
        snap = drifted(f"acc-page-{k}")
        drift = drift_env(snap, advisor_id="adv-pager")
        await send(producer, drift, snap.account_id)
        pids.append(proposal_id_for(TENANT, drift.parse(DriftDetected).drift_id))
    for pid in pids:
        await wait_state(client, pid, "proposed")
    everything = await client.get("/v1/proposals", params={"advisor_id": "adv-pager"}, headers=auth())
    assert everything.status_code == 200 and "X-Next-Cursor" not in everything.headers
    newest_first = [p["proposal_id"] for p in everything.json()]
    assert sorted(newest_first) == sorted(str(p) for p in pids)
    first = await client.get("/v1/proposals", params={"advisor_id": "adv-pager", "limit": 2}, headers=auth())
    cursor = first.headers["X-Next-Cursor"]
    assert 'rel="next"' in first.headers["Link"] and f"cursor={cursor}" in first.headers["Link"]
    second = await client.get("/v1/proposals", params={"advisor_id": "adv-pager", "limit": 2, "cursor": cursor},
                              headers=auth())
    assert "X-Next-Cursor" not in second.headers  # the last page
    assert [p["proposal_id"] for p in first.json() + second.json()] == newest_first
    import base64

    out_of_range = base64.urlsafe_b64encode(f"0001-01-01T00:00:00+14:00|{pids[0]}".encode()).decode()
    naive = base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{pids[0]}".encode()).decode()
    for cursor in ("not-a-cursor", out_of_range, naive):
        bad = await client.get("/v1/proposals", params={"cursor": cursor}, headers=auth())
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json"), cursor


async def test_the_structured_solver_is_reported_loaded(service):  # type: ignore[no-untyped-def]
    """SREs see whether the solver workers loaded the structured solver: without it (no compiler
    where the library first ran, an unreadable cache) every problem silently went to Clarabel,
    ~1.5x slower (review), and only a log line said so."""
    _, client = service
    text = (await client.get("/metrics")).text
    found = re.search(r"^trimtab_optimizer_structured_solver_available(?:\{[^}]*\})? ([0-9.]+)$", text, re.M)
    assert found and float(found.group(1)) == 1.0, [ln for ln in text.splitlines() if "structured" in ln]
