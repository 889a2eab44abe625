"""The event consumer: consumer groups, idempotent handling, bounded retries, dead letters.

For every message, in partition order:

1. decode the envelope (`Envelope.from_bytes`, or the decoder a `BatchHandler` brings: the
   audit record's); a message that is not a valid envelope goes straight to `<topic>.dlq`
   (it can never succeed, and it carries no event identity that could order anything);
2. if an earlier event of the same tenant with the same key was dead-lettered and not yet
   resolved, this one goes to the DLQ too ("parked"), so later events for the key are never
   silently applied past a gap (keys are account ids or symbols, named within a tenant: another
   tenant's events under the same key are not held up);
3. open a unit of work (a run of ordinary events of one partition shares one, so a burst of
   ticks costs one commit, not hundreds; if that shared transaction fails, its events are
   re-handled one by one, so the steps below still hold per event), record `(consumer, event_id)` (a redelivery stops here and changes
   nothing), run the handler, commit: effect, outgoing events and marker in one transaction;
4. a failed attempt rolls back; after `max_attempts` the event is dead-lettered with the error
   and its source topic, partition and offset in headers; an infrastructure error (database or
   broker unreachable) is retried without limit instead, since dead-lettering would lose events
   that are fine;
5. the offset is committed to Kafka only after the transaction committed. A failed offset commit
   means redelivery, which step 3 absorbs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import KafkaError
from opentelemetry import metrics, trace
from opentelemetry.propagate import extract
from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .envelope import Envelope
from .errors import PermanentEventError
from .events import dlq_topic
from .kafka import decode_headers, encode_headers
from .outbox import InfraTables, UnitOfWork

log = logging.getLogger(__name__)
tracer = trace.get_tracer("trimtab.consumer")
meter = metrics.get_meter("trimtab.consumer")
_processed = meter.create_counter("trimtab_events_processed", unit="{event}", description="events handled")
_duplicates = meter.create_counter("trimtab_events_duplicate", unit="{event}", description="redeliveries absorbed")
_dead = meter.create_counter("trimtab_events_dead_lettered", unit="{event}", description="events sent to a DLQ")
_latency = meter.create_histogram("trimtab_handler_duration", unit="ms", description="handler time per event")
_failures = meter.create_counter(
    "trimtab_handler_failures", unit="{attempt}",
    description="failed handler attempts; kind: transient (infrastructure, retried without limit), "
                "error (counts against max_attempts), permanent (dead-lettered at once)")

Handler = Callable[[Envelope, UnitOfWork], Awaitable[None]]
#: Reads a message on the bus as the envelope the handlers get; its event id keys the
#: processed-event marker. Raises ValidationError, ValueError or TypeError for a message that is
#: not an envelope (dead-lettered as undecodable).
Decoder = Callable[[ConsumerRecord], Envelope]


def decode_envelope(rec: ConsumerRecord) -> Envelope:
    """The default decoder: the envelope model's own parse of the message's bytes."""
    return Envelope.from_bytes(rec.value)


#: A handler registered for ANY_EVENT also takes every event type of its topics that has no
#: handler of its own (the audit record: an event type added after it was deployed is recorded
#: as unknown, not skipped). Its topics are those of the named types.
ANY_EVENT = "*"

_live: weakref.WeakSet[EventConsumer] = weakref.WeakSet()


def _observe_lag(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    out = []
    for c in list(_live):
        for tp, lag in c.stats.lag.items():
            topic, _, partition = tp.rpartition("/")
            out.append(metrics.Observation(lag, {"consumer": c.name, "topic": topic, "partition": partition}))
    return out


meter.create_observable_gauge("trimtab_consumer_lag", callbacks=[_observe_lag], unit="{message}",
                              description="messages behind the partition's high watermark")


def _observe_state(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    return [metrics.Observation(1 if c.running else 0, {"consumer": c.name}) for c in list(_live)]


def _observe_parked(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    return [metrics.Observation(len(c._parked), {"consumer": c.name}) for c in list(_live)]  # noqa: SLF001


def _observe_in_hand(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    """Pipelined consumers: partitions whose records are in hand (paused), and of those the ones
    waiting for a free slot (all `partition_concurrency` busy: more worker processes would help)."""
    out = []
    for c in list(_live):
        if c._partition_concurrency > 1:  # noqa: SLF001
            in_hand = len(c._inflight)  # noqa: SLF001
            busy = c._partition_concurrency - c._gate._value  # noqa: SLF001
            out.append(metrics.Observation(in_hand, {"consumer": c.name, "state": "in_hand"}))
            out.append(metrics.Observation(max(0, in_hand - busy), {"consumer": c.name, "state": "waiting"}))
    return out


meter.create_observable_gauge("trimtab_consumer_partitions", callbacks=[_observe_in_hand], unit="{partition}",
                              description="pipelined consumers: partitions in hand (state=in_hand) and, of "
                                          "those, waiting for a free handler slot (state=waiting)")
meter.create_observable_gauge("trimtab_consumer_running", callbacks=[_observe_state], unit="1",
                              description="1 while the consumer's poll loop runs, 0 once it stopped")
meter.create_observable_gauge("trimtab_consumer_parked_keys", callbacks=[_observe_parked], unit="{key}",
                              description="(topic, tenant, key) triples parked behind an unresolved dead letter")


class BatchHandler:
    """A handler that takes every new event of a run at once (`fn(envelopes, uow)`), for
    consumers whose per-event cost is mostly fixed (a lock, a head read): the audit record."""

    def __init__(self, fn: Callable[[list[Envelope], UnitOfWork], Awaitable[None]],
                 decode: Decoder | None = None) -> None:
        self.fn = fn
        #: When set, the consumer reads every message with it instead of `decode_envelope`: the
        #: audit record, which must give a message that lacks an event id the same id on every
        #: delivery (derived from where it sits on the bus), and keep the bytes it arrived as.
        self.decode = decode

    async def __call__(self, env: Envelope, uow: UnitOfWork) -> None:
        await self.fn([env], uow)

#: Infrastructure, not the event: retried without limit. A pool checkout that timed out (every
#: connection busy, e.g. with several partitions in flight) is one too.
TRANSIENT = (OperationalError, InterfaceError, OSError, ConnectionError, KafkaError, PoolTimeout)


#: Deadlock and serialization failure: the transaction lost a race, the event is fine.
_RETRY_SQLSTATES = {"40P01", "40001"}


def is_transient(exc: BaseException) -> bool:
    """Infrastructure or a lost race (deadlock, serialization failure), not the work itself: try
    again, without counting it against the work."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "__cause__", None), "sqlstate", None)
        if sqlstate in _RETRY_SQLSTATES:
            return True
    return isinstance(exc, TRANSIENT)


