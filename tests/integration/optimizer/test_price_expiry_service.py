"""Price-move expiry against real PostgreSQL and Kafka: ticks within the limit leave a proposal
open, late ticks change nothing, a tick beyond the limit expires it (RebalanceDecided "expired"
with the move in its reason), a redelivered tick changes nothing, a tick that arrived while the
proposal was solved expires it when it is stored, and an approval after a big move is refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
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
from tests.support import auth, running, settings, wait_consumers_assigned
from trimtab.optimizer import prices
from trimtab.optimizer.app import PRICES_CONSUMER, Settings, create
from trimtab.optimizer.models import latest_prices
from trimtab.optimizer.proposals import proposal_id_for
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import (
    DriftDetected,
    PriceTicked,
    RebalanceDecided,
    RebalanceProposed,
)

pytestmark = pytest.mark.integration
D = Decimal


@pytest.fixture(scope="module")
async def service(database_url, kafka_bootstrap):
    app = create(settings(Settings, database_url, kafka_bootstrap, PROPOSAL_MAX_PRICE_MOVE="0.02"))
    async with running(app) as client:
        await wait_consumers_assigned(app)
        yield app, client


def new_tenant() -> str:
    """Latest prices are per tenant: each test its own, so no test sees another's ticks."""
    return f"px-{uuid.uuid4().hex[:8]}"


def tick(tenant: str, symbol: str, price: str, as_of: datetime) -> Envelope:
    return Envelope.new(PriceTicked(symbol=symbol, price_usd=D(price), as_of=as_of, source="test"),
                        producer="market-data", tenant_id=tenant)


async def propose(producer, kafka_bootstrap, tenant: str, account: str,  # type: ignore[no-untyped-def]
                  automation: str = "advisor_approval") -> tuple[Envelope, RebalanceProposed]:
    snapshot = drifted(account, automation=automation)
    drift = drift_env(snapshot, tenant)
    await send(producer, drift, account)
    pid = proposal_id_for(tenant, drift.parse(DriftDetected).drift_id)
    [proposed] = await events_of(kafka_bootstrap, "rebalance.proposed.v1", pid)
    return drift, proposed


