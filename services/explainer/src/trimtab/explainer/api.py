"""Thin HTTP routes of the explainer (`/v1`, scope `explain:read`), scoped to the caller's tenant:
another tenant's proposal is simply not found."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from trimtab.shared.auth import Principal, requires
from trimtab.shared.errors import NotFound, TrimtabError

from .models import explanations
from .schemas import ExplanationOut, NarrativeOut, TradeExplanationOut

router = APIRouter(prefix="/v1", tags=["explanations"])
Reader = Annotated[Principal, Depends(requires("explain:read"))]


class ExplanationUnavailable(TrimtabError):
    """The proposal was received but could not be explained (the reason is recorded)."""

    status = 422
    title = "Explanation failed"


async def _row(request: Request, tenant_id: str, proposal_id: uuid.UUID) -> Any:
    async with request.app.state.runtime.sessionmaker() as s:
        row = (await s.execute(select(explanations).where(
            explanations.c.tenant_id == tenant_id,
            explanations.c.proposal_id == proposal_id))).first()
    if row is None:
        raise NotFound(f"no explanation of proposal {proposal_id}")
    if row.status != "created":
        raise ExplanationUnavailable(f"proposal {proposal_id} could not be explained: {row.error}",
                                     error_kind=row.error_kind)
    return row


def _trades(payload: dict[str, Any], details: dict[str, Any]) -> list[TradeExplanationOut]:
    out = []
    for t in payload["trades"]:
        d = details.get(t["symbol"], {})
        out.append(TradeExplanationOut(
            symbol=t["symbol"],
            price_usd=Decimal(d["price_usd"]) if "price_usd" in d else None,
            trade_shares=Decimal(t["trade_shares"]), base_shares=Decimal(t["base_shares"]),
            contributions_shares={k: Decimal(v) for k, v in t["contributions_shares"].items()},
            trade_usd=Decimal(d["trade_usd"]) if "trade_usd" in d else None,
            contributions_usd={k: Decimal(v) for k, v in d.get("contributions_usd", {}).items()},
        ))
    return out


@router.get("/explanations/{proposal_id}", response_model=ExplanationOut,
            summary="Why each trade of a proposal: Shapley contributions of every driver")
async def get_explanation(proposal_id: uuid.UUID, principal: Reader, request: Request) -> ExplanationOut:
    row = await _row(request, principal.tenant_id, proposal_id)
    p = row.payload
    return ExplanationOut(
        explanation_id=row.explanation_id, proposal_id=row.proposal_id, account_id=row.account_id,
        snapshot_hash=row.snapshot_hash, optimizer_version=row.optimizer_version,
        proposal_optimizer_version=row.proposal_optimizer_version, method=p["method"],
        drivers=p["drivers"], resolves=p["resolves"], elapsed_ms=row.elapsed_ms,
        trades=_trades(p, row.details or {}), narrative_advisor=p["narrative_advisor"],
        narrative_client=p["narrative_client"], correlation_id=row.correlation_id,
        created_at=row.created_at,
    )


@router.get("/explanations/{proposal_id}/narrative", response_model=NarrativeOut,
            summary="The explanation in words, for the advisor and for the client")
async def get_narrative(proposal_id: uuid.UUID, principal: Reader, request: Request) -> NarrativeOut:
    row = await _row(request, principal.tenant_id, proposal_id)
    return NarrativeOut(proposal_id=row.proposal_id, account_id=row.account_id,
                        advisor=row.payload["narrative_advisor"], client=row.payload["narrative_client"])