@dataclass
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    lag: dict[str, int] = field(default_factory=dict)


class _ReloadParked(ConsumerRebalanceListener):
    """Re-reads the consumer's parked keys whenever partitions are assigned to it."""

    def __init__(self, consumer: EventConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: object) -> None:
        return None

    async def on_partitions_assigned(self, assigned: object) -> None:
        try:
            await self._consumer._load_parked()  # noqa: SLF001
        except Exception as e:  # noqa: BLE001 - keep the last known set rather than fail the join
            log.warning("%s: could not re-read parked keys on assignment: %r", self._consumer.name, e)


class EventConsumer:
    """Consumes `topics` in group `group_id`, dispatching by event type to `handlers`."""

    def __init__(
        self,
        *,
        name: str,
        group_id: str,
        bootstrap: str,
        handlers: dict[str, Handler],
        topics: list[str],
        sessionmaker: async_sessionmaker[AsyncSession],
        infra: InfraTables,
        producer: AIOKafkaProducer,
        on_commit: Callable[[], None] | None = None,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.05,
        session_timeout_ms: int = 6000,
        park_keys: bool = True,
        batch_size: int = 100,
        receive_spans: bool = True,
        recheck_duplicates: bool = False,
        partition_concurrency: int = 1,
    ) -> None:
        self.name = name
        self.group_id = group_id
        self._bootstrap = bootstrap
        self._handlers = handlers
        self._topics = topics
        self._sm = sessionmaker
        self._infra = infra
        self._producer = producer
        self._on_commit = on_commit
        self._max_attempts = max_attempts
        self._backoff = retry_backoff_s
        self._session_timeout_ms = session_timeout_ms
        #: Consumers whose effects do not depend on per-key order (the audit record) turn parking
        #: off, so one bad event does not divert every later event of its key to the DLQ.
        self._park_keys = park_keys
        self._batch_size = max(1, batch_size)
        #: The aiokafka instrumentation opens a "receive" span per fetched message. A consumer
        #: that takes long runs of every topic (the audit record) turns it off: its run span
        #: already links the events' producer spans, and a span per message cost about as much
        #: CPU as recording the message.
        self._receive_spans = receive_spans
        #: A consumer whose handler can tell a redelivery from a forgery (the audit record
        #: compares the bytes it holds under the event id) gets already-processed events too,
        #: so that other content under a known id is dead-lettered, not dropped as a duplicate.
        self._recheck_duplicates = recheck_duplicates
        #: Partitions handled at once (each still in order, in transactions of its own): for
        #: handlers that await CPU work in worker processes (explanations, solves), so that one
        #: service instance keeps its workers busy. 1: one partition after another, poll by
        #: poll. Above 1 the partitions are pipelined: a partition's records are handed to a
        #: task of its own and the partition is paused until that task is done, while the poll
        #: loop goes on fetching the other partitions, so a long partition does not leave a
        #: worker idle until the end of the poll. Only for handlers that share no in-process
        #: state across keys.
        self._partition_concurrency = max(1, partition_concurrency)
        #: How messages are read: the decoder one of the batch handlers brings, else the envelope
        #: model's own parse (every consumer but the audit record's).
        decoders = {h.decode for h in handlers.values() if isinstance(h, BatchHandler) and h.decode is not None}
        if len(decoders) > 1:
            raise ValueError(f"consumer {name}: its handlers bring {len(decoders)} different decoders; "
                             "a consumer reads every message one way")
        self._decode: Decoder = decoders.pop() if decoders else decode_envelope
        self._gate = asyncio.Semaphore(self._partition_concurrency)
        #: The task handling each partition's records in pipelined mode, and the first offset of
        #: the records it and the tasks it waits for hold (where a failure rewinds to).
        self._inflight: dict[TopicPartition, tuple[asyncio.Task[bool], int]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        #: (topic, tenant, key) of unresolved dead letters; tenant None: a row recorded before
        #: dead letters carried their tenant, which parks the key for every tenant.
        self._parked: set[tuple[str, str | None, str]] = set()
        #: Changes to `_parked` made while `_load_parked` reads the dead letters (a partition task
        #: parks a key, an operator resolves one), re-applied to what it read: the read may
        #: predate them.
        self._park_changes: list[list[tuple[str, tuple[Any, ...]]]] = []
        self.stats = ConsumerStats()
        self.assigned = asyncio.Event()
        _live.add(self)

    async def start(self) -> None:
        _live.add(self)
        await self._load_parked()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            client_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=600_000,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(300, self._session_timeout_ms // 6),
        )
        # Parked keys are re-read from the dead letters on every assignment: a partition moved
        # here from a replica that parked a key after this one started must stay parked here.
        self._consumer.subscribe(list(self._topics), listener=_ReloadParked(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._consumer:
            await self._consumer.stop()
        _live.discard(self)  # stopped on purpose: no longer reported (a crashed one reports running 0)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def unpark(self, topic: str, key: str, tenant_id: str | None = None) -> bool:
        """Stop parking `key` on `topic` for `tenant_id` (None: for every tenant), its dead
        letters being resolved; True if it was parked."""
        gone = self._unpark(self._parked, topic, key, tenant_id)
        for changes in self._park_changes:
            changes.append(("unpark", (topic, key, tenant_id)))
        return bool(gone)

    @staticmethod
    def _unpark(parked: set[tuple[str, str | None, str]], topic: str, key: str,
                tenant_id: str | None) -> set[tuple[str, str | None, str]]:
        gone = {p for p in parked if p[0] == topic and p[2] == key and (tenant_id is None or p[1] == tenant_id)}
        parked -= gone
        return gone

    def _park(self, item: tuple[str, str | None, str]) -> None:
        self._parked.add(item)
        for changes in self._park_changes:
            changes.append(("park", item))

    def is_parked(self, topic: str, tenant_id: str, key: str) -> bool:
        return (topic, tenant_id, key) in self._parked or (topic, None, key) in self._parked

    async def _load_parked(self) -> None:
        d = self._infra.dead_letters
        changes: list[tuple[str, tuple[Any, ...]]] = []
        self._park_changes.append(changes)
        try:
            async with self._sm() as s:
                rows = await s.execute(
                    select(d.c.topic, d.c.tenant_id, d.c.key).where(
                        d.c.consumer == self.name, d.c.resolved_at.is_(None), d.c.key.is_not(None)
                    )
                )
                loaded = {(r.topic, r.tenant_id, r.key) for r in rows}
        finally:
            self._park_changes.remove(changes)
        for op, item in changes:
            if op == "park":
                loaded.add(item)  # type: ignore[arg-type]
            else:
                self._unpark(loaded, *item)
        self._parked = loaded

    async def _run(self) -> None:
        assert self._consumer is not None
        c = self._consumer
        if self._receive_spans:
            getmany = c.getmany
        else:  # the method as aiokafka defines it, past any instrumentation wrapper
            raw_getmany = inspect.unwrap(type(c).getmany)

            async def getmany(**kw):  # type: ignore[no-untyped-def]
                return await raw_getmany(c, **kw)
        # A poll may bring a whole run (at least the 500 that always were the cap).
        max_records = max(500, self._batch_size)
        try:
            while True:
                try:
                    batch = await getmany(timeout_ms=200, max_records=max_records)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("%s: poll failed: %r", self.name, e)
                    await asyncio.sleep(1)
                    continue
                if c.assignment():
                    self.assigned.set()
                for tp, records in batch.items():  # backlog as fetched, so lag shows work in hand
                    hw = c.highwater(tp)
                    if hw is not None:
                        self.stats.lag[f"{tp.topic}/{tp.partition}"] = max(0, hw - records[0].offset)
                if self._partition_concurrency > 1:
                    for tp, records in batch.items():
                        self._start_partition(tp, records)
                else:
                    for tp, records in batch.items():
                        await self._handle_partition(tp, records)
        finally:
            await self._stop_partition_tasks()

    def _start_partition(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Pipelined mode: pause `tp` and handle `records` in a task of their own; the task
        resumes the partition when it is done, and the next poll that returns it fetches on."""
        assert self._consumer is not None
        self._consumer.pause(tp)
        # A partition revoked and assigned back while its old task runs can come back before
        # that task is done: the new records wait for it, so a partition is never handled out
        # of order. If it failed, they are not handled either: the partition is rewound to the
        # first offset of the whole chain (the old task's seek may have gone to an assignment
        # that no longer exists), so everything from there is fetched again, in order.
        before = self._inflight.get(tp)
        first = records[0].offset if before is None else min(before[1], records[0].offset)
        task = asyncio.create_task(self._partition_task(tp, records, before[0] if before else None, first),
                                   name=f"consumer:{self.name}:{tp.topic}/{tp.partition}")
        self._inflight[tp] = (task, first)

    async def _partition_task(self, tp: TopicPartition, records: list[ConsumerRecord],
                              before: asyncio.Task[bool] | None, chain_first: int) -> bool:
        c = self._consumer
        assert c is not None
        me = asyncio.current_task()
        ok = False
        try:
            if before is not None and not await asyncio.shield(before):
                if tp in c.assignment():
                    c.seek(tp, chain_first)
                return False
            async with self._gate:
                if tp not in c.assignment():
                    return False  # revoked while it waited: its new owner reads from the commit
                ok = await self._handle_partition(tp, records)
            return ok
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a task must not die silently; re-read instead
            log.exception("%s: partition task %s failed: %r", self.name, tp, e)
            if tp in c.assignment():
                c.seek(tp, records[0].offset)
            return False
        finally:
            if self._inflight.get(tp, (None,))[0] is me:  # a later task for tp resumes it when done
                del self._inflight[tp]
                if tp in c.assignment():  # revoked meanwhile: a new assignment starts unpaused
                    c.resume(tp)

    async def _stop_partition_tasks(self) -> None:
        tasks = [t for t, _ in self._inflight.values()]
        self._inflight.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle_partition(self, tp: TopicPartition, records: list[ConsumerRecord]) -> bool:
        """One partition's records of a poll, then its offset; a failure re-reads them (False)."""
        c = self._consumer
        assert c is not None
        try:
            await self._process_partition(records)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # Nothing of this run is committed: fetch it again from its first offset
            # (idempotency absorbs what was handled) rather than let the task die.
            log.exception("%s: processing %s failed, re-reading from %d: %r",
                          self.name, tp, records[0].offset, e)
            if tp in c.assignment():  # revoked meanwhile: its new owner reads from the commit
                c.seek(tp, records[0].offset)
            await asyncio.sleep(1)
            return False
        await self._commit_offset(tp, records[-1].offset + 1)
        hw = c.highwater(tp) if tp in c.assignment() else None  # it may be revoked meanwhile
        if hw is not None:
            self.stats.lag[f"{tp.topic}/{tp.partition}"] = max(0, hw - (records[-1].offset + 1))
        return True

    async def _commit_offset(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit({tp: offset})
        except Exception as e:  # redelivery follows; idempotency absorbs it
            log.warning("%s: offset commit failed for %s: %r", self.name, tp, e)

    def _batchable(self, rec: ConsumerRecord) -> Envelope | None:
        """The envelope if `rec` can join a batch: decodable, ours, and its key not parked."""
        try:
            env = self._decode(rec)
        except (ValidationError, ValueError, TypeError):
            return None
        if env.event_type not in self._handlers and ANY_EVENT not in self._handlers:
            return None
        key = rec.key.decode(errors="replace") if rec.key is not None else None
        if key is not None and self.is_parked(rec.topic, env.tenant_id, key):
            return None
        return env

    async def _process_partition(self, records: list[ConsumerRecord]) -> None:
        """Handle one partition's records in order: runs of ordinary events share one
        transaction (one commit instead of one per event); anything unusual — an undecodable or
        parked event, or a run whose transaction fails — goes through `_process` one by one, so
        retries and dead letters stay per event."""
        i = 0
        while i < len(records):
            run: list[tuple[ConsumerRecord, Envelope]] = []
            while i + len(run) < len(records) and len(run) < self._batch_size:
                env = self._batchable(records[i + len(run)])
                if env is None:
                    break
                run.append((records[i + len(run)], env))
            if len(run) >= 2 and await self._try_batch(run):
                i += len(run)
                continue
            end = i + max(1, len(run))
            for rec in records[i:end]:
                await self._process(rec)
            i = end

    async def _try_batch(self, run: list[tuple[ConsumerRecord, Envelope]]) -> bool:
        links = []
        for _, env in run:  # the span keeps 128 links: extract no more than that
            if len(links) >= 128:
                break
            sc = trace.get_current_span(extract(env.trace)).get_span_context()
            if sc.is_valid:
                links.append(trace.Link(sc))
        attempt = 0
        while True:
            attempt += 1
            t0 = time.perf_counter()
            with tracer.start_as_current_span(
                f"{run[0][0].topic} process batch", kind=trace.SpanKind.CONSUMER, links=links[:128],
                attributes={"messaging.system": "kafka", "messaging.batch.message_count": len(run),
                            "trimtab.consumer": self.name},
            ):
                try:
                    async with UnitOfWork(self._sm, self._infra, self._on_commit) as uow:
                        new = await uow.mark_processed_many(self.name, [env.event_id for _, env in run])
                        fresh_recs: dict[uuid.UUID, tuple[ConsumerRecord, Envelope]] = {}
                        for rec, env in run:  # a redelivered copy inside the run counts once
                            if env.event_id in new:
                                fresh_recs.setdefault(env.event_id, (rec, env))
                        handled = len(fresh_recs)
                        todo = run if self._recheck_duplicates else list(fresh_recs.values())
                        pending: list[Envelope] = []
                        pending_fn: BatchHandler | None = None
                        for rec, env in todo:
                            h = self._handlers.get(env.event_type) or self._handlers[ANY_EVENT]
                            if isinstance(h, BatchHandler):
                                if pending_fn is not None and h is not pending_fn:
                                    await pending_fn.fn(pending, uow)
                                    pending = []
                                pending_fn = h
                                pending.append(env)
                                continue
                            if pending_fn is not None:
                                await pending_fn.fn(pending, uow)
                                pending, pending_fn = [], None
                            # Each event's handler runs in a span parented on its producer's, so
                            # the events it causes carry the same trace: one trace per tick.
                            with tracer.start_as_current_span(
                                f"{rec.topic} process", context=extract(env.trace), kind=trace.SpanKind.CONSUMER,
                                attributes={"messaging.system": "kafka", "messaging.destination.name": rec.topic,
                                            "messaging.kafka.message.offset": rec.offset,
                                            "trimtab.event_id": str(env.event_id),
                                            "trimtab.correlation_id": str(env.correlation_id),
                                            "trimtab.consumer": self.name},
                            ):
                                await h(env, uow)
                        if pending_fn is not None:
                            await pending_fn.fn(pending, uow)
                        await uow.commit()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    if is_transient(e) and attempt < 1000:
                        _failures.add(1, {"consumer": self.name, "event_type": "(batch)", "kind": "transient"})
                        log.warning("%s: transient failure on a batch, retrying: %r", self.name, e)
                        await asyncio.sleep(min(5.0, self._backoff * 2 ** min(attempt, 7)))
                        continue
                    log.info("%s: batch of %d failed (%r); handling its events one by one", self.name, len(run), e)
                    return False
            # One histogram sample per event type per run (the run's time per event), and the
            # processed count per event type: a sample per event cost as much as the event's
            # whole append in a long run of the audit record.
            per_event_ms = (time.perf_counter() - t0) * 1000 / len(run)
            by_type: dict[str, int] = {}
            for _, env in fresh_recs.values():
                by_type[env.event_type] = by_type.get(env.event_type, 0) + 1
            for event_type, n in by_type.items():
                attrs = {"consumer": self.name, "event_type": event_type}
                _latency.record(per_event_ms, attrs)
                _processed.add(n, attrs)
            self.stats.handled += handled
            self.stats.duplicates += len(run) - handled
            if len(run) - handled:
                _duplicates.add(len(run) - handled, {"consumer": self.name})
            return True

    async def _process(self, rec: ConsumerRecord) -> None:
        key = rec.key.decode(errors="replace") if rec.key is not None else None
        try:
            env = self._decode(rec)
        except (ValidationError, ValueError, TypeError) as e:
            await self._dead_letter(rec, key, None, f"undecodable envelope: {e}", park=False)
            return
        handler = self._handlers.get(env.event_type) or self._handlers.get(ANY_EVENT)
        if handler is None:
            return  # another event type on a shared topic: not ours
        if key is not None and self.is_parked(rec.topic, env.tenant_id, key):
            await self._dead_letter(rec, key, env, "parked: an earlier event with this key is in the DLQ", park=False)
            return
        ctx = extract(env.trace)
        with tracer.start_as_current_span(
            f"{rec.topic} process", context=ctx, kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka", "messaging.destination.name": rec.topic,
                "messaging.kafka.message.offset": rec.offset, "trimtab.event_id": str(env.event_id),
                "trimtab.correlation_id": str(env.correlation_id), "trimtab.consumer": self.name,
            },
        ):
            attempt = 0
            while True:
                attempt += 1
                t0 = time.perf_counter()
                try:
                    outcome = await self._handle_once(env, handler)
                    _latency.record((time.perf_counter() - t0) * 1000, {"consumer": self.name, "event_type": env.event_type})
                    if outcome:
                        self.stats.handled += 1
                        _processed.add(1, {"consumer": self.name, "event_type": env.event_type})
                    else:
                        self.stats.duplicates += 1
                        _duplicates.add(1, {"consumer": self.name})
                    return
                except asyncio.CancelledError:
                    raise
                except PermanentEventError as e:
                    _failures.add(1, {"consumer": self.name, "event_type": env.event_type, "kind": "permanent"})
                    await self._dead_letter(rec, key, env, f"{type(e).__name__}: {e}", park=e.park)
                    return
                except Exception as e:
                    transient = is_transient(e)
                    _failures.add(1, {"consumer": self.name, "event_type": env.event_type,
                                      "kind": "transient" if transient else "error"})
                    if transient:
                        log.warning("%s: transient failure on %s, retrying: %r", self.name, env.event_id, e)
                        await asyncio.sleep(min(5.0, self._backoff * 2 ** min(attempt, 7)))
                        attempt -= 1  # infrastructure trouble does not count against the event
                        continue
                    if attempt >= self._max_attempts:
                        log.exception("%s: event %s failed %d times", self.name, env.event_id, attempt)
                        await self._dead_letter(rec, key, env, f"{type(e).__name__}: {e}", park=True)
                        return
                    await asyncio.sleep(self._backoff * 2 ** (attempt - 1))

    async def _until_done(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await step()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                _failures.add(1, {"consumer": self.name, "event_type": "(dead letter)", "kind": "transient"})
                log.warning("%s: %s failed (attempt %d), retrying: %r", self.name, what, attempt, e)
                await asyncio.sleep(min(5.0, self._backoff * 2 ** min(attempt, 7)))

    async def _handle_once(self, env: Envelope, handler: Handler) -> bool:
        async with UnitOfWork(self._sm, self._infra, self._on_commit) as uow:
            fresh = await uow.mark_processed(self.name, env.event_id)
            if not fresh and not self._recheck_duplicates:
                return False
            await handler(env, uow)
            await uow.commit()
            return fresh

    async def _dead_letter(
        self, rec: ConsumerRecord, key: str | None, env: Envelope | None, error: str, *, park: bool
    ) -> None:
        headers = decode_headers(rec.headers)
        headers.update(
            {
                "dlq.error": error[:2000],
                "dlq.consumer": self.name,
                "dlq.source.topic": rec.topic,
                "dlq.source.partition": str(rec.partition),
                "dlq.source.offset": str(rec.offset),
            }
        )

        async def send() -> None:
            fut = await self._producer.send(
                dlq_topic(rec.topic), value=rec.value, key=rec.key, headers=encode_headers(headers)
            )
            await fut

        async def record() -> None:
            async with self._sm() as s, s.begin():
                await s.execute(
                    insert(self._infra.dead_letters).values(
                        consumer=self.name, topic=rec.topic, partition=rec.partition,
                        offset=rec.offset, key=key if park and self._park_keys else None,
                        tenant_id=env.tenant_id if env else None,
                        event_id=env.event_id if env else None, error=error[:4000],
                    )
                )

        # Infrastructure trouble (the broker or the database away) is retried without limit,
        # as for a handler: the offset is not committed until both are done, and a consumer
        # task that died here would stop every partition until a restart. Each step is retried
        # on its own, so a database blip does not send the DLQ message twice.
        await self._until_done("dead-letter send", send)
        await self._until_done("dead-letter record", record)
        if park and key is not None and self._park_keys:
            self._park((rec.topic, env.tenant_id if env else None, key))
        self.stats.dead_lettered += 1
        _dead.add(1, {"consumer": self.name, "topic": rec.topic})
        log.error("%s: dead-lettered %s[%d]@%d: %s", self.name, rec.topic, rec.partition, rec.offset, error)
