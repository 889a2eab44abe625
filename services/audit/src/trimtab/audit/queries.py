"""Read side of the record: one tenant's records, filtered and paged by seq (keyset paging).

Every query is filtered by the caller's tenant, so another tenant's records are simply not there.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, any_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import records
from .schemas import RecordDetailOut, RecordOut

_SUMMARY = [c for c in records.c if c.name not in ("envelope", "prev_hash")]


def _summary(row: Any) -> dict[str, Any]:
    m = row._mapping
    out = {c.name: m[c.name] for c in _SUMMARY}
    out["leaf_hash"] = bytes(m["leaf_hash"]).hex()
    out["chain_hash"] = bytes(m["chain_hash"]).hex()
    return out


def to_out(row: Any) -> RecordOut:
    return RecordOut(**_summary(row))


def to_detail(row: Any) -> RecordDetailOut:
    data = bytes(row.envelope)
    return RecordDetailOut(**_summary(row), prev_hash=bytes(row.prev_hash).hex(),
                           envelope=json.loads(data), envelope_base64=base64.b64encode(data).decode())


def _page(q: Select[Any], after_seq: int, limit: int) -> Select[Any]:
    # One extra row tells whether another page follows without a count query.
    return q.where(records.c.seq > after_seq).order_by(records.c.seq).limit(limit + 1)


def _split(rows: list[Any], limit: int) -> tuple[list[Any], int | None]:
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1].seq
    return rows, None


async def list_records(
    s: AsyncSession, tenant_id: str, *, correlation_id: uuid.UUID | None, event_type: str | None,
    after_seq: int, limit: int,
) -> tuple[list[Any], int | None]:
    q = select(*_SUMMARY).where(records.c.tenant_id == tenant_id)
    if correlation_id is not None:
        q = q.where(records.c.correlation_id == correlation_id)
    if event_type is not None:
        q = q.where(records.c.event_type == event_type)
    return _split((await s.execute(_page(q, after_seq, limit))).all(), limit)


async def get_record(s: AsyncSession, tenant_id: str, seq: int) -> Any | None:
    return (await s.execute(select(records).where(
        records.c.tenant_id == tenant_id, records.c.seq == seq))).first()


async def trail(
    s: AsyncSession, tenant_id: str, *, correlation_id: uuid.UUID | None = None,
    proposal_id: uuid.UUID | None = None, after_seq: int, limit: int,
) -> tuple[list[Any], int | None]:
    """Full records (envelopes included) of one correlation id or one proposal, by seq."""
    q = select(records).where(records.c.tenant_id == tenant_id)
    if correlation_id is not None:
        q = q.where(records.c.correlation_id == correlation_id)
    if proposal_id is not None:
        q = q.where(records.c.proposal_id == proposal_id)
    return _split((await s.execute(_page(q, after_seq, limit))).all(), limit)


async def lineage(s: AsyncSession, tenant_id: str, proposal_id: uuid.UUID, limit: int) -> tuple[list[Any], bool]:
    """A proposal's whole story: every record naming it, and every record of the correlation ids
    (ticks) those belong to (the tick and drift before it, executions after), by seq."""
    corrs = (select(records.c.correlation_id)
             .where(records.c.tenant_id == tenant_id, records.c.proposal_id == proposal_id)
             .distinct().scalar_subquery())
    q = (select(records).where(records.c.tenant_id == tenant_id)
         .where(or_(records.c.proposal_id == proposal_id, records.c.correlation_id.in_(corrs)))
         .order_by(records.c.seq).limit(limit + 1))
    rows = (await s.execute(q)).all()
    return rows[:limit], len(rows) > limit


def household_filter(tenant_id: str, household_id: str) -> Any:
    """A household's records: those that name it, and every record of an account that any record
    placed in it. Most events (RiskAssessed, RebalanceDecided, TradesApproved, TradesExecuted, ...)
    name only the account; the household comes with the account snapshot of DriftDetected and
    RebalanceProposed. An account that moved between households is in both households' exports."""
    accounts = (select(records.c.account_id)
                .where(records.c.tenant_id == tenant_id, records.c.household_id == household_id,
                       records.c.account_id.is_not(None))
                .distinct().scalar_subquery())
    # `= ANY(ARRAY(subquery))`, not `IN (subquery)`: the array is computed once, before the scan,
    # so both sides of the OR are index conditions (a bitmap OR of the household and account
    # indexes). With IN the planner guesses the subquery's size and walks every record by seq.
    return or_(records.c.household_id == household_id, records.c.account_id == any_(func.array(accounts)))


async def export(
    s: AsyncSession, tenant_id: str, *, account_id: str | None, proposal_id: uuid.UUID | None,
    since: datetime | None, until: datetime | None, after_seq: int, max_seq: int | None, limit: int,
    household_id: str | None = None,
) -> tuple[list[Any], int | None]:
    q = select(records).where(records.c.tenant_id == tenant_id)
    if account_id is not None:
        q = q.where(records.c.account_id == account_id)
    if household_id is not None:
        q = q.where(household_filter(tenant_id, household_id))
    if proposal_id is not None:
        q = q.where(records.c.proposal_id == proposal_id)
    if since is not None:
        q = q.where(records.c.occurred_at >= since)
    if until is not None:
        q = q.where(records.c.occurred_at < until)
    if max_seq is not None:
        q = q.where(records.c.seq <= max_seq)
    return _split((await s.execute(_page(q, after_seq, limit))).all(), limit)
