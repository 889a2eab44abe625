"""Thin HTTP routes of the risk service (`/v1`): assessments, the model (with factors and GARCH),
what-if measures, account risk and risk profiles. Reads need `risk:read`; setting a client's
risk profile needs `book:write` (a change to the client's record; there is no `risk:write` scope
yet). Every query is scoped to the caller's tenant."""

from __future__ import annotations

import asyncio
import math
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from trimtab.shared.auth import Principal, requires
from trimtab.shared.errors import Invalid, NotFound
from trimtab.shared.events import RiskModelInfo
from trimtab.shared.http import BULK_BODY

from .analytics import (
    PCT,
    factor_model,
    measure_profiles,
    measures_out,
    pct,
    portfolio_garch,
    prepare_profiles,
    prepare_stress,
    profiles,
    security_garch,
    stress_prepared,
)
from .domain.assessment import to_pct
from .domain.model import MODEL_NAME
from .domain.portfolio import TRADING_DAYS, is_cash
from .domain.scenarios import BUILTIN
from .domain.score import vol_of_score
from .models import assessments, recorded_by, risk_profiles
from .reference import ReferenceUnavailable
from .scenario_store import load_scenarios, pick_scenarios, runnable
from .schemas import (
    AccountId,
    AccountRiskOut,
    AssessmentOut,
    FactorModelOut,
    GarchOut,
    RiskModelOut,
    RiskProfileIn,
    RiskProfileOut,
    StressCellOut,
    SymbolRiskOut,
    WhatIfIn,
    WhatIfOut,
)
from .score_attribution import ScoreAttributionOut
from .score_attribution import attribution as score_attribution
from .service import RiskModels, model_info

router = APIRouter(prefix="/v1", tags=["risk"])
Reader = Annotated[Principal, Depends(requires("risk:read"))]
Writer = Annotated[Principal, Depends(requires("book:write"))]


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
            summary="The tenant's risk model: window, volatilities, statistical factors, GARCH")
async def get_risk_model(principal: Reader, request: Request, garch: bool = False) -> RiskModelOut:
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
    fm = factor_model(model, models.limits)
    factors = FactorModelOut(
        model_version=info.version, window_start=info.window_start, window_end=info.window_end,
        symbols=list(fm.symbols), factor_names=list(fm.factor_names),
        exposures=_sig10(fm.exposures), factor_covariance=np.eye(len(fm.factor_names)).tolist(),
        specific_var_daily=_sig10(fm.specific_var_daily),
        explained_fraction=float(f"{fm.explained_fraction:.9e}"))
    garch_out = None
    if garch:
        fits = await asyncio.to_thread(security_garch, model, model.book.symbols())
        garch_out = [GarchOut(
            symbol=sym, model_version=f.model_version, window_start=f.window_start,
            window_end=f.window_end, observations=f.observations, omega=f.omega, alpha=f.alpha,
            beta=f.beta, persistence=f.persistence, vol_1d_annual_pct=pct(f.vol_annual(1)),
            vol_1y_annual_pct=pct(f.vol_annual(TRADING_DAYS)),
            long_run_vol_annual_pct=pct(math.sqrt(f.long_run_var_daily * TRADING_DAYS))
            if f.persistence < 1 else None) for sym, f in fits]
    return RiskModelOut(
        name=MODEL_NAME, version=info.version, decay=Decimal(repr(model.decay)),
        halflife_days=info.halflife_days or Decimal(0), window_start=info.window_start,
        window_end=info.window_end, observations=info.observations, min_observations=min_obs,
        digest=model.digest(), shrinkage=Decimal(repr(models.limits.shrinkage)),
        symbols=symbols, factors=factors, garch=garch_out,
    )


def _sig10(a: np.ndarray) -> Any:
    """10 significant digits, as the digest: a rebuilt model equals the incremental one to about
    1e-15, and the published factors must not differ in noise."""
    return np.vectorize(lambda x: float(f"{x:.9e}"), otypes=[float])(a).tolist() if a.size else a.tolist()


