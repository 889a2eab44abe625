"""The consumer task survives infrastructure trouble while dead-lettering and unexpected errors
while processing: it retries, and nothing past the failing record is committed (no broker or
database needed: the Kafka consumer, producer and session are stand-ins)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from trimtab.shared.consumer import EventConsumer

TP = TopicPartition("market.ticks.v1", 0)


class FlakyProducer:
    """Fails `failures` sends, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures, self.sent = failures, []

    async def send(self, topic, value=None, key=None, headers=None):  # type: ignore[no-untyped-def]
        if self.failures > 0:
            self.failures -= 1
            raise KafkaConnectionError("broker unreachable")
        self.sent.append((topic, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class OneRecordConsumer:
    """One poll returns one record at offset 7; later polls return nothing."""

    def __init__(self, value: bytes) -> None:
        self.value, self.polls, self.committed, self.seeks = value, 0, [], []

    async def getmany(self, **kw):  # type: ignore[no-untyped-def]
        self.polls += 1
        if self.polls > 1 and not self.seeks:
            await asyncio.sleep(0.05)
            return {}
        if self.seeks and self.polls > 3:
            await asyncio.sleep(0.05)
            return {}
        rec = SimpleNamespace(topic=TP.topic, partition=0, offset=7, key=b"AAA", value=self.value, headers=[])
        return {TP: [rec]}

    def assignment(self):  # type: ignore[no-untyped-def]
        return {TP}

    def highwater(self, tp):  # type: ignore[no-untyped-def]
        return 8

    def seek(self, tp, offset):  # type: ignore[no-untyped-def]
        self.seeks.append((tp, offset))

    async def commit(self, offsets):  # type: ignore[no-untyped-def]
        self.committed.append(offsets)

    def pause(self, *tps):  # type: ignore[no-untyped-def]
        self.__dict__.setdefault("paused_set", set()).update(tps)

    def resume(self, *tps):  # type: ignore[no-untyped-def]
        self.__dict__.setdefault("paused_set", set()).difference_update(tps)


def _consumer(producer: object) -> EventConsumer:
    return EventConsumer(name="x", group_id="g", bootstrap="-", handlers={"PriceTicked": None},  # type: ignore[dict-item]
                         topics=[TP.topic], sessionmaker=None, infra=None, producer=producer,  # type: ignore[arg-type]
                         retry_backoff_s=0.001)


async def test_a_dead_letter_send_that_fails_is_retried_and_the_task_lives() -> None:
    producer = FlakyProducer(failures=3)
    c = _consumer(producer)
    recorded = []

    async def record_ok(*args, **kwargs):  # type: ignore[no-untyped-def]
        recorded.append(args)

    kafka = OneRecordConsumer(b"not an envelope")
    c._consumer = kafka  # type: ignore[assignment]
    original = c._until_done

    async def until_done(what, step):  # type: ignore[no-untyped-def]
        if what == "dead-letter record":  # no database here: the record step succeeds
            return await original(what, record_ok)
        return await original(what, step)

    c._until_done = until_done  # type: ignore[method-assign]
    c._task = asyncio.create_task(c._run())
    for _ in range(200):
        if kafka.committed:
            break
        await asyncio.sleep(0.01)
    try:
        assert c.running, c._task.exception() if c._task.done() else None
        assert producer.sent == [("market.ticks.v1.dlq", b"not an envelope")]  # once, after 3 failures
        assert recorded and kafka.committed == [{TP: 8}]
    finally:
        c._task.cancel()


async def test_an_unexpected_error_while_processing_rereads_the_run_and_commits_nothing() -> None:
    c = _consumer(FlakyProducer(failures=0))
    kafka = OneRecordConsumer(b"whatever")
    c._consumer = kafka  # type: ignore[assignment]
    calls = []

    async def broken(records):  # type: ignore[no-untyped-def]
        calls.append(records[0].offset)
        raise RuntimeError("a bug")

    c._process_partition = broken  # type: ignore[method-assign]
    c._task = asyncio.create_task(c._run())
    for _ in range(300):
        if len(calls) >= 2:
            break
        await asyncio.sleep(0.01)
    try:
        assert c.running
        assert calls[:2] == [7, 7] and kafka.seeks[0] == (TP, 7)
        assert kafka.committed == []
    finally:
        c._task.cancel()


async def test_parked_keys_are_reread_on_every_partition_assignment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A replica that started before another parked a key must park it too once the key's
    partition is assigned to it: `start` subscribes with a listener that re-reads the dead
    letters' parked keys on each assignment."""
    from trimtab.shared import consumer as module

    subscribed = {}

    class FakeKafka:
        def __init__(self, *topics, **kwargs):  # type: ignore[no-untyped-def]
            assert not topics, "topics go through subscribe(), with the listener"

        def subscribe(self, topics, listener=None):  # type: ignore[no-untyped-def]
            subscribed.update(topics=topics, listener=listener)

        async def start(self) -> None:
            return None

        async def stop(self) -> None:
            return None

    monkeypatch.setattr(module, "AIOKafkaConsumer", FakeKafka)
    c = _consumer(FlakyProducer(failures=0))
    db = [set(), {("trades.approved.v1", "t1", "acct-1")}]  # what the dead letters hold, over time

    async def load() -> None:
        c._parked = set(db[0])

    monkeypatch.setattr(c, "_load_parked", load)
    await c.start()
    try:
        assert subscribed["topics"] == [TP.topic] and subscribed["listener"] is not None
        assert c._parked == set()
        db.pop(0)  # another replica parks acct-1, then the partition moves here
        await subscribed["listener"].on_partitions_assigned({TP})
        assert c.is_parked("trades.approved.v1", "t1", "acct-1")
        assert not c.is_parked("trades.approved.v1", "t2", "acct-1")  # the key names t1's account
    finally:
        await c.stop()


class ThreePartitionPoll(OneRecordConsumer):
    """One poll returns one record in each of three partitions; later polls return nothing."""

    def assignment(self):  # type: ignore[no-untyped-def]
        return {TopicPartition(TP.topic, p) for p in range(3)}

    async def getmany(self, **kw):  # type: ignore[no-untyped-def]
        self.polls += 1
        if self.polls > 1:
            await asyncio.sleep(0.05)
            return {}
        return {TopicPartition(TP.topic, p): [SimpleNamespace(topic=TP.topic, partition=p, offset=3, key=b"K",
                                                              value=b"", headers=[])] for p in range(3)}


async def _peak_partitions(concurrency: int) -> tuple[int, list[dict]]:  # type: ignore[type-arg]
    c = EventConsumer(name="x", group_id="g", bootstrap="-", handlers={"PriceTicked": None},  # type: ignore[dict-item]
                      topics=[TP.topic], sessionmaker=None, infra=None, producer=None,  # type: ignore[arg-type]
                      partition_concurrency=concurrency)
    kafka = ThreePartitionPoll(b"")
    c._consumer = kafka  # type: ignore[assignment]
    state = {"inflight": 0, "peak": 0, "done": 0}
    all_done = asyncio.Event()

    async def process(records):  # type: ignore[no-untyped-def]
        state["inflight"] += 1
        state["peak"] = max(state["peak"], state["inflight"])
        await asyncio.sleep(0.05)
        state["inflight"] -= 1
        state["done"] += 1
        if state["done"] == 3:
            all_done.set()

    c._process_partition = process  # type: ignore[method-assign]
    task = asyncio.create_task(c._run())
    await asyncio.wait_for(all_done.wait(), 10)
    await asyncio.sleep(0.02)  # the last offset commit
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return state["peak"], kafka.committed


async def test_partitions_of_one_poll_run_concurrently_up_to_the_limit() -> None:
    for concurrency, peak in ((1, 1), (2, 2), (8, 3)):
        got, committed = await _peak_partitions(concurrency)
        assert got == peak, concurrency
        # every partition's offset committed after its records
        assert sorted(next(iter(o)).partition for o in committed) == [0, 1, 2]
        assert all(next(iter(o.values())) == 4 for o in committed)


def test_a_busy_connection_pool_is_infrastructure_not_the_events_fault() -> None:
    """Every connection busy (several partitions in flight) must be retried, not count towards
    dead-lettering a good event."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from trimtab.shared.consumer import is_transient

    assert is_transient(PoolTimeout("QueuePool limit of size 10 overflow 10 reached"))
    assert not is_transient(ValueError("a bad event"))


class SlowAndFastPartitions(OneRecordConsumer):
    """Partition 0 holds one record; partition 1 gets a new record on every poll (up to 5),
    returned only while the partition is not paused, as aiokafka does."""

    def __init__(self) -> None:
        super().__init__(b"")
        self.next_fast = 0

    def assignment(self):  # type: ignore[no-untyped-def]
        return {TopicPartition(TP.topic, 0), TopicPartition(TP.topic, 1)}

    async def getmany(self, **kw):  # type: ignore[no-untyped-def]
        self.polls += 1
        await asyncio.sleep(0.01)
        paused = self.__dict__.get("paused_set", set())
        out = {}
        slow, fast = TopicPartition(TP.topic, 0), TopicPartition(TP.topic, 1)
        if self.polls == 1:
            out[slow] = [SimpleNamespace(topic=TP.topic, partition=0, offset=0, key=b"S", value=b"", headers=[])]
        if fast not in paused and self.next_fast < 5:
            out[fast] = [SimpleNamespace(topic=TP.topic, partition=1, offset=self.next_fast, key=b"F",
                                         value=b"", headers=[])]
            self.next_fast += 1
        return out


async def test_a_long_partition_does_not_hold_back_the_others() -> None:
    """Pipelined partitions (concurrency above 1): while partition 0's one record takes long (a
    big explanation), partition 1's later records, fetched by later polls, are handled; before,
    the poll loop waited for every partition of a poll, so they waited for partition 0. Each
    partition stays in order and is paused while its records are in hand."""
    c = EventConsumer(name="x", group_id="g", bootstrap="-", handlers={"PriceTicked": None},  # type: ignore[dict-item]
                      topics=[TP.topic], sessionmaker=None, infra=None, producer=None,  # type: ignore[arg-type]
                      partition_concurrency=2)
    kafka = SlowAndFastPartitions()
    c._consumer = kafka  # type: ignore[assignment]
    order: list[tuple[int, int, str]] = []
    slow_done = asyncio.Event()

    async def process(records):  # type: ignore[no-untyped-def]
        rec = records[0]
        assert TopicPartition(rec.topic, rec.partition) in kafka.paused_set  # paused while in hand
        order.append((rec.partition, rec.offset, "start"))
        await asyncio.sleep(0.5 if rec.partition == 0 else 0.01)
        order.append((rec.partition, rec.offset, "end"))
        if rec.partition == 0:
            slow_done.set()

    c._process_partition = process  # type: ignore[method-assign]
    task = asyncio.create_task(c._run())
    await asyncio.wait_for(slow_done.wait(), 10)
    for _ in range(100):
        if kafka.next_fast == 5 and not c._inflight:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    fast_before_slow_ended = [o for p, o, what in order[:order.index((0, 0, "end"))] if p == 1 and what == "end"]
    assert fast_before_slow_ended == [0, 1, 2, 3, 4], order
    assert [o for p, o, what in order if p == 1 and what == "start"] == [0, 1, 2, 3, 4]  # in order
    assert {(next(iter(x)).partition, next(iter(x.values()))) for x in kafka.committed} >= {(0, 1), (1, 5)}
    assert not kafka.paused_set  # every partition resumed


async def test_records_of_a_partition_back_before_its_task_ended_wait_and_follow_a_rewind() -> None:
    """A partition revoked and assigned back while its task still runs can return before that
    task ends: the new records wait for it; if it failed (and rewound the partition to its first
    offset), they are not handled at all but fetched again in order."""
    c = EventConsumer(name="x", group_id="g", bootstrap="-", handlers={"PriceTicked": None},  # type: ignore[dict-item]
                      topics=[TP.topic], sessionmaker=None, infra=None, producer=None,  # type: ignore[arg-type]
                      partition_concurrency=2, retry_backoff_s=0.001)
    kafka = OneRecordConsumer(b"")
    c._consumer = kafka  # type: ignore[assignment]
    handled: list[int] = []
    release = asyncio.Event()

    async def process(records):  # type: ignore[no-untyped-def]
        if records[0].offset == 7:
            await release.wait()
            raise RuntimeError("a bug")
        handled.append(records[0].offset)

    c._process_partition = process  # type: ignore[method-assign]

    def rec(offset: int) -> SimpleNamespace:
        return SimpleNamespace(topic=TP.topic, partition=0, offset=offset, key=b"K", value=b"", headers=[])

    c._start_partition(TP, [rec(7)])
    first = c._inflight[TP][0]
    # The same partition, back before the first task ended: assigned again from its committed
    # offset 5, below the first task's records (found by review: the first task's seek went to
    # the old assignment, so skipping these records without a seek of its own lost 5 and 6).
    c._start_partition(TP, [rec(5), rec(6)])
    second = c._inflight[TP][0]
    await asyncio.sleep(0.05)
    assert handled == [] and not second.done()
    release.set()
    assert await asyncio.wait_for(first, 5) is False and await asyncio.wait_for(second, 5) is False
    # nothing handled past the failure; the partition rewound to the chain's first offset
    assert handled == [] and kafka.seeks[-1] == (TP, 5) and kafka.committed == []
    assert not kafka.paused_set and not c._inflight

    # A first task that succeeds lets the second one run after it, in order.
    c._process_partition = process  # type: ignore[method-assign]
    release.clear()

    async def ok(records):  # type: ignore[no-untyped-def]
        if records[0].offset == 9:
            await release.wait()
        handled.append(records[0].offset)

    c._process_partition = ok  # type: ignore[method-assign]
    c._start_partition(TP, [rec(9)])
    c._start_partition(TP, [rec(10)])
    await asyncio.sleep(0.05)
    assert handled == []
    release.set()
    await asyncio.wait_for(asyncio.gather(*(t for t, _ in c._inflight.values())), 5)
    assert handled == [9, 10] and kafka.committed == [{TP: 10}, {TP: 11}]


async def test_records_of_a_partition_revoked_while_they_waited_are_left_to_its_new_owner() -> None:
    """Found by review: a task queued behind the concurrency limit for a partition revoked
    meanwhile used to handle its records (up to a poll's 500) once a slot freed, racing the new
    owner and holding a worker this instance's own partitions wait for."""
    c = EventConsumer(name="x", group_id="g", bootstrap="-", handlers={"PriceTicked": None},  # type: ignore[dict-item]
                      topics=[TP.topic], sessionmaker=None, infra=None, producer=None,  # type: ignore[arg-type]
                      partition_concurrency=2)
    kafka = OneRecordConsumer(b"")
    c._consumer = kafka  # type: ignore[assignment]
    handled: list[int] = []

    async def process(records):  # type: ignore[no-untyped-def]
        handled.append(records[0].offset)

    c._process_partition = process  # type: ignore[method-assign]
    await c._gate.acquire()
    await c._gate.acquire()  # both slots busy
    c._start_partition(TP, [SimpleNamespace(topic=TP.topic, partition=0, offset=3, key=b"K", value=b"", headers=[])])
    task = c._inflight[TP][0]
    kafka.assignment = lambda: set()  # type: ignore[method-assign]  # the partition is revoked
    c._gate.release()
    assert await asyncio.wait_for(task, 5) is False
    assert handled == [] and kafka.committed == [] and not c._inflight


async def test_a_key_parked_while_the_parked_set_is_reloaded_stays_parked() -> None:
    """Found by review: the reload on partition assignment replaced the parked set with a read
    that could predate a dead letter a partition task had just recorded, so that key's next
    events were applied past the gap. Parks and resolutions made during the read are re-applied."""
    from sqlalchemy import MetaData

    from trimtab.shared.outbox import infra_tables

    db: list[tuple[str, str | None, str]] = [("t", "demo", "OLD-1")]
    read_started, read_may_end = asyncio.Event(), asyncio.Event()

    class Session:
        async def __aenter__(self):  # type: ignore[no-untyped-def]
            return self

        async def __aexit__(self, *a):  # type: ignore[no-untyped-def]
            return False

        def begin(self):  # type: ignore[no-untyped-def]
            return self

        async def execute(self, stmt):  # type: ignore[no-untyped-def]
            if stmt.is_select:
                snapshot = list(db)  # the statement's snapshot
                read_started.set()
                await read_may_end.wait()
                return [SimpleNamespace(topic=t, tenant_id=ten, key=k) for t, ten, k in snapshot]
            p = stmt.compile().params
            db.append((p["topic"], p["tenant_id"], p["key"]))

    c = EventConsumer(name="opt", group_id="g", bootstrap="-", handlers={}, topics=["t"],
                      sessionmaker=lambda: Session(), infra=infra_tables(MetaData()),  # type: ignore[arg-type]
                      producer=FlakyProducer(failures=0))
    load = asyncio.create_task(c._load_parked())  # on partition assignment
    await read_started.wait()
    rec = SimpleNamespace(topic="t", partition=0, offset=3, key=b"ACC-1", value=b"{}", headers=[])
    await c._dead_letter(rec, "ACC-1", SimpleNamespace(tenant_id="demo", event_id=None), "boom", park=True)
    assert c.unpark("t", "OLD-1", "demo") is False  # an operator resolves OLD-1 meanwhile
    read_may_end.set()
    await load
    assert c.is_parked("t", "demo", "ACC-1")
    assert not c.is_parked("t", "demo", "OLD-1")
