"""A foreign producer's message (no event id, time or correlation; values the envelope cannot hold)
is recorded once and as it was on the bus, against real PostgreSQL and Kafka.

Before (review, eighth session), the record stored `Envelope.to_bytes()` of the parsed message:
a message without `event_id` got a new random id on every parse, so a redelivery (the same offset
read again after a crash or a rebalance before the offset commit) was a second record, which no
processed-event marker could catch; and `1e400` was stored as `null`. Now the record's own
decoder (domain/bus.py) derives the missing values from the message's place on the bus and
stores the exact bytes beside the envelope as read, flagged `foreign:<topic>` and not
`payload_valid`. Our own events are stored exactly as before.

A redelivery is made the way the consumer itself makes one after a failed run: the running
consumer is sought back to the message's offset, so the same offset is fetched, decoded and
handed to the record again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.audit.test_audit import verify
from tests.integration.audit.test_audit_proofs import latest, sign, ticks, verifier_client
from tests.support import auth
from trimtab.audit import handlers
from trimtab.audit.domain import bus
from trimtab.audit.offline import State, verify_log
from trimtab.shared.consumer import EventConsumer
from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.kafka import encode_headers, start_producer
from trimtab.shared.outbox import kafka_headers

pytestmark = pytest.mark.integration

TOPIC = "market.ticks.v1"


def foreign_tick(tenant: str, marker: str) -> bytes:
    """A tick as a foreign producer might send it: no event_id, occurred_at or correlation_id, a
    price no float holds, and its own spacing."""
    return (b'{"event_type": "PriceTicked", "producer": "vendor-feed", "tenant_id": "%s", '
            b'"payload": {"symbol": "%s", "price_usd": 1e400, "as_of": "2024-01-02T21:00:00Z"}}'
            % (tenant.encode(), marker.encode()))


async def produce(bootstrap: str, *items: tuple[bytes, bytes, dict[str, str]]) -> list[Any]:
    """Send (value, key, headers) to TOPIC in order; the RecordMetadata of each."""
    p = await start_producer(bootstrap, "audit-foreign-test")
    try:
        return [await (await p.send(TOPIC, value=v, key=k, headers=encode_headers(h))) for v, k, h in items]
    finally:
        await p.stop()


def ours(env: Envelope, key: bytes) -> tuple[bytes, bytes, dict[str, str]]:
    return env.to_bytes(), key, kafka_headers(env)


async def rows_of(db: AsyncEngine, tenant: str) -> list[Any]:
    async with db.connect() as c:
        return list((await c.execute(text(
            "SELECT seq, event_id, event_type, topic, tenant_id, correlation_id, occurred_at, payload_valid,"
            " envelope, leaf_hash FROM audit.records WHERE tenant_id = :t ORDER BY seq"), {"t": tenant})).all())


async def wait_recorded(db: AsyncEngine, tenant: str, event_id: uuid.UUID, timeout_s: float = 30.0) -> list[Any]:
    """The tenant's records, once `event_id` is among them."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        rows = await rows_of(db, tenant)
        if any(r.event_id == event_id for r in rows):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{event_id} not recorded; the tenant has {len(rows)} records")
        await asyncio.sleep(0.1)


def the_consumer(app: Any) -> EventConsumer:
    [consumer] = app.state.runtime.consumers
    return consumer


