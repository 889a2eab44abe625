"""Thin HTTP routes of the optimizer (`/v1`): proposals, advisor decisions, what-if solves
(one account, or a household in household mode), and the reference data every solve's context
gets (per-security market data, the tenant's factor risk model: reference.py)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, NoReturn

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import and_, or_, select

from trimtab.shared.auth import Principal, requires
from trimtab.shared.errors import Invalid, NotFound, TrimtabError
from trimtab.shared.events import (
    AccountSnapshot,
    FactorModelContext,
    RebalanceProposed,
    SecurityContext,
)
from trimtab.shared.http import BULK_BODY
from trimtab.shared.limits import trade_year_problem
from trimtab.shared.pagination import decode_cursor, encode_cursor, link_next

from . import decisions, household, reference
from .domain.lifecycle import DecisionKind
from .engine import Engine, Failure
from .models import proposals
from .schemas import (
    MAX_MODEL_FACTORS,
    MAX_MODEL_SYMBOLS,
    ApproveIn,
    EndExecutionIn,
    HouseholdWhatIfIn,
    HouseholdWhatIfOut,
    OverrideIn,
    ProposalOut,
    ProposalSummary,
    RejectIn,
    RiskModelOut,
    SecuritiesReferenceIn,
    SecurityReferenceOut,
    StateName,
    Symbol,
    WhatIfIn,
)

router = APIRouter(prefix="/v1")
Reader = Annotated[Principal, Depends(requires("proposals:read"))]
Decider = Annotated[Principal, Depends(requires("proposals:decide"))]
#: Reference data is market data: read with `market:read`, changed with `market:write`.
MarketReader = Annotated[Principal, Depends(requires("market:read"))]
MarketWriter = Annotated[Principal, Depends(requires("market:write"))]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


class SolveFailed(TrimtabError):
    status = 500
    title = "Solve failed"


def _runtime(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.runtime


@router.get("/proposals", response_model=list[ProposalSummary], tags=["proposals"],
            summary="Proposals of the caller's tenant, newest first, a page at a time; the next page's "
                    "cursor is in the X-Next-Cursor header (and a Link rel=next), absent on the last page")
async def list_proposals(
    principal: Reader, request: Request, response: Response,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    advisor_id: Annotated[str | None, Query(max_length=64, description="an advisor's queue")] = None,
    state: StateName | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> list[ProposalSummary]:
    q = select(proposals).where(proposals.c.tenant_id == principal.tenant_id)
    if account_id is not None:
        q = q.where(proposals.c.account_id == account_id)
    if advisor_id is not None:
        q = q.where(proposals.c.advisor_id == advisor_id)
    if state is not None:
        q = q.where(proposals.c.state == state)
    if cursor is not None:
        # Keyset: strictly after the previous page's last row in (created_at desc, id asc) order.
        created, last_id = _from_proposal_cursor(cursor)
        q = q.where(or_(proposals.c.created_at < created,
                        and_(proposals.c.created_at == created, proposals.c.proposal_id > last_id)))
    q = q.order_by(proposals.c.created_at.desc(), proposals.c.proposal_id).limit(limit + 1)
    async with _runtime(request).sessionmaker() as s:
        rows = (await s.execute(q)).all()
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = _proposal_cursor(rows[-1].created_at, rows[-1].proposal_id)
    link_next(request, response, nxt)
    return [ProposalSummary.from_row(r) for r in rows]


def _proposal_cursor(created_at: datetime, proposal_id: uuid.UUID) -> str:
    """A page's last proposal: its creation time and id."""
    return encode_cursor(created_at.isoformat(), str(proposal_id))


def _from_proposal_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    created, pid = decode_cursor(cursor, 2)
    try:
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when.astimezone(UTC), uuid.UUID(pid)
    except (ValueError, OverflowError):
        raise Invalid("invalid cursor", cursor=cursor) from None


