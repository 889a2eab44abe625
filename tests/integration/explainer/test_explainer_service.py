"""The explainer against real PostgreSQL and Kafka: a proposal in, a stored explanation and one
`ExplanationCreated` out (same correlation, caused by the proposal); redeliveries explain once;
a proposal whose snapshot does not match its hash is refused; the API is scoped to the tenant."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest

from tests.support import auth, read_events, running, settings, wait_consumers_assigned
from tests.unit.rebalance.conftest import drifted_account
from trimtab.explainer.app import Settings, create
from trimtab.explainer.handlers import explanation_id_for
from trimtab.rebalance import explain, explanation_payload, propose
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import ExplanationCreated, RebalanceProposed, topic_of
from trimtab.shared.kafka import encode_headers, start_producer
from trimtab.shared.outbox import kafka_headers

pytestmark = pytest.mark.integration

TENANT = f"expl-{uuid.uuid4().hex[:8]}"
OTHER = f"other-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def service(database_url, kafka_bootstrap):
    # A fresh proposal without an assessment waits this long for one (the risk test stores its
    # assessment first).
    app = create(settings(Settings, database_url, kafka_bootstrap, EXPLAINER_RISK_WAIT_MS=300))
    async with running(app) as client:
        await wait_consumers_assigned(app)
        yield app, client


async def produce(bootstrap: str, events: list[tuple[Envelope, str]]) -> None:
    producer = await start_producer(bootstrap, "explainer-test")
    try:
        sent = [await producer.send(topic_of(env.event_type), env.to_bytes(), key=key.encode(),
                                    headers=encode_headers(kafka_headers(env)))
                for env, key in events]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def proposed(seed: int, *, account: str | None = None, tenant: str = TENANT,
             proposal: RebalanceProposed | None = None) -> Envelope:
    if proposal is None:
        account = account or f"acct-{uuid.uuid4().hex[:6]}"
        snap = drifted_account(8, gains=True, seed=seed, reserve=2_000, account_id=account)
        proposal = propose(snap, proposal_id=uuid.uuid4()).to_event()
    return Envelope.new(proposal, producer="optimizer", tenant_id=tenant)


async def wait_for(fn, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        out = await fn()
        if out is not None:
            return out
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.2)


async def explained(bootstrap: str, causes: set[uuid.UUID]) -> list[Envelope]:
    evs = await read_events(bootstrap, "explanation.created.v1", timeout_s=90,
                            until=lambda evs: causes <= {e.causation_id for e in evs})
    return [e for e in evs if e.causation_id in causes]


async def test_a_proposal_is_explained_stored_and_announced(service, kafka_bootstrap):
    _, client = service
    env = proposed(1)
    p = env.parse(RebalanceProposed)
    await produce(kafka_bootstrap, [(env, p.account_id)])
    [out] = await explained(kafka_bootstrap, {env.event_id})
    assert out.producer == "explainer" and out.tenant_id == TENANT
    assert out.correlation_id == env.correlation_id
    e = out.parse(ExplanationCreated)
    assert e.explanation_id == explanation_id_for(TENANT, p.proposal_id)
    assert e.proposal_id == p.proposal_id and e.snapshot_hash == p.snapshot_hash
    assert {o.symbol for o in p.orders} <= {t.symbol for t in e.trades}
    for t in e.trades:  # efficiency, on the wire
        assert abs(t.base_shares + sum(t.contributions_shares.values()) - t.trade_shares) <= Decimal("1e-5")
    # The event carries the optimizer's drivers: exactly what a replay (the audit service's)
    # recomputes with `explain(proposal)`.
    assert e.drivers == ["drift", "risk", "cost", "tax", "cash", "restrictions", "esg"]
    assert e.trades == explanation_payload(explain(p)).trades

    r = await client.get(f"/v1/explanations/{p.proposal_id}", headers=auth(TENANT, ["explain:read"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["explanation_id"] == str(e.explanation_id)
    assert body["correlation_id"] == str(env.correlation_id)
    assert body["drivers"] == ["drift", "risk", "cost", "tax_losses", "tax_gains", "cash", "restrictions", "esg"]
    assert body["event_drivers"] == e.drivers
    # No restricted security: `restrictions` is structurally null, so half of the 2^6 coalitions
    # equal another and are not solved; each of the other 32 takes at least one solve.
    assert body["resolves"] == e.resolves >= 2 ** 5
    by_symbol = {t["symbol"]: t for t in body["trades"]}
    for o in p.orders:
        t = by_symbol[o.symbol]
        assert Decimal(t["price_usd"]) == o.est_price_usd
        total_usd = sum(Decimal(v) for v in t["contributions_usd"].values())
        assert abs(total_usd - Decimal(t["trade_usd"])) <= Decimal("0.05")
        assert set(t["contributions_shares"]) == set(body["drivers"])
        total = Decimal(t["base_shares"]) + sum(Decimal(v) for v in t["contributions_shares"].values())
        assert abs(total - Decimal(t["trade_shares"])) <= Decimal("1e-5")
        assert t["wash_sale"]  # every order has a wash-sale status
    # Counterfactuals of the largest orders (the service's default bound), each a real search.
    largest = sorted(p.orders, key=lambda o: (-o.est_notional_usd, o.symbol))[:8]
    for o in largest:
        cfs = {c["parameter"]: c for c in by_symbol[o.symbol]["counterfactuals"]}
        assert "band" in cfs and cfs["band"]["resolves"] > 0
        assert cfs["band"]["threshold"] is None or Decimal(cfs["band"]["threshold"]) > Decimal(cfs["band"]["current"])
    assert "Would not trade if:" in e.narrative_advisor and "Wash sale:" in e.narrative_advisor
    n = await client.get(f"/v1/explanations/{p.proposal_id}/narrative", headers=auth(TENANT))
    assert n.status_code == 200
    assert n.json()["advisor"] == e.narrative_advisor and n.json()["client"] == e.narrative_client


async def test_charts_are_served_deterministically_and_unknown_names_are_404(service, kafka_bootstrap):
    _, client = service
    env = proposed(7)
    p = env.parse(RebalanceProposed)
    await produce(kafka_bootstrap, [(env, p.account_id)])
    await explained(kafka_bootstrap, {env.event_id})
    url = f"/v1/explanations/{p.proposal_id}/charts"
    listed = (await client.get(url, headers=auth(TENANT))).json()["charts"]
    sym = sorted(o.symbol for o in p.orders)[0]
    assert {"summary.svg", "summary.png", f"trade-{sym}.svg", f"trade-{sym}.png"} <= set(listed)
    svg = await client.get(f"{url}/summary.svg", headers=auth(TENANT))
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert svg.content.lstrip().startswith(b"<?xml") and b"<svg" in svg.content
    png = await client.get(f"{url}/trade-{sym}.png", headers=auth(TENANT))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    for name, first in (("summary.svg", svg.content), (f"trade-{sym}.png", png.content)):
        again = await client.get(f"{url}/{name}", headers=auth(TENANT))
        assert again.content == first  # same bytes every time
    for bad in ("nope.svg", "trade-ZZZZ.png", "summary.gif"):
        r = await client.get(f"{url}/{bad}", headers=auth(TENANT))
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert (await client.get(f"{url}/summary.svg", headers=auth(OTHER))).status_code == 404


async def test_other_tenants_and_missing_scopes_see_nothing(service, kafka_bootstrap):
    _, client = service
    env = proposed(2)
    p = env.parse(RebalanceProposed)
    await produce(kafka_bootstrap, [(env, p.account_id)])
    await explained(kafka_bootstrap, {env.event_id})
    url = f"/v1/explanations/{p.proposal_id}"
    r = await client.get(url, headers=auth(OTHER))
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert (await client.get(url + "/narrative", headers=auth(OTHER))).status_code == 404
    assert (await client.get(url, headers=auth(TENANT, ["proposals:read"]))).status_code == 403
    assert (await client.get(url)).status_code == 401
    missing = await client.get(f"/v1/explanations/{uuid.uuid4()}", headers=auth(TENANT))
    assert missing.status_code == 404 and missing.json()["status"] == 404


async def test_a_proposal_delivered_again_is_explained_once(service, kafka_bootstrap):
    _, client = service
    first = proposed(3)
    p = first.parse(RebalanceProposed)
    again_new_id = proposed(0, proposal=p)  # same proposal, new event id
    marker = proposed(4, account=p.account_id)
    # Same key: one partition, so the marker is handled after the duplicates.
    await produce(kafka_bootstrap, [(first, p.account_id), (first, p.account_id),
                                    (again_new_id, p.account_id), (marker, p.account_id)])
    # The relay publishes one key's events in order: a second explanation would precede the marker's.
    evs = await read_events(kafka_bootstrap, "explanation.created.v1", timeout_s=90,
                            until=lambda evs: marker.event_id in {e.causation_id for e in evs})
    mine = [e for e in evs if e.payload["proposal_id"] == str(p.proposal_id)]
    assert len(mine) == 1 and mine[0].causation_id == first.event_id
    assert (await client.get(f"/v1/explanations/{p.proposal_id}", headers=auth(TENANT))).status_code == 200


async def test_a_snapshot_that_does_not_match_its_hash_is_refused(service, kafka_bootstrap):
    _, client = service
    good = proposed(5).parse(RebalanceProposed)
    forged = good.model_copy(update={"snapshot": good.snapshot.model_copy(update={"cash_usd": Decimal("1")})})
    env = proposed(0, proposal=forged)
    marker = proposed(6, account=good.account_id)
    await produce(kafka_bootstrap, [(env, good.account_id), (marker, good.account_id)])
    evs = await read_events(kafka_bootstrap, "explanation.created.v1", timeout_s=90,
                            until=lambda evs: marker.event_id in {e.causation_id for e in evs})
    r = await client.get(f"/v1/explanations/{good.proposal_id}", headers=auth(TENANT))
    assert r.status_code == 422, r.text
    assert r.json()["error_kind"] == "snapshot_mismatch"
    assert not [e for e in evs if e.payload["proposal_id"] == str(good.proposal_id)]


async def test_the_event_loop_stays_responsive_while_explaining(service, kafka_bootstrap):
    _, client = service
    events = [proposed(10 + k) for k in range(3)]
    await produce(kafka_bootstrap, [(e, e.payload["account_id"]) for e in events])
    causes = {e.event_id for e in events}
    waiting = asyncio.create_task(explained(kafka_bootstrap, causes))
    slowest = 0.0
    while not waiting.done():
        t0 = time.perf_counter()
        assert (await client.get("/livez")).status_code == 200
        slowest = max(slowest, time.perf_counter() - t0)
        await asyncio.sleep(0.05)
    assert len(await waiting) == 3
    assert slowest < 0.5


async def test_the_narratives_quote_the_proposals_risk_assessment(service, kafka_bootstrap):
    """A proposal's `RiskAssessed` (kept by the `explainer-risk` consumer) is quoted by its
    narratives and named by `risk_event_id`; a proposal without one gets neither, after the
    bounded wait."""
    from sqlalchemy import select

    from trimtab.explainer.models import risk_assessments
    from trimtab.shared.events import RiskAssessed, RiskModelInfo

    app, _ = service
    env = proposed(11)
    p = env.parse(RebalanceProposed)
    risk = Envelope.new(RiskAssessed(
        proposal_id=p.proposal_id, account_id=p.account_id, pre_vol_annual_pct=Decimal("14.20"),
        post_vol_annual_pct=Decimal("12.90"), model=RiskModelInfo(name="ewma-shrunk", version="1"),
        pre_score=41, post_score=37, tolerance_score=45, pre_var_95_1d_usd=Decimal("3120.55"),
        post_var_95_1d_usd=Decimal("2840.10"), pre_tracking_error_annual_pct=Decimal("3.10"),
        post_tracking_error_annual_pct=Decimal("0.80")), producer="risk", tenant_id=TENANT)
    await produce(kafka_bootstrap, [(risk, p.account_id)])
    sm = app.state.runtime.sessionmaker

    async def stored():  # type: ignore[no-untyped-def]
        async with sm() as s:
            return (await s.execute(select(risk_assessments.c.event_id).where(
                risk_assessments.c.tenant_id == TENANT, risk_assessments.c.proposal_id == p.proposal_id))).first()

    await wait_for(stored)
    bare = proposed(12)
    await produce(kafka_bootstrap, [(env, p.account_id), (bare, bare.parse(RebalanceProposed).account_id)])
    envs = {e.causation_id: e for e in await explained(kafka_bootstrap, {env.event_id, bare.event_id})}
    quoted, plain = (envs[k].parse(ExplanationCreated) for k in (env.event_id, bare.event_id))
    assert quoted.risk_event_id == risk.event_id
    assert ("Risk (ewma-shrunk 1): annualized volatility 14.20% -> 12.90%; risk score (1-99) 41 -> 37, "
            "within the client's tolerance of 45; 1-day 95% VaR $3,120.55 -> $2,840.10 (-$280.45); "
            "tracking error to target 3.10% -> 0.80% a year.") in quoted.narrative_advisor
    assert plain.risk_event_id is None and "Risk (" not in plain.narrative_advisor
    assert "risk_event_id" not in envs[bare.event_id].payload  # left out, as for older producers


async def test_two_copies_of_a_proposal_explained_at_once_are_announced_once(service):
    """The same proposal under two event ids, handled at the same time (two partitions, or two
    replicas): the one that commits second finds the explanation created and publishes nothing."""
    from trimtab.explainer.engine import Outcome
    from trimtab.explainer.handlers import on_rebalance_proposed
    from trimtab.explainer.models import explanations, infra
    from trimtab.shared.outbox import UnitOfWork

    app, _ = service
    sm = app.state.runtime.sessionmaker
    env = proposed(21)
    p = env.parse(RebalanceProposed)
    payload = explanation_payload(explain(p), explanation_id=explanation_id_for(TENANT, p.proposal_id))

    class OtherCopyWinsMeanwhile:
        """Explains, while the other copy's handler commits its explanation of the proposal."""

        async def explain(self, proposal, *, explanation_id, risk=None):  # type: ignore[no-untyped-def]
            async with sm() as s, s.begin():
                await s.execute(explanations.insert().values(
                    tenant_id=TENANT, proposal_id=p.proposal_id, explanation_id=explanation_id,
                    account_id=p.account_id, snapshot_hash=p.snapshot_hash, status="created",
                    payload=payload.model_dump(mode="json"), optimizer_version="x",
                    proposal_optimizer_version="x", correlation_id=env.correlation_id,
                    causation_id=uuid.uuid4()))
            return Outcome(payload=payload)

    async with UnitOfWork(sm, infra) as uow:
        await on_rebalance_proposed(env, uow, engine=OtherCopyWinsMeanwhile())  # type: ignore[arg-type]
        assert uow.published == [], "announced a second explanation of the proposal"
        await uow.commit()


