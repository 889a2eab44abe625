"""audit against real PostgreSQL and Kafka: every event recorded once, in a gap-free hash chain
the database will not let anyone edit, readable per tenant, verifiable to the exact bad seq.

The broker and database are shared with the rest of the session, and the audit consumer reads
every topic from the beginning, so other suites' events are in the record too: assertions about
the whole table are about its shape (gap-free, intact), never its size.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import auth
from trimtab.audit import handlers
from trimtab.audit.verify import verify_record
from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.events import (
    TOPICS,
    AccountSnapshot,
    DriftDetected,
    ExplanationCreated,
    LotSnapshot,
    Order,
    PositionSnapshot,
    PriceTicked,
    RebalanceDecided,
    RebalanceProposed,
    RiskAssessed,
    RiskModelInfo,
    SecuritySnapshot,
    SolverInfo,
    TradeAttribution,
    TradesApproved,
    topic_of,
)
from trimtab.shared.kafka import encode_headers, start_producer
from trimtab.shared.outbox import kafka_headers

pytestmark = pytest.mark.integration

NOW = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
READ = ["audit:read"]


# ------------------------------------------------------------------ building and sending events


def one_tick_chain(tenant: str, *, account_id: str | None = None, household_id: str | None = None,
                   reason: str | None = None) -> tuple[list[tuple[Envelope, str]], uuid.UUID]:
    """A tick's whole chain with valid payloads: tick → drift → proposal → risk → explanation
    → decision → approved trades, each caused by the one before. Returns (envelope, key) pairs.
    The account snapshot (drift, proposal) names `household_id`; the decision carries `reason`."""
    acct = account_id or f"ACC-{uuid.uuid4().hex[:6]}"
    proposal_id = uuid.uuid4()
    snapshot = AccountSnapshot(
        account_id=acct, household_id=household_id, cash_usd=Decimal("1000"),
        positions=[PositionSnapshot(symbol="AAA", shares=Decimal("100"), lots=[LotSnapshot(
            lot_id="L1", shares=Decimal("100"), cost_basis_usd_per_share=Decimal("80"),
            acquired_on=date(2022, 5, 1))])],
        targets={"AAA": Decimal("0.5"), "BBB": Decimal("0.5")},
        securities=[SecuritySnapshot(symbol="AAA", price_usd=Decimal("101.25")),
                    SecuritySnapshot(symbol="BBB", price_usd=Decimal("55.5"))],
        as_of=NOW)
    order = Order(symbol="BBB", side="buy", shares=Decimal("10"), est_price_usd=Decimal("55.5"),
                  est_notional_usd=Decimal("555"))
    tick = Envelope.new(PriceTicked(symbol="AAA", price_usd=Decimal("101.25"), as_of=NOW),
                        producer="market-data", tenant_id=tenant, trace={})
    drift = tick.caused(DriftDetected(
        drift_id=uuid.uuid4(), account_id=acct, snapshot=snapshot, total_value_usd=Decimal("11125"),
        weights={"AAA": Decimal("0.91")}, deviations={"AAA": Decimal("0.41")},
        max_abs_deviation=Decimal("0.41"), rule="band_abs", breached=["AAA"]), producer="drift-monitor")
    proposed = drift.caused(RebalanceProposed(
        proposal_id=proposal_id, account_id=acct, snapshot=snapshot, snapshot_hash="ab" * 32,
        orders=[order], pre_weights={"AAA": Decimal("0.91")}, post_weights={"AAA": Decimal("0.86")},
        objective={"total": Decimal("1.5")}, est_cost_usd=Decimal("0.11"), est_tax_usd=Decimal("0"),
        solver=SolverInfo(solver="CLARABEL", status="optimal", solve_ms=Decimal("3.2"),
                          cvxpy_version="1.6", optimizer_version="0.1.0")), producer="optimizer")
    risk = proposed.caused(RiskAssessed(
        proposal_id=proposal_id, account_id=acct, pre_vol_annual_pct=Decimal("18.2"),
        post_vol_annual_pct=Decimal("16.9"), model=RiskModelInfo(name="ewma", version="1")),
        producer="risk")
    explanation = risk.caused(ExplanationCreated(
        explanation_id=uuid.uuid4(), proposal_id=proposal_id, account_id=acct,
        snapshot_hash="ab" * 32, optimizer_version="0.1.0", method="shapley", drivers=["drift"],
        trades=[TradeAttribution(symbol="BBB", trade_shares=Decimal("10"), base_shares=Decimal("0"),
                                 contributions_shares={"drift": Decimal("10")})],
        resolves=2, narrative_advisor="AAA is over target.", narrative_client="We rebalance."),
        producer="explainer")
    decided = explanation.caused(RebalanceDecided(
        proposal_id=proposal_id, account_id=acct, decision="approved", decided_by="advisor@t1",
        automatic=False, reason=reason, decided_at=NOW), producer="optimizer")
    approved = decided.caused(TradesApproved(
        proposal_id=proposal_id, account_id=acct, approved_by="advisor@t1",
        orders=[order.model_copy(update={"client_order_id": "c-1"})]), producer="optimizer")
    envs = [(tick, "AAA")] + [(e, acct) for e in (drift, proposed, risk, explanation, decided, approved)]
    return envs, proposal_id


async def send(bootstrap: str, *items: tuple[Envelope, str], raw: bytes | None = None) -> None:
    """Publish envelopes as the services' relays do (canonical bytes, envelope headers)."""
    p = await start_producer(bootstrap, "audit-test")
    try:
        for env, key in items:
            value = raw if raw is not None else env.to_bytes()
            await (await p.send(topic_of(env.event_type), value=value, key=key.encode(),
                                headers=encode_headers(kafka_headers(env))))
    finally:
        await p.stop()