@router.post("/risk/what-if", response_model=WhatIfOut,
             summary="Every risk measure of any long-only weights under the current model", openapi_extra=BULK_BODY)
async def what_if(body: WhatIfIn, principal: Reader, request: Request) -> WhatIfOut:
    models = _models(request)
    limits = models.limits
    async with request.app.state.runtime.sessionmaker() as s:
        model = await models.get(s, principal.tenant_id)
        tenant_scenarios = await load_scenarios(s, principal.tenant_id)
    shares = adv = None
    if body.account_value_usd is not None and body.prices_usd and body.adv_shares:
        value = float(body.account_value_usd)
        shares = [{sym: float(w) * value / float(body.prices_usd[sym])
                   for sym, w in body.weights.items() if sym in body.prices_usd
                   and body.prices_usd[sym] > 0}]
        adv = {sym: float(v) for sym, v in body.adv_shares.items()}
    wanted = body.scenario_ids if body.scenario_ids is not None else [s.scenario_id for s in BUILTIN]
    chosen = pick_scenarios(wanted, tenant_scenarios)[0] if wanted else []
    # on the event loop: copies of what the measures need (the consumers update the model here);
    # off it: the risk view (n x n, its eigendecomposition), the measures and the stress run
    measured = prepare_profiles(model, [body.weights], limits, body.target_weights, body.sectors)
    try:
        stressed = prepare_stress(model, [body.weights]) if chosen else None
    except ReferenceUnavailable as e:
        raise Invalid(str(e)) from None
    if stressed is not None:  # a scenario the history cannot shock: 422 naming it
        chosen, _ = runnable(chosen, {}, stressed.reference, explicit=True)

    def compute() -> tuple[Any, Any]:
        out = measure_profiles(measured, limits, shares, adv, float(body.participation))
        return out, (stress_prepared(stressed, chosen, limits, body.sectors)
                     if stressed is not None else None)

    ((p,), _, prior_used), stress_run = await asyncio.to_thread(compute)
    flags = [f"prior_used:{sym}" for sym in prior_used]
    if p.largest_weight > float(limits.concentration_limit):
        flags.append("concentration")
    if p.largest_sector_weight > float(limits.sector_limit):
        flags.append("sector_concentration")
    if body.tolerance_score is not None and p.score > body.tolerance_score:
        flags.append("above_tolerance")
    garch_vol = None
    if body.garch:
        fit = await asyncio.to_thread(portfolio_garch, model, body.weights, limits)
        garch_vol = None if fit is None else fit.vol_annual(1)
    cells: list[StressCellOut] = []
    if stress_run is not None:
        result = stress_run[0]
        broken = [sc.scenario_id for j, sc in enumerate(chosen)
                  if not (math.isfinite(result.pnl[0, j]) and math.isfinite(result.worst[0, j]))]
        if broken:
            raise Invalid(f"scenario(s) {', '.join(broken)}: the moves are not finite numbers "
                          "under the risk model")
        cells = [StressCellOut(scenario_id=sc.scenario_id, pnl_pct=pct(result.pnl[0, j]),
                               worst_pct=pct(result.worst[0, j])) for j, sc in enumerate(chosen)]
    invested = sum((w for sym, w in body.weights.items() if not is_cash(sym)), Decimal(0))
    return WhatIfOut(vol_annual_pct=to_pct(p.vol_annual), cash_weight=1 - invested, flags=flags,
                     model=model_info(model), measures=measures_out(p, garch_vol), stress=cells)


@router.get("/accounts/{account_id}/risk", response_model=AccountRiskOut,
            summary="Risk of the account's latest assessed portfolio, current and proposed")
