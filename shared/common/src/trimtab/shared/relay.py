"""The outbox relay: publishes committed outbox rows to Kafka in id order, then marks them sent.

One relay per service instance runs, but only the one holding the service's advisory lock
publishes at a time, so order per key is kept across replicas. A crash between the broker's ack
and marking the row sent republishes it: consumers absorb that by event id (at-least-once on the
wire, effectively once in effect).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from opentelemetry import metrics
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .kafka import encode_headers
from .outbox import InfraTables

log = logging.getLogger(__name__)
meter = metrics.get_meter("trimtab.relay")
_published = meter.create_counter("trimtab_outbox_published", unit="{event}",
                                  description="outbox rows published to Kafka")
_errors = meter.create_counter("trimtab_outbox_relay_errors", unit="{attempt}",
                               description="relay passes that failed (broker or database unreachable)")
_live: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()


def _observe_oldest(options: metrics.CallbackOptions) -> list[metrics.Observation]:
    now = datetime.now(UTC)
    out = []
    for r in list(_live):
        since = r.oldest_unsent_at
        age_s = max(0.0, (now - since).total_seconds()) if since is not None else 0.0
        out.append(metrics.Observation(age_s, {"outbox": r.lock_name}))
    return out


meter.create_observable_gauge(
    "trimtab_outbox_oldest_unsent_age", callbacks=[_observe_oldest], unit="s",
    description="age of the oldest outbox row this relay saw unpublished (0: none waiting, or "
                "another replica holds the relay lock); grows while the relay is stuck")


class OutboxRelay:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        infra: InfraTables,
        producer: AIOKafkaProducer,
        *,
        lock_name: str,
        poll_s: float = 0.2,
        batch: int = 500,
    ) -> None:
        self._sm = sessionmaker
        self._infra = infra
        self._producer = producer
        self._lock_name = lock_name
        self._poll_s = poll_s
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.last_error: str | None = None
        #: created_at of the oldest unsent row of the last pass (None: nothing was waiting).
        self.oldest_unsent_at: datetime | None = None

    @property
    def lock_name(self) -> str:
        return self._lock_name

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        _live.add(self)
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay:{self._lock_name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        _live.discard(self)

    async def _run(self) -> None:
        while True:
            try:
                n = await self.publish_once()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # broker or database down: keep trying, rows stay unsent
                self.last_error = repr(e)
                _errors.add(1, {"outbox": self._lock_name})
                log.warning("outbox relay: %r", e)
                n = 0
                await asyncio.sleep(1.0)
            if n < self._batch:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
                except TimeoutError:
                    pass

    async def publish_once(self) -> int:
        """Publish one batch of unsent rows; returns how many were published."""
        o = self._infra.outbox
        async with self._sm() as session, session.begin():
            got = (
                await session.execute(
                    text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"),
                    {"k": f"relay:{self._lock_name}"},
                )
            ).scalar_one()
            if not got:  # another replica publishes: its relay reports the backlog
                self.oldest_unsent_at = None
                return 0
            rows = (
                await session.execute(
                    select(o.c.id, o.c.topic, o.c.key, o.c.envelope, o.c.headers, o.c.created_at)
                    .where(o.c.sent_at.is_(None))
                    .order_by(o.c.id)
                    .limit(self._batch)
                )
            ).all()
            if not rows:
                self.oldest_unsent_at = None
                return 0
            # Oldest by id is oldest by insert (ids come from a sequence); kept until published.
            self.oldest_unsent_at = rows[0].created_at
            futures = [
                await self._producer.send(
                    r.topic, value=r.envelope, key=r.key.encode(), headers=encode_headers(r.headers)
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            await session.execute(
                update(o)
                .where(o.c.id.in_([r.id for r in rows]))
                .values(sent_at=datetime.now(UTC))
            )
        self.published += len(rows)
        counts: dict[tuple[str, str], int] = {}
        for r in rows:
            k = (r.topic, str((r.headers or {}).get("event_type", "")))
            counts[k] = counts.get(k, 0) + 1
        for (topic, event_type), n in counts.items():
            _published.add(n, {"outbox": self._lock_name, "topic": topic, "event_type": event_type})
        # A full batch may leave more behind (the next pass, at once, reads their age).
        self.oldest_unsent_at = rows[-1].created_at if len(rows) >= self._batch else None
        return len(rows)