async def test_a_redelivered_foreign_message_without_event_id_is_recorded_once_and_faithfully(
        audit, db, kafka_bootstrap, tmp_path):
    app, client = audit
    tenant = f"tf-{uuid.uuid4().hex[:6]}"
    key = f"F-{uuid.uuid4().hex[:6]}".encode()  # one key: one partition, in this order
    before, between, after = ticks(3, tenant=tenant)
    raw = foreign_tick(tenant, "VND")
    metas = await produce(kafka_bootstrap, ours(before, key), (raw, key, {}), ours(between, key))
    foreign_meta = metas[1]
    rows = await wait_recorded(db, tenant, between.event_id)
    [f] = [r for r in rows if r.event_id not in (before.event_id, between.event_id)]

    # A redelivery: the consumer is sought back to the foreign message, as after a failed run
    # or a crash before the offset commit, and reads it (and what follows) again.
    consumer = the_consumer(app)
    duplicates = consumer.stats.duplicates
    consumer._consumer.seek(TopicPartition(TOPIC, foreign_meta.partition), foreign_meta.offset)  # noqa: SLF001
    await produce(kafka_bootstrap, ours(after, key))
    rows = await wait_recorded(db, tenant, after.event_id)
    assert [r.event_id for r in rows] == [before.event_id, f.event_id, between.event_id, after.event_id], \
        "the foreign message is recorded once, however often it is read"
    assert consumer.stats.duplicates >= duplicates + 2  # the foreign message and `between`

    # Our own events: stored exactly as their producers' canonical bytes, as ever.
    by_id = {r.event_id: r for r in rows}
    for env in (before, between, after):
        r = by_id[env.event_id]
        assert bytes(r.envelope) == env.to_bytes()
        assert r.topic == TOPIC and r.payload_valid is True

    # The foreign message: flagged, its id derived from its place on the bus, its exact bytes
    # kept (1e400 and all) inside the hashed document.
    doc = json.loads(bytes(f.envelope))
    section = doc["foreign"]
    assert (section["topic"], section["partition"], section["offset"]) == (
        TOPIC, foreign_meta.partition, foreign_meta.offset)
    assert base64.b64decode(section["bytes_base64"]) == raw
    assert bus.original_bytes(bytes(f.envelope)) == raw and b"1e400" in raw
    assert f.event_id == bus.derived_event_id(TOPIC, foreign_meta.partition, foreign_meta.offset,
                                              section["timestamp_ms"])
    assert f.correlation_id == f.event_id and f.occurred_at == bus.broker_time(section["timestamp_ms"])
    assert f.topic == f"foreign:{TOPIC}" and f.payload_valid is False and f.event_type == "PriceTicked"
    assert doc["payload"]["price_usd"] is None and doc["producer"] == "vendor-feed"
    assert any("no event_id" in reason for reason in section["reasons"])

    # The same bytes produced again are another message at another offset: another record.
    [again] = await produce(kafka_bootstrap, (raw, key, {}))
    later = ticks(1, tenant=tenant)[0]
    await produce(kafka_bootstrap, ours(later, key))
    rows = await wait_recorded(db, tenant, later.event_id)
    foreign = [r for r in rows if r.topic == f"foreign:{TOPIC}"]
    assert len(foreign) == 2 and foreign[1].event_id == bus.derived_event_id(
        TOPIC, again.partition, again.offset, json.loads(bytes(foreign[1].envelope))["foreign"]["timestamp_ms"])

    v = await verify(client)
    assert v["ok"] is True, v
    # The offline verifier re-hashes the tenant's records, foreign ones included, against a
    # signed head and checks the columns served beside them against the hashed bytes.
    await sign(client)
    _, key, _ = await latest(client)
    async with verifier_client(app, tenant) as vc:
        rep = await verify_log(vc, State(tmp_path / "kept"), public_key=key, workers=0)
    assert rep.ok and rep.records_checked == len(rows) == 6, rep.to_json()

    # The tenant reads the record like any other, flag and original bytes included.
    r = await client.get(f"/v1/audit/records/{f.seq}", headers=auth(tenant, ["audit:read"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["topic"] == f"foreign:{TOPIC}" and body["payload_valid"] is False
    assert base64.b64decode(body["envelope"]["foreign"]["bytes_base64"]) == raw


def _rec(value: bytes, offset: int, timestamp: int = 1_700_000_000_000, partition: int = 0) -> Any:
    return SimpleNamespace(topic=TOPIC, partition=partition, offset=offset, timestamp=timestamp, value=value,
                           key=b"K", headers=[])


async def test_the_record_tells_a_redelivery_from_another_message_and_a_forgery(audit, db):
    """Below the consumer's marker, the handler itself: the decoder's reading of the same
    offset twice is one record; the same bytes at another offset another; a foreign message
    that names its own event id is one event wherever it sits; other bytes under that id are
    refused."""
    app, _ = audit
    rt = app.state.runtime
    tenant = f"th-{uuid.uuid4().hex[:6]}"
    raw = foreign_tick(tenant, "HND")
    base = 10**12 + uuid.uuid4().int % 10**9  # offsets no real message of this session has

    async def record(*recs: Any) -> None:
        async with rt.uow() as uow:
            await handlers.on_events([bus.read_record(r) for r in recs], uow)
            await uow.commit()

    await record(_rec(raw, base))
    await record(_rec(raw, base))                     # redelivered
    await record(_rec(raw, base), _rec(raw, base))    # twice in one run
    rows = await rows_of(db, tenant)
    assert len(rows) == 1 and rows[0].event_id == bus.derived_event_id(TOPIC, 0, base, 1_700_000_000_000)
    await record(_rec(raw, base + 1))                 # the same bytes, another message
    assert len(await rows_of(db, tenant)) == 2

    named = json.dumps({"event_id": str(uuid.uuid4()), "event_type": "PriceTicked", "producer": "vendor-feed",
                        "tenant_id": tenant, "payload": {"symbol": "N", "price_usd": 1e400}}).encode()
    await record(_rec(named, base + 2))
    await record(_rec(named, base + 3))               # the producer sent it twice: one event
    rows = await rows_of(db, tenant)
    assert len(rows) == 3 and json.loads(named)["event_id"] == str(rows[-1].event_id)
    assert json.loads(bytes(rows[-1].envelope))["foreign"]["offset"] == base + 2
    forged = named.replace(b'"N"', b'"X"')
    with pytest.raises(PermanentEventError, match="different content"):
        await record(_rec(forged, base + 4))
    assert len(await rows_of(db, tenant)) == 3


async def test_a_message_that_is_not_json_is_dead_lettered_with_its_place_and_the_key_goes_on(
        audit, db, kafka_bootstrap):
    """Not JSON (or no envelope at all, e.g. no tenant): nothing to record it under, since the
    record is per tenant. The consumer dead-letters it (DLQ topic and `dead_letters`) with the
    reason and its topic, partition and offset; the audit consumer parks no key, so the key's
    later events are still recorded: no gap."""
    tenant = f"tn-{uuid.uuid4().hex[:6]}"
    key = f"N-{uuid.uuid4().hex[:6]}".encode()
    [later] = ticks(1, tenant=tenant)
    no_tenant = b'{"event_type": "PriceTicked", "producer": "vendor-feed", "payload": {}}'
    metas = await produce(kafka_bootstrap, (b"\x00\x01 not json", key, {}), (no_tenant, key, {}), ours(later, key))
    rows = await wait_recorded(db, tenant, later.event_id)
    assert [r.event_id for r in rows] == [later.event_id] and bytes(rows[0].envelope) == later.to_bytes()
    async with db.connect() as c:
        dead = (await c.execute(text(
            "SELECT \"offset\", error, key, event_id FROM audit.dead_letters"
            " WHERE consumer = 'audit' AND topic = :t AND partition = :p AND \"offset\" = ANY(:o) ORDER BY \"offset\""),
            {"t": TOPIC, "p": metas[0].partition, "o": [metas[0].offset, metas[1].offset]})).all()
    assert [d.offset for d in dead] == [metas[0].offset, metas[1].offset]
    assert "undecodable envelope: not JSON" in dead[0].error
    assert "undecodable envelope" in dead[1].error and "tenant_id" in dead[1].error
    assert all(d.key is None and d.event_id is None for d in dead)  # parks nothing, names no event
