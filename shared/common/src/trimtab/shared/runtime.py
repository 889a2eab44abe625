"""A service's composition of I/O: database engine, outbox relay, producer and consumers.

`app.py` of each service builds one `ServiceRuntime`, registers its event handlers, and hands it to
`http.create_app`, whose lifespan calls `start()` and `stop()`. Nothing connects at import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .config import ServiceSettings
from .consumer import ANY_EVENT, BatchHandler, EventConsumer, Handler
from .db import make_engine, make_sessionmaker
from .envelope import Envelope
from .events import topic_of
from .kafka import all_topics, ensure_topics, start_producer
from .migrate import upgrade
from .numeric import blas_core
from .outbox import InfraTables, UnitOfWork, infra_tables
from .relay import OutboxRelay

log = logging.getLogger(__name__)


class ServiceRuntime:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        schema: str,
        metadata: MetaData,
        migrations_dir: Path,
        infra: InfraTables | None = None,
        park_keys: bool = True,
        receive_spans: bool = True,
        recheck_duplicates: bool = False,
    ) -> None:
        self.settings = settings
        self.schema = schema
        self.metadata = metadata
        self.migrations_dir = migrations_dir
        self.infra = infra or infra_tables(metadata)
        self.park_keys = park_keys
        #: False: no per-message "receive" span from the aiokafka instrumentation (consumer.py).
        self.receive_spans = receive_spans
        self.recheck_duplicates = recheck_duplicates
        self._handlers: dict[str, dict[str, Handler]] = {}
        self._batch_sizes: dict[str, int] = {}
        self._concurrency: dict[str, int] = {}
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self.engine: AsyncEngine | None = None
        self.sessionmaker: async_sessionmaker[AsyncSession] | None = None
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.consumers: list[EventConsumer] = []
        self.started = False

    # ------------------------------------------------------------------ wiring

    def handle(self, event_type: str, consumer: str | None = None) -> Callable[[Handler], Handler]:
        """Register `fn` for `event_type` in consumer group `consumer` (default: the service)."""

        def deco(fn: Handler) -> Handler:
            self._handlers.setdefault(consumer or self.settings.service_name, {})[event_type] = fn
            return fn

        return deco

    def handle_batch(
        self, event_types: Sequence[str], consumer: str | None = None, batch_size: int | None = None
    ) -> Callable[[Callable[[list[Envelope], UnitOfWork], Awaitable[None]]], BatchHandler]:
        """Register `fn(envelopes, uow)` for every type in `event_types`: the consumer hands it
        all new events of a run in one call (still one transaction with their markers).

        `batch_size`: the longest run of this consumer (default: CONSUMER_BATCH_SIZE), for a
        cheap batch handler next to a service-wide small size kept for expensive handlers."""

        def deco(fn: Callable[[list[Envelope], UnitOfWork], Awaitable[None]]) -> BatchHandler:
            bh = BatchHandler(fn)
            name = consumer or self.settings.service_name
            for et in event_types:
                self._handlers.setdefault(name, {})[et] = bh
            if batch_size is not None:
                self._batch_sizes[name] = batch_size
            return bh

        return deco

    def concurrent(self, partitions: int, consumer: str | None = None) -> None:
        """Let consumer `consumer` (default: the service's) handle up to `partitions` partitions
        of a poll at once (each in order): for handlers that await worker processes and share
        no in-process state across keys."""
        self._concurrency[consumer or self.settings.service_name] = max(1, partitions)

    def on_start(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Run `fn` after the database and producer are up, before consumers start."""
        self._on_start.append(fn)
        return fn

    def on_stop(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        self._on_stop.append(fn)
        return fn

    def uow(self) -> UnitOfWork:
        assert self.sessionmaker is not None, "runtime not started"
        return UnitOfWork(self.sessionmaker, self.infra, self.relay.wake if self.relay else None)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self.settings
        await upgrade(s.database_url, self.migrations_dir, self.schema)
        self.engine = make_engine(s.database_url)
        self.sessionmaker = make_sessionmaker(self.engine)
        await ensure_topics(s.kafka_bootstrap_servers, all_topics(), s.kafka_partitions)
        self.producer = await start_producer(s.kafka_bootstrap_servers, s.service_name)
        self.relay = OutboxRelay(self.sessionmaker, self.infra, self.producer,
                                 lock_name=self.schema, poll_s=s.outbox_poll_s)
        self.relay.start()
        for fn in self._on_start:
            await fn()
        for name, handlers in self._handlers.items():
            topics = sorted({topic_of(et) for et in handlers if et != ANY_EVENT})
            c = EventConsumer(
                name=name, group_id=f"{s.kafka_group_prefix}.{name}",
                bootstrap=s.kafka_bootstrap_servers, handlers=handlers, topics=topics,
                sessionmaker=self.sessionmaker, infra=self.infra, producer=self.producer,
                on_commit=self.relay.wake, max_attempts=s.consumer_max_attempts,
                session_timeout_ms=s.kafka_session_timeout_ms, park_keys=self.park_keys,
                batch_size=self._batch_sizes.get(name, s.consumer_batch_size),
                receive_spans=self.receive_spans, recheck_duplicates=self.recheck_duplicates,
                partition_concurrency=self._concurrency.get(name, 1),
            )
            await c.start()
            self.consumers.append(c)
        self.started = True
        log.info("%s started: consumers=%s, BLAS kernel %s",
                 s.service_name, [c.name for c in self.consumers], blas_core())

    async def stop(self) -> None:
        for c in self.consumers:
            await c.stop()
        self.consumers = []
        for fn in reversed(self._on_stop):
            try:
                await fn()
            except Exception:
                log.exception("on_stop hook failed")
        if self.relay:
            # One last drain so events committed just before shutdown are not left waiting.
            try:
                await asyncio.wait_for(self.relay.publish_once(), 5)
            except Exception:
                pass
            await self.relay.stop()
        if self.producer:
            await self.producer.stop()
        if self.engine:
            await self.engine.dispose()
        self.started = False

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            assert self.engine is not None
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 2)
            checks["database"] = "ok"
        except Exception as e:
            checks["database"] = f"unavailable: {type(e).__name__}"
        try:
            assert self.producer is not None
            client = self.producer.client
            ok = await asyncio.wait_for(client.force_metadata_update(), 3)
            checks["kafka"] = "ok" if ok is not False and client.cluster.brokers() else "unavailable"
        except Exception as e:
            checks["kafka"] = f"unavailable: {type(e).__name__}"
        for c in self.consumers:
            checks[f"consumer:{c.name}"] = "ok" if c.running else "stopped"
        if self.relay and self.relay.last_error:
            checks["outbox_relay"] = f"degraded: {self.relay.last_error[:80]}"
        return checks

    # ------------------------------------------------------------------ helpers

    async def publish_now(self, envelope: Envelope, *, key: str) -> None:
        """Write one event through the outbox in its own transaction."""
        async with self.uow() as uow:
            uow.publish(envelope, key=key)
            await uow.commit()

    def consumer_lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.consumers:
            for k, v in c.stats.lag.items():
                out[f"{c.name}:{k}"] = v
        return out

    @property
    def topics_consumed(self) -> list[str]:
        return sorted({topic_of(et) for hs in self._handlers.values() for et in hs if et != ANY_EVENT})
