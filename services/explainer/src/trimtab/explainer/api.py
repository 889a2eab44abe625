"""Thin HTTP routes of the explainer (`/v1`, scope `explain:read`), scoped to the caller's tenant:
another tenant's proposal is simply not found."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from trimtab.shared.auth import Principal, requires
from trimtab.shared.errors import NotFound, TrimtabError

from .models import explanations
from .schemas import ChartsOut, CounterfactualOut, ExplanationOut, NarrativeOut, TradeExplanationOut

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


def _drivers(payload: dict[str, Any], details: dict[str, Any]) -> list[str]:
    """The explained drivers: the detail's (six, tax split) when stored, else the event's."""
    from trimtab.rebalance.explain import DETAILS_DRIVERS

    return list(details.get(DETAILS_DRIVERS) or payload["drivers"])


def _trades(payload: dict[str, Any], details: dict[str, Any]) -> list[TradeExplanationOut]:
    """Each explained trade: the detail's attribution (explained drivers) when stored, else the
    event's (optimizer drivers)."""
    from trimtab.rebalance.explain import DETAILS_DRIVERS

    event = {t["symbol"]: t for t in payload["trades"]}
    symbols = sorted(set(event) | {k for k, v in details.items() if k != DETAILS_DRIVERS and isinstance(v, dict)})
    out = []
    for sym in symbols:
        d = details.get(sym, {})
        t = d if "contributions_shares" in d else event.get(sym)
        if t is None:
            continue
        out.append(TradeExplanationOut(
            symbol=sym,
            price_usd=Decimal(d["price_usd"]) if "price_usd" in d else None,
            trade_shares=Decimal(t["trade_shares"]), base_shares=Decimal(t["base_shares"]),
            contributions_shares={k: Decimal(v) for k, v in t["contributions_shares"].items()},
            trade_usd=Decimal(d["trade_usd"]) if "trade_usd" in d else None,
            contributions_usd={k: Decimal(v) for k, v in d.get("contributions_usd", {}).items()},
            counterfactuals=[CounterfactualOut.model_validate(c) for c in d.get("counterfactuals", [])],
            wash_sale=d.get("wash_sale"),
        ))
    return out


def _chart_trades(row: Any) -> list[Any]:
    from trimtab.rebalance.charts import ChartTrade

    out = []
    for t in _trades(row.payload, row.details or {}):
        if t.trade_usd is None or t.price_usd is None:
            continue  # an explanation stored without dollars has no chart of that trade
        out.append(ChartTrade(symbol=t.symbol, trade_usd=float(t.trade_usd),
                              contributions_usd={k: float(v) for k, v in t.contributions_usd.items()},
                              base_usd=float(t.base_shares * t.price_usd)))
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
        drivers=_drivers(p, row.details or {}), event_drivers=p["drivers"], resolves=p["resolves"],
        elapsed_ms=row.elapsed_ms,
        trades=_trades(p, row.details or {}), narrative_advisor=p["narrative_advisor"],
        narrative_client=p["narrative_client"], charts=_names(row), correlation_id=row.correlation_id,
        created_at=row.created_at,
    )


@router.get("/explanations/{proposal_id}/narrative", response_model=NarrativeOut,
            summary="The explanation in words, for the advisor and for the client")
async def get_narrative(proposal_id: uuid.UUID, principal: Reader, request: Request) -> NarrativeOut:
    row = await _row(request, principal.tenant_id, proposal_id)
    return NarrativeOut(proposal_id=row.proposal_id, account_id=row.account_id,
                        advisor=row.payload["narrative_advisor"], client=row.payload["narrative_client"])


def _names(row: Any) -> list[str]:
    from trimtab.rebalance.charts import chart_names

    return chart_names(_chart_trades(row))


@router.get("/explanations/{proposal_id}/charts", response_model=ChartsOut,
            summary="The names of an explanation's charts")
async def list_charts(proposal_id: uuid.UUID, principal: Reader, request: Request) -> ChartsOut:
    row = await _row(request, principal.tenant_id, proposal_id)
    return ChartsOut(proposal_id=row.proposal_id, charts=_names(row))


@router.get("/explanations/{proposal_id}/charts/{name}",
            summary="A chart: summary.svg|png (the proposal) or trade-{symbol}.svg|png (a waterfall)",
            response_class=Response,
            responses={200: {"content": {"image/svg+xml": {}, "image/png": {}}}})
async def get_chart(proposal_id: uuid.UUID, name: str, principal: Reader, request: Request) -> Response:
    from trimtab.rebalance.charts import chart_names, render

    row = await _row(request, principal.tenant_id, proposal_id)
    trades = _chart_trades(row)
    title = f"Proposal {row.proposal_id} ({row.account_id}): why each trade"
    try:
        # Rendering is CPU work (100-500 ms): off the event loop.
        body, media_type = await run_in_threadpool(render, name, trades, _drivers(row.payload, row.details or {}),
                                                   title)
    except KeyError:
        raise NotFound(f"explanation of proposal {proposal_id} has no chart {name!r}",
                       charts=chart_names(trades)) from None
    # Deterministic bytes: the same explanation always renders the same chart.
    return Response(content=body, media_type=media_type,
                    headers={"Cache-Control": "private, max-age=3600"})

