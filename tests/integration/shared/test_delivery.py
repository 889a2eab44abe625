"""The delivery rules of the shared library on real PostgreSQL and Kafka: outbox → relay → topic,
idempotent consumption of redeliveries, bounded retries, dead letters, and parking of a key.

A minimal service ("probe") is built here from the shared pieces only, with its own schema and
Alembic migration, so these tests check the library itself rather than any one service.
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Column, String, Table, func, select

from tests.integration.shared.probe_registry import PROBES as _PROBES
from tests.support import read_events
from trimtab.shared.config import ServiceSettings
from trimtab.shared.db import service_metadata
from trimtab.shared.envelope import Envelope
from trimtab.shared.events import PriceTicked
from trimtab.shared.kafka import encode_headers, start_producer
from trimtab.shared.outbox import UnitOfWork, infra_tables, kafka_headers
from trimtab.shared.runtime import ServiceRuntime

pytestmark = pytest.mark.integration


def _probe_service(tmp: Path, schema: str):  # type: ignore[no-untyped-def]
    md = service_metadata(schema)
    infra = infra_tables(md)
    seen = Table("seen", md, Column("event_id", String(64), primary_key=True),
                 Column("symbol", String(16), nullable=False))
    mig = tmp / "migrations"
    (mig / "versions").mkdir(parents=True)
    (mig / "env.py").write_text(textwrap.dedent(f"""
        import sys
        from tests.integration.shared.probe_registry import PROBES as _PROBES
        from trimtab.shared.migrate import run_env
        run_env(_PROBES[{schema!r}])
    """))
    (mig / "versions" / "0001_initial.py").write_text(textwrap.dedent(f"""
        revision = "0001"
        down_revision = None
        branch_labels = None
        depends_on = None
        def upgrade():
            from alembic import op
            from tests.integration.shared.probe_registry import PROBES as _PROBES
            _PROBES[{schema!r}].create_all(op.get_bind())
        def downgrade():
            pass
    """))
    _PROBES[schema] = md
    return md, infra, seen, mig




@pytest.fixture
async def probe(tmp_path, database_url, kafka_bootstrap):
    schema = f"probe_{uuid.uuid4().hex[:8]}"
    md, infra, seen, mig = _probe_service(tmp_path, schema)
    settings = ServiceSettings.model_validate({
        "SERVICE_NAME": f"probe-{schema}", "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_GROUP_PREFIX": schema,
        "KAFKA_PARTITIONS": 2, "OUTBOX_POLL_S": 0.05, "CONSUMER_MAX_ATTEMPTS": 2,
    })
    rt = ServiceRuntime(settings, schema=schema, metadata=md, migrations_dir=mig, infra=infra)
    calls: list[str] = []

    async def on_tick(env: Envelope, uow: UnitOfWork) -> None:
        tick = env.parse(PriceTicked)
        calls.append(tick.symbol)
        if tick.symbol.startswith("BAD"):
            raise ValueError(f"cannot handle {tick.symbol}")
        await uow.session.execute(seen.insert().values(event_id=str(env.event_id), symbol=tick.symbol))

    rt.handle("PriceTicked")(on_tick)
    await rt.start()
    await asyncio.wait_for(asyncio.gather(*(c.assigned.wait() for c in rt.consumers)), 30)
    try:
        yield rt, seen, calls
    finally:
        await rt.stop()


def _tick(symbol: str, tenant: str = "t1") -> Envelope:
    return Envelope.new(PriceTicked(symbol=symbol, price_usd=Decimal("10"), as_of=datetime.now(UTC)),
                        producer="test", tenant_id=tenant)


async def _send_raw(bootstrap: str, topic: str, value: bytes, key: bytes, headers: dict[str, str] | None = None) -> None:
    p = await start_producer(bootstrap, "test")
    try:
        await (await p.send(topic, value=value, key=key, headers=encode_headers(headers or {})))
    finally:
        await p.stop()


async def _wait(cond, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.1)


async def test_outbox_events_reach_the_topic_in_order_per_key(probe, kafka_bootstrap):
    rt, _, _ = probe
    key = f"K{uuid.uuid4().hex[:6].upper()}"
    envs = [_tick(key) for _ in range(20)]
    for env in envs:  # separate transactions, as separate API calls would be
        await rt.publish_now(env, key=key)
    ids = [str(e.event_id) for e in envs]
    got = await read_events(kafka_bootstrap, "market.ticks.v1",
                            until=lambda evs: set(ids) <= {str(e.event_id) for e in evs})
    assert [str(e.event_id) for e in got if str(e.event_id) in set(ids)] == ids


async def test_rolled_back_unit_of_work_publishes_nothing(probe):
    rt, _, _ = probe
    env = _tick("ROLLBACK")
    async with rt.uow() as uow:
        uow.publish(env, key="ROLLBACK")
        # leaving without commit() rolls back
    o = rt.infra.outbox
    async with rt.sessionmaker() as s:
        n = (await s.execute(select(func.count()).select_from(o).where(o.c.event_id == env.event_id))).scalar_one()
    assert n == 0


async def test_redelivered_event_changes_nothing(probe, kafka_bootstrap):
    rt, seen, calls = probe
    env = _tick("DUP")
    for _ in range(3):  # the same event delivered three times
        await _send_raw(kafka_bootstrap, "market.ticks.v1", env.to_bytes(), b"DUP", kafka_headers(env))
    c = rt.consumers[0]
    before = c.stats.duplicates
    await _wait(lambda: _async(calls.count("DUP") >= 1 and c.stats.duplicates - before >= 2))
    async with rt.sessionmaker() as s:
        rows = (await s.execute(select(seen.c.symbol).where(seen.c.event_id == str(env.event_id)))).all()
    assert len(rows) == 1
    assert calls.count("DUP") == 1  # the handler ran once; the copies stopped at the marker


async def _async(v):  # type: ignore[no-untyped-def]
    return v


async def test_malformed_event_goes_to_dlq_and_consumer_keeps_going(probe, kafka_bootstrap):
    rt, seen, _ = probe
    marker = uuid.uuid4().hex
    await _send_raw(kafka_bootstrap, "market.ticks.v1", b'{"not": "an envelope", "m": "' + marker.encode() + b'"}', b"X")
    good = _tick("AFTER")
    await _send_raw(kafka_bootstrap, "market.ticks.v1", good.to_bytes(), b"X", kafka_headers(good))
    async def handled() -> bool:
        async with rt.sessionmaker() as s:
            return (await s.execute(select(seen.c.symbol).where(seen.c.event_id == str(good.event_id)))).first() is not None
    await _wait(handled)
    dlq = await read_events(kafka_bootstrap, "market.ticks.v1.dlq", raw=True,
                            until=lambda recs: any(marker.encode() in r.value for r in recs))
    rec = next(r for r in dlq if marker.encode() in r.value)
    h = {k: v.decode() for k, v in rec.headers}
    assert h["dlq.error"].startswith("undecodable envelope")
    assert h["dlq.source.topic"] == "market.ticks.v1" and int(h["dlq.source.offset"]) >= 0


async def test_failing_handler_is_retried_then_dead_lettered_and_its_key_parked(probe, kafka_bootstrap):
    rt, seen, calls = probe
    bad = _tick("BADX")
    later_same_key = _tick("LATER")
    other_key = _tick("OTHER")
    # Keys name accounts within a tenant: another tenant's event under the same key goes through.
    other_tenant = _tick("TENANTB", tenant="t2")
    await _send_raw(kafka_bootstrap, "market.ticks.v1", bad.to_bytes(), b"PARKKEY", kafka_headers(bad))
    await _send_raw(kafka_bootstrap, "market.ticks.v1", later_same_key.to_bytes(), b"PARKKEY", kafka_headers(later_same_key))
    await _send_raw(kafka_bootstrap, "market.ticks.v1", other_tenant.to_bytes(), b"PARKKEY", kafka_headers(other_tenant))
    await _send_raw(kafka_bootstrap, "market.ticks.v1", other_key.to_bytes(), b"OTHERKEY", kafka_headers(other_key))
    dlq = await read_events(kafka_bootstrap, "market.ticks.v1.dlq", raw=True,
                            until=lambda recs: {str(bad.event_id).encode(), str(later_same_key.event_id).encode()}
                            <= {dict(r.headers).get("event_id", b"") for r in recs})
    by_id = {dict(r.headers)["event_id"].decode(): {k: v.decode() for k, v in r.headers}
             for r in dlq if "event_id" in dict(r.headers)}
    assert "ValueError: cannot handle BADX" in by_id[str(bad.event_id)]["dlq.error"]
    assert by_id[str(later_same_key.event_id)]["dlq.error"].startswith("parked")
    # CONSUMER_MAX_ATTEMPTS (2) tries one by one, plus one more if it first came in a batch
    # whose shared transaction failed (that is what sent it down the one-by-one path).
    assert calls.count("BADX") in (2, 3)
    assert "LATER" not in calls  # not applied past the gap

    def handled(env: Envelope):  # type: ignore[no-untyped-def]
        async def done() -> bool:
            async with rt.sessionmaker() as s:
                return (await s.execute(select(seen.c.symbol).where(seen.c.event_id == str(env.event_id)))).first() is not None
        return done
    await _wait(handled(other_key))  # other keys are unaffected
    await _wait(handled(other_tenant))  # and so is the same key of another tenant
    d = rt.infra.dead_letters
    async with rt.sessionmaker() as s:
        rows = (await s.execute(select(d.c.key, d.c.tenant_id, d.c.event_id).where(d.c.key == "PARKKEY"))).all()
    assert [(r.event_id, r.tenant_id) for r in rows] == [(bad.event_id, "t1")]


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_partitions_of_a_poll_are_handled_concurrently_each_in_order(tmp_path, database_url, kafka_bootstrap,
                                                                           concurrency):
    """`ServiceRuntime.concurrent(n)` on a real broker: never more than n partitions at once,
    each partition still in order (tests/unit/shared/test_consumer_resilience.py shows that n
    partitions of one poll do run at once: how a real poll's partitions arrive is timing)."""
    schema = f"probe_{uuid.uuid4().hex[:8]}"
    md, infra, _, mig = _probe_service(tmp_path, schema)
    settings = ServiceSettings.model_validate({
        "SERVICE_NAME": f"probe-{schema}", "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_GROUP_PREFIX": schema, "OUTBOX_POLL_S": 0.05,
        "CONSUMER_BATCH_SIZE": 1,
    })
    rt = ServiceRuntime(settings, schema=schema, metadata=md, migrations_dir=mig, infra=infra)
    prefix = f"C{uuid.uuid4().hex[:5].upper()}"
    state = {"inflight": 0, "peak": 0}
    seen_order: dict[str, list[int]] = {}

    async def on_tick(env: Envelope, uow: UnitOfWork) -> None:
        tick = env.parse(PriceTicked)
        if not tick.symbol.startswith(prefix):
            return  # other tests' ticks on the shared topic
        state["inflight"] += 1
        state["peak"] = max(state["peak"], state["inflight"])
        await asyncio.sleep(0.15)  # a solve in a worker process
        state["inflight"] -= 1
        seen_order.setdefault(tick.symbol, []).append(int(tick.price_usd))

    rt.handle("PriceTicked")(on_tick)
    rt.concurrent(concurrency)
    await rt.start()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.assigned.wait() for c in rt.consumers)), 30)
        p = await start_producer(kafka_bootstrap, "test")
        try:
            keys = [f"{prefix}{k}" for k in range(8)]
            for n in range(1, 4):
                for key in keys:
                    env = Envelope.new(PriceTicked(symbol=key, price_usd=Decimal(n), as_of=datetime.now(UTC)),
                                       producer="test", tenant_id="t1")
                    await p.send("market.ticks.v1", value=env.to_bytes(), key=key.encode(),
                                 headers=encode_headers(kafka_headers(env)))
            await p.flush()
        finally:
            await p.stop()
        await _wait(lambda: _async(sum(len(v) for v in seen_order.values()) >= 24), timeout_s=60)
    finally:
        await rt.stop()
    assert all(v == [1, 2, 3] for v in seen_order.values()), seen_order  # in order per key
    assert 1 <= state["peak"] <= concurrency