async def stored_price(app, tenant: str, symbol: str, price: str, timeout_s: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Wait until the optimizer's tick consumer has stored `price` as the latest of `symbol`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with app.state.runtime.sessionmaker() as s:
            got = (await s.execute(select(latest_prices.c.price_usd).where(
                latest_prices.c.tenant_id == tenant, latest_prices.c.symbol == symbol))).scalar()
        if got is not None and got == D(price):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{tenant}/{symbol} not stored at {price} in {timeout_s}s")


def prices_consumer(app):  # type: ignore[no-untyped-def]
    [c] = [c for c in app.state.runtime.consumers if c.name == PRICES_CONSUMER]
    return c


async def test_ticks_within_the_limit_or_late_leave_it_open_one_beyond_expires_it(
        service, producer, kafka_bootstrap):
    app, client = service
    tenant, account = new_tenant(), "acc-px-tick"
    drift, proposed = await propose(producer, kafka_bootstrap, tenant, account)
    p = proposed.parse(RebalanceProposed)
    vti = next(o for o in p.orders if o.symbol == "VTI")
    assert vti.est_price_usd == D("250")  # the snapshot's price
    await wait_state(client, p.proposal_id, "proposed", tenant)
    as_of = p.snapshot.as_of

    # +1.20 %: within the 2 % limit.
    await send(producer, tick(tenant, "VTI", "253", as_of + timedelta(hours=1)), "VTI")
    await stored_price(app, tenant, "VTI", "253")
    # BND +38.9 %, but priced before the snapshot (a late tick): stored, expires nothing.
    await send(producer, tick(tenant, "BND", "100", as_of - timedelta(hours=1)), "BND")
    await stored_price(app, tenant, "BND", "100")
    # VTI -20 % from an older tick than the stored one: out of order, replaces nothing.
    await send(producer, tick(tenant, "VTI", "200", as_of + timedelta(minutes=30)), "VTI")
    # Another tenant's VTI crash is not this tenant's price.
    await send(producer, tick(new_tenant(), "VTI", "100", as_of + timedelta(hours=2)), "VTI")
    c = prices_consumer(app)
    handled = c.stats.handled
    # A later tick within the limit, so we know the ones before it were handled.
    await send(producer, tick(tenant, "VTI", "254.50", as_of + timedelta(hours=2)), "VTI")
    await stored_price(app, tenant, "VTI", "254.50")
    assert c.stats.handled > handled
    assert (await client.get(f"/v1/proposals/{p.proposal_id}", headers=auth(tenant))).json()["state"] == "proposed"

    # +3.12 %: beyond the limit.
    big = tick(tenant, "VTI", "257.80", as_of + timedelta(hours=3))
    # a trace of its own (as a traced producer's tick carries), distinct from the proposal's
    big = big.model_copy(update={"trace": {"traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"}})
    await send(producer, big, "VTI")
    [decided] = await events_of(kafka_bootstrap, "rebalance.decided.v1", p.proposal_id)
    d = decided.parse(RebalanceDecided)
    reason = "VTI moved +3.12 % since the snapshot ($250.00 -> $257.80; limit 2.00 %)"
    assert (d.decision, d.decided_by, d.automatic, d.reason) == ("expired", "optimizer:price-move", True, reason)
    # The proposal's chain continues; the tick is the cause.
    assert decided.correlation_id == drift.correlation_id and decided.causation_id == big.event_id
    assert decided.trace == big.trace  # in the tick's trace, not the run span's (one trace per tick)
    body = await wait_state(client, p.proposal_id, "expired", tenant)
    assert body["decision"]["decided_by"] == "optimizer:price-move" and body["decision"]["reason"] == reason

    # The same tick delivered again, and a bigger move after: nothing more is decided.
    dup = c.stats.duplicates
    await send(producer, big, "VTI")
    await send(producer, tick(tenant, "VTI", "300", as_of + timedelta(hours=4)), "VTI")
    await stored_price(app, tenant, "VTI", "300")
    assert c.stats.duplicates == dup + 1
    await asyncio.sleep(0.5)  # give a (wrong) second decision time to reach the topic
    assert len(await events_of(kafka_bootstrap, "rebalance.decided.v1", p.proposal_id)) == 1


async def test_a_quote_older_than_its_symbols_snapshot_price_expires_nothing(service, producer, kafka_bootstrap):
    """The snapshot priced VTI five seconds after its `as_of` (the triggering tick's time: the
    drift monitor prices each symbol with its newest stored price). A -20 % VTI tick from two
    seconds after `as_of` is older than that price: it says nothing new and expires nothing
    (compared with `as_of` alone it did, in the SQL pre-filter and in Python). A later big move
    still expires it."""
    app, client = service
    tenant, account = new_tenant(), "acc-px-priced-at"
    snapshot = drifted(account)
    vti_at = snapshot.as_of + timedelta(seconds=5)
    snapshot = snapshot.model_copy(update={"securities": [
        sec.model_copy(update={"price_as_of": vti_at}) if sec.symbol == "VTI" else sec
        for sec in snapshot.securities]})
    drift = drift_env(snapshot, tenant)
    await send(producer, drift, account)
    pid = proposal_id_for(tenant, drift.parse(DriftDetected).drift_id)
    [proposed] = await events_of(kafka_bootstrap, "rebalance.proposed.v1", pid)
    p = proposed.parse(RebalanceProposed)
    assert any(o.symbol == "VTI" for o in p.orders)
    await wait_state(client, pid, "proposed", tenant)
    await send(producer, tick(tenant, "VTI", "200", snapshot.as_of + timedelta(seconds=2)), "VTI")
    await stored_price(app, tenant, "VTI", "200")
    await asyncio.sleep(0.3)
    assert (await client.get(f"/v1/proposals/{pid}", headers=auth(tenant))).json()["state"] == "proposed"
    await send(producer, tick(tenant, "VTI", "200", snapshot.as_of + timedelta(hours=1)), "VTI")
    await wait_state(client, pid, "expired", tenant)


async def test_a_tick_that_arrived_during_the_solve_expires_the_proposal_when_stored(
        service, producer, kafka_bootstrap):
    app, client = service
    tenant, account = new_tenant(), "acc-px-early"
    as_of = drifted(account).as_of
    # VNQ (bought by the rebalance at $85) already at $80 (-5.88 %) when the proposal is stored.
    await send(producer, tick(tenant, "VNQ", "80", as_of + timedelta(minutes=1)), "VNQ")
    await stored_price(app, tenant, "VNQ", "80")
    drift, proposed = await propose(producer, kafka_bootstrap, tenant, account, automation="automatic")
    p = proposed.parse(RebalanceProposed)
    assert any(o.symbol == "VNQ" and o.est_price_usd == D("85") for o in p.orders)
    [decided] = await events_of(kafka_bootstrap, "rebalance.decided.v1", p.proposal_id)
    d = decided.parse(RebalanceDecided)
    assert (d.decision, d.decided_by) == ("expired", "optimizer:price-move")
    assert d.reason == "VNQ moved -5.88 % since the snapshot ($85.00 -> $80.00; limit 2.00 %)"
    assert decided.causation_id == drift.event_id
    # Risk and explanation arriving later change nothing: no automatic approval.
    await send(producer, risk_of(proposed), account)
    await send(producer, explanation_of(proposed), account)
    await asyncio.sleep(1.0)
    assert len(await events_of(kafka_bootstrap, "rebalance.decided.v1", p.proposal_id)) == 1
    assert (await client.get(f"/v1/proposals/{p.proposal_id}", headers=auth(tenant))).json()["state"] == "expired"


async def test_approve_after_a_big_move_is_refused_and_expires_the_proposal(
        service, producer, kafka_bootstrap):
    app, client = service
    tenant, account = new_tenant(), "acc-px-approve"
    drift, proposed = await propose(producer, kafka_bootstrap, tenant, account)
    p = proposed.parse(RebalanceProposed)
    await send(producer, risk_of(proposed), account)
    await send(producer, explanation_of(proposed), account)
    await wait_state(client, p.proposal_id, "ready", tenant)
    url = f"/v1/proposals/{p.proposal_id}/approve"
    advisor = auth(tenant, subject="jane@firm")

    # The race: VTI's new price is known (the tick's upsert, as the tick handler writes it) but
    # no expiry ran for it. The approval must not go through on the stale snapshot.
    async with app.state.runtime.uow() as uow:
        await prices.record_quotes(uow.session, {
            (tenant, "VTI"): prices.Quote(D("243.75"), p.snapshot.as_of + timedelta(hours=1))})
        await uow.commit()
    r = await client.post(url, headers=advisor | {"Idempotency-Key": f"k-{p.proposal_id}"},
                          json={"reason": "reviewed"})
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    reason = "VTI moved -2.50 % since the snapshot ($250.00 -> $243.75; limit 2.00 %)"
    assert problem["state"] == "expired" and reason in problem["detail"]
    assert problem["price_moves"] == [{"symbol": "VTI", "est_price_usd": "250", "price_usd": "243.75000000",
                                       "move_pct": "-2.50"}]
    # Expired for good, with its event; no trades were approved.
    [decided] = await events_of(kafka_bootstrap, "rebalance.decided.v1", p.proposal_id)
    d = decided.parse(RebalanceDecided)
    assert (d.decision, d.decided_by, d.automatic, d.reason) == ("expired", "optimizer:price-move", True, reason)
    assert decided.correlation_id == drift.correlation_id and decided.causation_id == proposed.event_id
    body = (await client.get(f"/v1/proposals/{p.proposal_id}", headers=auth(tenant))).json()
    assert body["state"] == "expired"
    again = await client.post(url, headers=advisor | {"Idempotency-Key": f"k-{p.proposal_id}"},
                              json={"reason": "reviewed"})
    assert again.status_code == 409 and again.json()["state"] == "expired"
    await asyncio.sleep(0.5)
    approved = await events_of(kafka_bootstrap, "trades.approved.v1", p.proposal_id, n=0)
    assert approved == []


async def test_a_far_future_stored_price_is_replaced_by_the_next_real_one(service):
    """A year-9999 price (a tick market-data accepted before it refused them) is not newer than a
    real one, it is wrong: the next real quote replaces it instead of being ignored for good."""
    from datetime import UTC

    app, _ = service
    tenant = new_tenant()
    real = datetime(2024, 1, 2, 21, tzinfo=UTC)
    async with app.state.runtime.uow() as uow:
        await prices.record_quotes(uow.session, {(tenant, "VTI"): prices.Quote(D("100"), datetime(9999, 12, 31, tzinfo=UTC))})
        changed = await prices.record_quotes(uow.session, {(tenant, "VTI"): prices.Quote(D("101"), real)})
        await uow.commit()
    assert set(changed) == {(tenant, "VTI")}
    async with app.state.runtime.sessionmaker() as s:
        row = (await s.execute(select(latest_prices.c.price_usd, latest_prices.c.as_of).where(
            latest_prices.c.tenant_id == tenant, latest_prices.c.symbol == "VTI"))).one()
    assert row.price_usd == D("101") and row.as_of == real
    # ... while an older real quote still changes nothing.
    async with app.state.runtime.uow() as uow:
        assert await prices.record_quotes(uow.session, {
            (tenant, "VTI"): prices.Quote(D("99"), real - timedelta(days=1))}) == {}
        await uow.commit()
