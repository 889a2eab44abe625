"""The transactional outbox, idempotent consumption, and the unit of work that ties them.

A handler's state change, the events it emits (rows of `outbox`) and the marker of the event it
consumed (a row of `processed_events`) commit in one database transaction, so either all of it
happened or none did. The relay (`relay.py`) publishes outbox rows afterwards.

Ordering: rows are published in `id` order. A sequence hands out ids at insert time, not at commit
time, so two transactions could commit their rows in the other order than their ids. For events
of the *same key* that would reorder them on the topic; every writer therefore takes a
transaction-scoped advisory lock on (topic, key) before inserting, which makes insert order equal
commit order per key (the same problem pyeventsourcing solves with a table lock, at key
granularity so unrelated accounts do not wait for each other).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .envelope import Envelope
from .events import topic_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InfraTables:
    outbox: Table
    processed: Table
    dead_letters: Table


def infra_tables(metadata: MetaData) -> InfraTables:
    """Add the outbox, processed-event and dead-letter tables to a service's schema."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("tenant_id", String(64), nullable=False),
        Column("envelope", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True), nullable=True),
    )
    # The relay only ever scans unsent rows: keep that scan small however long the table grows.
    Index("ix_outbox_unsent", outbox.c.id, postgresql_where=outbox.c.sent_at.is_(None))
    processed = Table(
        "processed_events",
        metadata,
        Column("consumer", String(100), nullable=False),
        Column("event_id", UUID(as_uuid=True), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id"),
    )
    dead = Table(
        "dead_letters",
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("consumer", String(100), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("key", String(200), nullable=True),
        # The event's tenant: a key (an account id) names an account within a tenant, so
        # parking is per tenant and key. NULL: undecodable, or recorded before the column (such
        # a row parks its key for every tenant, as it did then).
        Column("tenant_id", String(64), nullable=True),
        Column("event_id", UUID(as_uuid=True), nullable=True),
        Column("error", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("resolved_at", DateTime(timezone=True), nullable=True),
    )
    return InfraTables(outbox=outbox, processed=processed, dead_letters=dead)


def kafka_headers(env: Envelope) -> dict[str, str]:
    headers = {
        "event_id": str(env.event_id),
        "event_type": env.event_type,
        "schema_version": str(env.schema_version),
        "tenant_id": env.tenant_id,
        "correlation_id": str(env.correlation_id),
        "content-type": "application/json",
    }
    if env.causation_id:
        headers["causation_id"] = str(env.causation_id)
    headers.update(env.trace)
    return headers


class UnitOfWork:
    """One database transaction: state changes + outgoing events + consumed-event marker.

    Use as `async with runtime.uow() as uow: ...; await uow.commit()`. Leaving the block without
    `commit()` rolls everything back, outgoing events included.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        infra: InfraTables,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._infra = infra
        self._on_commit = on_commit
        self._pending: list[tuple[Envelope, str, str]] = []
        self._after_commit: list[Callable[[], None]] = []
        self.session: AsyncSession

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._sessionmaker()
        await self.session.begin()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.session.in_transaction():
            await self.session.rollback()
        await self.session.close()

    def publish(self, envelope: Envelope, *, key: str, topic: str | None = None) -> None:
        """Queue an event; it is written to the outbox on commit, in the order queued."""
        self._pending.append((envelope, topic or topic_of(envelope.event_type), key))

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call `fn` once this transaction has committed (never if it rolls back): for work
        that must only see what the transaction wrote, e.g. scheduling a later step. Best
        effort: a commit whose reply is lost runs no callback, and a callback that raises is
        logged; what must not be lost belongs in the transaction itself."""
        self._after_commit.append(fn)

    @property
    def published(self) -> list[Envelope]:
        return [env for env, _, _ in self._pending]

    async def mark_processed(self, consumer: str, event_id: uuid.UUID) -> bool:
        """Record that `consumer` handled `event_id`; False if it already had (a redelivery)."""
        stmt = (
            insert(self._infra.processed)
            .values(consumer=consumer, event_id=event_id)
            .on_conflict_do_nothing()
            .returning(self._infra.processed.c.event_id)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def mark_processed_many(self, consumer: str, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Record several events at once; returns the ids that were new (not redeliveries).

        One statement with an array parameter, so its text is the same for every run size
        (compiled and planned once) instead of a VALUES list as long as the run.
        """
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return set()
        p = self._infra.processed
        rows = await self.session.execute(
            text(
                f'INSERT INTO "{p.schema}".{p.name} (consumer, event_id) '
                "SELECT :consumer, unnest(CAST(:ids AS uuid[])) "
                "ON CONFLICT DO NOTHING RETURNING event_id"
            ),
            {"consumer": consumer, "ids": ids},
        )
        return {r.event_id for r in rows}

    async def already_processed(self, consumer: str, event_id: uuid.UUID) -> bool:
        p = self._infra.processed
        row = await self.session.execute(
            select(p.c.event_id).where(p.c.consumer == consumer, p.c.event_id == event_id)
        )
        return row.first() is not None

    async def _write_outbox(self) -> None:
        if not self._pending:
            return
        # Lock every (topic, key) this transaction writes, in a fixed order (no deadlocks).
        for topic, key in sorted({(t, k) for _, t, k in self._pending}):
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"outbox:{topic}:{key}"},
            )
        rows = [
            {
                "event_id": env.event_id,
                "topic": topic,
                "key": key,
                "tenant_id": env.tenant_id,
                "envelope": env.to_bytes(),
                "headers": kafka_headers(env),
            }
            for env, topic, key in self._pending
        ]
        await self.session.execute(insert(self._infra.outbox), rows)

    async def commit(self) -> None:
        await self._write_outbox()
        await self.session.commit()
        had_events = bool(self._pending)
        self._pending = []
        if had_events and self._on_commit:
            self._on_commit()
        callbacks, self._after_commit = self._after_commit, []
        for fn in callbacks:
            try:
                fn()
            except Exception:  # noqa: BLE001 - committed is committed: a callback must not undo that
                log.exception("after-commit callback %r failed", fn)