@router.get("/proposals/{proposal_id}", response_model=ProposalOut, tags=["proposals"])
async def get_proposal(proposal_id: uuid.UUID, principal: Reader, request: Request) -> ProposalOut:
    async with _runtime(request).sessionmaker() as s:
        row = (await s.execute(select(proposals).where(
            proposals.c.tenant_id == principal.tenant_id,
            proposals.c.proposal_id == proposal_id))).first()
    if row is None:
        raise NotFound(f"proposal {proposal_id} not found")
    return ProposalOut.from_row(row)


async def _decide(request: Request, principal: Principal, proposal_id: uuid.UUID,
                  kind: DecisionKind, body: ApproveIn | RejectIn | OverrideIn,
                  key: str | None) -> JSONResponse:
    req_hash = decisions.request_hash(principal, request.method, request.url.path,
                                      body.model_dump(mode="json"))
    orders = list(body.orders) if isinstance(body, OverrideIn) else None
    result = await decisions.decide(_runtime(request), principal, proposal_id, kind, body.reason,
                                    idempotency_key=key, req_hash=req_hash, orders=orders)
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(result.body, status_code=result.status_code, headers=headers)


@router.post("/proposals/{proposal_id}/approve", response_model=ProposalOut, tags=["decisions"],
             summary="Approve a ready proposal: publishes RebalanceDecided and TradesApproved")
async def approve(proposal_id: uuid.UUID, principal: Decider, request: Request,
                  idempotency_key: IdempotencyKey = None,
                  body: ApproveIn | None = None) -> JSONResponse:
    return await _decide(request, principal, proposal_id, "approved", body or ApproveIn(),
                         idempotency_key)


@router.post("/proposals/{proposal_id}/reject", response_model=ProposalOut, tags=["decisions"],
             summary="Reject a ready proposal with a reason: publishes RebalanceDecided")
