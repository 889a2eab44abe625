"""The operational metrics of the shared consumer and outbox relay reach the Prometheus exposition
the services serve on /metrics (setup_telemetry's reader on prometheus_client's default registry),
under the names deploy/prometheus/alerts.yml and the Grafana dashboard use.

The consumer and relay run against fakes of their boundaries (handler attempt, producer, session),
so these stay unit tests; tests/integration covers the same code against Kafka and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import MetaData

from tests.support import prometheus_samples, services_telemetry
from trimtab.shared import relay as relay_mod
from trimtab.shared.consumer import EventConsumer
from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.events import PriceTicked
from trimtab.shared.outbox import infra_tables
from trimtab.shared.relay import OutboxRelay


@pytest.fixture(autouse=True, scope="module")
def telemetry() -> None:
    services_telemetry()


def scrape() -> list[Any]:
    return prometheus_samples()


def value(name: str, **labels: str) -> float | None:
    """The sample `name` whose labels include `labels` (None: not exported)."""
    found = [s.value for s in scrape() if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, f"{name}{labels} matches several series: {found}"
    return found[0] if found else None


# ---------------------------------------------------------------------------- consumer


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> Any:
        self.sent.append((topic, key))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class FakeSession:
    """Enough of an AsyncSession for the dead-letter insert (`async with sm() as s, s.begin()`)."""

    def __init__(self) -> None:
        self.statements: list[Any] = []

    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    def begin(self) -> FakeSession:
        return self

    async def execute(self, stmt: Any, params: Any = None) -> None:
        self.statements.append(stmt)


def consumer(name: str, producer: FakeProducer, session: FakeSession, max_attempts: int = 2) -> EventConsumer:
    async def never_called(env: Envelope, uow: Any) -> None:  # _handle_once is replaced per test
        raise AssertionError

    return EventConsumer(
        name=name, group_id=name, bootstrap="127.0.0.1:1", handlers={"PriceTicked": never_called},
        topics=["market.ticks.v1"], sessionmaker=lambda: session,  # type: ignore[arg-type,return-value]
        infra=infra_tables(MetaData()), producer=producer,  # type: ignore[arg-type]
        max_attempts=max_attempts, retry_backoff_s=0.0,
    )


def record(key: str, offset: int) -> SimpleNamespace:
    env = Envelope.new(PriceTicked(symbol="AAA", price_usd=Decimal("10"), as_of=datetime.now(UTC)),
                       producer="test", tenant_id="t1")
    return SimpleNamespace(topic="market.ticks.v1", partition=0, offset=offset, key=key.encode(),
                           value=env.to_bytes(), headers=[])


async def test_failed_attempts_dead_letters_and_parked_keys_are_exported() -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    producer, session = FakeProducer(), FakeSession()
    c = consumer(name, producer, session, max_attempts=2)

    async def fails(env: Envelope, handler: Any) -> bool:
        raise ValueError("cannot handle")

    c._handle_once = fails  # type: ignore[method-assign]
    await c._process(record("ACC1", 1))  # two failed attempts, then the DLQ; the key parks
    assert value("trimtab_handler_failures_total", consumer=name, event_type="PriceTicked", kind="error") == 2
    assert value("trimtab_events_dead_lettered_total", consumer=name, topic="market.ticks.v1") == 1
    assert value("trimtab_consumer_parked_keys", consumer=name) == 1
    assert value("trimtab_consumer_running", consumer=name) == 0  # built, never started

    await c._process(record("ACC1", 2))  # same key: parked, dead-lettered without an attempt
    assert value("trimtab_handler_failures_total", consumer=name, event_type="PriceTicked", kind="error") == 2
    assert value("trimtab_events_dead_lettered_total", consumer=name, topic="market.ticks.v1") == 2
    assert value("trimtab_consumer_parked_keys", consumer=name) == 1
    assert [t for t, _ in producer.sent] == ["market.ticks.v1.dlq"] * 2


async def test_transient_and_permanent_failures_are_counted_by_kind() -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    c = consumer(name, FakeProducer(), FakeSession(), max_attempts=3)
    attempts: list[int] = []

    async def flaky(env: Envelope, handler: Any) -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database unreachable")
        return True

    c._handle_once = flaky  # type: ignore[method-assign]
    await c._process(record("ACC2", 1))
    assert value("trimtab_handler_failures_total", consumer=name, event_type="PriceTicked", kind="transient") == 1
    assert value("trimtab_events_processed_total", consumer=name, event_type="PriceTicked") == 1
    assert value("trimtab_handler_failures_total", consumer=name, kind="error") is None

    async def invalid(env: Envelope, handler: Any) -> bool:
        raise PermanentEventError("bad content")

    c._handle_once = invalid  # type: ignore[method-assign]
    await c._process(record("ACC3", 2))
    assert value("trimtab_handler_failures_total", consumer=name, event_type="PriceTicked", kind="permanent") == 1
    assert value("trimtab_events_dead_lettered_total", consumer=name, topic="market.ticks.v1") == 1


async def test_running_gauge_follows_the_poll_loop_and_a_stopped_consumer_leaves() -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    c = consumer(name, FakeProducer(), FakeSession())
    c._task = asyncio.create_task(asyncio.sleep(3600))
    assert value("trimtab_consumer_running", consumer=name) == 1
    c._task.cancel()
    await asyncio.sleep(0)
    assert value("trimtab_consumer_running", consumer=name) == 0  # died: still reported, as 0
    await c.stop()
    assert value("trimtab_consumer_running", consumer=name) is None
    assert value("trimtab_consumer_parked_keys", consumer=name) is None


# ---------------------------------------------------------------------------- relay


class Result:
    def __init__(self, scalar: Any = None, rows: list[Any] | None = None) -> None:
        self._scalar, self._rows = scalar, rows or []

    def scalar_one(self) -> Any:
        return self._scalar

    def all(self) -> list[Any]:
        return self._rows


class RelaySession(FakeSession):
    """Answers the relay's three statements: the advisory lock, the unsent rows, the update."""

    def __init__(self, got_lock: bool, rows: list[Any]) -> None:
        super().__init__()
        self.got_lock, self.rows = got_lock, rows

    async def execute(self, stmt: Any, params: Any = None) -> Result:  # type: ignore[override]
        self.statements.append(stmt)
        if len(self.statements) == 1:
            return Result(scalar=self.got_lock)
        if len(self.statements) == 2:
            return Result(rows=self.rows)
        return Result()