async def test_pipelined_partitions_survive_rebalances_each_event_once_and_in_order(tmp_path, database_url,
                                                                                    kafka_bootstrap):
    """Two replicas of a pipelined consumer (`concurrent(2)`) in one group on the real broker: a
    second replica joins mid-burst and the first then leaves, each a rebalance while partition
    tasks are in flight. Every event takes effect exactly once, and each key's effects are in
    the order of its events (the effect rows' ids follow the events' sequence numbers)."""
    from sqlalchemy import BigInteger, Identity, Integer

    schema = f"probe_{uuid.uuid4().hex[:8]}"
    md, infra, _, mig = _probe_service(tmp_path, schema)
    effects = Table("effects", md, Column("id", BigInteger, Identity(always=True), primary_key=True),
                    Column("symbol", String(16), nullable=False), Column("seq", Integer, nullable=False))
    settings = ServiceSettings.model_validate({
        "SERVICE_NAME": f"probe-{schema}", "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_GROUP_PREFIX": schema, "OUTBOX_POLL_S": 0.05,
        "CONSUMER_BATCH_SIZE": 1,
    })
    prefix = f"R{uuid.uuid4().hex[:5].upper()}"

    def replica() -> ServiceRuntime:
        rt = ServiceRuntime(settings, schema=schema, metadata=md, migrations_dir=mig, infra=infra)

        async def on_tick(env: Envelope, uow: UnitOfWork) -> None:
            tick = env.parse(PriceTicked)
            if not tick.symbol.startswith(prefix):
                return  # other tests' ticks on the shared topic
            await asyncio.sleep(0.06 if int(tick.price_usd) % 4 == 1 else 0.005)  # work in a worker process
            await uow.session.execute(effects.insert().values(symbol=tick.symbol, seq=int(tick.price_usd)))

        rt.handle("PriceTicked")(on_tick)
        rt.concurrent(2)
        return rt

    async def count() -> int:
        async with first.sessionmaker() as s:
            return (await s.execute(select(func.count()).select_from(effects))).scalar_one()  # type: ignore[no-any-return]

    keys, per_key = [f"{prefix}{k}" for k in range(8)], 25
    first = replica()
    await first.start()
    second: ServiceRuntime | None = None
    try:
        await asyncio.wait_for(asyncio.gather(*(c.assigned.wait() for c in first.consumers)), 30)
        p = await start_producer(kafka_bootstrap, "test")

        async def produce() -> None:  # in rounds, so that polls bring a partition's events in parts
            for n in range(1, per_key + 1):
                for key in keys:
                    env = Envelope.new(PriceTicked(symbol=key, price_usd=Decimal(n), as_of=datetime.now(UTC)),
                                       producer="test", tenant_id="t1")
                    await p.send("market.ticks.v1", value=env.to_bytes(), key=key.encode(),
                                 headers=encode_headers(kafka_headers(env)))
                await p.flush()
                await asyncio.sleep(0.05)

        producing = asyncio.create_task(produce())
        total = len(keys) * per_key
        try:
            await _wait(lambda: _async_ge(count, total // 5), timeout_s=60)
            second = replica()  # joins mid-burst: a rebalance
            await second.start()
            await _wait(lambda: _async_ge(count, total // 2), timeout_s=90)
            await first.stop()  # leaves mid-burst: another
            await producing
        finally:
            producing.cancel()
            await p.stop()
        await _wait(lambda: _async_ge(count, total), timeout_s=120)
        await asyncio.sleep(1.0)  # nothing more arrives: no event took effect twice
        async with second.sessionmaker() as s:
            rows = (await s.execute(select(effects.c.symbol, effects.c.seq).order_by(effects.c.id))).all()
    finally:
        for rt in (second, first):
            if rt is not None:
                await rt.stop()
    by_key: dict[str, list[int]] = {}
    for r in rows:
        by_key.setdefault(r.symbol, []).append(r.seq)
    assert by_key == {k: list(range(1, per_key + 1)) for k in keys}, by_key


async def _async_ge(count, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await count() >= n  # type: ignore[no-any-return]
