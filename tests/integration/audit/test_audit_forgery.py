"""Other content under a recorded event id is dead-lettered with the reason, not dropped as a
duplicate: the shared consumer hands the audit record its redeliveries (`recheck_duplicates`),
and the record compares bytes. A true redelivery (same bytes) is still recorded once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from tests.integration.audit.test_audit import one_tick_chain, send, wait_chain
from trimtab.shared.events import DriftDetected

pytestmark = pytest.mark.integration


async def _counts(db, event_id: uuid.UUID) -> tuple[int, int, str | None]:  # type: ignore[no-untyped-def]
    async with db.connect() as c:
        n = (await c.execute(text("SELECT count(*) FROM audit.records WHERE event_id=:e"),
                             {"e": event_id})).scalar_one()
        dl = (await c.execute(text("SELECT count(*), max(error) FROM audit.dead_letters WHERE event_id=:e"),
                              {"e": event_id})).one()
    return n, dl[0], dl[1]


async def test_other_bytes_under_a_recorded_id_are_dead_lettered(audit, db, kafka_bootstrap):
    _, client = audit
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    envs, _ = one_tick_chain(tenant)
    first, key = envs[1]
    forged = first.model_copy(update={"payload": {**first.payload, "rule": "forged"}})
    later = first.caused(first.parse(DriftDetected).model_copy(update={"drift_id": uuid.uuid4()}),
                         producer="drift-monitor")
    # genuine, a true redelivery, a forgery under the same id, then a later event of the chain
    await send(kafka_bootstrap, (first, key), (first, key), (forged, key), (later, key))
    await wait_chain(client, tenant, first.correlation_id, 2)
    for _ in range(100):
        n, dead, error = await _counts(db, first.event_id)
        if dead:
            break
        await asyncio.sleep(0.1)
    assert n == 1, "recorded once: the redelivery of the same bytes is skipped"
    assert dead == 1 and "different content" in (error or "")


async def test_an_event_type_the_record_does_not_know_is_recorded_as_unknown(audit, db, kafka_bootstrap):
    """Found by review: the audit consumer registered the known event types only, and the shared
    consumer skips (and commits past) a type without a handler, so an event type added to a
    topic before the record knew it vanished from the record. It is recorded, as unknown."""
    from tests.integration.audit.test_audit_proofs import ticks
    from trimtab.shared.kafka import encode_headers, start_producer
    from trimtab.shared.outbox import kafka_headers

    tenant = f"tu-{uuid.uuid4().hex[:6]}"
    [known] = ticks(1, tenant=tenant)
    unknown = known.model_copy(update={"event_id": uuid.uuid4(), "event_type": "PriceTickedV2"})
    later = ticks(1, tenant=tenant)[0]
    p = await start_producer(kafka_bootstrap, "test")
    try:
        for env in (known, unknown, later):
            await (await p.send("market.ticks.v1", value=env.to_bytes(), key=b"P0",
                                headers=encode_headers(kafka_headers(env))))
    finally:
        await p.stop()
    got: dict = {}
    for _ in range(300):
        async with db.connect() as c:
            got = {r.event_id: r for r in (await c.execute(text(
                "SELECT event_id, event_type, topic, payload_valid FROM audit.records WHERE tenant_id=:t"),
                {"t": tenant})).all()}
        if later.event_id in got:
            break
        await asyncio.sleep(0.1)
    assert {known.event_id, unknown.event_id, later.event_id} <= set(got), got
    row = got[unknown.event_id]
    assert row.event_type == "PriceTickedV2" and row.payload_valid is False and row.topic.startswith("unknown:")
