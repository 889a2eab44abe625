"""Event handlers of audit: every event on the bus becomes the next record of the chain and the
next leaf of the Merkle tree (whose completed interior nodes are stored in the same transaction).

Audit treats all event types alike, so one batch handler is registered for all of them (app.py).
It emits nothing; the consumer commits the records together with their processed-event markers.
`append` takes any number of events, and its cost per run is fixed: one lock, one read of the
head and of any already-recorded ids, one read of the tree's right edge, one COPY of all the
records and one of all the tree nodes. Per event it only serializes the envelope once, derives
the indexed columns and hashes.

The consumer reads every message with `bus.read_record` (app.py): one of our events is stored as
its canonical bytes, as ever; a foreign message (an id, a time or a correlation missing, or bytes
that are not canonical) as a document holding its envelope as read, with the missing values
derived from its place on the bus, and its exact bytes (domain/bus.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from trimtab.shared.envelope import Envelope
from trimtab.shared.errors import PermanentEventError
from trimtab.shared.outbox import UnitOfWork

from . import tree
from .domain import bus, chain
from .domain.record import facts_of
from .models import SCHEMA
from .pgcopy import copy_rows

log = logging.getLogger(__name__)

_LOCK = text(f'LOCK TABLE "{SCHEMA}".records IN EXCLUSIVE MODE')
#: The head (seq null when the log is empty), the database's clock under the lock, and every
#: requested id that is already recorded.
_HEAD_AND_SEEN = text(f"""
SELECT true AS head, h.seq, h.chain_hash, h.recorded_at, clock_timestamp() AS now, NULL::uuid AS event_id,
       NULL::bytea AS envelope
  FROM (SELECT 1) one
  LEFT JOIN (SELECT seq, chain_hash, recorded_at FROM "{SCHEMA}".records ORDER BY seq DESC LIMIT 1) h ON true
UNION ALL
SELECT false, seq, NULL, NULL, NULL, event_id, envelope FROM "{SCHEMA}".records
 WHERE event_id = ANY(CAST(:ids AS uuid[]))
""")
#: The columns a run's COPY writes. recorded_at is the database's clock (clock_timestamp()), read
#: under the lock once per run, never before the previous record's: one clock for every replica
#: (review: each replica's own clock, hashed, would fix a fast clock's times into the record for
#: good), ascending with seq; in leaf format 2 it is inside the leaf hash.
_COLUMNS = ("seq", "event_id", "topic", "event_type", "tenant_id", "correlation_id", "causation_id",
            "occurred_at", "recorded_at", "proposal_id", "account_id", "household_id", "payload_valid",
            "envelope", "leaf_format", "leaf_hash", "prev_hash", "chain_hash")


async def on_event(env: Envelope, uow: UnitOfWork) -> None:
    """Append `env` to the record as seq = max(seq) + 1, chained to the current head."""
    await append(uow.session, [env])


async def on_events(envs: list[Envelope], uow: UnitOfWork) -> None:
    """Append a run of events (the consumer's batch) in one go."""
    await append(uow.session, envs)


async def append(s: AsyncSession, envs: Sequence[Envelope]) -> list[int]:
    """Append the events in order; the seqs they got (an event already recorded is skipped)."""
    if not envs:
        return []
    # Appends are serialized: insert order must equal commit order. Without the lock two
    # transactions could both read head N and both try N + 1, or, with any numbering handed out
    # before commit (a sequence), seq N + 1 could become visible before seq N, and a reader or
    # the verifier would see a gap, or chain a record to a head that later changes. EXCLUSIVE
    # mode blocks other writers until this transaction ends but lets plain SELECTs (the API, the
    # verifier) run. The lock goes with the table, not with cooperating code paths, so any
    # writer of `records` is serialized.
    await s.execute(_LOCK)
    seq, prev, last_at, now = 0, chain.GENESIS_HASH, None, None
    existing: dict = {}
    for r in (await s.execute(_HEAD_AND_SEEN, {"ids": list({e.event_id for e in envs})})).all():
        if r.head:
            now = r.now
            if r.seq is not None:
                seq, prev, last_at = r.seq, bytes(r.chain_hash), r.recorded_at
        else:
            existing[r.event_id] = r
    rows: list[tuple] = []
    leaves: list[bytes] = []
    seen: dict = {}
    first = seq + 1
    for env in envs:
        # The one serialization (done by the consumer's decoder, `bus.read`, for what it read
        # off the bus): the bytes hashed are the bytes stored. For one of our events they are
        # its canonical bytes, which are the bytes on the bus; for a foreign message, the
        # document holding the envelope as read and the bytes on the bus (domain/bus.py).
        data = bus.stored_bytes(env)
        arrived = bus.bus_bytes(env, data)
        old = existing.get(env.event_id)
        if old is not None or env.event_id in seen:
            # The consumer hands redeliveries here too (`recheck_duplicates`): the same bytes
            # on the bus are skipped, other bytes under a known id are a forgery or a producer
            # bug, and are dead-lettered with the reason rather than dropped as a duplicate.
            # Bytes on the bus, not stored bytes: a foreign message that names its event id,
            # sent twice, is stored with two places on the bus, but it is one event.
            if old is not None and bytes(old.envelope) != data and bus.original_bytes(bytes(old.envelope)) != arrived:
                raise PermanentEventError(
                    f"event id {env.event_id} is already record {old.seq} with different content")
            if old is None and seen[env.event_id] != arrived:
                raise PermanentEventError(
                    f"event id {env.event_id} arrived twice in one run with different content")
            log.info("event %s is already recorded; not recording it twice", env.event_id)
            continue
        seen[env.event_id] = arrived
        seq += 1
        at = now if last_at is None or now >= last_at else last_at  # a clock set back: not before the last
        leaf = chain.record_leaf_hash(data, at, chain.LEAF_FORMAT)
        link = chain.chain_hash(prev, leaf)
        f = facts_of(env, foreign_topic=bus.foreign_topic(env))
        rows.append((seq, f.event_id, f.topic, f.event_type, f.tenant_id, f.correlation_id, f.causation_id,
                     f.occurred_at, at, f.proposal_id, f.account_id, f.household_id, f.payload_valid, data,
                     chain.LEAF_FORMAT, leaf, prev, link))
        last_at = at
        leaves.append(leaf)
        prev = link
    if not rows:
        return []
    await copy_rows(s, "records", _COLUMNS, rows)
    await tree.append_leaves(s, first - 1, leaves)
    return list(range(first, seq + 1))