def outbox_row(i: int, topic: str, event_type: str, age_s: float) -> SimpleNamespace:
    return SimpleNamespace(id=i, topic=topic, key="ACC1", envelope=b"{}", headers={"event_type": event_type},
                           created_at=datetime.now(UTC) - timedelta(seconds=age_s))


def age(outbox: str) -> float | None:
    return value("trimtab_outbox_oldest_unsent_age_seconds", outbox=outbox)


async def test_relay_counts_published_rows_by_topic_and_reports_the_oldest_unsent_age() -> None:
    lock = f"svc_{uuid.uuid4().hex[:8]}"
    sessions: list[RelaySession] = []
    r = OutboxRelay(lambda: sessions.pop(0), infra_tables(MetaData()), FakeProducer(),  # type: ignore[arg-type]
                    lock_name=lock, batch=2)
    relay_mod._live.add(r)  # what start() does, without its polling task
    assert age(lock) == 0

    # A full batch: more may wait behind it, at least as old as its newest row.
    sessions.append(RelaySession(True, [outbox_row(1, "rebalance.proposed.v1", "RebalanceProposed", 300),
                                        outbox_row(2, "rebalance.decided.v1", "RebalanceDecided", 120)]))
    assert await r.publish_once() == 2
    assert value("trimtab_outbox_published_total", outbox=lock, topic="rebalance.proposed.v1",
                 event_type="RebalanceProposed") == 1
    assert value("trimtab_outbox_published_total", outbox=lock, topic="rebalance.decided.v1",
                 event_type="RebalanceDecided") == 1
    assert 119 <= age(lock) <= 130  # type: ignore[operator]

    # Rows seen but not published (the broker fails): the age is theirs and keeps growing.
    class DownProducer(FakeProducer):
        async def send(self, *a: Any, **kw: Any) -> Any:
            raise ConnectionError("broker down")

    r._producer = DownProducer()  # type: ignore[assignment]
    sessions.append(RelaySession(True, [outbox_row(3, "rebalance.decided.v1", "RebalanceDecided", 600)]))
    with pytest.raises(ConnectionError):
        await r.publish_once()
    assert 599 <= age(lock) <= 610  # type: ignore[operator]

    # Drained (a short batch) -> 0; another replica holding the lock -> 0 (it reports its own).
    r._producer = FakeProducer()  # type: ignore[assignment]
    sessions.append(RelaySession(True, [outbox_row(3, "rebalance.decided.v1", "RebalanceDecided", 600)]))
    assert await r.publish_once() == 1
    assert age(lock) == 0
    assert value("trimtab_outbox_published_total", outbox=lock, topic="rebalance.decided.v1",
                 event_type="RebalanceDecided") == 2
    sessions.append(RelaySession(True, [outbox_row(4, "trades.approved.v1", "TradesApproved", 50)]))
    r._producer = DownProducer()  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await r.publish_once()
    assert age(lock) > 0
    sessions.append(RelaySession(False, []))
    assert await r.publish_once() == 0
    assert age(lock) == 0
    await r.stop()
    assert age(lock) is None


