"""drift-monitor against real PostgreSQL and Kafka: the book API, drift on ticks with hysteresis,
re-arming on decisions, fills applied exactly once, bulk import, tenant isolation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from tests.support import auth, read_events, running, settings, wait_consumers_assigned
from trimtab.drift_monitor.app import Settings, create
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    DriftDetected,
    Fill,
    LotInstruction,
    PriceTicked,
    RebalanceDecided,
    TradesExecuted,
    proposal_id_for,
    topic_of,
)
from trimtab.shared.kafka import encode_headers, start_producer
from trimtab.shared.outbox import kafka_headers

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
D = Decimal


@pytest.fixture(scope="module")
async def svc(database_url, kafka_bootstrap):
    app = create(settings(Settings, database_url, kafka_bootstrap, DRIFT_MIN_INTERVAL_S=0))
    producer = await start_producer(kafka_bootstrap, "dm-test")
    try:
        async with running(app) as client:
            await wait_consumers_assigned(app)
            yield app, client, producer
    finally:
        await producer.stop()


def tenant() -> str:
    return f"dm-{uuid.uuid4().hex[:8]}"


async def send(producer, env: Envelope, key: str) -> None:  # type: ignore[no-untyped-def]
    await producer.send_and_wait(topic_of(env.event_type), value=env.to_bytes(), key=key.encode(),
                                 headers=encode_headers(kafka_headers(env)))


async def wait_for(cond, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def processed(app, env: Envelope) -> None:  # type: ignore[no-untyped-def]
    """Wait until the service committed its handling of `env` (effects and outbox included)."""
    rt = app.state.runtime
    p = rt.infra.processed

    async def done() -> bool:
        async with rt.sessionmaker() as s:
            return (await s.execute(select(p.c.event_id).where(
                p.c.consumer == "drift-monitor", p.c.event_id == env.event_id))).first() is not None

    await wait_for(done)
    await app.state.drift_handlers.settled()  # a tick's candidates are decided after its batch settles


async def drifts_in_outbox(app, t: str, account_id: str) -> int:  # type: ignore[no-untyped-def]
    rt = app.state.runtime
    o = rt.infra.outbox
    async with rt.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(o).where(
            o.c.topic == "portfolio.drift.v1", o.c.tenant_id == t, o.c.key == account_id))).scalar_one()


async def tick(app, producer, t: str, symbol: str, price: str, minutes: int) -> Envelope:  # type: ignore[no-untyped-def]
    env = Envelope.new(PriceTicked(symbol=symbol, price_usd=D(price), as_of=T0 + timedelta(minutes=minutes)),
                       producer="test", tenant_id=t)
    await send(producer, env, symbol)
    await processed(app, env)
    return env


def account_body(account_id: str, model_id: str = "core", **extra) -> dict:  # type: ignore[no-untyped-def]
    return {
        "account_id": account_id, "household_id": "HH1", "account_type": "taxable", "model_id": model_id,
        "cash_usd": "200", "cash_reserve_usd": "50", "restricted": ["XYZ"],
        "policy": {"band_abs": "0.05", "automation": "advisor_approval"},
        "lots": [
            {"lot_id": "L1", "symbol": "AAA", "shares": "30", "cost_basis_usd_per_share": "8",
             "acquired_on": "2020-01-02"},
            {"lot_id": "L2", "symbol": "AAA", "shares": "20", "cost_basis_usd_per_share": "11",
             "acquired_on": "2023-06-01"},
            {"lot_id": "L3", "symbol": "BBB", "shares": "30", "cost_basis_usd_per_share": "9",
             "acquired_on": "2021-03-04"},
        ],
        **extra,
    }


async def make_model(client, t: str, model_id: str = "core") -> None:  # type: ignore[no-untyped-def]
    r = await client.post("/v1/models", headers=auth(t), json={
        "model_id": model_id, "name": "Core", "targets": {"AAA": "0.5", "BBB": "0.3"}})
    assert r.status_code == 201, r.text


async def drifting_account(app, client, producer, t: str, account_id: str) -> tuple[dict, uuid.UUID]:  # type: ignore[no-untyped-def,type-arg]
    """An account with a pending drift (AAA to 14 puts it 8 points over its band); returns the
    account and the proposal the optimizer derives from that drift."""
    await make_model(client, t)
    assert (await client.post("/v1/accounts", headers=auth(t), json=account_body(account_id))).status_code == 201
    await tick(app, producer, t, "AAA", "10", 0)
    await tick(app, producer, t, "BBB", "10", 0)
    await tick(app, producer, t, "AAA", "14", 1)
    acc = (await client.get(f"/v1/accounts/{account_id}", headers=auth(t))).json()
    assert acc["drift_state"] == "pending" and await drifts_in_outbox(app, t, account_id) == 1
    return acc, proposal_id_for(t, uuid.UUID(acc["pending_drift_id"]))


async def dead_letter(app, event_id: uuid.UUID):  # type: ignore[no-untyped-def]
    """The dead-letter row (error, topic, tenant_id) of `event_id`, waited for up to 20 s; None if
    the event was not dead-lettered by then."""
    d = app.state.runtime.infra.dead_letters
    row = None
    for _ in range(400):
        async with app.state.runtime.sessionmaker() as s:
            row = (await s.execute(select(d.c.error, d.c.topic, d.c.tenant_id).where(
                d.c.event_id == event_id))).first()
        if row is not None:
            break
        await asyncio.sleep(0.05)
    return row


async def test_drift_fires_once_rearms_on_rejection_and_fills_apply_once(svc, kafka_bootstrap):
    app, client, producer = svc
    t = tenant()
    await make_model(client, t)
    r = await client.post("/v1/accounts", headers=auth(t), json=account_body("ACC1"))
    assert r.status_code == 201, r.text

    # In band at 10 / 10: 500 + 300 + 200 cash = 1000 -> 0.5 / 0.3, exactly the targets.
    await tick(app, producer, t, "AAA", "10", 0)  # BBB has no price yet: not measurable
    assert (await client.get("/v1/accounts/ACC1/drift", headers=auth(t))).json()["missing_prices"] == ["BBB"]
    await tick(app, producer, t, "BBB", "10", 0)
    view = (await client.get("/v1/accounts/ACC1/drift", headers=auth(t))).json()
    assert view["weights"] == {"AAA": "0.5000000000", "BBB": "0.3000000000"} and view["rule"] is None
    assert await drifts_in_outbox(app, t, "ACC1") == 0

    # AAA to 14: 700 + 300 + 200 = 1200; AAA 0.58333 (+0.0833 > 0.05), BBB 0.25 (-0.05, not beyond)
    up = await tick(app, producer, t, "AAA", "14", 1)
    view = (await client.get("/v1/accounts/ACC1/drift", headers=auth(t))).json()
    assert view["rule"] == "absolute_band" and view["breached"] == ["AAA"]
    evs = await read_events(kafka_bootstrap, "portfolio.drift.v1", until=lambda es: any(
        e.tenant_id == t and e.parse(DriftDetected).account_id == "ACC1" for e in es))
    mine = [e for e in evs if e.tenant_id == t]
    assert len(mine) == 1
    env = mine[0]
    assert env.correlation_id == up.correlation_id and env.causation_id == up.event_id
    assert env.producer == "drift-monitor"
    d = env.parse(DriftDetected)
    assert d.rule == "absolute_band" and d.breached == ["AAA"]
    assert d.total_value_usd == D("1200.00")
    assert d.weights == {"AAA": D("0.5833333333"), "BBB": D("0.2500000000")}
    assert d.deviations == {"AAA": D("0.0833333333"), "BBB": D("-0.0500000000")}
    assert d.max_abs_deviation == D("0.0833333333")
    snap = d.snapshot
    assert snap.account_id == "ACC1" and snap.household_id == "HH1" and snap.model_id == "core"
    assert snap.as_of == T0 + timedelta(minutes=1)
    assert (snap.cash_usd, snap.cash_reserve_usd) == (D(200), D(50))
    assert snap.targets == {"AAA": D("0.5"), "BBB": D("0.3")}
    assert snap.restricted == ["XYZ"] and snap.policy.band_abs == D("0.05")
    assert snap.policy.automation == "advisor_approval"
    assert [(p.symbol, p.shares, [lot.lot_id for lot in p.lots]) for p in snap.positions] == [
        ("AAA", D(50), ["L1", "L2"]), ("BBB", D(30), ["L3"])]
    assert {s.symbol: (s.price_usd, s.asset_class, s.half_spread_bps) for s in snap.securities} == {
        "AAA": (D(14), "equity", D(2)), "BBB": (D(10), "equity", D(2))}
    acc = (await client.get("/v1/accounts/ACC1", headers=auth(t))).json()
    assert acc["drift_state"] == "pending" and acc["pending_drift_id"] == str(d.drift_id)

    # Still out of band, but pending: nothing more.
    await tick(app, producer, t, "AAA", "15", 2)
    assert await drifts_in_outbox(app, t, "ACC1") == 1

    # Rejected (quiet interval 0 in this test): the next tick fires again.
    proposal = uuid.uuid4()
    dec = Envelope.new(RebalanceDecided(proposal_id=proposal, account_id="ACC1", decision="rejected",
                                        decided_by="advisor@t", automatic=False, decided_at=T0),
                       producer="test", tenant_id=t)
    await send(producer, dec, "ACC1")
    await processed(app, dec)
    assert (await client.get("/v1/accounts/ACC1", headers=auth(t))).json()["drift_state"] == "armed"
    again = await tick(app, producer, t, "AAA", "15.5", 3)
    assert await drifts_in_outbox(app, t, "ACC1") == 2
    evs = await read_events(kafka_bootstrap, "portfolio.drift.v1",
                            until=lambda es: sum(e.tenant_id == t for e in es) == 2)
    assert [e.correlation_id for e in evs if e.tenant_id == t] == [up.correlation_id, again.correlation_id]

    # Approved: stays blocked until the fills arrive.
    ok = Envelope.new(RebalanceDecided(proposal_id=proposal, account_id="ACC1", decision="approved",
                                       decided_by="advisor@t", automatic=False, decided_at=T0),
                      producer="test", tenant_id=t)
    await send(producer, ok, "ACC1")
    await processed(app, ok)
    assert (await client.get("/v1/accounts/ACC1", headers=auth(t))).json()["drift_state"] == "executing"
    await tick(app, producer, t, "AAA", "16", 4)
    assert await drifts_in_outbox(app, t, "ACC1") == 2

    # Fills: sell 15 AAA naming 10 of L1 (the other 5 come from L2, the highest basis); buy 5 BBB.
    at = T0 + timedelta(days=1)
    fills = TradesExecuted(execution_id=f"EX-{uuid.uuid4().hex[:6]}", proposal_id=proposal, account_id="ACC1", fills=[
        Fill(client_order_id="P1-AAA-sell", symbol="AAA", side="sell", shares=D(15), price_usd=D("15.5"),
             executed_at=at, lots=[LotInstruction(lot_id="L1", shares=D(10))]),
        Fill(client_order_id="P1-BBB-buy", symbol="BBB", side="buy", shares=D(5), price_usd=D(10), executed_at=at),
    ])
    fx = Envelope.new(fills, producer="oms", tenant_id=t)
    await send(producer, fx, "ACC1")
    await processed(app, fx)
    acc = (await client.get("/v1/accounts/ACC1", headers=auth(t))).json()
    assert {lot["lot_id"]: D(lot["shares"]) for lot in acc["lots"]} == {
        "L1": D(20), "L2": D(15), "L3": D(30), "P1-BBB-buy": D(5)}
    new_lot = next(lot for lot in acc["lots"] if lot["lot_id"] == "P1-BBB-buy")
    assert new_lot["acquired_on"] == "2024-01-03" and D(new_lot["cost_basis_usd_per_share"]) == D(10)
    assert D(acc["cash_usd"]) == D("382.50")  # 200 + 15 * 15.5 - 5 * 10
    assert acc["positions"] == {"AAA": "35.00000000", "BBB": "35.00000000"}
    assert acc["drift_state"] == "armed"

    # The same event again (a redelivery) and the same execution under a new event id: no change.
    consumer = app.state.runtime.consumers[0]
    dups = consumer.stats.duplicates
    await send(producer, fx, "ACC1")

    async def redelivery_absorbed() -> bool:
        return consumer.stats.duplicates > dups

    await wait_for(redelivery_absorbed)
    copy = Envelope.new(fills, producer="oms", tenant_id=t)
    await send(producer, copy, "ACC1")
    await processed(app, copy)
    after = (await client.get("/v1/accounts/ACC1", headers=auth(t))).json()
    assert after == acc


async def test_book_api_validates_and_isolates_tenants(svc):
    _, client, _ = svc
    t, other = tenant(), tenant()
    over = await client.post("/v1/models", headers=auth(t), json={
        "model_id": "m", "name": "M", "targets": {"AAA": "0.7", "BBB": "0.4"}})
    assert over.status_code == 422 and over.headers["content-type"].startswith("application/problem+json")
    await make_model(client, t)
    again = await client.post("/v1/models", headers=auth(t), json={
        "model_id": "core", "name": "Core v2", "targets": {"AAA": "0.6"}})
    assert again.status_code == 200 and D(again.json()["cash_target_weight"]) == D("0.4")
    assert [m["model_id"] for m in (await client.get("/v1/models", headers=auth(t))).json()] == ["core"]

    bad_lot = account_body("A1")
    bad_lot["lots"][0]["shares"] = "-3"
    r = await client.post("/v1/accounts", headers=auth(t), json=bad_lot)
    assert r.status_code == 422 and r.json()["errors"]
    r = await client.post("/v1/accounts", headers=auth(t), json=account_body("A1", model_id="nope"))
    assert r.status_code == 422 and "nope" in r.json()["detail"]
    assert (await client.post("/v1/accounts", headers=auth(t), json=account_body("A1"))).status_code == 201
    assert (await client.post("/v1/accounts", headers=auth(t), json=account_body("A1"))).status_code == 409

    put = await client.put("/v1/accounts/A1/lots", headers=auth(t), json={"cash_usd": "10", "lots": [
        {"lot_id": "N1", "symbol": "CCC", "shares": "1.5", "cost_basis_usd_per_share": "3",
         "acquired_on": "2022-01-01"}]})
    assert put.status_code == 200, put.text
    assert put.json()["positions"] == {"CCC": "1.50000000"} and D(put.json()["cash_usd"]) == 10

    # another tenant sees nothing of it
    for path in ("/v1/accounts/A1", "/v1/accounts/A1/drift", "/v1/models/core"):
        assert (await client.get(path, headers=auth(other))).status_code == 404
    assert (await client.put("/v1/accounts/A1/lots", headers=auth(other), json={"lots": []})).status_code == 404
    assert (await client.get("/v1/accounts", headers=auth(other))).json() == []
    assert (await client.get("/v1/accounts/A1")).status_code == 401
    assert (await client.post("/v1/accounts", headers=auth(t, scopes=["book:read"]),
                              json=account_body("A2"))).status_code == 403


async def test_bulk_import_keeps_the_good_rows(svc):
    _, client, _ = svc
    t = tenant()
    await make_model(client, t)
    negative = account_body("B2")
    negative["lots"][1]["shares"] = "-1"
    rows = [account_body("B1"), negative, account_body("B3", model_id="ghost"), account_body("B4"),
            account_body("B1"), {"garbage": True}]
    r = await client.post("/v1/accounts/bulk", headers=auth(t), json={"accounts": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] == 2 and body["created_ids"] == ["B1", "B4"]
    assert [(x["index"], x["account_id"]) for x in body["rejected"]] == [
        (1, "B2"), (2, "B3"), (4, "B1"), (5, None)]
    assert "lots.1.shares" in body["rejected"][0]["errors"][0]
    listed = (await client.get("/v1/accounts", headers=auth(t), params={"household_id": "HH1"})).json()
    assert [a["account_id"] for a in listed] == ["B1", "B4"]
    assert all(len(a["lots"]) == 3 for a in listed)
    hh = (await client.get("/v1/households/HH1", headers=auth(t))).json()
    assert hh["account_ids"] == ["B1", "B4"]


async def test_fills_that_arrive_before_their_approval_leave_the_account_armed(svc, kafka_bootstrap):
    """rebalance.decided.v1 and trades.executed.v1 are separate topics: a fast OMS's fills can
    overtake the approval they answer. The late approval must not park the account in
    "executing" waiting for fills that already came."""
    app, client, producer = svc
    t = tenant()
    await make_model(client, t)
    assert (await client.post("/v1/accounts", headers=auth(t), json=account_body("ACC9"))).status_code == 201
    await tick(app, producer, t, "AAA", "10", 0)
    await tick(app, producer, t, "BBB", "10", 0)
    await tick(app, producer, t, "AAA", "14", 1)
    assert (await client.get("/v1/accounts/ACC9", headers=auth(t))).json()["drift_state"] == "pending"
    proposal = uuid.uuid4()
    fills = TradesExecuted(execution_id=f"EX-{uuid.uuid4().hex[:6]}", proposal_id=proposal, account_id="ACC9", fills=[
        Fill(client_order_id="P9-AAA-sell", symbol="AAA", side="sell", shares=D(5), price_usd=D(14),
             executed_at=T0 + timedelta(days=1), lots=[LotInstruction(lot_id="L2", shares=D(5))])])
    fx = Envelope.new(fills, producer="oms", tenant_id=t)
    await send(producer, fx, "ACC9")
    await processed(app, fx)
    ok = Envelope.new(RebalanceDecided(proposal_id=proposal, account_id="ACC9", decision="approved",
                                       decided_by="policy:automatic", automatic=True, decided_at=T0),
                      producer="test", tenant_id=t)
    await send(producer, ok, "ACC9")
    await processed(app, ok)
    assert (await client.get("/v1/accounts/ACC9", headers=auth(t))).json()["drift_state"] == "armed"


async def test_metrics_show_events_handled_and_consumer_lag(svc):
    app, client, producer = svc
    t = tenant()
    await tick(app, producer, t, "AAA", "10", 0)
    text = (await client.get("/metrics")).text
    processed_lines = [ln for ln in text.splitlines() if ln.startswith("trimtab_events_processed_total{")]
    assert any('consumer="drift-monitor"' in ln and 'event_type="PriceTicked"' in ln
               and float(ln.rsplit(" ", 1)[1]) >= 1 for ln in processed_lines), processed_lines
    lag_lines = [ln for ln in text.splitlines() if ln.startswith("trimtab_consumer_lag{")]
    assert any('topic="market.ticks.v1"' in ln for ln in lag_lines), lag_lines
    assert "trimtab_handler_duration_milliseconds_bucket" in text


@pytest.mark.parametrize("decided_by", ["optimizer:superseded", "optimizer:account-traded"])
async def test_an_older_proposals_expiry_leaves_the_pending_drift_pending(svc, kafka_bootstrap, decided_by):
    """The optimizer expires an account's older open proposal when a newer drift's proposal is
    stored (or when fills of the account come in): that decision is not the pending drift's
    answer. Applied, it re-armed the account under the newer proposal, and the next drift
    superseded that one in turn."""
    app, client, producer = svc
    t = tenant()
    await make_model(client, t)
    assert (await client.post("/v1/accounts", headers=auth(t), json=account_body("ACC7"))).status_code == 201
    await tick(app, producer, t, "AAA", "10", 0)
    await tick(app, producer, t, "BBB", "10", 0)
    await tick(app, producer, t, "AAA", "14", 1)
    assert (await client.get("/v1/accounts/ACC7", headers=auth(t))).json()["drift_state"] == "pending"
    old = Envelope.new(RebalanceDecided(proposal_id=uuid.uuid4(), account_id="ACC7", decision="expired",
                                        decided_by=decided_by, automatic=True, decided_at=T0,
                                        reason="superseded by a newer proposal"),
                       producer="optimizer", tenant_id=t)
    await send(producer, old, "ACC7")
    await processed(app, old)
    assert (await client.get("/v1/accounts/ACC7", headers=auth(t))).json()["drift_state"] == "pending"
    assert await drifts_in_outbox(app, t, "ACC7") == 1


async def test_the_pending_drifts_own_proposal_expired_by_fills_rearms_the_account(svc, kafka_bootstrap):
    """Found by review: fills and drifts travel on different topics, so the optimizer can store
    the proposal of a drift whose snapshot already holds some fills, then expire it when it
    handles those fills (`optimizer:account-traded`). Ignored, that left the account pending
    for good; the pending drift's own proposal re-arms it."""
    from trimtab.drift_monitor.models import accounts
    app, client, producer = svc
    t = tenant()
    await make_model(client, t)
    assert (await client.post("/v1/accounts", headers=auth(t), json=account_body("ACC8"))).status_code == 201
    await tick(app, producer, t, "AAA", "10", 0)
    await tick(app, producer, t, "BBB", "10", 0)
    await tick(app, producer, t, "AAA", "14", 1)
    async with app.state.runtime.sessionmaker() as s:
        drift_id = (await s.execute(select(accounts.c.pending_drift_id).where(
            accounts.c.tenant_id == t, accounts.c.account_id == "ACC8"))).scalar_one()
    own = Envelope.new(RebalanceDecided(proposal_id=proposal_id_for(t, drift_id), account_id="ACC8",
                                        decision="expired", decided_by="optimizer:account-traded", automatic=True,
                                        decided_at=T0, reason="the account traded after its snapshot"),
                       producer="optimizer", tenant_id=t)
    await send(producer, own, "ACC8")
    await processed(app, own)
    assert (await client.get("/v1/accounts/ACC8", headers=auth(t))).json()["drift_state"] != "pending"
