"""Thin HTTP routes of audit (`/v1/audit`): records, chains of one tick, proposal trails, verify."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from trimtab.shared.auth import Principal, requires
from trimtab.shared.envelope import utcnow
from trimtab.shared.errors import NotFound

from . import queries
from .schemas import RecordDetailOut, RecordPage, RecordTrail, VerifyOut
from .verify import verify_record

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Reader = Annotated[Principal, Depends(requires("audit:read"))]
MAX_SEQ = 2**63 - 1  # the bigint column's range; larger numbers are a 422, not a 500
AfterSeq = Annotated[int, Query(ge=0, le=MAX_SEQ, description="only records with a greater seq")]
PageLimit = Annotated[int, Query(ge=1, le=1000)]


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sm: async_sessionmaker[AsyncSession] | None = request.app.state.runtime.sessionmaker
    assert sm is not None, "runtime not started"
    return sm


@router.get("/records", response_model=RecordPage, summary="The tenant's records, by seq (paged)")
async def list_records(
    principal: Reader, request: Request, correlation_id: uuid.UUID | None = None,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
    after_seq: AfterSeq = 0, limit: PageLimit = 100,
) -> RecordPage:
    async with _sessions(request)() as s:
        rows, nxt = await queries.list_records(s, principal.tenant_id, correlation_id=correlation_id,
                                               event_type=event_type, after_seq=after_seq, limit=limit)
    return RecordPage(items=[queries.to_out(r) for r in rows], next_after_seq=nxt)


@router.get("/records/{seq}", response_model=RecordDetailOut,
            summary="One record with its decoded envelope and hashes")
async def get_record(seq: Annotated[int, Path(ge=1, le=MAX_SEQ)], principal: Reader, request: Request) -> RecordDetailOut:
    async with _sessions(request)() as s:
        row = await queries.get_record(s, principal.tenant_id, seq)
    if row is None:
        raise NotFound(f"audit record {seq} not found")
    return queries.to_detail(row)


@router.get("/chains/{correlation_id}", response_model=RecordTrail,
            summary="Every record of one correlation id (one tick's whole chain), by seq")
async def get_chain(
    correlation_id: uuid.UUID, principal: Reader, request: Request,
    after_seq: AfterSeq = 0, limit: PageLimit = 500,
) -> RecordTrail:
    async with _sessions(request)() as s:
        rows, nxt = await queries.trail(s, principal.tenant_id, correlation_id=correlation_id,
                                        after_seq=after_seq, limit=limit)
    if not rows and after_seq == 0:
        raise NotFound(f"no audit records for correlation id {correlation_id}")
    return RecordTrail(records=[queries.to_detail(r) for r in rows], next_after_seq=nxt)


@router.get("/proposals/{proposal_id}", response_model=RecordTrail,
            summary="Every record whose payload names this proposal, by seq")
async def get_proposal_trail(
    proposal_id: uuid.UUID, principal: Reader, request: Request,
    after_seq: AfterSeq = 0, limit: PageLimit = 500,
) -> RecordTrail:
    async with _sessions(request)() as s:
        rows, nxt = await queries.trail(s, principal.tenant_id, proposal_id=proposal_id,
                                        after_seq=after_seq, limit=limit)
    if not rows and after_seq == 0:
        raise NotFound(f"no audit records for proposal {proposal_id}")
    return RecordTrail(records=[queries.to_detail(r) for r in rows], next_after_seq=nxt)


@router.post("/verify", response_model=VerifyOut,
             summary="Recompute the whole hash chain; report counts and the first bad seq")
async def verify(principal: Reader, request: Request) -> VerifyOut:
    rep = await verify_record(_sessions(request))
    return VerifyOut(ok=rep.ok, records_checked=rep.records_checked, first_bad_seq=rep.first_bad_seq,
                     reason=rep.reason, verified_at=utcnow())