async def test_relay_errors_are_counted_and_a_stopped_relay_leaves() -> None:
    lock = f"svc_{uuid.uuid4().hex[:8]}"

    def unreachable() -> Any:
        raise OSError("database unreachable")

    r = OutboxRelay(unreachable, infra_tables(MetaData()), FakeProducer(),  # type: ignore[arg-type]
                    lock_name=lock, poll_s=0.01)
    r.start()
    for _ in range(100):
        if value("trimtab_outbox_relay_errors_total", outbox=lock):
            break
        await asyncio.sleep(0.02)
    assert value("trimtab_outbox_relay_errors_total", outbox=lock) >= 1  # type: ignore[operator]
    assert r.last_error is not None and age(lock) == 0
    await r.stop()
    assert age(lock) is None


async def test_pipelined_partitions_in_hand_and_waiting_are_exported() -> None:
    """An SRE sizing SOLVER_PROCESSES / EXPLAINER_PROCESSES: partitions in hand, and those waiting
    for a handler slot because every one is busy."""
    from aiokafka import TopicPartition

    name = f"c-{uuid.uuid4().hex[:8]}"
    c = EventConsumer(name=name, group_id=name, bootstrap="127.0.0.1:1", handlers={},
                      topics=["market.ticks.v1"], sessionmaker=None, infra=None,  # type: ignore[arg-type]
                      producer=None, partition_concurrency=2)  # type: ignore[arg-type]
    release = asyncio.Event()

    class Kafka:
        def pause(self, *tps: Any) -> None: ...
        def resume(self, *tps: Any) -> None: ...
        def assignment(self) -> set[TopicPartition]:
            return {TopicPartition("market.ticks.v1", p) for p in range(3)}
        def highwater(self, tp: Any) -> int:
            return 1
        async def commit(self, offsets: Any) -> None: ...

    async def slow(records: Any) -> None:
        await release.wait()

    c._consumer = Kafka()  # type: ignore[assignment]
    c._process_partition = slow  # type: ignore[method-assign]
    for p in range(3):
        c._start_partition(TopicPartition("market.ticks.v1", p),
                           [SimpleNamespace(topic="market.ticks.v1", partition=p, offset=0, key=b"K", value=b"", headers=[])])
    await asyncio.sleep(0.05)
    assert value("trimtab_consumer_partitions", consumer=name, state="in_hand") == 3
    assert value("trimtab_consumer_partitions", consumer=name, state="waiting") == 1  # two slots busy
    release.set()
    for _ in range(100):
        if not c._inflight:
            break
        await asyncio.sleep(0.01)
    assert value("trimtab_consumer_partitions", consumer=name, state="in_hand") == 0
    assert value("trimtab_consumer_partitions", consumer=name, state="waiting") == 0