async def account_risk(account_id: AccountId, principal: Reader, request: Request) -> AccountRiskOut:
    models = _models(request)
    async with request.app.state.runtime.sessionmaker() as s:
        row = (await s.execute(select(assessments).where(
            assessments.c.tenant_id == principal.tenant_id, assessments.c.account_id == account_id)
            .order_by(assessments.c.created_at.desc()).limit(1))).first()
        if row is None:
            raise NotFound(f"no assessed portfolio of account {account_id}")
        tolerance = (await s.execute(select(risk_profiles.c.tolerance_score).where(
            risk_profiles.c.tenant_id == principal.tenant_id,
            risk_profiles.c.account_id == account_id))).scalar_one_or_none()
        model = await models.get(s, principal.tenant_id)
    pre = {k: Decimal(v) for k, v in row.pre_weights.items()}
    post = {k: Decimal(v) for k, v in row.post_weights.items()}
    target = {k: Decimal(v) for k, v in (row.target_weights or {}).items()} or None
    (cur, prop), _, _ = profiles(model, [pre, post], models.limits, target)
    return AccountRiskOut(account_id=account_id, proposal_id=row.proposal_id,
                          assessed_at=row.created_at, tolerance_score=tolerance, flags=row.flags,
                          current=measures_out(cur), proposed=measures_out(prop),
                          model=model_info(model))


@router.get("/accounts/{account_id}/risk/attribution", response_model=ScoreAttributionOut,
            summary="Which exposures and market conditions drive the account's risk score (SHAP)")
async def account_risk_attribution(account_id: AccountId, principal: Reader, request: Request,
                                   portfolio: Literal["current", "proposed"] = "current"
                                   ) -> ScoreAttributionOut:
    models = _models(request)
    async with request.app.state.runtime.sessionmaker() as s:
        row = (await s.execute(select(assessments).where(
            assessments.c.tenant_id == principal.tenant_id, assessments.c.account_id == account_id)
            .order_by(assessments.c.created_at.desc()).limit(1))).first()
        if row is None:
            raise NotFound(f"no assessed portfolio of account {account_id}")
        model = await models.get(s, principal.tenant_id)
    weights = {k: Decimal(v) for k, v in (row.pre_weights if portfolio == "current" else row.post_weights).items()}
    # shap over up to 2^14 coalitions: CPU work, off the event loop.
    out = await asyncio.to_thread(score_attribution, model, weights, models.limits)
    return ScoreAttributionOut(account_id=account_id, proposal_id=row.proposal_id, portfolio=portfolio,
                               model=model_info(model), **out)


@router.put("/accounts/{account_id}/risk-profile", response_model=RiskProfileOut,
            summary="Set the client's risk tolerance (a risk score, 1..99) and limits")
async def put_risk_profile(account_id: AccountId, body: RiskProfileIn, principal: Writer,
                           request: Request) -> RiskProfileOut:
    # the body's limits have at most the columns' places: stored exactly, never rounded
    values = {**body.model_dump(), "updated_by": recorded_by(principal.subject)}
    async with request.app.state.runtime.sessionmaker() as s, s.begin():
        stmt = insert(risk_profiles).values(tenant_id=principal.tenant_id, account_id=account_id,
                                            **values)
        row = (await s.execute(stmt.on_conflict_do_update(
            index_elements=["tenant_id", "account_id"], set_={**values, "updated_at": func.now()})
            .returning(risk_profiles))).one()
    return _profile_out(row)


@router.get("/accounts/{account_id}/risk-profile", response_model=RiskProfileOut,
            summary="The client's stored risk profile")
async def get_risk_profile(account_id: AccountId, principal: Reader, request: Request) -> RiskProfileOut:
    async with request.app.state.runtime.sessionmaker() as s:
        row = (await s.execute(select(risk_profiles).where(
            risk_profiles.c.tenant_id == principal.tenant_id,
            risk_profiles.c.account_id == account_id))).first()
    if row is None:
        raise NotFound(f"no risk profile for account {account_id}")
    return _profile_out(row)


def _profile_out(row: Any) -> RiskProfileOut:
    return RiskProfileOut(
        account_id=row.account_id, tolerance_score=row.tolerance_score,
        concentration_limit=row.concentration_limit, drawdown_limit_pct=row.drawdown_limit_pct,
        questionnaire=row.questionnaire,
        tolerance_downside_1y_pct=Decimal(row.tolerance_score).quantize(PCT),
        tolerance_vol_annual_pct=pct(vol_of_score(row.tolerance_score)) or Decimal(0),
        updated_by=row.updated_by, updated_at=row.updated_at)
