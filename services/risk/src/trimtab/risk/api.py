"""Thin HTTP routes of the risk service (`/v1`, scope `risk:read`): assessments, the model,
what-if volatility. Every query is scoped to the caller's tenant."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from trimtab.shared.auth import Principal, requires
from trimtab.shared.errors import NotFound
from trimtab.shared.events import RiskModelInfo

from .domain.assessment import to_pct, vol_pct
from .domain.model import MODEL_NAME
from .domain.portfolio import TRADING_DAYS, is_cash
from .models import assessments
from .schemas import AssessmentOut, RiskModelOut, SymbolRiskOut, WhatIfIn, WhatIfOut
from .service import RiskModels, model_info

router = APIRouter(prefix="/v1", tags=["risk"])
Reader = Annotated[Principal, Depends(requires("risk:read"))]


def _models(request: Request) -> RiskModels:
    return request.app.state.risk_models  # type: ignore[no-any-return]


@router.get("/assessments/{proposal_id}", response_model=AssessmentOut,
            summary="The risk assessment of one rebalancing proposal")
async def get_assessment(proposal_id: uuid.UUID, principal: Reader, request: Request) -> AssessmentOut:
    async with request.app.state.runtime.sessionmaker() as s:
        row = (await s.execute(select(assessments).where(
            assessments.c.tenant_id == principal.tenant_id,
            assessments.c.proposal_id == proposal_id))).first()
    if row is None:
        raise NotFound(f"no assessment of proposal {proposal_id}")
    return AssessmentOut(
        proposal_id=row.proposal_id, account_id=row.account_id,
        pre_vol_annual_pct=row.pre_vol_annual_pct, post_vol_annual_pct=row.post_vol_annual_pct,
        model=RiskModelInfo(name=row.model_name, version=row.model_version,
                            window_start=row.window_start, window_end=row.window_end,
                            observations=row.observations, halflife_days=row.halflife_days),
        flags=row.flags, pre_weights={k: Decimal(v) for k, v in row.pre_weights.items()},
        post_weights={k: Decimal(v) for k, v in row.post_weights.items()},
        correlation_id=row.correlation_id, created_at=row.created_at,
    )


@router.get("/risk-model", response_model=RiskModelOut,
            summary="The tenant's EWMA risk model: window, observations, volatilities")
async def get_risk_model(principal: Reader, request: Request) -> RiskModelOut:
    models = _models(request)
    async with request.app.state.runtime.sessionmaker() as s:
        model = await models.get(s, principal.tenant_id)
    cov, info = model.covariance, model_info(model)
    min_obs = models.limits.min_observations
    symbols = []
    for sym in model.book.symbols():
        daily = cov.daily_vol(sym)
        symbols.append(SymbolRiskOut(
            symbol=sym, observations=cov.observations(sym), known=cov.observations(sym) >= min_obs,
            vol_annual_pct=None if daily is None else to_pct(daily * math.sqrt(TRADING_DAYS))))
    return RiskModelOut(
        name=MODEL_NAME, version=info.version, decay=Decimal(repr(model.decay)),
        halflife_days=info.halflife_days or Decimal(0), window_start=info.window_start,
        window_end=info.window_end, observations=info.observations, min_observations=min_obs,
        digest=model.digest(), symbols=symbols,
    )


@router.post("/risk/what-if", response_model=WhatIfOut,
             summary="Annualized volatility of any long-only weights under the current model")
async def what_if(body: WhatIfIn, principal: Reader, request: Request) -> WhatIfOut:
    models = _models(request)
    async with request.app.state.runtime.sessionmaker() as s:
        model = await models.get(s, principal.tenant_id)
    vol, view = vol_pct(model.covariance, body.weights, models.limits)
    invested = sum((w for sym, w in body.weights.items() if not is_cash(sym)), Decimal(0))
    return WhatIfOut(vol_annual_pct=vol, cash_weight=1 - invested,
                     flags=[f"prior_used:{sym}" for sym in view.prior_used], model=model_info(model))
