"""Event handlers of audit: every event on the bus becomes the next record of the chain and the
next leaf of the Merkle tree (whose completed interior nodes are stored in the same transaction).

Audit treats all event types alike, so one handler is registered for each of them (app.py). It
emits nothing; the consumer commits the record together with its processed-event marker.
`append` takes any number of events, so a caller that has several (a batch of a poll, a bulk
import) pays for the lock, the head read and the commit once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.outbox import UnitOfWork

from . import tree
from .domain import chain
from .domain.record import facts_of
from .models import SCHEMA, records

log = logging.getLogger(__name__)


async def on_event(env: Envelope, uow: UnitOfWork) -> None:
    """Append `env` to the record as seq = max(seq) + 1, chained to the current head."""
    await append(uow.session, [env])


async def on_events(envs: list[Envelope], uow: UnitOfWork) -> None:
    """Append a run of events (the consumer's batch) in one go."""
    await append(uow.session, envs)


async def append(s: AsyncSession, envs: Sequence[Envelope]) -> list[int]:
    """Append the events in order; the seqs they got (an event already recorded is skipped)."""
    # Appends are serialized: insert order must equal commit order. Without the lock two
    # transactions could both read head N and both try N + 1, or, with any numbering handed out
    # before commit (a sequence), seq N + 1 could become visible before seq N, and a reader or
    # the verifier would see a gap, or chain a record to a head that later changes. EXCLUSIVE
    # mode blocks other writers until this transaction ends but lets plain SELECTs (the API, the
    # verifier) run. The lock goes with the table, not with cooperating code paths, so any
    # writer of `records` is serialized.
    await s.execute(text(f'LOCK TABLE "{SCHEMA}".records IN EXCLUSIVE MODE'))
    datas = {env.event_id: env.to_bytes() for env in envs}
    existing = {r.event_id: r for r in (await s.execute(
        select(records.c.event_id, records.c.seq, records.c.envelope)
        .where(records.c.event_id.in_(list(datas))))).all()}
    head = (await s.execute(
        select(records.c.seq, records.c.chain_hash).order_by(records.c.seq.desc()).limit(1))).first()
    seq, prev = (head.seq, bytes(head.chain_hash)) if head else (0, chain.GENESIS_HASH)
    rows, leaves, seen = [], [], set()
    for env in envs:
        data = datas[env.event_id]
        old = existing.get(env.event_id)
        if old is not None or env.event_id in seen:
            # The consumer's processed-event marker normally stops a redelivery before it gets
            # here; this is the second line of defense (e.g. a replay under another consumer name).
            if old is not None and bytes(old.envelope) != data:
                raise PermanentEventError(
                    f"event id {env.event_id} is already record {old.seq} with different content")
            log.info("event %s is already recorded; not recording it twice", env.event_id)
            continue
        seen.add(env.event_id)
        seq += 1
        link = chain.append(seq, data, prev)
        prev = link.chain_hash
        rows.append(dict(
            seq=link.seq, envelope=link.envelope, leaf_hash=link.leaf_hash, prev_hash=link.prev_hash,
            chain_hash=link.chain_hash,
            # clock_timestamp(), not now(): now() is the transaction's start, which may be before
            # the previous record's commit; the time the lock was held keeps recorded_at ascending.
            recorded_at=func.clock_timestamp(),
            **facts_of(env).columns(),
        ))
        leaves.append(link.leaf_hash)
    if not rows:
        return []
    if len(rows) == 1:
        await s.execute(insert(records).values(**rows[0]))
    else:
        await s.execute(insert(records).values(rows))
    await tree.append_leaves(s, rows[0]["seq"] - 1, leaves)
    return [r["seq"] for r in rows]