async def wait_chain(client: httpx.AsyncClient, tenant: str, correlation_id: uuid.UUID, n: int,
                     timeout_s: float = 30.0) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        r = await client.get(f"/v1/audit/chains/{correlation_id}", headers=auth(tenant, READ))
        if r.status_code == 200 and len(r.json()["records"]) >= n:
            return r.json()["records"]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"chain {correlation_id}: {r.status_code} {r.text[:200]}")
        await asyncio.sleep(0.1)


async def all_seqs(db: AsyncEngine) -> list[int]:
    async with db.connect() as c:
        return list((await c.execute(text("SELECT seq FROM audit.records ORDER BY seq"))).scalars())


async def verify(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/audit/verify", headers=auth("t1", READ))
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ tests


async def test_a_ticks_whole_chain_is_recorded_gap_free_and_chained(audit, db, kafka_bootstrap):
    app, client = audit
    # One consumer group, "audit", on every topic of the contract.
    [consumer] = app.state.runtime.consumers
    assert consumer.name == "audit" and consumer.group_id.endswith(".audit")
    assert app.state.runtime.topics_consumed == TOPICS
    envs, proposal_id = one_tick_chain("t1")
    corr = envs[0][0].correlation_id
    await send(kafka_bootstrap, *envs)
    chain = await wait_chain(client, "t1", corr, len(envs))

    assert len(chain) == len(envs)
    seqs = [r["seq"] for r in chain]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    sent = {e.event_id: e for e, _ in envs}
    assert {uuid.UUID(r["event_id"]) for r in chain} == set(sent)
    assert {r["event_type"] for r in chain} == {
        "PriceTicked", "DriftDetected", "RebalanceProposed", "RiskAssessed", "ExplanationCreated",
        "RebalanceDecided", "TradesApproved"}
    for r in chain:
        env = sent[uuid.UUID(r["event_id"])]
        data = base64.b64decode(r["envelope_base64"])
        # The record holds the producer's canonical bytes, and the leaf hash is over exactly them.
        assert data == env.to_bytes()
        # Leaf format 2: the time of recording is hashed with them (microseconds since the epoch,
        # signed 64-bit big-endian, after the format byte), written out here without the service's code.
        assert r["leaf_format"] == 2
        at = datetime.fromisoformat(r["recorded_at"])
        micros = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        assert r["leaf_hash"] == hashlib.sha256(b"\x00\x02" + micros.to_bytes(8, "big", signed=True) + data).hexdigest()
        assert r["chain_hash"] == hashlib.sha256(bytes.fromhex(r["prev_hash"]) + bytes.fromhex(r["leaf_hash"])).hexdigest()
        assert r["envelope"]["payload"] == env.payload and r["topic"] == topic_of(env.event_type)
        assert r["tenant_id"] == "t1" and r["correlation_id"] == str(corr) and r["payload_valid"]
        assert r["causation_id"] == (str(env.causation_id) if env.causation_id else None)

    # The whole table: seqs 1..N with no gap, each record chained to the one before.
    everything = await all_seqs(db)
    assert everything == list(range(1, len(everything) + 1))
    async with db.connect() as c:
        links = (await c.execute(text(
            "SELECT count(*) FROM audit.records r JOIN audit.records p ON p.seq = r.seq - 1 "
            "WHERE r.prev_hash <> p.chain_hash"))).scalar_one()
        first_prev = (await c.execute(text("SELECT prev_hash FROM audit.records WHERE seq = 1"))).scalar_one()
    assert links == 0 and bytes(first_prev) == b"\x00" * 32
    v = await verify(client)
    assert v["ok"] is True and v["first_bad_seq"] is None and v["records_checked"] >= len(everything)

    # One record with its decoded envelope; the proposal's trail; filters and paging.
    one = (await client.get(f"/v1/audit/records/{seqs[2]}", headers=auth("t1", READ))).json()
    assert one["envelope"]["event_id"] == chain[2]["event_id"] and one["prev_hash"] == chain[2]["prev_hash"]
    trail = (await client.get(f"/v1/audit/proposals/{proposal_id}", headers=auth("t1", READ))).json()
    assert [r["event_type"] for r in trail["records"]] == [
        r["event_type"] for r in chain if r["proposal_id"] == str(proposal_id)]
    assert len(trail["records"]) == 5 and all(r["account_id"] for r in trail["records"])
    pages, after = [], 0
    while True:
        r = await client.get("/v1/audit/records", headers=auth("t1", READ),
                             params={"correlation_id": str(corr), "after_seq": after, "limit": 3})
        page = r.json()
        pages.append([x["seq"] for x in page["items"]])
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert [len(p) for p in pages] == [3, 3, 1] and sum(pages, []) == seqs
    only = (await client.get("/v1/audit/records", headers=auth("t1", READ), params={
        "correlation_id": str(corr), "event_type": "RiskAssessed"})).json()["items"]
    assert [x["event_type"] for x in only] == ["RiskAssessed"]


async def test_a_redelivered_event_makes_one_record(audit, db, kafka_bootstrap):
    app, client = audit
    envs, _ = one_tick_chain("t1")
    first, key = envs[1]
    # The same bytes twice, then one more event on the same topic and key (so the same
    # partition): once that one is recorded, both copies before it have been consumed.
    later = first.caused(first.parse(DriftDetected).model_copy(update={"drift_id": uuid.uuid4()}),
                         producer="drift-monitor")
    await send(kafka_bootstrap, (first, key), (first, key), (later, key))
    await wait_chain(client, "t1", first.correlation_id, 2)
    async with db.connect() as c:
        n = (await c.execute(text("SELECT count(*) FROM audit.records WHERE event_id = :e"),
                             {"e": first.event_id})).scalar_one()
    assert n == 1
    assert sum(c.stats.duplicates for c in app.state.runtime.consumers) >= 1

    # Second line of defense, below the consumer's marker: the handler itself records nothing
    # twice, refuses the same id with other content, and the table refuses a duplicate id.
    rt = app.state.runtime
    before = await all_seqs(db)
    async with rt.uow() as uow:
        await handlers.on_event(first, uow)
        await uow.commit()
    assert await all_seqs(db) == before
    forged = first.model_copy(update={"payload": {**first.payload, "rule": "forged"}})
    with pytest.raises(PermanentEventError):
        async with rt.uow() as uow:
            await handlers.on_event(forged, uow)
    with pytest.raises(IntegrityError):
        async with db.begin() as c:
            await c.execute(text(
                "INSERT INTO audit.records SELECT seq + 1000000, event_id, topic, event_type, tenant_id,"
                " correlation_id, causation_id, occurred_at, recorded_at, proposal_id, account_id,"
                " payload_valid, envelope, leaf_hash, prev_hash, chain_hash"
                " FROM audit.records WHERE event_id = :e"), {"e": first.event_id})


async def test_concurrent_appends_are_serialized_into_one_gap_free_chain(audit, db):
    # Several units of work appending at once (as several replicas of the consumer would): the
    # table lock makes each wait for the previous commit, so no two read the same head.
    app, client = audit
    rt = app.state.runtime
    envs = [Envelope.new(PriceTicked(symbol=f"C{i}", price_usd=Decimal("1"), as_of=NOW),
                         producer="market-data", tenant_id="t1", trace={}) for i in range(12)]

    async def append(env: Envelope) -> None:
        async with rt.uow() as uow:
            await handlers.on_event(env, uow)
            await asyncio.sleep(0.01)  # hold the transaction open so the appends overlap
            await uow.commit()

    await asyncio.gather(*(append(e) for e in envs))
    everything = await all_seqs(db)
    assert everything == list(range(1, len(everything) + 1))
    async with db.connect() as c:
        rows = (await c.execute(text("SELECT seq, recorded_at FROM audit.records ORDER BY seq"))).all()
        mine = (await c.execute(text("SELECT count(*) FROM audit.records WHERE event_id = ANY(:ids)"),
                                {"ids": [e.event_id for e in envs]})).scalar_one()
    assert mine == len(envs)
    assert [r.recorded_at for r in rows] == sorted(r.recorded_at for r in rows)
    assert (await verify(client))["ok"] is True


@pytest.mark.parametrize("statement", [
    "UPDATE audit.records SET tenant_id = 'evil' WHERE seq = 1",
    "UPDATE audit.records SET envelope = envelope",
    "DELETE FROM audit.records WHERE seq = 1",
    "DELETE FROM audit.records",
    "TRUNCATE audit.records",
    "TRUNCATE audit.records CASCADE",
])
async def test_the_database_refuses_to_change_the_record(audit, db, statement):
    rt = audit[0].state.runtime
    async with rt.uow() as uow:  # there is a record to change, whatever ran before
        await handlers.on_event(Envelope.new(PriceTicked(symbol="R", price_usd=Decimal("1"), as_of=NOW),
                                             producer="market-data", tenant_id="t1", trace={}), uow)
        await uow.commit()
    assert (await all_seqs(db))[:1] == [1]
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.begin() as c:
            await c.execute(text(statement))
    assert (await all_seqs(db))[:1] == [1]


async def _tamper(db: AsyncEngine, seq: int, assignment: str, **params: Any) -> None:
    """Edit one row the only way left: as superuser, with the refusing trigger switched off."""
    async with db.begin() as c:
        await c.execute(text("ALTER TABLE audit.records DISABLE TRIGGER records_no_update_delete"))
        await c.execute(text(f"UPDATE audit.records SET {assignment} WHERE seq = :seq"), {"seq": seq, **params})
        await c.execute(text("ALTER TABLE audit.records ENABLE TRIGGER records_no_update_delete"))


async def test_verify_names_exactly_the_row_altered_behind_the_triggers_back(audit, db, kafka_bootstrap):
    app, client = audit
    envs, _ = one_tick_chain("t1")
    await send(kafka_bootstrap, *envs[:3])
    chain = await wait_chain(client, "t1", envs[0][0].correlation_id, 3)
    target = next(r["seq"] for r in chain if r["event_type"] == "DriftDetected")
    assert (await verify(client))["ok"] is True
    async with db.connect() as c:
        original = bytes((await c.execute(text("SELECT envelope FROM audit.records WHERE seq = :s"),
                                          {"s": target})).scalar_one())
    doctored = original.replace(b'"rule":"band_abs"', b'"rule":"band_xyz"')
    assert doctored != original
    try:
        await _tamper(db, target, "envelope = :v", v=doctored)
        v = await verify(client)
        assert (v["ok"], v["first_bad_seq"]) == (False, target), v
        assert "leaf hash" in v["reason"] and v["records_checked"] == target
        # The same verdict when the record is streamed in tiny batches (batch edges everywhere).
        small = await verify_record(app.state.runtime.sessionmaker, trusted_keys=app.state.trusted_keys,
                                    batch_size=2)
        assert (small.ok, small.first_bad_seq, small.records_checked) == (False, target, target)

        # Hashes intact but the row moved to another tenant: caught by re-deriving the columns.
        await _tamper(db, target, "envelope = :v, tenant_id = 'intruder'", v=original)
        v = await verify(client)
        assert (v["ok"], v["first_bad_seq"]) == (False, target) and "tenant_id" in v["reason"], v
    finally:
        await _tamper(db, target, "envelope = :v, tenant_id = 't1'", v=original)
    assert (await verify(client))["ok"] is True
    whole = await verify_record(app.state.runtime.sessionmaker, trusted_keys=app.state.trusted_keys,
                                batch_size=3)
    assert whole.ok and whole.records_checked >= target


async def test_another_tenant_sees_none_of_t1s_records(audit, kafka_bootstrap):
    _, client = audit
    envs, proposal_id = one_tick_chain("t1")
    corr = envs[0][0].correlation_id
    await send(kafka_bootstrap, *envs[:4])
    chain = await wait_chain(client, "t1", corr, 4)
    other = f"t-other-{uuid.uuid4().hex[:6]}"
    h = auth(other, READ)
    assert (await client.get(f"/v1/audit/chains/{corr}", headers=h)).status_code == 404
    assert (await client.get(f"/v1/audit/proposals/{proposal_id}", headers=h)).status_code == 404
    for r in chain:
        assert (await client.get(f"/v1/audit/records/{r['seq']}", headers=h)).status_code == 404
    assert (await client.get("/v1/audit/records", headers=h)).json() == {"items": [], "next_after_seq": None}
    assert (await client.get("/v1/audit/records", headers=h, params={"correlation_id": str(corr)})).json()["items"] == []
    # ... while t1 sees them, and the API wants a token with the audit:read scope.
    assert (await client.get(f"/v1/audit/records/{chain[0]['seq']}", headers=auth("t1", READ))).status_code == 200
    assert (await client.get("/v1/audit/records")).status_code == 401
    assert (await client.get("/v1/audit/records", headers=auth("t1", ["market:read"]))).status_code == 403
    assert (await client.post("/v1/audit/verify", headers=auth("t1", ["market:read"]))).status_code == 403
    assert (await client.get("/v1/audit/records/999999999", headers=auth("t1", READ))).status_code == 404
    assert (await client.get(f"/v1/audit/records/{2**63}", headers=auth("t1", READ))).status_code == 422
    assert (await client.get("/v1/audit/records", headers=auth("t1", READ), params={"limit": 0})).status_code == 422


async def test_a_run_is_traced_by_the_consumer_without_a_span_per_message(audit, db, kafka_bootstrap):
    """Audit turns off the aiokafka instrumentation's per-message "receive" span (it cost as much
    CPU as appending the message); the consumer's own span per run, or per single event, still
    traces every event it records."""
    import aiokafka
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.trace import SpanProcessor

    app, _ = audit
    # The instrumentation is on in this process (the service's startup installs it), so a
    # per-message span would be made if the consumer asked for it.
    assert hasattr(aiokafka.AIOKafkaConsumer.getmany, "__wrapped__")
    ended: list[Any] = []

    class Keep(SpanProcessor):
        active = True

        def on_end(self, span: Any) -> None:
            if self.active:
                ended.append(span)

    keep = Keep()
    otel_trace.get_tracer_provider().add_span_processor(keep)
    try:
        envs = [Envelope.new(PriceTicked(symbol="RUN", price_usd=Decimal("10") + i, as_of=NOW),
                             producer="market-data", tenant_id="t1", trace={}) for i in range(6)]
        await send(kafka_bootstrap, *[(e, "RUN") for e in envs])  # one key: one partition, in order
        ids = [e.event_id for e in envs]
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            async with db.connect() as c:
                seqs = list((await c.execute(text(
                    "SELECT seq FROM audit.records WHERE event_id = ANY(:ids) ORDER BY seq"), {"ids": ids})).scalars())
            if len(seqs) == len(envs) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        keep.active = False
    assert len(seqs) == len(envs)
    async with db.connect() as c:
        order = list((await c.execute(text("SELECT event_id FROM audit.records WHERE seq = ANY(:s) ORDER BY seq"),
                                      {"s": seqs})).scalars())
    assert order == ids  # partition order is record order
    ours = [s for s in ended if s.attributes.get("trimtab.consumer") == "audit"]
    assert ours and all(s.kind == otel_trace.SpanKind.CONSUMER for s in ours)
    receive = [s for s in ended if s.name.endswith(" receive") and s.attributes.get("messaging.client.id") == "audit"]
    assert receive == []