async def reject(proposal_id: uuid.UUID, body: RejectIn, principal: Decider, request: Request,
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return await _decide(request, principal, proposal_id, "rejected", body, idempotency_key)


@router.post("/proposals/{proposal_id}/override", response_model=ProposalOut, tags=["decisions"],
             summary="Replace a ready proposal's orders with the advisor's (re-validated: lots, "
                     "wash sales, restrictions, cash, turnover) and approve them; reason required")
async def override(proposal_id: uuid.UUID, body: OverrideIn, principal: Decider, request: Request,
                   idempotency_key: IdempotencyKey = None) -> JSONResponse:
    return await _decide(request, principal, proposal_id, "overridden", body, idempotency_key)


@router.post("/proposals/{proposal_id}/end-execution", response_model=ProposalOut, tags=["decisions"],
             summary="End an approval the OMS will not finish and has not reported on (supervisors: "
                     "proposals:decide-any; reason required): what is left of its orders is declared "
                     "unfilled on trades.unfilled.v1 and the account's next approval is released")
async def end_execution(proposal_id: uuid.UUID, body: EndExecutionIn, principal: Decider, request: Request,
                        idempotency_key: IdempotencyKey = None) -> JSONResponse:
    req_hash = decisions.request_hash(principal, request.method, request.url.path, body.model_dump(mode="json"))
    result = await decisions.end_execution(_runtime(request), principal, proposal_id, body.reason,
                                           idempotency_key=idempotency_key, req_hash=req_hash)
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(result.body, status_code=result.status_code, headers=headers)


@router.post("/rebalance/what-if", response_model=RebalanceProposed, tags=["what-if"],
             summary="Solve a snapshot (optionally with a context: {snapshot, context}) and return the "
                     "proposal it would give, with the context it used; nothing is stored", openapi_extra=BULK_BODY)
async def what_if(body: AccountSnapshot | WhatIfIn, principal: Reader, request: Request) -> RebalanceProposed:
    engine: Engine = request.app.state.engine
    snapshot, given = (body.snapshot, body.context) if isinstance(body, WhatIfIn) else (body, None)
    _trade_date_ok(snapshot)
    async with _runtime(request).sessionmaker() as s:
        context = await household.context_for(s, principal.tenant_id, snapshot, given)
    outcome = await engine.propose(snapshot, proposal_id=uuid.uuid4(), context=context)
    if outcome.failure is not None:
        _raise(outcome.failure)
    assert outcome.proposal is not None
    return outcome.proposal


def _trade_date_ok(snapshot: AccountSnapshot) -> None:
    """A 422 for a snapshot dated outside the years a solve accepts, before its context is read
    (the wash-sale window's date arithmetic overflowed at the calendar's edges: a 500)."""
    problem = trade_year_problem(snapshot.as_of.date().year)
    if problem:
        raise Invalid(f"as_of {snapshot.as_of.isoformat()} {problem}", kind="invalid_snapshot")


def _raise(f: Failure) -> NoReturn:
    """A failed solve as problem+json: 422 for what the request can fix (with the constraint
    and, for a household, the accounts it names), 500 for a solver or internal failure."""
    invalid = f.kind in ("infeasible", "invalid_snapshot", "invalid_context", "invalid_drivers")
    err = Invalid if invalid else SolveFailed
    extra = {"account_ids": list(f.account_ids)} if f.account_ids else {}
    raise err(f.reason, kind=f.kind, constraint=f.constraint, **extra)


@router.post("/households/what-if", response_model=HouseholdWhatIfOut, tags=["what-if"],
             summary="Solve every account of a household as one portfolio (household targets, asset "
                     "location) and return per-account orders and the household's figures, with the "
                     "context used; nothing is stored", openapi_extra=BULK_BODY)
async def household_what_if(body: HouseholdWhatIfIn, principal: Reader, request: Request) -> HouseholdWhatIfOut:
    hh = body.household_id
    strangers = [s.account_id for s in body.snapshots if s.household_id not in (None, hh)]
    if strangers:
        raise Invalid(f"snapshots of accounts outside household {hh}: {', '.join(strangers)}",
                      kind="invalid_household", account_ids=strangers)
    counts = Counter(s.account_id for s in body.snapshots)
    twice = sorted(a for a, n in counts.items() if n > 1)
    if twice:
        raise Invalid(f"accounts listed more than once: {', '.join(twice)}", kind="invalid_household",
                      account_ids=twice)
    unknown = sorted(set(body.withdrawals_usd or {}) - set(counts))
    if unknown:
        raise Invalid(f"withdrawals for accounts not in the request: {', '.join(unknown)}",
                      kind="invalid_household", account_ids=unknown)
    if body.context is not None and body.context.withdrawal_usd > 0 and len(body.snapshots) > 1:
        raise Invalid("context.withdrawal_usd is one account's: give a household's withdrawals per "
                      "account in withdrawals_usd", kind="invalid_context")
    for snap in body.snapshots:
        _trade_date_ok(snap)
    engine: Engine = request.app.state.engine
    async with _runtime(request).sessionmaker() as s:
        context = await household.household_context_for(s, principal.tenant_id, hh, body.snapshots,
                                                        body.context)
    outcome = await engine.propose_household(
        hh, body.snapshots, targets=body.targets, context=context,
        drivers=dict(body.drivers) if body.drivers is not None else None,
        withdrawals_usd=body.withdrawals_usd,
        location_multipliers=dict(body.location_multipliers) if body.location_multipliers is not None else None,
        explain=body.explain)
    if outcome.failure is not None:
        _raise(outcome.failure)
    assert outcome.proposal is not None
    return outcome.proposal


# ------------------------------------------------------------------ reference data


def _security_out(row) -> SecurityReferenceOut:  # type: ignore[no-untyped-def]
    return SecurityReferenceOut.model_validate(
        {"symbol": row.symbol, "updated_at": row.updated_at,
         **{f: getattr(row, f) for f in reference.SECURITY_FIELDS}})


@router.put("/reference/securities", response_model=list[SecurityReferenceOut], tags=["reference"],
            summary="Insert or replace the reference data of securities (a list of {symbol, sigma_daily, "
                    "adv_usd, wash_group, substitute_group, tax_drag}, each field optional): every "
                    "later solve's context gets them for its snapshot's symbols; all or nothing", openapi_extra=BULK_BODY)
async def put_reference_securities(body: SecuritiesReferenceIn, principal: MarketWriter,
                                   request: Request) -> list[SecurityReferenceOut]:
    items = body.root
    twice = sorted(s for s, n in Counter(i.symbol for i in items).items() if n > 1)
    if twice:
        raise Invalid(f"symbols listed more than once: {', '.join(twice)}", kind="duplicate_symbols",
                      symbols=twice)
    pairs = [(i.symbol, SecurityContext.model_validate(i.model_dump(exclude={"symbol"}))) for i in items]
    async with _runtime(request).uow() as uow:
        await reference.upsert_securities(uow.session, principal.tenant_id, pairs)
        rows = await reference.securities(uow.session, principal.tenant_id, [s for s, _ in pairs])
        await uow.commit()
    return [_security_out(r) for r in rows]


@router.get("/reference/securities", response_model=list[SecurityReferenceOut], tags=["reference"],
            summary="The tenant's securities reference data, by symbol (page with `after`)")
async def list_reference_securities(
    principal: MarketReader, request: Request,
    after: Annotated[str | None, Query(max_length=16, description="Only symbols after this one")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[SecurityReferenceOut]:
    async with _runtime(request).sessionmaker() as s:
        rows = await reference.securities(s, principal.tenant_id, after=after, limit=limit)
    return [_security_out(r) for r in rows]


@router.get("/reference/securities/{symbol}", response_model=SecurityReferenceOut, tags=["reference"])
async def get_reference_security(symbol: Annotated[Symbol, Path()], principal: MarketReader,
                                 request: Request) -> SecurityReferenceOut:
    async with _runtime(request).sessionmaker() as s:
        rows = await reference.securities(s, principal.tenant_id, [symbol])
    if not rows:
        raise NotFound(f"no reference data for {symbol}")
    return _security_out(rows[0])


@router.put("/reference/risk-model", response_model=RiskModelOut, tags=["reference"],
            summary="Replace the tenant's factor risk model (loadings per symbol, specific variances): "
                    "solves whose context has no model of their own use its rows of their symbols", openapi_extra=BULK_BODY)
async def put_risk_model(body: FactorModelContext, principal: MarketWriter, request: Request) -> RiskModelOut:
    twice = sorted(s for s, n in Counter(body.symbols).items() if n > 1)
    if twice:
        raise Invalid(f"factor model: symbols listed more than once: {', '.join(twice[:20])}",
                      kind="invalid_risk_model", symbols=twice[:100])
    factors = len(body.loadings[0]) if body.loadings else 0
    if len(body.symbols) > MAX_MODEL_SYMBOLS or factors > MAX_MODEL_FACTORS:
        raise Invalid(f"factor model of {len(body.symbols)} symbols x {factors} factors: at most "
                      f"{MAX_MODEL_SYMBOLS} x {MAX_MODEL_FACTORS}", kind="invalid_risk_model")
    async with _runtime(request).uow() as uow:
        updated_at = await reference.put_risk_model(uow.session, principal.tenant_id, body)
        await uow.commit()
    return RiskModelOut.model_validate({**body.model_dump(), "updated_at": updated_at})


@router.get("/reference/risk-model", response_model=RiskModelOut, tags=["reference"],
            summary="The tenant's current factor risk model")
async def get_risk_model(principal: MarketReader, request: Request) -> RiskModelOut:
    async with _runtime(request).sessionmaker() as s:
        row = await reference.risk_model(s, principal.tenant_id)
    if row is None:
        raise NotFound("no factor risk model")
    return RiskModelOut.model_validate({**row.model, "updated_at": row.updated_at})