async def test_old_risk_assessments_are_purged_and_recent_ones_kept(service):
    """The stored risk assessments are a cache of minutes' use: those older than the retention
    are deleted (in batches), the recent ones stay."""
    from sqlalchemy import func, insert, select, update

    from trimtab.explainer.app import purge_once
    from trimtab.explainer.handlers import purge_risk_assessments
    from trimtab.explainer.models import infra, risk_assessments
    from trimtab.shared.outbox import UnitOfWork

    app, _ = service
    sm = app.state.runtime.sessionmaker
    tenant = f"purge-{uuid.uuid4().hex[:8]}"
    ids = [uuid.uuid4() for _ in range(5)]
    async with sm() as s, s.begin():
        await s.execute(insert(risk_assessments), [
            {"tenant_id": tenant, "proposal_id": pid, "event_id": uuid.uuid4(), "payload": {"account_id": "A"}}
            for pid in ids])
        # Three arrived two days ago, two just now.
        await s.execute(update(risk_assessments).where(risk_assessments.c.proposal_id.in_(ids[:3]))
                        .values(received_at=func.now() - func.make_interval(0, 0, 0, 2)))

    async def left() -> set[uuid.UUID]:
        async with sm() as s:
            return set((await s.execute(select(risk_assessments.c.proposal_id).where(
                risk_assessments.c.tenant_id == tenant))).scalars())

    async with UnitOfWork(sm, infra) as uow:
        assert await purge_risk_assessments(uow, 3 * 86400.0) == 0, "nothing is three days old"
        # In batches: a limit of 2 deletes two of the three old ones, the oldest first.
        assert await purge_risk_assessments(uow, 86400.0, limit=2) == 2
        await uow.commit()
    assert len(await left() & set(ids[:3])) == 1 and set(ids[3:]) <= await left()
    assert await purge_once(app.state.runtime, retention_h=24.0) >= 1
    assert await left() == set(ids[3:]), "the old ones are gone, the recent ones kept"
