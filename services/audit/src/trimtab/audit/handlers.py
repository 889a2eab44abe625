"""Event handlers of audit: every event on the bus becomes the next record of the chain.

Audit treats all event types alike, so one handler is registered for each of them (app.py). It
emits nothing; the consumer commits the record together with its processed-event marker.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.outbox import UnitOfWork

from .domain import chain
from .domain.record import facts_of
from .models import SCHEMA, records

log = logging.getLogger(__name__)


async def on_event(env: Envelope, uow: UnitOfWork) -> None:
    """Append `env` to the record as seq = max(seq) + 1, chained to the current head."""
    s = uow.session
    # Appends are serialized: insert order must equal commit order. Without the lock two
    # transactions could both read head N and both try N + 1, or, with any numbering handed out
    # before commit (a sequence), seq N + 1 could become visible before seq N, and a reader or
    # the verifier would see a gap, or chain a record to a head that later changes. EXCLUSIVE
    # mode blocks other writers until this transaction ends but lets plain SELECTs (the API, the
    # verifier) run. The lock goes with the table, not with cooperating code paths, so any
    # writer of `records` is serialized.
    await s.execute(text(f'LOCK TABLE "{SCHEMA}".records IN EXCLUSIVE MODE'))
    data = env.to_bytes()
    existing = (await s.execute(
        select(records.c.seq, records.c.envelope).where(records.c.event_id == env.event_id))).first()
    if existing is not None:
        # The consumer's processed-event marker normally stops a redelivery before it gets here;
        # this is the second line of defense (e.g. a replay under another consumer name).
        if bytes(existing.envelope) == data:
            log.info("event %s is already record %d; not recording it twice", env.event_id, existing.seq)
            return
        raise PermanentEventError(
            f"event id {env.event_id} is already record {existing.seq} with different content")
    head = (await s.execute(
        select(records.c.seq, records.c.chain_hash).order_by(records.c.seq.desc()).limit(1))).first()
    link = chain.append(
        (head.seq + 1) if head else 1, data, bytes(head.chain_hash) if head else chain.GENESIS_HASH)
    await s.execute(insert(records).values(
        seq=link.seq, envelope=link.envelope, leaf_hash=link.leaf_hash, prev_hash=link.prev_hash,
        chain_hash=link.chain_hash,
        # clock_timestamp(), not now(): now() is the transaction's start, which may be before the
        # previous record's commit; the time the lock was held keeps recorded_at ascending by seq.
        recorded_at=func.clock_timestamp(),
        **facts_of(env).columns(),
    ))
